/**
 * `tagseg eval`'s folder scoring on hand-made palette PNGs: a hand-computed confusion matrix,
 * void pixels ignored in the ground truth and reported as coverage in predictions, --ids, and
 * errors that name the offending file.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeIndexedPng } from '../../data/palette.js';
import { evaluateFolders, formatFolderEval, readIdsFile } from '../../eval/segeval.js';

let tmp: string;
const dirs = { pred: '', gt: '', classes: '' };

async function png(dir: string, id: string, values: number[], w: number, h: number): Promise<void> {
  await fs.writeFile(path.join(dir, `${id}.png`), encodeIndexedPng(Uint8Array.from(values), w, h));
}

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-segeval-'));
  dirs.pred = path.join(tmp, 'pred');
  dirs.gt = path.join(tmp, 'gt');
  await fs.mkdir(dirs.pred);
  await fs.mkdir(dirs.gt);
  dirs.classes = path.join(tmp, 'classes.json');
  await fs.writeFile(dirs.classes, JSON.stringify({ classes: ['background', 'cat', 'dog'], background: 0, void: 255 }));
  // image a (2 x 2): gt [0, 1, 1, 255], pred [0, 1, 2, 2] -> (0,0) (1,1) (1,2); the void pixel is not counted
  await png(dirs.gt, 'a', [0, 1, 1, 255], 2, 2);
  await png(dirs.pred, 'a', [0, 1, 2, 2], 2, 2);
  // image b (1 x 3): gt [2, 2, 0], pred [2, 255, 0] -> (2,2) (0,0); one predicted void -> coverage
  await png(dirs.gt, 'b', [2, 2, 0], 3, 1);
  await png(dirs.pred, 'b', [2, 255, 0], 3, 1);
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

describe('evaluateFolders', () => {
  it('scores every predicted PNG against its ground truth (hand-computed)', async () => {
    const r = await evaluateFolders({ pred: dirs.pred, gt: dirs.gt, classes: dirs.classes });
    expect(r.images).toBe(2);
    // rows = gt, columns = pred
    expect(r.confusion).toEqual([[2, 0, 0], [0, 1, 1], [0, 0, 1]]);
    // IoU: bg 2/2, cat 1/(1+1+0)=0.5, dog 1/(1+1)=0.5
    expect(r.iou).toEqual({ background: 1, cat: 0.5, dog: 0.5 });
    expect(r.miou).toBeCloseTo(2 / 3, 6);
    expect(r.pixel_accuracy).toBeCloseTo(4 / 5, 6);
    expect(r.coverage).toBeCloseTo(5 / 6, 6);
    const table = formatFolderEval(r);
    expect(table).toMatch(/cat\s+50\.0/);
    expect(table).toMatch(/mIoU 66\.7/);
  });

  it('scores only the ids given', async () => {
    const r = await evaluateFolders({ pred: dirs.pred, gt: dirs.gt, classes: dirs.classes, ids: ['b'] });
    expect(r.images).toBe(1);
    expect(r.iou).toEqual({ background: 1, cat: null, dog: 1 });
  });

  it('names the file: a missing ground truth, a size mismatch, a label outside the classes', async () => {
    await expect(evaluateFolders({ pred: dirs.pred, gt: dirs.gt, classes: dirs.classes, ids: ['c'] })).rejects.toThrow(/pred\/c\.png: predicted mask not found/);
    const p2 = path.join(tmp, 'pred2');
    await fs.mkdir(p2);
    await png(p2, 'x', [0, 0], 2, 1);
    await expect(evaluateFolders({ pred: p2, gt: dirs.gt, classes: dirs.classes })).rejects.toThrow(/gt\/x\.png: ground-truth mask not found/);
    await png(p2, 'a', [0, 0], 2, 1);
    await fs.rm(path.join(p2, 'x.png'));
    await expect(evaluateFolders({ pred: p2, gt: dirs.gt, classes: dirs.classes })).rejects.toThrow(/pred2\/a\.png: prediction is 2x1, its ground truth 2x2/);
    await png(p2, 'a', [0, 7, 0, 0], 2, 2);
    await expect(evaluateFolders({ pred: p2, gt: dirs.gt, classes: dirs.classes })).rejects.toThrow(/pred2\/a\.png: predicted label 7 at pixel 1 is outside \[0, 3\)/);
    const empty = path.join(tmp, 'empty');
    await fs.mkdir(empty);
    await expect(evaluateFolders({ pred: empty, gt: dirs.gt, classes: dirs.classes })).rejects.toThrow(/empty: no predicted masks/);
  });

  it('readIdsFile takes the first token of each line, skips blanks and comments, and rejects duplicates', async () => {
    const f = path.join(tmp, 'ids.txt');
    await fs.writeFile(f, 'a 1\n\n# note\nb\n');
    expect(await readIdsFile(f)).toEqual(['a', 'b']);
    await fs.writeFile(f, 'a\na\n');
    await expect(readIdsFile(f)).rejects.toThrow(/ids\.txt: id 'a' is listed twice/);
  });
});
