/**
 * The map stages in shards (issue 26 item 2) on a tiny synthetic workspace: downstream outputs do not
 * depend on how an upstream table was sharded, since every reader joins by id in images.arrow's
 * order. With cam.shards 3 (cams.arrow a folder of 3 parts, rows by part), the models/ folder
 * (weights and config.json, whose training hash covers the map tables' rows, not their files),
 * affinity_cams.arrow, contrast_cams.arrow and pseudo_masks.arrow are the same bytes as with one
 * file; with affinity and contrast in 2 shards too, models/ and pseudo_masks.arrow still are
 * (contrast_train reads affinity_cams rows at their part positions); a changed cams row does
 * change the trained model's config.
 * Three `tagseg run cam --shard k/3` processes write the same part files as one process running
 * every shard, and pyarrow's dataset() reads the part folder as the table.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { repro } from '../../cli/dag.js';
import { createWorkspace } from '../../cli/workspace.js';
import { type Row, TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { setQuiet } from '../../pipeline/log.js';
import { shardOf } from '../../pipeline/shard.js';
import { runStages } from '../../stages/index.js';
import { skipWithout } from '../helpers/ci.js';
import { REPO, findPython } from '../helpers/python.js';

const TINY = [
  'synth.images=12', 'synth.size=32', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
  'affinity.epochs=1', 'affinity.radius=3', 'affinity.batch_size=4', 'affinity.crop=32', 'affinity.dim=16', 'affinity.logt=4',
  'contrast.epochs=1', 'contrast.batch_size=4', 'contrast.crop=32', 'contrast.scales=[1.0]', 'contrast.memory_size=8',
  'contrast.centroids=2', 'contrast.dim=8', 'contrast.region=affinity', 'refine.concurrency=1',
];
const DOWNSTREAM = ['affinity_train', 'affinity', 'contrast_train', 'contrast', 'refine'];
const OUTPUTS = ['models/affinity/weights/weights.bin', 'models/contrast/weights/weights.bin', 'cache/affinity_cams.arrow', 'cache/contrast_cams.arrow', 'cache/pseudo_masks.arrow'];

let root: string;
const at = (rel: string) => path.join(root, rel);
const bytes = async (rel: string) => fs.readFile(at(rel));
const byId = (rows: Row[]) => [...rows].sort((a, b) => ((a.id as string) < (b.id as string) ? -1 : 1));
const partFiles = async (dir: string) => (await fs.readdir(dir)).sort();
/** Every file under models/ (relative path -> bytes). */
async function models(): Promise<Map<string, Buffer>> {
  const out = new Map<string, Buffer>();
  for (const e of await fs.readdir(at('models'), { recursive: true, withFileTypes: true })) {
    if (e.isFile()) out.set(path.relative(root, path.join(e.parentPath, e.name)), await fs.readFile(path.join(e.parentPath, e.name)));
  }
  return out;
}
async function expectSameModels(): Promise<void> {
  const now = await models();
  expect([...now.keys()].sort()).toEqual([...unshardedModels.keys()].sort());
  for (const [f, b] of unshardedModels) expect(now.get(f)!.equals(b), f).toBe(true);
}
let unsharded: Map<string, Buffer>;
let unshardedModels: Map<string, Buffer>;
let ids: string[];

beforeAll(async () => {
  setQuiet(true);
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-map-shards-'));
  root = await createWorkspace(path.join(tmp, 'ws'), TINY);
  const r = await repro(root, { target: 'refine' });
  expect(r.failed?.message).toBeUndefined();
  unsharded = new Map(await Promise.all(OUTPUTS.map(async (f) => [f, await bytes(f)] as const)));
  unshardedModels = await models();
  expect([...unshardedModels.keys()].filter((f) => f.endsWith('config.json')).sort()).toEqual(['cam', 'affinity', 'contrast'].map((m) => `models/${m}/config.json`).sort());
  ids = (await readAll(at('cache/images.arrow'))).map((r) => r.id as string);
}, 600_000);
afterAll(async () => fs.rm(path.dirname(root), { recursive: true, force: true }));

