import { describe, expect, it } from 'vitest';
import { ConfusionMatrix, averagePrecision, multiLabelScores, segmentationScores } from '../../eval/metrics.js';

describe('ConfusionMatrix + segmentationScores', () => {
  // 3 classes. gt / pred over 10 pixels (one gt pixel ignored):
  //   gt   0 0 0 1 1 1 1 2 2 255
  //   pred 0 0 1 1 1 1 2 2 0 1
  // matrix rows gt, cols pred:  [2 1 0] [0 3 1] [1 0 1]
  const gt = Uint8Array.from([0, 0, 0, 1, 1, 1, 1, 2, 2, 255]);
  const pred = Uint8Array.from([0, 0, 1, 1, 1, 1, 2, 2, 0, 1]);

  it('accumulates and scores a hand-made case', () => {
    const cm = new ConfusionMatrix(3).add(pred, gt);
    expect([...cm.counts]).toEqual([2, 1, 0, 0, 3, 1, 1, 0, 1]);
    expect(cm.total()).toBe(9);
    const s = segmentationScores(cm);
    // IoU: c0 2/(3+3-2)=0.5, c1 3/(4+4-3)=0.6, c2 1/(2+2-1)=1/3
    expect(s.iou).toEqual([0.5, 0.6, 1 / 3].map((v) => expect.closeTo(v, 12)));
    expect(s.miou).toBeCloseTo((0.5 + 0.6 + 1 / 3) / 3, 12);
    expect(s.pixelAccuracy).toBeCloseTo(6 / 9, 12);
    expect(s.precision).toEqual([2 / 3, 3 / 4, 1 / 2].map((v) => expect.closeTo(v, 12)));
    expect(s.recall).toEqual([2 / 3, 3 / 4, 1 / 2].map((v) => expect.closeTo(v, 12)));
    expect(s.coverage).toBe(1);
    expect(s.classesInMean).toBe(3);
  });

  it('accumulates across images (same as one concatenated image) and merges', () => {
    const a = new ConfusionMatrix(3).add(pred.subarray(0, 5), gt.subarray(0, 5)).add(pred.subarray(5), gt.subarray(5));
    const b = new ConfusionMatrix(3).add(pred, gt);
    expect([...a.counts]).toEqual([...b.counts]);
    const m = new ConfusionMatrix(3).add(pred, gt).merge(b);
    expect(m.total()).toBe(18);
    expect(ConfusionMatrix.fromJSON(JSON.parse(JSON.stringify(m))).counts).toEqual(m.counts);
  });

  it('leaves classes absent from gt and pred out of mIoU', () => {
    const cm = new ConfusionMatrix(4).add(Int32Array.from([0, 1, 1]), Int32Array.from([0, 1, 0]));
    const s = segmentationScores(cm);
    expect(s.iou).toEqual([0.5, 0.5, null, null]);
    expect(s.miou).toBe(0.5);
    expect(s.classesInMean).toBe(2);
    // a class predicted but absent from gt counts (IoU 0)
    const s2 = segmentationScores(new ConfusionMatrix(3).add([0, 2], [0, 0]));
    expect(s2.iou).toEqual([0.5, null, 0]);
    expect(s2.miou).toBe(0.25);
    expect(s2.recall[2]).toBeNull();
    expect(s2.precision[2]).toBe(0);
  });

  it('excludes ignored predictions (reporting coverage) or maps them to a class', () => {
    const g = [0, 0, 1, 1];
    const p = [0, 255, 1, 255];
    const ex = new ConfusionMatrix(2).add(p, g);
    expect(ex.total()).toBe(2);
    expect([...ex.predIgnored]).toEqual([1, 1]);
    const s = segmentationScores(ex);
    expect(s.miou).toBe(1);
    expect(s.coverage).toBe(0.5);
    const asBg = new ConfusionMatrix(2, { predIgnoreAs: 0 }).add(p, g);
    expect([...asBg.counts]).toEqual([2, 0, 1, 1]);
    expect(segmentationScores(asBg).iou).toEqual([2 / 3, 0.5]);
  });

  it('rejects out-of-range labels and length mismatches', () => {
    expect(() => new ConfusionMatrix(3).add([0, 3], [0, 1])).toThrow(/predicted label 3/);
    expect(() => new ConfusionMatrix(3).add([0, 1], [0, 7])).toThrow(/ground-truth label 7/);
    expect(() => new ConfusionMatrix(3).add([0], [0, 1])).toThrow(/pixels/);
    expect(segmentationScores(new ConfusionMatrix(2)).miou).toBeNull();
  });
});

