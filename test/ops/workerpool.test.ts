/**
 * ops/workerpool.ts through the CRF task (ops/crf_pool.ts): results equal the inline call whatever
 * thread ran them, and with `queue` 2 each thread is posted its next task before it answers the
 * current one (predict's pool), where the default posts one per thread.
 */
import * as os from 'node:os';
import { describe, expect, it } from 'vitest';
import { CRF_PRESETS } from '../../ops/crf.js';
import { CRF_TASK, type CrfRequest, crfOfProbs, crfPool } from '../../ops/crf_pool.js';
import { WorkerPool } from '../../ops/workerpool.js';

/** A 12 x 16 probability map over 3 classes with a colour edge. */
function request(seed: number): CrfRequest {
  const H = 12;
  const W = 16;
  const K = 3;
  const probs = new Float32Array(H * W * K);
  const rgb = new Uint8Array(H * W * 3);
  for (let p = 0; p < H * W; p++) {
    const raw = [1 + ((p * 7 + seed) % 5), 1 + ((p * 3 + 2 * seed) % 4), 1 + ((p + seed) % 3)];
    const s = raw[0] + raw[1] + raw[2];
    for (let k = 0; k < K; k++) probs[p * K + k] = raw[k] / s;
    rgb.fill(p % W < W / 2 ? 30 : 220, p * 3, p * 3 + 3);
  }
  return { probs, rgb, H, W, K, crf: CRF_PRESETS.psa };
}

const same = (a: Float32Array, b: Float32Array) => Buffer.compare(Buffer.from(a.buffer, a.byteOffset, a.byteLength), Buffer.from(b.buffer, b.byteOffset, b.byteLength)) === 0;

describe('WorkerPool', () => {
  it('queue 2: every thread is posted two tasks at once; results equal the inline call', async () => {
    const pool = crfPool(2);
    try {
      const reqs = Array.from({ length: 7 }, (_, i) => request(i));
      const runs = reqs.map((r) => pool.run(r));
      expect(pool.inFlight).toBe(pool.size === 1 ? 0 : 2 * pool.size);
      const got = await Promise.all(runs);
      expect(pool.inFlight).toBe(0);
      for (const [i, q] of got.entries()) expect(same(q, crfOfProbs(reqs[i]))).toBe(true);
      expect(same(got[0], got[1])).toBe(false); // control: the requests differ
    } finally {
      await pool.close();
    }
  });

  it('by default posts one task per thread (the others wait for a free one)', async () => {
    const pool = new WorkerPool(2, CRF_TASK);
    try {
      const runs = Array.from({ length: 5 }, (_, i) => pool.run(request(i)));
      expect(pool.inFlight).toBe(Math.min(2, os.availableParallelism()) === 1 ? 0 : pool.size);
      await Promise.all(runs);
    } finally {
      await pool.close();
    }
  });
});
