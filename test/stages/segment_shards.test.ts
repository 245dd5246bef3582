/**
 * segment reads a sharded cache/pseudo_masks.arrow (refine.shards = 3: a folder of parts, rows by
 * part) as one table: the same training images, labelled fraction and validation pseudo-mask
 * scores as from the single file, and training (which reads the pseudo-masks by position, joined
 * by id) the same weights whatever the parts' count and row order, and the same models/segment
 * folder byte for byte (config.json's training hash covers the pseudo-masks' rows, not their
 * files). Tiny workspace as in segment_stage.test.ts.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Row, type TableMeta, TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { repro } from '../../cli/dag.js';
import { setQuiet } from '../../pipeline/log.js';
import { loadParams } from '../../stages/params.js';
import { partPath, prepareTableFor, shardOf } from '../../pipeline/shard.js';
import { createWorkspace } from '../../cli/workspace.js';
import { cvRecipe } from '../../cli/cv.js';
import { runSegment } from '../../stages/segment/index.js';
import { PSEUDO_COLUMNS, writePseudoMasks, writeRefineMetrics } from './segment_fixtures.js';

const TINY = [
  'synth.images=12', 'synth.size=32', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
  'segment.epochs=1', 'segment.batch_size=4', 'segment.crop=32', 'segment.head_dim=16', 'segment.val_fraction=0.4',
];

let root: string;
beforeAll(async () => {
  setQuiet(true);
  await initBackend();
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-segment-shards-'));
  root = await createWorkspace(path.join(tmp, 'ws'), TINY);
  expect((await repro(root, { target: 'cam' })).ok).toBe(true);
  await writePseudoMasks(root, { ignoreRows: 4, wrong: 6, wrongClass: 1 });
  await writeRefineMetrics(root);
}, 300_000);
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

const run = async () => runSegment({ params: await loadParams(path.join(root, 'params.yaml'), []), path: (rel) => path.join(root, rel) });

/** Rewrite the pseudo-mask table as `n` parts, each part's rows in the order `order` gives them. */
async function writeParts(table: string, rows: Row[], meta: TableMeta, n: number, order: (rows: Row[]) => Row[] = (r) => r): Promise<void> {
  await prepareTableFor(table, n);
  for (let k = 0; k < n; k++) {
    const w = await TableWriter.open(partPath(table, { k, n }), PSEUDO_COLUMNS, meta);
    for (const r of order(rows.filter((x) => shardOf(x.id as string, n) === k))) await w.write(r);
    await w.close();
  }
}

const weights = () => fs.readFile(path.join(root, 'models/segment/weights/weights.bin'));
const config = () => fs.readFile(path.join(root, 'models/segment/config.json'), 'utf8');
/** Every file of models/segment (relative path -> bytes, as hex for a readable diff of config.json). */
async function modelFiles(): Promise<Record<string, string>> {
  const dir = path.join(root, 'models/segment');
  const out: Record<string, string> = {};
  for (const e of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out[path.relative(dir, path.join(e.parentPath, e.name))] = (await fs.readFile(path.join(e.parentPath, e.name))).toString('hex');
  }
  return out;
}

describe('segment on a sharded pseudo-mask table', () => {
  it('sees the same pseudo-masks as from the single file, and trains the same weights whatever the parts\' count and row order', async () => {
    const one = await run();
    const oneWeights = await weights();
    const oneModel = await modelFiles();
    expect(Object.keys(oneModel)).toContain('config.json');
    const table = path.join(root, 'cache/pseudo_masks.arrow');
    const rows = await readAll(table);
    const { meta } = await readInfo(table);
    await writeParts(table, rows, meta, 3);
    expect((await fs.readdir(table)).length).toBe(3);
    const three = await run();
    expect([three.trainImages, three.valImages, three.labelledFraction]).toEqual([one.trainImages, one.valImages, one.labelledFraction]);
    expect(three.pseudo_val).toEqual(one.pseudo_val);
    expect(one.pseudo_val?.images).toBeGreaterThan(0);
    // training reads the pseudo-masks by position, joined by id: another part count and row order give the same bytes
    expect((await weights()).equals(oneWeights)).toBe(true);
    expect(await modelFiles()).toEqual(oneModel);
    await writeParts(table, rows, meta, 2, (r) => [...r].reverse());
    const two = await run();
    expect((await weights()).equals(oneWeights)).toBe(true);
    expect([two.val, two.pseudo_val, two.labelledFraction]).toEqual([one.val, one.pseudo_val, one.labelledFraction]);
    expect(await modelFiles()).toEqual(oneModel);
    // negative control: other masks in one part change the training labels, so the weights
    const changed = rows.map((r) => (shardOf(r.id as string, 2) === 0 ? { ...r, mask: new Uint8Array((r.mask as Uint8Array).length) } : r));
    await writeParts(table, changed, meta, 2);
    const other = await run();
    expect(other.labelledFraction).not.toBe(one.labelledFraction);
    expect((await weights()).equals(oneWeights)).toBe(false);
    expect(JSON.parse(await config()).paramsHash).not.toBe(JSON.parse(Buffer.from(oneModel['config.json'], 'hex').toString()).paramsHash);
  }, 300_000);
});

describe('tagseg cv on a sharded pseudo-mask table', () => {
  it('keys its recipe by the rows: one file and the same rows in parts are one recipe; other rows another', async () => {
    const p = await loadParams(path.join(root, 'params.yaml'), []);
    const ids = ['a'];
    const key = async () => (await cvRecipe(root, p, 'pseudo', 2, 0, ids)).hash;
    const table = path.join(root, 'cache/pseudo_masks.arrow');
    const rows = await readAll(table);
    const { meta } = await readInfo(table);
    await writeParts(table, rows, meta, 1);
    const one = await key();
    await writeParts(table, rows, meta, 3, (r) => [...r].reverse()); // was EISDIR: the recipe hashed the file's bytes
    expect(await key()).toBe(one);
    await writeParts(table, rows.map((r, i) => (i === 0 ? { ...r, mask: (r.mask as Uint8Array).map((v, j) => (j === 0 ? v ^ 1 : v)) } : r)), meta, 3);
    expect(await key()).not.toBe(one); // control
  }, 120_000);
});
