/**
 * `tagseg predict --shard k/N`: three shards writing into one folder give the same files, byte for
 * byte, as one unsharded run; each shard segments only its ids (shardOf). A tiny untrained model.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { initBackend } from '../../pipeline/backend.js';
import { shardOf } from '../../pipeline/shard.js';
import { predictFolder } from '../../stages/segment/predict.js';
import { writeTinySegModel } from '../helpers/tiny_seg_model.js';
import { REPO } from '../helpers/python.js';

let tmp: string;
const IDS = Array.from({ length: 9 }, (_, i) => `p${i}`);
const at = (rel: string) => path.join(tmp, rel);

beforeAll(async () => {
  await initBackend();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-predict-shards-'));
  await writeTinySegModel(tmp);
  await fs.mkdir(at('images'));
  for (const [i, id] of IDS.entries()) {
    const px = Buffer.from(Array.from({ length: 20 * 16 * 3 }, (_, j) => (j * 37 + i * 101) % 256));
    await sharp(px, { raw: { width: 20, height: 16, channels: 3 } }).png().toFile(at(`images/${id}.png`));
  }
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

async function files(dir: string): Promise<Map<string, Buffer>> {
  const names = (await fs.readdir(dir)).sort();
  return new Map(await Promise.all(names.map(async (n) => [n, await fs.readFile(path.join(dir, n))] as const)));
}

describe('predict in shards', () => {
  it('3 shards into one folder = one unsharded run, byte for byte', async () => {
    const base = { model: at('model'), images: at('images'), batchSize: 2 };
    const one = await predictFolder({ ...base, out: at('one') });
    expect(one.images).toBe(IDS.length);
    const counts: number[] = [];
    for (const k of [0, 1, 2]) counts.push((await predictFolder({ ...base, out: at('three'), shard: { k, n: 3 } })).images);
    expect(counts).toEqual([0, 1, 2].map((k) => IDS.filter((id) => shardOf(id, 3) === k).length));
    expect(counts.filter((c) => c > 0).length).toBeGreaterThan(1);
    const [a, b] = [await files(at('one')), await files(at('three'))];
    expect([...b.keys()]).toEqual([...a.keys()]);
    for (const [n, bytes] of a) expect(b.get(n)!.equals(bytes), n).toBe(true);
  }, 120_000);

  it('the CLI passes --shard', async () => {
    const { stdout } = await promisify(execFile)(process.execPath, [
      path.join(REPO, 'bin/tagseg.js'), '-q', 'predict', '--model', at('model'), '--images', at('images'), '--out', at('cli'), '--shard', '2/3', '--json',
    ], { cwd: REPO });
    expect((JSON.parse(stdout) as { images: number }).images).toBe(IDS.filter((id) => shardOf(id, 3) === 2).length);
    expect((await fs.readdir(at('cli'))).sort()).toEqual(IDS.filter((id) => shardOf(id, 3) === 2).map((id) => `${id}.png`).sort());
  }, 120_000);
});
