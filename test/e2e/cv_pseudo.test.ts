/**
 * `tagseg cv --choose` (cli/cv_pseudo.ts) end to end on a tiny synthetic workspace (16 images of
 * 32 px, 12 with masks in the train split; cam trained 1 epoch by repro, refine.source cam, a
 * 2-iteration CRF): 2 candidates of refine.bg_threshold over 3 folds. Output shape, the candidate
 * equal to params.yaml against the refine stage's own masks, resume (nothing refined again, an
 * interrupted candidate finishes its missing images only), a grid reusing a candidate, bad
 * --choose arguments, and the CLI.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { assignFolds } from '../../cli/cv.js';
import { runPseudoChoice } from '../../cli/cv_pseudo.js';
import type { PseudoChoiceSummary } from '../../cli/cv_pseudo_summary.js';
import { repro } from '../../cli/dag.js';
import { createWorkspace } from '../../cli/workspace.js';
import { readMask } from '../../data/decode.js';
import { ConfusionMatrix, segmentationScores } from '../../eval/metrics.js';
import { readAll } from '../../pipeline/arrow.js';
import { setQuiet } from '../../pipeline/log.js';
import { loadParams } from '../../stages/params.js';
import { runRefine } from '../../stages/refine/index.js';
import { CV_TINY } from '../stages/segment_fixtures.js';

const CHOOSE = ['refine.bg_threshold=0.3,0.6'];
const SETS = [...CV_TINY, 'refine.source=cam', 'refine.bg_threshold=0.3', 'refine.crf.iterations=2', 'refine.concurrency=1'];

let root: string;
beforeAll(async () => {
  setQuiet(true);
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-cvpseudo-'));
  root = await createWorkspace(path.join(tmp, 'ws'), SETS);
  const r = await repro(root, { target: 'cam' });
  if (!r.ok) throw new Error(`repro cam failed: ${r.failed?.message ?? 'unknown'}`);
}, 300_000);
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

/** Runs the choice, returning the summary and the images each candidate refined now. */
async function choose(choices = CHOOSE): Promise<{ s: PseudoChoiceSummary; refined: number[] }> {
  const refined: number[] = [];
  const s = await runPseudoChoice({ root, folds: 3, choose: choices, onCandidate: (c) => refined.push(c.refined) });
  return { s, refined };
}

/** The train split's ids with a mask, and each one's ground truth. */
async function groundTruth(): Promise<Map<string, Uint8Array>> {
  const rows = (await readAll(path.join(root, 'cache/dataset.arrow'))).filter((r) => r.split === 'train' && r.mask_path);
  const out = new Map<string, Uint8Array>();
  for (const r of rows) out.set(r.id as string, (await readMask(path.join(root, 'datasets/synthetic', r.mask_path as string), r.orig_width as number, r.orig_height as number)).data);
  return out;
}

