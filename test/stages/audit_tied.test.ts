/**
 * The audit's tied class pairs (stages/audit/summary.ts): pairs nearly always tagged together,
 * which the tags cannot separate (refine.above), on hand-counted tags.
 */
import { describe, expect, it } from 'vitest';
import type { ClassRow, ImageRow } from '../../stages/audit/image.js';
import { formatTied } from '../../stages/audit/report_stage.js';
import { AGREEMENT_PAIRS, SummaryAccumulator, TIED_JACCARD } from '../../stages/audit/summary.js';

const CLASSES = ['sky', 'face', 'body', 'dog'];
const noPixels = { agreement: AGREEMENT_PAIRS.map(() => ({ inter: [], union: [] })), gt: null };

/** A summary of images given by their tags (class indices). */
function summarise(images: number[][]) {
  const acc = new SummaryAccumulator(CLASSES);
  for (const tags of images) {
    const rows = CLASSES.map((_, c) => ({ class: c, tagged: tags.includes(c), area: tags.includes(c) ? 0.2 : 0, empty_tag: false, confidence: null, in_gt: null }) as unknown as ClassRow);
    acc.add(rows, { suspicion: 0 } as unknown as ImageRow, noPixels);
  }
  return acc.result();
}

const times = (n: number, tags: number[]) => Array.from({ length: n }, () => tags);

describe('tied class pairs', () => {
  it('reports a pair nearly always tagged together, with the counts alone', () => {
    // face always with body (6 images), body alone once: Jaccard 6 / 7; sky contains both but is
    // often alone (6 / 16), as grass contains cow on MSRC-v2
    const s = summarise([...times(6, [0, 1, 2]), ...times(1, [2]), ...times(10, [0]), ...times(5, [3])]);
    expect(s.tied).toEqual([{ a: 'face', b: 'body', together: 6, a_alone: 0, b_alone: 1 }]);
    expect(formatTied(s.tied)[0]).toMatch(/tags cannot separate face and body: tagged together in 6 images \(face alone 0, body alone 1\).*refine\.above \(e\.g\. \[face\/body\]\)/);
  });

  it('keeps a pair that appears apart often enough, or together too rarely (controls)', () => {
    // face with body 6 times, each alone once: Jaccard 6 / 8 < TIED_JACCARD
    expect(6 / 8).toBeLessThan(TIED_JACCARD);
    expect(summarise([...times(6, [1, 2]), [1], [2]]).tied).toEqual([]);
    // together in all 4 images, but fewer than 5
    expect(summarise(times(4, [1, 2])).tied).toEqual([]);
    // with the fifth image it is reported
    expect(summarise(times(5, [1, 2])).tied).toHaveLength(1);
  });
});
