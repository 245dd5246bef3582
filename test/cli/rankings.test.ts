/**
 * cli/rankings.ts on hand-made image rows: a ranking that orders the masks exactly by quality
 * finds every bad one (precision 1, Spearman 1); one that orders them backwards finds none
 * (the control: the figures can fail); images without a score or ground truth are left out.
 */
import { describe, expect, it } from 'vitest';
import { compareRankings } from '../../cli/rankings.js';

// 10 images, quality q = gt_miou (coverage 1) = 0.1 .. 1.0
const rows = Array.from({ length: 10 }, (_, i) => ({
  id: `im${i}`, gt_miou: (i + 1) / 10, gt_coverage: 1,
  suspicion: 1 - i / 10, // perfect: low quality = high suspicion
  label_quality: 1 - i / 10, // backwards: low quality = high label quality
  label_confidence: (i % 2) / 2 + i / 100, // half right
}));

describe('compareRankings', () => {
  it('scores a perfect and a backwards ranking (hand-computed)', () => {
    const c = compareRankings(rows, { k: 2, badShare: 0.2 });
    expect([c.images, c.bad, c.base_rate]).toEqual([10, 2, 0.2]);
    expect(c.bad_threshold).toBeCloseTo(0.2, 9);
    const by = Object.fromEntries(c.rankings.map((r) => [r.ranking, r]));
    expect(by.suspicion).toEqual({ ranking: 'suspicion', precision_at_k: 1, rho_vs_quality: 1 });
    expect(by.label_quality).toEqual({ ranking: 'label_quality', precision_at_k: 0, rho_vs_quality: -1 });
    // label confidence: lowest two are im0 (0) and im2 (0.02): one bad of two
    expect(by.label_confidence.precision_at_k).toBe(0.5);
    expect(c.best).toBe('suspicion');
  });

  it('leaves out images without ground truth or a label quality', () => {
    const c = compareRankings([...rows, { id: 'x', gt_miou: null, gt_coverage: null, suspicion: 1, label_quality: 0, label_confidence: 0 }, { id: 'y', gt_miou: 0, gt_coverage: 1, suspicion: 1, label_quality: null, label_confidence: null }], { k: 2 });
    expect(c.images).toBe(10);
  });
});