describe('map stages in shards', () => {
  it('cam in 3 shards: the same cams rows, and the same bytes downstream', async () => {
    const camsRows = byId(await readAll(at('cache/cams.arrow')));
    await runStages(root, ['cam'], ['cam.shards=3'], true);
    expect(await partFiles(at('cache/cams.arrow'))).toEqual([0, 1, 2].map((k) => `part-${k}-of-3.arrow`));
    const sharded = await readAll(at('cache/cams.arrow'));
    expect(sharded.map((r) => r.id)).not.toEqual(ids); // rows by part: a reader walking it in step with images.arrow would fail ...
    expect(byId(sharded)).toEqual(camsRows); // ... the rows are the same
    await runStages(root, DOWNSTREAM, ['cam.shards=3'], true);
    for (const f of OUTPUTS) expect((await bytes(f)).equals(unsharded.get(f)!), f).toBe(true);
    await expectSameModels();
  }, 600_000);

  it('affinity and contrast in 2 shards too: the same models and pseudo-masks', async () => {
    const sets = ['cam.shards=3', 'affinity.shards=2', 'contrast.shards=2'];
    const before = { affinity: byId(await readAll(at('cache/affinity_cams.arrow'))), contrast: byId(await readAll(at('cache/contrast_cams.arrow'))) };
    await runStages(root, DOWNSTREAM, sets, true);
    for (const t of ['affinity', 'contrast'] as const) {
      expect(await partFiles(at(`cache/${t}_cams.arrow`))).toEqual(['part-0-of-2.arrow', 'part-1-of-2.arrow']);
      expect(byId(await readAll(at(`cache/${t}_cams.arrow`)))).toEqual(before[t]);
    }
    for (const f of ['models/affinity/weights/weights.bin', 'models/contrast/weights/weights.bin', 'cache/pseudo_masks.arrow']) {
      expect((await bytes(f)).equals(unsharded.get(f)!), f).toBe(true);
    }
    await expectSameModels();
    // whole runs write the overall metrics and no part metrics
    await expect(fs.access(at('metrics/contrast.json'))).resolves.toBeUndefined();
    await expect(fs.access(at('metrics/contrast'))).rejects.toThrow();
  }, 600_000);

  it('three `tagseg run cam --shard k/3` processes write the same parts as one process', async () => {
    const seq = at('cache/cams.arrow');
    const one = new Map(await Promise.all((await partFiles(seq)).map(async (f) => [f, await fs.readFile(path.join(seq, f))] as const)));
    await fs.rm(seq, { recursive: true });
    const run = promisify(execFile);
    const cli = path.join(REPO, 'bin/tagseg.js');
    const outs = await Promise.all([0, 1, 2].map((k) => run(process.execPath, [cli, '--root', root, '-q', 'run', 'cam', '--shard', `${k}/3`, '--set', 'cam.shards=3', '--json'], { cwd: REPO })));
    const rows = outs.map((o) => (JSON.parse(o.stdout) as { cam: { rows: number } }).cam.rows);
    expect(rows).toEqual([0, 1, 2].map((k) => ids.filter((id) => shardOf(id, 3) === k).length));
    expect(rows.every((n) => n > 0)).toBe(true);
    for (const k of [0, 1, 2]) await fs.access(at(`metrics/cam/part-${k}-of-3.json`));
    expect(await partFiles(seq)).toEqual([...one.keys()]);
    for (const [f, b] of one) expect((await fs.readFile(path.join(seq, f))).equals(b), f).toBe(true);
    // negative control: a part of another run (cam.flip off) is seen by the same comparison
    await run(process.execPath, [cli, '--root', root, '-q', 'run', 'cam', '--shard', '1/3', '--set', 'cam.shards=3', '--set', 'cam.flip=false'], { cwd: REPO });
    expect((await fs.readFile(path.join(seq, 'part-1-of-3.arrow'))).equals(one.get('part-1-of-3.arrow')!)).toBe(false);
    // and rerunning that shard alone puts its part back, byte for byte (the other parts untouched)
    await run(process.execPath, [cli, '--root', root, '-q', 'run', 'cam', '--shard', '1/3', '--set', 'cam.shards=3'], { cwd: REPO });
    for (const [f, b] of one) expect((await fs.readFile(path.join(seq, f))).equals(b), f).toBe(true);
  }, 600_000);

  it('rejects a --shard that does not match <stage>.shards', async () => {
    for (const name of ['cam', 'affinity', 'contrast']) {
      await expect(runStages(root, [name], [`${name}.shards=2`], true, { k: 0, n: 3 })).rejects.toThrow(new RegExp(`--shard 0/3 does not match ${name}.shards: 2`));
    }
  });

  it('negative control: one changed cams row changes models/affinity/config.json (its training hash)', async () => {
    const config = 'models/affinity/config.json';
    const part = at('cache/cams.arrow/part-0-of-3.arrow');
    const info = await readInfo(part);
    const rows = await readAll(part);
    const w = await TableWriter.open(part, info.columns, info.meta);
    for (const [i, r] of rows.entries()) await w.write(i === 0 ? { ...r, cams: new Uint8Array((r.cams as Uint8Array).length) } : r);
    await w.close();
    await runStages(root, ['affinity_train'], ['cam.shards=3'], true);
    expect((await bytes(config)).equals(unshardedModels.get(config)!)).toBe(false);
    const hash = (b: Buffer) => (JSON.parse(b.toString()) as { paramsHash: string }).paramsHash;
    expect(hash(await bytes(config))).not.toBe(hash(unshardedModels.get(config)!));
  }, 600_000);
});

const { python, why } = findPython(['pyarrow']);
const noPython = skipWithout('map-stage part folder pyarrow', python ? undefined : why);

describe.skipIf(noPython)('pyarrow dataset() reads a map stage part folder', () => {
  it('cams.arrow in 3 parts as one table', async () => {
    const table = at('cache/cams.arrow');
    expect((await fs.stat(table)).isDirectory()).toBe(true);
    const script = `
import sys, json, pyarrow.dataset as ds
t = ds.dataset(sys.argv[1], format='ipc').to_table()
print(json.dumps({'ids': sorted(t.column('id').to_pylist()), 'bytes': sum(len(b) for b in t.column('cams').to_pylist())}))
`;
    const { stdout } = await promisify(execFile)(python!, ['-c', script, table]);
    const r = JSON.parse(stdout) as { ids: string[]; bytes: number };
    const rows = await readAll(table);
    expect(r.ids).toEqual([...ids].sort());
    expect(r.bytes).toBe(rows.reduce((a, row) => a + (row.cams as Uint8Array).length, 0));
  });
});
