/**
 * refine with refine.shards = 3 on hand-made tables (dataset.arrow + cams.arrow, refine.source cam,
 * 14 images): the parts written by one process (no --shard: every shard in turn) and by three
 * parallel `tagseg run refine --shard k/3` child processes are the same files byte for byte, and
 * the folder is the unsharded table as a logical table: the same rows (compared after sorting by
 * id), every column's value equal byte for byte (binary and list columns element by element), the
 * same column specs and metadata except the params hash (refine.shards is a refine param). The
 * PNGs are the same files, moved into part-<k>-of-3/ folders. Audit then reads the folder.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeIndexedPng } from '../../data/palette.js';
import { type Row, TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { DEFAULT_PARAMS_YAML, type Params, defaultParams } from '../../stages/params.js';
import { runStages } from '../../stages/index.js';
import { shardOf } from '../../pipeline/shard.js';
import { encodeFloat16 } from '../../maps/f16.js';
import { camColumns } from '../../maps/cams_table.js';
import { DATASET_COLUMNS } from '../../stages/ingest/tables.js';
import { runRefine } from '../../stages/refine/index.js';
import { REPO } from '../helpers/python.js';

const CLASSES = ['background', 'cat', 'dog'];
const [H, W, h, w] = [24, 32, 3, 4];
const IDS = Array.from({ length: 14 }, (_, i) => (i === 5 ? 'photo 5 ü' : `img-${i}`));
const SETS = ['refine.source=cam', 'refine.concurrency=1'];

let root: string;
const file = (rel: string) => path.join(root, rel);

/** Image i: a box of class 1 + (i % 2) at a position depending on i; maps right on the cell grid. */
async function writeFixture(): Promise<void> {
  await fs.mkdir(file('data'), { recursive: true });
  const meta = (s: string, extra: Record<string, unknown> = {}) => ({ stage: s, paramsHash: 'fixture', classes: CLASSES, extra: { background: 0, ...extra } });
  const ds = await TableWriter.open(file('cache/dataset.arrow'), DATASET_COLUMNS, meta('ingest', { void: 255, dataset_root: root, working_size: 16 }));
  const cams = await TableWriter.open(file('cache/cams.arrow'), camColumns('float16'), meta('cam', { stride: 4, dtype: 'float16', scales: [1], flip: false, model: 'models/cam' }));
  for (const [i, id] of IDS.entries()) {
    const cls = 1 + (i % 2);
    const [cy, cx] = [i % 2, i % 3];
    const gt = new Uint8Array(H * W);
    const map = new Float32Array(h * w);
    for (let y = cy; y < cy + 2; y++) for (let x = cx; x < cx + 2; x++) map[y * w + x] = 1;
    for (let p = 0; p < H * W; p++) if (map[Math.floor(p / W / 8) * w + Math.floor((p % W) / 8)]) gt[p] = cls;
    const rgb = new Uint8Array(H * W * 3);
    for (let p = 0; p < H * W; p++) rgb.set([gt[p] ? 200 : 40, gt[p] === 2 ? 200 : 90, 40 + ((p * 7 + i) % 5)], 3 * p);
    const imagePath = file(`data/${i}.png`);
    await sharp(Buffer.from(rgb), { raw: { width: W, height: H, channels: 3 } }).png().toFile(imagePath);
    const maskPath = i % 4 === 0 ? null : file(`data/${i}_mask.png`);
    if (maskPath) await fs.writeFile(maskPath, encodeIndexedPng(gt, W, H));
    const split = i % 5 === 4 ? 'val' : 'train';
    await ds.write({ id, split, image_path: imagePath, mask_path: maskPath, orig_width: W, orig_height: H, width: W / 2, height: H / 2, tags: [cls], tag_names: [CLASSES[cls]] });
    await cams.write({ id, split, tags: [cls], height: h, width: w, image_height: H / 2, image_width: W / 2, cams: encodeFloat16(map) });
  }
  await ds.close();
  await cams.close();
  await fs.writeFile(file('params.yaml'), DEFAULT_PARAMS_YAML);
}

function params(shards: number): Params {
  const p = defaultParams();
  return { ...p, refine: { ...p.refine, source: 'cam', concurrency: 1, shards } };
}

/** Every file under `dir` (relative path -> bytes). */
async function files(dir: string): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const e of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.set(path.relative(dir, path.join(e.parentPath, e.name)), await fs.readFile(path.join(e.parentPath, e.name)));
  }
  return out;
}

const snapshot = async (to: string) => {
  await fs.rm(file(to), { recursive: true, force: true });
  await fs.cp(file('cache/pseudo_masks.arrow'), file(`${to}/table`), { recursive: true });
  await fs.cp(file('outputs/pseudo_masks'), file(`${to}/pngs`), { recursive: true });
};

beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-refine-shards-'));
  await writeFixture();
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('refine in 3 shards', () => {
  it('one process and 3 parallel processes write the same parts; together they are the unsharded table', async () => {
    const single = await runRefine({ params: params(1), path: file });
    expect(single.images).toBe(IDS.length);
    await snapshot('ref');
    const seq = await runRefine({ params: params(3), path: file });
    expect(seq.images).toBe(IDS.length);
    // the chain table covers every image either way
    expect(seq.table.pseudo_masks).toEqual(single.table.pseudo_masks);
    await snapshot('seq');

    // back to the unsharded outputs: the three processes turn the file into a folder at the same time
    await fs.rm(file('cache/pseudo_masks.arrow'), { recursive: true });
    await fs.rm(file('outputs/pseudo_masks'), { recursive: true });
    await fs.cp(file('ref/table'), file('cache/pseudo_masks.arrow'));
    await fs.cp(file('ref/pngs'), file('outputs/pseudo_masks'), { recursive: true });
    const run = promisify(execFile);
    const cli = path.join(REPO, 'bin/tagseg.js');
    const sets = [...SETS, 'refine.shards=3'].flatMap((s) => ['--set', s]);
    const procs = [0, 1, 2].map((k) => run(process.execPath, [cli, '--root', root, '-q', 'run', 'refine', '--shard', `${k}/3`, ...sets, '--json'], { cwd: REPO }));
    const outs = await Promise.all(procs);
    const perShard = outs.map((o) => (JSON.parse(o.stdout) as { refine: { images: number } }).refine.images);
    expect(perShard).toEqual([0, 1, 2].map((k) => IDS.filter((id) => shardOf(id, 3) === k).length));
    expect(perShard.every((n) => n > 0)).toBe(true);
    for (const k of [0, 1, 2]) await fs.access(file(`metrics/refine/part-${k}-of-3.json`));
    await snapshot('par');

    // byte for byte: every part file and every PNG, one process vs three
    const [seqFiles, parFiles] = [await files(file('seq')), await files(file('par'))];
    expect([...parFiles.keys()].sort()).toEqual([...seqFiles.keys()].sort());
    expect([...parFiles.keys()].filter((f) => f.startsWith('table/'))).toHaveLength(3);
    for (const [f, bytes] of seqFiles) expect(parFiles.get(f)!.equals(bytes), f).toBe(true);

    // the logical table: same rows after sorting by id, same values, same columns and metadata (but the params hash)
    const byId = (rows: Row[]) => [...rows].sort((a, b) => ((a.id as string) < (b.id as string) ? -1 : 1));
    const ref = byId(await readAll(file('ref/table'), { stage: 'refine' }));
    const sharded = await readAll(file('par/table'), { stage: 'refine' });
    expect(sharded.map((r) => r.id)).not.toEqual(IDS); // part order, not the input order ...
    expect(byId(sharded)).toEqual(ref); // ... but the same rows
    const [ri, si] = [await readInfo(file('ref/table')), await readInfo(file('par/table'))];
    expect(si.columns).toEqual(ri.columns);
    expect({ ...si.meta, paramsHash: '' }).toEqual({ ...ri.meta, paramsHash: '' });
    // PNGs: <id>.png unsharded, part-<k>-of-3/<id>.png sharded, same bytes
    const refPngs = await files(file('ref/pngs'));
    expect(refPngs.size).toBe(IDS.length);
    for (const id of IDS) expect(parFiles.get(`pngs/part-${shardOf(id, 3)}-of-3/${id}.png`)!.equals(refPngs.get(`${id}.png`)!)).toBe(true);

    // negative control: one changed mask byte in one part is seen by the same comparison
    const rows = await readAll(file('par/table/part-1-of-3.arrow'));
    (rows[0].mask as Uint8Array)[0] ^= 1;
    const wr = await TableWriter.open(file('par/table/part-1-of-3.arrow'), si.columns, si.meta);
    for (const r of rows) await wr.write(r);
    await wr.close();
    expect(byId(await readAll(file('par/table')))).not.toEqual(ref);
  }, 120_000);

  it('rejects a --shard that does not match refine.shards, and --shard on a stage without shards', async () => {
    await expect(runStages(root, ['refine'], [...SETS, 'refine.shards=2'], true, { k: 0, n: 3 })).rejects.toThrow(/--shard 0\/3 does not match refine.shards: 2/);
    await expect(runStages(root, ['segment'], [], true, { k: 0, n: 3 })).rejects.toThrow(/stage 'segment' does not run in shards/);
  });

  it('goes back to one file and one PNG folder with refine.shards = 1', async () => {
    await runRefine({ params: params(3), path: file });
    await runRefine({ params: params(1), path: file });
    expect((await fs.stat(file('cache/pseudo_masks.arrow'))).isFile()).toBe(true);
    expect((await fs.readdir(file('outputs/pseudo_masks'))).sort()).toEqual(IDS.map((id) => `${id}.png`).sort());
  }, 60_000);
});
