/**
 * The review at the segment stage's input (stages/segment/review.ts): rejected images leave
 * training, rejected classes become ignore, corrected masks replace pseudo-masks and win over a
 * rejection, the validation carve is untouched, and corrections are found by file name.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import type { DecisionRow } from '../../data/review.js';
import { listCorrections } from '../../data/review.js';
import { ignoreClassPixels, planReview } from '../../stages/segment/review.js';

const CLASSES = ['background', 'cat', 'dog'];
const d = (id: string, decision: DecisionRow['decision'], cls = ''): DecisionRow => ({ id, decision, class: cls, note: '' });

describe('planReview', () => {
  it('drops rejected images, ignores rejected classes, applies corrections (which beat a rejection)', () => {
    const train = ['a', 'b', 'c', 'd', 'e'];
    const plan = planReview(train, [
      d('a', 'reject'), d('b', 'reject'), d('c', 'reject', 'dog'), d('c', 'reject', 'cat'), d('d', 'relabel'), d('e', 'accept'), d('e', 'relabel', 'cat'),
      d('val-1', 'reject'), d('d', 'reject', 'dog'),
    ], new Set(['b', 'd', 'val-2']), CLASSES, 'review/decisions.csv');
    expect(plan.train).toEqual(['b', 'c', 'd', 'e']); // a rejected; b rejected but corrected
    expect([...plan.corrected].sort()).toEqual(['b', 'd']);
    expect(Object.fromEntries(plan.ignoreClasses)).toEqual({ c: [2, 1] }); // d's class rejection is superseded by its correction
    expect(plan.counts).toEqual({ rejected: 1, corrected: 2, rejected_classes: 2, unused_corrections: 1 });
  });

  it('without decisions or corrections changes nothing', () => {
    const plan = planReview(['x', 'y'], [], new Set(), CLASSES, 'f');
    expect(plan.train).toEqual(['x', 'y']);
    expect(plan.counts).toEqual({ rejected: 0, corrected: 0, rejected_classes: 0, unused_corrections: 0 });
  });

  it('an unknown class name is an error naming the decisions file', () => {
    expect(() => planReview(['x'], [d('x', 'reject', 'horse')], new Set(), CLASSES, 'review/decisions.csv')).toThrow(/review\/decisions\.csv: image 'x': class 'horse' is not a class/);
  });
});

describe('ignoreClassPixels', () => {
  it('sets the pixels of the given classes to 255 and leaves the rest', () => {
    expect(Array.from(ignoreClassPixels(new Uint8Array([0, 1, 2, 255, 2, 1]), [2]))).toEqual([0, 1, 255, 255, 255, 1]);
    expect(Array.from(ignoreClassPixels(new Uint8Array([0, 1]), []))).toEqual([0, 1]);
  });
});

describe('listCorrections', () => {
  it('maps <id>.png to its file, skips other files, rejects unknown ids, null for a missing folder', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-corr-'));
    try {
      await fs.writeFile(path.join(dir, 'a.png'), '');
      await fs.writeFile(path.join(dir, 'README.md'), '');
      expect(Object.fromEntries((await listCorrections(dir, new Set(['a', 'b'])))!)).toEqual({ a: path.join(dir, 'a.png') });
      await fs.writeFile(path.join(dir, 'typo.png'), '');
      await expect(listCorrections(dir, new Set(['a']))).rejects.toThrow(/typo\.png: corrected mask for 'typo', which is not an image of the dataset/);
      expect(await listCorrections(path.join(dir, 'none'), new Set())).toBeNull();
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
