/**
 * `tagseg cv --oof` (cli/cv_oof.ts) end to end on the tiny synthetic workspace of cv.test.ts:
 * pseudo-masks = ground truth with 4 ignored rows, except two images whose masks are shifted to
 * the wrong class everywhere. Every train image gets a row scored by the model of the fold that
 * held it out; the two corrupted masks have the lowest mean label probability (control: with their
 * masks restored they do not); the table is the runs' records; a rerun keeps every run.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CvRun, runCv } from '../../cli/cv.js';
import { type LabelQualityRow, readLabelQuality } from '../../eval/label_quality.js';
import { readAll } from '../../pipeline/arrow.js';
import { initBackend } from '../../pipeline/backend.js';
import { setQuiet } from '../../pipeline/log.js';
import { CV_SHORT, CV_TINY, segmentWorkspace, shiftPseudoMasks } from '../stages/segment_fixtures.js';


let root: string;
let corrupted: string[];
beforeAll(async () => {
  setQuiet(true);
  await initBackend();
  root = await segmentWorkspace('oof', CV_TINY, { ignoreRows: 4 });
  const train = (await readAll(path.join(root, 'cache/dataset.arrow'))).filter((r) => r.split === 'train').map((r) => r.id as string);
  corrupted = [train[2], train[7]];
  await shiftPseudoMasks(root, corrupted);
}, 300_000);
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

/** Rewrite pseudo_masks.arrow with every labelled pixel of `ids` moved to the next class (wrong everywhere). */
/** The `n` ids with the lowest `key`, sorted by id. */
function worstBy(table: Map<string, LabelQualityRow>, key: 'label_quality' | 'self_confidence', n = 2): string[] {
  return [...table.values()].sort((a, b) => a[key]! - b[key]!).slice(0, n).map((r) => r.id).sort();
}

describe('cv --oof: out-of-fold label quality', () => {
  it('scores every train image with the model that held it out; corrupted masks rank worst', async () => {
    const s = await runCv({ root, ...CV_SHORT, oof: true });
    const table = (await readLabelQuality(path.join(root, 'review/label_quality.csv')))!;
    const { folds } = JSON.parse(await fs.readFile(path.join(root, s.dir, 'protocol.json'), 'utf8')) as { folds: string[][] };
    expect([...table.keys()].sort()).toEqual(folds.flat().sort());
    expect(folds.flat()).toHaveLength(12);
    expect(s.label_quality).toEqual({ file: 'review/label_quality.csv', images: 12, mean: expect.any(Number) });
    for (let k = 0; k < 2; k++) {
      const run = JSON.parse(await fs.readFile(path.join(root, s.dir, `fold${k}-seed0.json`), 'utf8')) as CvRun;
      expect(run.oof!.map((o) => o.id).sort()).toEqual([...folds[k]].sort());
      for (const o of run.oof!) {
        const row = table.get(o.id)!;
        expect(row.fold).toBe(k);
        expect(row.label_quality).toBeCloseTo(o.quality!, 5); // one seed: the table is the record
        expect(o.pixels).toBe(28 * 32); // 4 ignored rows left out
        expect(o.quality!).toBeLessThanOrEqual(o.self_confidence! + 1e-9); // softmin <= mean
      }
    }
    // The two corrupted masks have the lowest mean probability of their labels. (The softmin at
    // cleanlab's T = 0.1 is set by each image's worst pixels, object outlines a 4-epoch model gets
    // wrong in every image: measured 0.143-0.146 for them against 0.143-0.308 for the others.)
    expect(worstBy(table, 'self_confidence')).toEqual([...corrupted].sort());
    // The file lists the worst softmin first.
    const lines = (await fs.readFile(path.join(root, 'review/label_quality.csv'), 'utf8')).trim().split('\n').slice(1);
    expect(lines[0].split(',')[0]).toBe(worstBy(table, 'label_quality', 1)[0]);
    expect(await fs.readFile(path.join(root, s.dir, 'label_quality.csv'), 'utf8')).toBe(await fs.readFile(path.join(root, 'review/label_quality.csv'), 'utf8'));
    // A rerun trains nothing and writes the same table.
    const trained: boolean[] = [];
    const again = await runCv({ root, ...CV_SHORT, oof: true, onRun: (_r, t) => trained.push(t) });
    expect(trained).toEqual([false, false]);
    expect(again).toEqual(s);
    // the CLI finds the same protocol and says where the table went
    const cli = await execa('node', [path.resolve('bin/tagseg.js'), '-q', 'cv', '--folds', '2', '--seeds', '1', '--epochs-factor', '0.5', '--oof'], { cwd: root, reject: false });
    expect(cli.exitCode, cli.stderr).toBe(0);
    expect(cli.stdout).toMatch(/out-of-fold label quality \(softmin, cleanlab\): 12 images, mean 0\.\d{3} -> review\/label_quality\.csv/);
    expect(cli.stdout).toContain(s.recipe);
  }, 300_000);

  it('pairs with the oracle for the weak / oracle ratio: every train image has a mask, so the folds are the same', async () => {
    const oof = await runCv({ root, ...CV_SHORT, oof: true });
    const oracle = await runCv({ root, ...CV_SHORT, oracle: true });
    expect(oracle.fold_sizes).toEqual(oof.fold_sizes);
    expect(oracle.weak_oracle?.weak).toEqual(oof.segmenter.miou);
    expect(oracle.pseudo_masks?.from).toBe(oof.dir);
    const again = await runCv({ root, ...CV_SHORT, oof: true }); // and the oof summary finds the oracle
    expect(again.weak_oracle?.ratio).toBeCloseTo(oof.segmenter.miou.mean! / oracle.segmenter.miou.mean!, 3);
  }, 300_000);

  it('the plain protocol takes the finished --oof runs (same folds, same training) instead of training again', async () => {
    const oof = await runCv({ root, ...CV_SHORT, oof: true });
    const trained: boolean[] = [];
    const plain = await runCv({ root, ...CV_SHORT, onRun: (_r, t) => trained.push(t) });
    expect(trained).toEqual([false, false]);
    expect(plain.recipe).not.toBe(oof.recipe);
    expect(plain.segmenter).toEqual(oof.segmenter);
    const run = JSON.parse(await fs.readFile(path.join(root, plain.dir, 'fold1-seed0.json'), 'utf8')) as CvRun;
    expect(run).toMatchObject({ recipe: plain.recipe, adopted_from: oof.recipe, fold: 1, seed: 0 });
    expect(run.oof).toBeUndefined();
    // control: a recipe the oof runs are not (another segment setting) trains its own
    const other: boolean[] = [];
    await runCv({ root, ...CV_SHORT, sets: ['segment.lr=0.003'], onRun: (_r, t) => other.push(t) });
    expect(other).toEqual([true, true]);
  }, 300_000);

  it('control: with the masks restored, those images are not the worst', async () => {
    await shiftPseudoMasks(root, corrupted, true);
    try {
      const s = await runCv({ root, ...CV_SHORT, oof: true });
      const table = (await readLabelQuality(path.join(root, 'review/label_quality.csv')))!;
      expect(worstBy(table, 'self_confidence')).not.toEqual([...corrupted].sort());
      expect(s.label_quality!.images).toBe(12);
    } finally {
      await shiftPseudoMasks(root, corrupted);
    }
  }, 300_000);

  it('refuses --oof with the oracle', async () => {
    await expect(runCv({ root, ...CV_SHORT, oof: true, oracle: true })).rejects.toThrow(/--oof .* needs segment.labels: pseudo/);
  });
});
