/**
 * End to end through the real dvc.yaml cmds: synth -> ingest -> cam -> affinity -> contrast ->
 * refine -> audit -> audit_report on a tiny synthetic set; the audit's tables cover every image and tagged class,
 * the report and metrics exist, and `tagseg audit --json` prints the same summary. Every stage the
 * audit reads must be registered (stages/index.ts): a missing one fails, it is not skipped.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAll } from '../../pipeline/arrow.js';
import { repro } from '../../cli/dag.js';
import { REPO_ROOT, createWorkspace } from '../../cli/workspace.js';
import { STAGE_NAMES } from '../../stages/index.js';
import { expectFloorAboveBaseline, expectScore, trivialBaseline } from '../helpers/quality.js';

// Quality floors (fractions, as in the metrics file): measured on this test's tiny config, minus a margin of
// 0.05 (rounded down to 0.01) for float differences between CPUs and thread counts. Measured gt.miou.final
// 0.3923; the trivial baseline (background everywhere, test/helpers/quality.ts) on the same 32 images is
// 0.1789, and the floor must stay ABOVE_BASELINE over it, so pseudo-masks of models that learnt nothing fail.
const FLOOR = { final: 0.34 };
const ABOVE_BASELINE = 0.05;

const UPSTREAM = ['ingest', 'cam_train', 'cam', 'affinity_train', 'affinity', 'contrast_train', 'contrast', 'refine'];

/** The upstream stages of test/e2e/pipeline.test.ts's tiny config (enough epochs that the pseudo-masks learn something). */
const TINY = [
  'synth.images=32', 'synth.size=48', 'ingest.size=32',
  'cam.width=8', 'cam.epochs=20', 'cam.lr=0.01', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
  'affinity.epochs=3', 'affinity.radius=3', 'affinity.batch_size=4', 'affinity.crop=32', 'affinity.dim=16', 'affinity.logt=4',
  'contrast.epochs=8', 'contrast.batch_size=4', 'contrast.crop=32', 'contrast.scales=[1.0]', 'contrast.memory_size=16', 'contrast.dim=16',
];

let root: string;
beforeAll(async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-e2e-audit-'));
  root = await createWorkspace(path.join(tmp, 'ws'), TINY);
});
afterAll(async () => {
  if (root) await fs.rm(path.dirname(root), { recursive: true, force: true });
});

describe('audit end to end', () => {
  it('every stage the audit reads is registered', () => {
    for (const s of [...UPSTREAM, 'audit', 'audit_report']) expect(STAGE_NAMES, `stage '${s}' in stages/index.ts`).toContain(s);
  });

  it('repro audit_report runs the chain and audits every image; tagseg audit --json reports the same', async () => {
    const r = await repro(root, { target: 'audit_report' });
    expect(r.failed?.message).toBeUndefined();
    expect(r.stages.map((s) => s.name)).toEqual(['synth', ...UPSTREAM, 'audit', 'audit_report']);
    const masks = await readAll(path.join(root, 'cache/pseudo_masks.arrow'), { stage: 'refine' });
    const images = await readAll(path.join(root, 'cache/audit_images.arrow'), { stage: 'audit' });
    expect(images.map((x) => x.id).sort()).toEqual(masks.map((x) => x.id).sort());
    expect(images.map((x) => x.rank)).toEqual(images.map((_, i) => i + 1));
    const suspicion = images.map((x) => x.suspicion as number);
    expect(suspicion).toEqual([...suspicion].sort((a, b) => b - a));
    const pairs = await readAll(path.join(root, 'cache/audit.arrow'), { stage: 'audit' });
    for (const m of masks) {
      const tagged = pairs.filter((p) => p.id === m.id && p.tagged).map((p) => p.class);
      for (const t of m.tags as number[]) expect(tagged).toContain(t);
    }
    const metrics = JSON.parse(await fs.readFile(path.join(root, 'metrics/audit.json'), 'utf8'));
    expect(metrics.images).toBe(32);
    expectScore('audit e2e: gt.miou.final', metrics.gt.miou.final, FLOOR.final);
    const baseline = await trivialBaseline(root);
    expect(baseline.images).toBe(32);
    expectFloorAboveBaseline('audit e2e: gt.miou.final', FLOOR.final, baseline, ABOVE_BASELINE);
    for (const f of ['index.html', 'data.js', 'images.csv', 'audit.csv', 'classes.csv']) {
      await expect(fs.access(path.join(root, 'reports/audit', f))).resolves.toBeUndefined();
    }
    expect((await fs.readdir(path.join(root, 'reports/audit/img/final'))).length).toBe(32);
    expect((await fs.readdir(path.join(root, 'reports/audit/img/full'))).length).toBe(32);

    // The stage's top images are in its summary: the run log of the repro above (the CLI run below overwrites it).
    const first = JSON.parse(await fs.readFile(path.join(root, '.tagseg/runs/audit_report.json'), 'utf8')).summary;
    const cli = await execa('node', [path.join(REPO_ROOT, 'bin/tagseg.js'), '--root', root, '-q', 'audit', '--json'], { cwd: root });
    const out = JSON.parse(cli.stdout);
    expect(out.images).toBe(32);
    expect(metrics.top).toBeUndefined();
    expect(out.top.map((t: { id: string }) => t.id)).toEqual(first.top.map((t: { id: string }) => t.id));
    expect(out.report).toBe(path.join(root, 'reports/audit/index.html'));
  }, 300_000);
});