describe('cv --choose: nested CV of refine settings (tiny)', () => {
  let first: PseudoChoiceSummary;

  it('refines each candidate once, chooses per fold on the other folds and scores the held-out one', async () => {
    const { s, refined } = await choose();
    first = s;
    expect(refined).toEqual([12, 12]);
    const gt = await groundTruth();
    const ids = [...gt.keys()];
    const { folds } = JSON.parse(await fs.readFile(path.join(root, s.dir, 'protocol.json'), 'utf8')) as { folds: string[][] };
    expect(folds).toEqual(assignFolds(ids, 3, 0)); // the folds of `tagseg cv`
    expect(s.fold_sizes).toEqual([4, 4, 4]);
    expect(s.dir).toBe(`runs/cv/refine/choice-${s.choice}`);
    expect(s.keys).toEqual(['refine.bg_threshold']);
    expect(s.candidates.map((c) => [c.label, c.settings])).toEqual([['bg_threshold=0.3', { 'refine.bg_threshold': 0.3 }], ['bg_threshold=0.6', { 'refine.bg_threshold': 0.6 }]]);
    for (const c of s.candidates) {
      expect((await fs.readFile(path.join(root, c.dir, 'images.jsonl'), 'utf8')).trim().split('\n')).toHaveLength(12);
      expect((await fs.readdir(path.join(root, c.dir, 'masks'))).sort()).toEqual(ids.map((id) => `${id}.png`).sort());
      expect(c.all_images.images).toBe(12);
      expect(c.per_fold.map((f) => f.images)).toEqual([4, 4, 4]);
    }
    expect(s.candidates[0].all_images.miou).not.toBe(s.candidates[1].all_images.miou); // the two candidates differ
    // Each fold: the candidate best on the other two folds' images, scored on its own.
    expect(s.folds).toHaveLength(3);
    for (const f of s.folds) {
      const i = s.candidates.findIndex((c) => c.label === f.chosen);
      expect(f.held_out).toEqual(s.candidates[i].per_fold[f.fold]);
      expect(f.chosen_on.images).toBe(8);
      for (const c of s.candidates) {
        const j = s.candidates.indexOf(c);
        const on = await pooledMiou(path.join(root, c.dir), folds.filter((_, k) => k !== f.fold).flat(), gt);
        if (j === i) expect(f.chosen_on.miou).toBeCloseTo(on, 10);
        else expect(on).toBeLessThanOrEqual(f.chosen_on.miou!);
      }
    }
    expect(s.candidates.reduce((a, c) => a + c.chosen, 0)).toBe(3);
    expect(s.estimate.miou.n).toBe(3);
    expect(s.notes.all_images).toMatch(/^train masks, all folds — not for choosing/);
    expect(JSON.parse(await fs.readFile(path.join(root, s.dir, 'summary.json'), 'utf8'))).toEqual(s);
  }, 120_000);

  it('the candidate equal to params.yaml makes the refine stage\'s own masks (control: the other does not)', async () => {
    const params = await loadParams(path.join(root, 'params.yaml'));
    await runRefine({ params, path: (rel) => path.join(root, rel) });
    const stage = new Map((await readAll(path.join(root, 'cache/pseudo_masks.arrow'))).map((r) => [r.id as string, r.mask as Uint8Array]));
    const gt = await groundTruth();
    const differing = async (dir: string) => {
      let n = 0;
      for (const id of gt.keys()) if (!Buffer.from((await readMask(path.join(root, dir, 'masks', `${id}.png`), 32, 32)).data).equals(Buffer.from(stage.get(id)!))) n++;
      return n;
    };
    expect(await differing(first.candidates[0].dir)).toBe(0);
    expect(await differing(first.candidates[1].dir)).toBeGreaterThan(0);
    const cm = new ConfusionMatrix(5);
    for (const [id, g] of gt) cm.add(stage.get(id)!, g);
    expect(first.candidates[0].all_images.miou).toBeCloseTo(segmentationScores(cm).fullMiou!, 10);
  }, 120_000);

  it('a rerun refines nothing; an interrupted candidate refines only its missing images; another grid reuses its shared candidate', async () => {
    const again = await choose();
    expect(again.refined).toEqual([0, 0]);
    expect(again.s).toEqual(first);
    // What a kill during candidate 2 leaves: 9 records and a line cut short.
    const file = path.join(root, first.candidates[1].dir, 'images.jsonl');
    const lines = (await fs.readFile(file, 'utf8')).trim().split('\n');
    await fs.writeFile(file, `${lines.slice(0, 9).join('\n')}\n${lines[9].slice(0, 40)}`);
    const resumed = await choose();
    expect(resumed.refined).toEqual([0, 3]);
    expect(resumed.s).toEqual(first);
    expect((await fs.readFile(file, 'utf8')).trim().split('\n')).toHaveLength(12);
    // A candidate keys only the tables it reads: another source's table changing leaves it as it is.
    await fs.writeFile(path.join(root, 'cache/affinity_cams.arrow'), 'not read by refine.source cam');
    const unrelated = await choose();
    expect(unrelated.refined).toEqual([0, 0]);
    await fs.rm(path.join(root, 'cache/affinity_cams.arrow'));
    const other = await choose(['refine.bg_threshold=0.3,0.45']);
    expect(other.refined).toEqual([0, 12]);
    expect(other.s.choice).not.toBe(first.choice);
    expect(other.s.candidates[0]).toEqual(first.candidates[0]);
  }, 120_000);

  it('bad --choose arguments name the fix', async () => {
    const bad = (c: string[]) => runPseudoChoice({ root, folds: 3, choose: c });
    await expect(bad(['segment.lr=0.1,0.2'])).rejects.toThrow(/^--choose: segment\.lr=0\.1,0\.2: only refine\.\* settings/);
    await expect(bad(['refine.bg_threshold=0.3,2'])).rejects.toThrow(/refine\.bg_threshold: expected a number <= 1/);
    await expect(bad(['refine.bg_thresold=0.3'])).rejects.toThrow(/did you mean 'refine\.bg_threshold'/);
    await expect(bad(['refine.concurrency=1,2'])).rejects.toThrow(/does not change the masks/);
    await expect(bad(['refine.bg_threshold=0.3,0.30'])).rejects.toThrow(/'bg_threshold=0.3' and 'bg_threshold=0.30' are the same settings/);
    await expect(bad(['refine.bg_threshold=0.3', 'refine.bg_threshold=0.4'])).rejects.toThrow(/given twice/);
    await expect(bad([])).rejects.toThrow(/no --choose key/);
  });

  it('CLI: `tagseg cv --choose` prints the same summary; training options are refused; --help teaches it', async () => {
    const tagseg = (args: string[]) => execa('node', [path.resolve('bin/tagseg.js'), '-q', ...args], { cwd: root, reject: false });
    const j = await tagseg(['cv', '--folds', '3', '--choose', CHOOSE[0], '--json']);
    expect(j.stderr).not.toMatch(/tagseg:/);
    expect(JSON.parse(j.stdout)).toEqual(first);
    const t = await tagseg(['cv', '--folds', '3', '--choose', CHOOSE[0]]);
    expect(t.stdout).toContain('not for choosing');
    expect(t.stdout).toMatch(/nested-CV estimate, pseudo-masks at full coverage: \d+\.\d ± \d+\.\d \(mean ± sd over 3 folds\)/);
    const refused = await tagseg(['cv', '--choose', CHOOSE[0], '--seeds', '2', '--oracle']);
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr).toMatch(/--choose trains nothing, so it takes no --seeds, --oracle/);
    const help = await tagseg(['cv', '--help']);
    expect(help.stdout).toMatch(/--choose <key=v1,v2,...>/);
    expect(help.stdout).toContain('tagseg cv --choose refine.bg_threshold=0.15,0.25,0.35');
  }, 120_000);
});

/** Full-coverage mIoU of a candidate's PNG masks on `ids`, counted from the files. */
async function pooledMiou(dir: string, ids: string[], gt: Map<string, Uint8Array>): Promise<number> {
  const cm = new ConfusionMatrix(5);
  for (const id of ids) cm.add((await readMask(path.join(dir, 'masks', `${id}.png`), 32, 32)).data, gt.get(id)!);
  return segmentationScores(cm).fullMiou!;
}
