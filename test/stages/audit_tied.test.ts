/**
 * The audit's tied class pairs (stages/audit/summary.ts): pairs nearly always tagged together,
 * which the tags cannot separate (refine.above), on hand-counted tags.
 */
import { describe, expect, it } from 'vitest';
import { type ClassRow, type ImageRow, VIEW_STAGES } from '../../stages/audit/image.js';
import { formatTied } from '../../stages/audit/report_stage.js';
import { AGREEMENT_PAIRS, type PixelCounts, SummaryAccumulator, TIED_JACCARD, pixelCounts } from '../../stages/audit/summary.js';

const CLASSES = ['sky', 'face', 'body', 'dog'];
const noAgreement = AGREEMENT_PAIRS.map(() => ({ inter: [], union: [] }));
const noConfusion = Object.fromEntries(VIEW_STAGES.map((s) => [s, { counts: [], predIgnored: [] }])) as unknown as NonNullable<PixelCounts['gt']>;

/**
 * A summary of images given by their tags (class indices) and, optionally, each image's mean rows
 * per class in the pseudo-mask and the ground truth ([class, row] pairs).
 */
function summarise(images: number[][], rows: { final: [number, number][]; gt: [number, number][] | null }[] = []) {
  const acc = new SummaryAccumulator(CLASSES);
  images.forEach((tags, i) => {
    const classRows = CLASSES.map((_, c) => ({ class: c, tagged: tags.includes(c), area: tags.includes(c) ? 0.2 : 0, empty_tag: false, confidence: null, in_gt: null }) as unknown as ClassRow);
    const r = rows[i] ?? { final: [], gt: null };
    // an image with ground truth has its confusion counts too (none needed here), as pixelCounts gives them
    acc.add(classRows, { suspicion: 0 } as unknown as ImageRow, { agreement: noAgreement, gt: r.gt ? noConfusion : null, rows: r });
  });
  return acc.result();
}

const times = (n: number, tags: number[]) => Array.from({ length: n }, () => tags);

describe('tied class pairs', () => {
  it('reports a pair nearly always tagged together, with the counts alone', () => {
    // face always with body (6 images), body alone once: Jaccard 6 / 7; sky contains both but is
    // often alone (6 / 16), as grass contains cow on MSRC-v2
    const s = summarise([...times(6, [0, 1, 2]), ...times(1, [2]), ...times(10, [0]), ...times(5, [3])]);
    expect(s.tied).toEqual([{ a: 'face', b: 'body', together: 6, a_alone: 0, b_alone: 1, final_a_above: 0, final_both: 0, gt_a_above: null, gt_both: null }]);
    expect(formatTied(s.tied)[0]).toMatch(/tags cannot separate face and body: tagged together in 6 images \(face alone 0, body alone 1\).*say which with refine\.above/);
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

  it('counts the pair\'s vertical order in the pseudo-masks and the ground truth, and says which way to set refine.above', () => {
    // 3 images with face and body: the pseudo-masks put face (1) below body (2) in all, the ground truth above in 2 of 2
    const upsideDown = { final: [[1, 0.7], [2, 0.3]] as [number, number][], gt: [[1, 0.2], [2, 0.6]] as [number, number][] };
    const noGt = { final: [[1, 0.7], [2, 0.3], [0, 0.1]] as [number, number][], gt: null };
    const images = times(5, [1, 2]);
    const s = summarise(images, [upsideDown, upsideDown, noGt]);
    expect(s.tied[0]).toMatchObject({ final_a_above: 0, final_both: 3, gt_a_above: 2, gt_both: 2 });
    expect(formatTied(s.tied)[0]).toMatch(/face lies above body in 0 of the 3 pseudo-masks with both, in 2 of 2 ground-truth masks: the pseudo-masks have them upside down: set refine\.above: \[face\/body\]/);
    // control: pseudo-masks that follow the ground truth get no advice to swap
    const right = { final: [[1, 0.2], [2, 0.6]] as [number, number][], gt: [[1, 0.2], [2, 0.6]] as [number, number][] };
    expect(formatTied(summarise(images, [right, right]).tied)[0]).toMatch(/in 2 of 2 ground-truth masks: the pseudo-masks mostly follow the ground truth$/);
  });

  it('pixelCounts gives each class\'s mean row as a fraction of the height', () => {
    // 4 x 2: class 1 in rows 0-1, class 2 in rows 2-3 (and one pixel of row 0), 255 left out
    const final = Uint8Array.from([1, 1, 1, 255, 2, 2, 2, 2]);
    const gt = Uint8Array.from([2, 2, 2, 2, 1, 1, 1, 1]);
    const maps = { cam: final, random_walk: final, rca: final };
    const p = pixelCounts({ ...maps, final }, gt, 4, 2);
    expect(p.rows.final).toEqual([[1, (0 + 0 + 1) / 3 / 4], [2, (2 + 2 + 3 + 3) / 4 / 4]]);
    expect(p.rows.gt).toEqual([[1, 2.5 / 4], [2, 0.5 / 4]]);
    expect(pixelCounts({ ...maps, final }, null, 4, 2).rows.gt).toBeNull();
  });
});