describe('full-coverage scores (ignore predictions counted as wrong)', () => {
  it('hand-computed: 3 classes, two pixels predicted as ignore, one void gt pixel', () => {
    // gt 0 0 0 1 1 2 2 255 / pred 0 0 255 1 255 2 1 0: matrix (0,0)=2 (1,1)=1 (2,2)=1 (2,1)=1; ignored [1,1,0].
    const s = segmentationScores(new ConfusionMatrix(3).add([0, 0, 255, 1, 255, 2, 1, 0], [0, 0, 0, 1, 1, 2, 2, 255]));
    // Labelled pixels: c0 2/2, c1 1/(1+2-1), c2 1/2.
    expect(s.iou).toEqual([1, 0.5, 0.5]);
    expect(s.miou).toBeCloseTo(2 / 3, 12);
    expect(s.coverage).toBeCloseTo(5 / 7, 12);
    expect(s.pixelAccuracy).toBeCloseTo(4 / 5, 12);
    // Full coverage: each class's ignored pixels join its union: c0 2/3, c1 1/3, c2 1/2.
    expect(s.fullIou[0]).toBeCloseTo(2 / 3, 12);
    expect(s.fullIou[1]).toBeCloseTo(1 / 3, 12);
    expect(s.fullIou[2]).toBeCloseTo(1 / 2, 12);
    expect(s.fullMiou).toBeCloseTo(0.5, 12);
    expect(s.fullPixelAccuracy).toBeCloseTo(4 / 7, 12);
  });

  it('a class whose every pixel is ignored scores 0 at full coverage, and is left out of the labelled mIoU', () => {
    const s = segmentationScores(new ConfusionMatrix(2).add([0, 255], [0, 1]));
    expect(s.iou).toEqual([1, null]);
    expect(s.miou).toBe(1);
    expect(s.fullIou).toEqual([1, 0]);
    expect(s.fullMiou).toBe(0.5);
  });

  it('control: without ignore predictions the full-coverage figures equal the labelled ones', () => {
    const s = segmentationScores(new ConfusionMatrix(3).add([0, 0, 2, 1, 1, 2, 1], [0, 0, 0, 1, 1, 2, 2]));
    expect(s.coverage).toBe(1);
    expect(s.fullIou).toEqual(s.iou);
    expect(s.fullMiou).toBe(s.miou);
    expect(s.fullPixelAccuracy).toBe(s.pixelAccuracy);
  });

  it('predIgnoreAs maps ignore to a class first, so nothing is left to count as wrong', () => {
    const s = segmentationScores(new ConfusionMatrix(2, { predIgnoreAs: 0 }).add([0, 255, 1], [0, 1, 1]));
    expect(s.fullMiou).toBe(s.miou);
  });
});

describe('averagePrecision', () => {
  it('matches hand-computed non-interpolated AP', () => {
    // ranking: 0.9(+) 0.8(-) 0.7(+) 0.1(-): AP = 1/2 * 1 + 1/2 * 2/3 = 0.833333
    expect(averagePrecision([0.1, 0.9, 0.7, 0.8], [0, 1, 1, 0])).toBeCloseTo(5 / 6, 12);
    expect(averagePrecision([0.9, 0.8, 0.1], [1, 1, 0])).toBe(1);
    expect(averagePrecision([0.9, 0.8], [0, 0])).toBeNull();
    // worst ranking: positives last: 1/2 * 1/3 + 1/2 * 2/4 = 0.416667
    expect(averagePrecision([4, 3, 2, 1], [0, 0, 1, 1])).toBeCloseTo(5 / 12, 12);
  });

  it('treats tied scores as one threshold (as scikit-learn)', () => {
    // all tied: one threshold, recall 1, precision 2/4 -> 0.5
    expect(averagePrecision([0.5, 0.5, 0.5, 0.5], [1, 0, 1, 0])).toBe(0.5);
  });
});

describe('multiLabelScores', () => {
  it('computes AP, mAP and F1 at 0.5', () => {
    const scores = [
      [0.9, 0.2, 0.6],
      [0.4, 0.7, 0.1],
      [0.8, 0.3, 0.2],
    ];
    const labels = [
      [1, 0, 1],
      [1, 1, 0],
      [0, 0, 0],
    ];
    const r = multiLabelScores(scores, labels);
    // class 0: ranking 0.9(+) 0.8(-) 0.4(+): AP = 1/2 * 1 + 1/2 * 2/3 = 5/6; preds at 0.5: img0 TP, img2 FP, img1 FN -> F1 = 2/4
    // class 1: 0.7(+) first: AP 1; TP 1 -> F1 1
    // class 2: 0.6(+) first: AP 1; TP 1 -> F1 1
    expect(r.ap).toEqual([5 / 6, 1, 1].map((v) => expect.closeTo(v, 12)));
    expect(r.mAP).toBeCloseTo((5 / 6 + 2) / 3, 12);
    expect(r.f1).toEqual([0.5, 1, 1]);
    expect(r.macroF1).toBeCloseTo(2.5 / 3, 12);
    // micro: TP 3, FP 1, FN 1 -> 6/8
    expect(r.microF1).toBe(0.75);
    expect(r.precision[0]).toBe(0.5);
    expect(r.recall[0]).toBe(0.5);
  });

  it('marks classes without positives as null and excludes them from mAP', () => {
    const r = multiLabelScores(
      [
        [0.9, 0.1],
        [0.2, 0.3],
      ],
      [
        [1, 0],
        [0, 0],
      ],
    );
    expect(r.ap).toEqual([1, null]);
    expect(r.mAP).toBe(1);
    expect(r.f1).toEqual([1, null]);
  });
});
