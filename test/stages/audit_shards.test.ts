/**
 * Downstream of sharded stages: audit reads cache/pseudo_masks.arrow (and the map tables) as folders of parts (rows
 * by part, not in images.arrow's order) and writes the same audit tables as from the single file.
 *
 * The audit's own per-image pass in shards (audit.shards 3, 12 hand-made images): one process running
 * every shard and three parallel `tagseg run audit --shard k/3` processes write the same parts byte
 * for byte; cache/audit.arrow holds the unsharded rows (joined by id), and audit_report then writes
 * cache/audit_images.arrow, reports/audit/ (every file), metrics/audit.json and the class plot
 * byte-identical to the unsharded run's. A changed record, a missing part or overlay folder is seen.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Row, TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { setQuiet } from '../../pipeline/log.js';
import { DEFAULT_PARAMS_YAML, defaultParams } from '../../stages/params.js';
import { runStages } from '../../stages/index.js';
import { REPO } from '../helpers/python.js';
import { partPath, prepareTableFor, shardOf } from '../../pipeline/shard.js';
import { FIXTURE_IMAGES, type FixtureImage, PSEUDO_COLUMNS, runAudit, writeAuditFixture } from './audit_fixtures.js';

let root: string;
const at = (rel: string) => path.join(root, rel);
const params = defaultParams();
const audit = () => runAudit({ params, path: (rel) => path.resolve(root, rel) });

beforeAll(async () => {
  setQuiet(true);
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-audit-shards-'));
  await writeAuditFixture(root);
});
afterAll(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

/** Rewrites a table (default the pseudo-masks) as `n` parts, each id in its shard's part. */
async function shardPseudo(n: number, rel = 'cache/pseudo_masks.arrow'): Promise<void> {
  const table = at(rel);
  const rows = await readAll(table);
  const info = await readInfo(table);
  await prepareTableFor(table, n);
  for (let k = 0; k < n; k++) {
    const w = await TableWriter.open(partPath(table, { k, n }), info.columns, info.meta);
    for (const r of rows) if (shardOf(r.id as string, n) === k) await w.write(r);
    await w.close();
  }
}

const tables = ['cache/audit.arrow', 'cache/audit_images.arrow'];
let before: Awaited<ReturnType<typeof readAll>>[];
let one: Awaited<ReturnType<typeof audit>>;

describe('audit on a sharded pseudo-mask table', () => {
  it('writes the same tables as from the single file', async () => {
    one = await audit();
    before = await Promise.all(tables.map((t) => readAll(at(t))));
    await shardPseudo(3);
    const ids = (await readAll(at('cache/pseudo_masks.arrow'))).map((r) => r.id);
    const order = (await readAll(at('cache/dataset.arrow'))).map((r) => r.id);
    expect(ids).not.toEqual(order); // the folder's own order differs from images.arrow's
    const three = await audit();
    expect(await Promise.all(tables.map((t) => readAll(at(t))))).toEqual(before);
    expect(three.summary).toEqual(one.summary);
  }, 60_000);

  it('and with the map tables sharded too (cams 3, affinity_cams 2, contrast_cams 4 parts)', async () => {
    await shardPseudo(3, 'cache/cams.arrow');
    await shardPseudo(2, 'cache/affinity_cams.arrow');
    await shardPseudo(4, 'cache/contrast_cams.arrow');
    const sharded = await audit();
    expect(await Promise.all(tables.map((t) => readAll(at(t))))).toEqual(before);
    expect(sharded.summary).toEqual(one.summary);
  }, 60_000);

  it('names the part when one comes from another run', async () => {
    // the largest part, rows reversed
    const parts = await Promise.all([0, 1, 2].map(async (k) => ({ k, rows: await readAll(partPath(at('cache/pseudo_masks.arrow'), { k, n: 3 })) })));
    const { k, rows } = parts.reduce((a, b) => (b.rows.length > a.rows.length ? b : a));
    expect(rows.length).toBeGreaterThan(1);
    const part = partPath(at('cache/pseudo_masks.arrow'), { k, n: 3 });
    const w = await TableWriter.open(part, PSEUDO_COLUMNS, (await readInfo(part)).meta);
    for (const r of rows.reverse()) await w.write(r);
    await w.close();
    await expect(audit()).rejects.toThrow(new RegExp(`part-${k}-of-3\\.arrow.*was expected`, 's'));
  }, 60_000);
});

