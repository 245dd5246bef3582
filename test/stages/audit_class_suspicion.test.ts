/**
 * Per-(image, class) suspicion: the terms from one class's evidence (suspicion.ts), stored in
 * cache/audit.arrow, and used to rank a class filter (export selection; the report does the same).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAll } from '../../pipeline/arrow.js';
import { setQuiet } from '../../pipeline/log.js';
import { defaultParams } from '../../stages/params.js';
import { classSuspicionTerms } from '../../stages/audit/suspicion.js';
import { runAudit, writeAuditFixture } from './audit_fixtures.js';

const clean = { ignore_fraction: 0, confidence: 0.9, iou_cam_final: 1, iou_rca_final: 1, largest_share: 1, boundary_alignment: 1, empty_tag: false, large_low_confidence: false };

describe('classSuspicionTerms', () => {
  it('is 0 for a clean class and raises each term from its own evidence', () => {
    const t = classSuspicionTerms(clean, true, 0.2);
    expect(t).toEqual({ ignore: 0, low_confidence: expect.closeTo(0.1, 6), disagreement: 0, empty_tags: 0, fragmentation: 0, misalignment: 0, large_low_confidence: 0 });
    const bad = classSuspicionTerms({ ...clean, ignore_fraction: 0.5, confidence: null, iou_cam_final: 0.2, iou_rca_final: null, largest_share: 0.25, boundary_alignment: 0.2, empty_tag: true }, true, 0.2);
    expect(bad).toMatchObject({ ignore: 0.5, low_confidence: 1, disagreement: 0.8, empty_tags: 1, fragmentation: 0.75, misalignment: 1 });
    // background never counts as fragmented
    expect(classSuspicionTerms({ ...clean, largest_share: 0.25 }, false, 0.2).fragmentation).toBe(0);
  });
});

describe('per-class suspicion in cache/audit.arrow', () => {
  let root: string;
  beforeAll(async () => {
    setQuiet(true);
    root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-class-sus-'));
    await writeAuditFixture(root);
    await runAudit({ params: defaultParams(), path: (rel) => path.resolve(root, rel) });
  });
  afterAll(async () => { await fs.rm(root, { recursive: true, force: true }); });

  it("ranks the lost 'dog' of the bad image above the good dog; ground-truth-only rows have none", async () => {
    const rows = await readAll(path.join(root, 'cache/audit.arrow'), { stage: 'audit' });
    const sus = (id: string, c: string) => rows.find((r) => r.id === id && r.class_name === c)?.suspicion as number | null;
    expect(sus('bad', 'dog')!).toBeGreaterThan(sus('good-2', 'dog')! + 0.3);
    expect(rows.find((r) => r.id === 'bad' && r.class_name === 'dog')?.reasons).toContain('empty_tags');
    expect(sus('good-1', 'cat')!).toBeLessThan(0.2);
    // the bad image's cat is in its mask (wrongly) but untagged: scored; its ground truth has no cat
    expect(sus('bad', 'cat')).not.toBeNull();
    for (const r of rows) if (!r.tagged && (r.area as number) === 0) expect(r.suspicion).toBeNull();
  });
});
