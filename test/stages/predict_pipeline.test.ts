/**
 * `tagseg predict` as a bounded pipeline (stages/segment/predict.ts): with the CRF on 2 worker
 * threads, chunks decoded and run through the network while the pool works, it writes the same
 * mask and overlay bytes as with the CRF on the main thread, across chunk boundaries, two image
 * sizes, --tags and a skipped corrupt image; and it holds a window of images, not the folder:
 * decodings are counted against masks written. A tiny untrained model.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { predictFolder } from '../../stages/segment/predict.js';
import { writeTinySegModel } from '../helpers/tiny_seg_model.js';

/** Working-size decodings and mask writes so far, and the most decoded images not yet written. */
const counts = vi.hoisted(() => ({ decoded: 0, written: 0, maxAhead: 0 }));
vi.mock('../../data/decode.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../data/decode.js')>();
  return {
    ...m,
    decodeImage: async (file: string, size: number) => {
      const r = await m.decodeImage(file, size);
      if (size > 0) counts.maxAhead = Math.max(counts.maxAhead, ++counts.decoded - counts.written);
      return r;
    },
  };
});
vi.mock('../../pipeline/fsutil.js', async (importOriginal) => {
  const m = await importOriginal<typeof import('../../pipeline/fsutil.js')>();
  return {
    ...m,
    writeFileAtomic: async (target: string, data: string | Uint8Array) => {
      await m.writeFileAtomic(target, data);
      if (path.basename(path.dirname(target)).startsWith('masks')) counts.written++;
    },
  };
});

let tmp: string;
const at = (rel: string) => path.join(tmp, rel);
const IDS = Array.from({ length: 14 }, (_, i) => `p${String(i).padStart(2, '0')}`);

beforeAll(async () => {
  await initBackend();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-predict-pipeline-'));
  await writeTinySegModel(tmp);
  await fs.mkdir(at('images'));
  for (const [i, id] of IDS.entries()) {
    // Two sizes, interleaved, so a chunk holds batches of both.
    const [W, H] = i % 3 === 0 ? [20, 16] : [26, 18];
    const px = Buffer.from(Array.from({ length: W * H * 3 }, (_, j) => (j * 37 + i * 101 + (j % (W * 3) < W * 1.5 ? 90 : 0)) % 256));
    await sharp(px, { raw: { width: W, height: H, channels: 3 } }).png().toFile(at(`images/${id}.png`));
  }
  const png = await fs.readFile(at('images/p05.png'));
  await fs.writeFile(at('images/p05.png'), png.subarray(0, png.length >> 1));
  await fs.writeFile(at('tags.csv'), IDS.map((id, i) => `${id},${['a', 'b', 'a|b'][i % 3]}`).join('\n') + '\n');
}, 60_000);
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

async function files(dir: string): Promise<Map<string, Buffer>> {
  const names = (await fs.readdir(dir)).sort();
  return new Map(await Promise.all(names.map(async (n) => [n, await fs.readFile(path.join(dir, n))] as const)));
}

const run = (name: string, threads: number, batchSize: number, extra: { tags?: string; overlay?: boolean } = {}) => predictFolder({
  model: at('model'), images: at('images'), out: at(`masks-${name}`), overlay: extra.overlay ? at(`overlays-${name}`) : undefined, tags: extra.tags,
  batchSize, threads, crf: true, onError: 'skip',
});

describe('predict pipeline', () => {
  it('writes the same masks and overlays with the CRF on 2 threads as on the main thread (chunks of 4 and 12, tags, a skipped image)', async () => {
    for (const [batchSize, tags] of [[1, undefined], [3, at('tags.csv')]] as const) {
      const one = await run(`one-${batchSize}`, 1, batchSize, { tags, overlay: true });
      const two = await run(`two-${batchSize}`, 2, batchSize, { tags, overlay: true });
      expect(one.threads).toBe(1);
      expect(two.threads).toBe(Math.min(2, os.availableParallelism()));
      expect(two.images).toBe(IDS.length - 1);
      expect(two.skipped.map((s) => path.basename(s.file))).toEqual(['p05.png']);
      expect(two.batches).toBe(one.batches);
      for (const [kind, a, b] of [['masks', `masks-one-${batchSize}`, `masks-two-${batchSize}`], ['overlays', `overlays-one-${batchSize}`, `overlays-two-${batchSize}`]]) {
        const [fa, fb] = [await files(at(a)), await files(at(b))];
        expect([...fb.keys()], kind).toEqual(IDS.filter((id) => id !== 'p05').map((id) => `${id}.png`));
        for (const [n, bytes] of fa) expect(Buffer.compare(bytes, fb.get(n)!), `${kind}/${n}`).toBe(0);
      }
    }
    // Control: the tags change some masks, so the runs above compared two different settings.
    const [plain, tagged] = [await files(at('masks-one-1')), await files(at('masks-one-3'))];
    expect([...plain].some(([n, bytes]) => Buffer.compare(bytes, tagged.get(n)!) !== 0)).toBe(true);
  });

  it('holds a window of images, not the folder: decoded minus written stays within two chunks and a CRF per thread', async () => {
    Object.assign(counts, { decoded: 0, written: 0, maxAhead: 0 });
    const r = await run('window', 2, 1);
    expect(r.images).toBe(IDS.length - 1);
    expect(counts.decoded).toBe(IDS.length - 1);
    expect(counts.written).toBe(IDS.length - 1);
    // chunk 4 (batch size 1 x 4), 2 threads: at most 2 x 4 + 2 = 10 of the 13 images ahead.
    expect(counts.maxAhead).toBeGreaterThan(1);
    expect(counts.maxAhead).toBeLessThanOrEqual(2 * 4 + r.threads);
  });
});