describe("the audit's per-image pass in 3 shards", () => {
  // 12 images: the four hand-made ones, thrice, boxes shifted (every shard gets some)
  const IMAGES: FixtureImage[] = [0, 1, 2].flatMap((j) => FIXTURE_IMAGES.map((im) => ({
    ...im, id: `${im.id}-${j}`, box: im.box.map((v) => v + j) as FixtureImage['box'],
  })));
  const ids = IMAGES.map((im) => im.id);
  const SHARDED = ['audit.shards=3'];
  let ws: string;
  const w = (rel: string) => path.join(ws, rel);
  const run = promisify(execFile);
  const cli = path.join(REPO, 'bin/tagseg.js');
  const tagseg = (...args: string[]) => run(process.execPath, [cli, '--root', ws, '-q', ...args], { cwd: REPO });
  const REPORT = ['cache/audit_images.arrow', 'reports/audit', 'metrics/audit.json', 'plots/audit_classes.json'];
  const PARTS = ['cache/audit.arrow', 'cache/audit_measures.arrow', 'cache/audit_overlays'];
  const byId = (rows: Row[]) => [...rows].sort((a, b) => ((a.id as string) < (b.id as string) ? -1 : a.id === b.id ? (a.class as number) - (b.class as number) : 1));

  /** Every file under the project paths `rels` (path -> bytes). */
  async function files(rels: string[]): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    for (const rel of rels) {
      const st = await fs.stat(w(rel));
      const names = st.isDirectory() ? (await fs.readdir(w(rel), { recursive: true, withFileTypes: true })).filter((e) => e.isFile()).map((e) => path.relative(ws, path.join(e.parentPath, e.name))) : [rel];
      for (const n of names) out.set(n, await fs.readFile(w(n)));
    }
    return out;
  }
  const expectSame = (got: Map<string, Buffer>, want: Map<string, Buffer>) => {
    expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
    for (const [f, b] of want) expect(got.get(f)!.equals(b), f).toBe(true);
  };
  let unsharded: { rows: Row[]; report: Map<string, Buffer> };
  let oneProcess: Map<string, Buffer>;

  beforeAll(async () => {
    ws = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-audit-parts-'));
    await writeAuditFixture(ws, IMAGES);
    await fs.writeFile(w('params.yaml'), DEFAULT_PARAMS_YAML);
    await runStages(ws, ['audit', 'audit_report'], [], true);
    unsharded = { rows: byId(await readAll(w('cache/audit.arrow'))), report: await files(REPORT) };
    expect(unsharded.report.size).toBeGreaterThan(12 * 5); // the overlays of every image
  }, 120_000);
  afterAll(async () => fs.rm(ws, { recursive: true, force: true }));

  it('one process: three parts each, the same audit rows, and audit_report the same bytes', async () => {
    await runStages(ws, ['audit', 'audit_report'], SHARDED, true);
    for (const t of ['cache/audit.arrow', 'cache/audit_measures.arrow']) expect((await fs.readdir(w(t))).sort()).toEqual([0, 1, 2].map((k) => `part-${k}-of-3.arrow`));
    expect((await fs.readdir(w('cache/audit_overlays'))).sort()).toEqual([0, 1, 2].map((k) => `part-${k}-of-3`));
    const rows = await readAll(w('cache/audit.arrow'));
    expect([...new Set(rows.map((r) => r.id))]).not.toEqual(ids); // rows by part ...
    expect(byId(rows)).toEqual(unsharded.rows); // ... the same rows
    expectSame(await files(REPORT), unsharded.report);
    oneProcess = await files(PARTS);
  }, 120_000);

  it('three parallel `tagseg run audit --shard k/3` processes write the same parts; audit_report the same bytes', async () => {
    // from the unsharded outputs: the three processes turn each file into a folder at the same time
    await runStages(ws, ['audit'], [], true);
    await fs.rm(w('reports'), { recursive: true });
    const outs = await Promise.all([0, 1, 2].map((k) => tagseg('run', 'audit', '--shard', `${k}/3`, '--set', SHARDED[0], '--json')));
    const images = outs.map((o) => (JSON.parse(o.stdout) as { audit: { images: number } }).audit.images);
    expect(images).toEqual([0, 1, 2].map((k) => ids.filter((id) => shardOf(id, 3) === k).length));
    expect(images.every((n) => n > 0)).toBe(true);
    expectSame(await files(PARTS), oneProcess);
    await tagseg('run', 'audit_report');
    expectSame(await files(REPORT), unsharded.report);
  }, 120_000);

  it('negative controls: a changed record changes the report; a missing part or overlay folder is named', async () => {
    const part = w('cache/audit_measures.arrow/part-1-of-3.arrow');
    const info = await readInfo(part);
    const rows = await readAll(part);
    const rec = JSON.parse(rows[0].record as string) as { image: { suspicion: number } };
    rec.image.suspicion += 0.5;
    const wr = await TableWriter.open(part, info.columns, info.meta);
    for (const [i, r] of rows.entries()) await wr.write(i === 0 ? { ...r, record: JSON.stringify(rec) } : r);
    await wr.close();
    await runStages(ws, ['audit_report'], SHARDED, true);
    const changed = await files(REPORT);
    for (const f of ['cache/audit_images.arrow', 'metrics/audit.json', 'reports/audit/images.csv']) expect(changed.get(f)!.equals(unsharded.report.get(f)!), f).toBe(false);
    await fs.rm(w('cache/audit_overlays/part-2-of-3'), { recursive: true });
    await expect(runStages(ws, ['audit_report'], SHARDED, true)).rejects.toThrow(/overlay folder not found.*tagseg run audit --shard 2\/3/s);
    await fs.rm(part);
    await expect(runStages(ws, ['audit_report'], SHARDED, true)).rejects.toThrow(/part-1-of-3.arrow' is missing.*tagseg run audit --shard 1\/3/s);
    await expect(runStages(ws, ['audit'], ['audit.shards=2'], true, { k: 0, n: 3 })).rejects.toThrow(/--shard 0\/3 does not match audit.shards: 2/);
  }, 120_000);
});
