/**
 * The simulated reviewer (cli/reviewer.ts) on the tiny synthetic workspace of cv.test.ts, two of
 * whose 12 train masks are wrong everywhere: 2 folds x 1 seed x 4 epochs, 10% corrected (1 image)
 * by a ranking that lists a corrupted image first and by a random draw. The corrections are the
 * ground-truth files, each reaches training in exactly the fold that does not hold it out, gains
 * are the per-seed differences, and a rerun trains nothing.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { CvRun } from '../../cli/cv.js';
import { formatReviewer, randomOrder, reviewerConditions, runReviewer } from '../../cli/reviewer.js';
import { readAll } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { setQuiet } from '../../pipeline/log.js';
import { CV_SHORT, CV_TINY, segmentWorkspace, shiftPseudoMasks } from '../stages/segment_fixtures.js';


let root: string;
let train: string[];
beforeAll(async () => {
  setQuiet(true);
  await initBackend();
  root = await segmentWorkspace('reviewer', CV_TINY, { ignoreRows: 4 });
  train = (await readAll(path.join(root, 'cache/dataset.arrow'))).filter((r) => r.split === 'train').map((r) => r.id as string);
  await shiftPseudoMasks(root, [train[2], train[7]]); // two masks wrong everywhere
}, 300_000);
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

describe('simulated reviewer', () => {
  it('plans none, each ranking and a random draw per share', () => {
    const plan = reviewerConditions(train, [{ name: 'suspicion', ids: [train[7], train[2], ...train] }], [0.1, 0.25], 0);
    expect(plan.map((c) => [c.name, c.corrected.length])).toEqual([['none', 0], ['suspicion-10pct', 1], ['random-10pct', 1], ['suspicion-25pct', 3], ['random-25pct', 3]]);
    expect(plan[1].corrected).toEqual([train[7]]);
    expect(plan[3].corrected).toEqual([train[7], train[2], train[0]]); // repeated ids count once
    expect(randomOrder(train, 0)).not.toEqual(train);
    expect([...randomOrder(train, 0)].sort()).toEqual([...train].sort());
    expect(() => reviewerConditions(train, [{ name: 'short', ids: [train[0]] }], [0.25], 0)).toThrow(/orders 1 of the protocol's images/);
  });

  it('corrects with the ground truth, retrains under the protocol, reports gains, and resumes', async () => {
    const rankings = [{ name: 'suspicion', ids: [train[7], train[2], ...train.filter((id) => id !== train[7] && id !== train[2])] }];
    const r = await runReviewer({ root, ...CV_SHORT, fractions: [0.1], rankings });
    expect(r.conditions.map((c) => c.name)).toEqual(['none', 'suspicion-10pct', 'random-10pct']);
    const [none, sus, rnd] = r.conditions;
    expect(sus.corrected).toEqual([train[7]]);
    expect(rnd.corrected).toHaveLength(1);
    // the correction is the ground-truth file
    const ds = (await readAll(path.join(root, 'cache/dataset.arrow'))).find((x) => x.id === train[7])!;
    expect(await fs.readFile(path.join(root, 'runs/reviewer/corrections/suspicion-10pct', `${train[7]}.png`)))
      .toEqual(await fs.readFile(path.join(root, 'datasets/synthetic', ds.mask_path as string)));
    // used in the training of the one fold that does not hold it out; never with no correction
    const runsOf = async (dir: string) => Promise.all([0, 1].map(async (k) => JSON.parse(await fs.readFile(path.join(root, dir, `fold${k}-seed0.json`), 'utf8')) as CvRun));
    expect((await runsOf(sus.dir)).map((x) => x.corrected ?? 0).sort()).toEqual([0, 1]);
    expect((await runsOf(none.dir)).map((x) => x.corrected ?? 0)).toEqual([0, 0]);
    expect(new Set([none.dir, sus.dir, rnd.dir]).size).toBe(3);
    // gains: per seed against no correction; vs random for the ranking only
    expect(sus.gain!.mean).toBeCloseTo(sus.per_seed[0].miou! - none.per_seed[0].miou!, 4);
    expect(sus.vs_random!.mean).toBeCloseTo(sus.per_seed[0].miou! - rnd.per_seed[0].miou!, 4);
    expect(none.gain).toBeNull();
    expect(rnd.vs_random).toBeNull();
    // one seed: gains paired by fold, so their sd is over the 2 folds
    expect(r.paired_by).toBe('fold');
    const foldGain = (a: typeof sus, b: typeof sus) => Promise.all([0, 1].map(async (k) => (await runsOf(a.dir))[k].segmenter.miou! - (await runsOf(b.dir))[k].segmenter.miou!));
    const g = await foldGain(sus, rnd);
    expect(sus.vs_random!.n).toBe(2);
    expect(sus.vs_random!.sd).toBeCloseTo(Math.abs(g[0] - g[1]) / Math.SQRT2, 4);
    expect(sus.earns_its_place).toBe(sus.vs_random!.mean! > 2 * sus.vs_random!.sd!);
    expect(JSON.parse(await fs.readFile(path.join(root, 'runs/reviewer/reviewer.json'), 'utf8'))).toEqual(r);
    expect(formatReviewer(r)).toMatch(/suspicion-10pct\s+1\s+\d+\.\d/);
    // a rerun keeps every finished run
    const trained: boolean[] = [];
    const again = await runReviewer({ root, ...CV_SHORT, fractions: [0.1], rankings, onRun: (_x, t) => trained.push(t) });
    expect(trained).toEqual([false, false, false, false, false, false]);
    expect(again).toEqual(r);
  }, 300_000);
});
