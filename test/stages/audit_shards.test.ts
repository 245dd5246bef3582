/**
 * Downstream of sharded stages: audit reads cache/pseudo_masks.arrow (and the map tables) as folders of parts (rows
 * by part, not in images.arrow's order) and writes the same audit tables as from the single file.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TableWriter, readAll, readInfo } from '../../pipeline/arrow.js';
import { setQuiet } from '../../pipeline/log.js';
import { defaultParams } from '../../stages/params.js';
import { partPath, prepareTableFor, shardOf } from '../../pipeline/shard.js';
import { runAudit } from '../../stages/audit/index.js';
import { PSEUDO_COLUMNS, writeAuditFixture } from './audit_fixtures.js';

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
