/**
 * refine.above's part-order prior (stages/refine/order.ts) on hand-computed cases: which pairs
 * swap, which stay, the names it accepts, and one image through refineImage end to end.
 */
import { describe, expect, it } from 'vitest';
import { DEFAULT_CRF_OPTIONS } from '../../ops/crf.js';
import { orderClasses, resolveAbove } from '../../stages/refine/order.js';
import { refineImage } from '../../stages/refine/refine.js';
import { TagsegError } from '../../pipeline/errors.js';

/** [H, W] argmax channels from rows of digits ('0'..'9'). */
const grid = (...rows: string[]) => Uint8Array.from(rows.join(''), (c) => Number(c));

describe('orderClasses', () => {
  // Channel 1 fills rows 2-3 (mean row 2.5), channel 2 rows 0-1 (mean 0.5), channel 0 a column.
  const ch = grid('0222', '0222', '0111', '0111');
  const classes = [3, 10, 21]; // channel -> class: 10 = upper (face), 21 = lower (body)

  it('swaps a pair whose upper class lies lower', () => {
    expect(orderClasses(ch, 4, classes, [{ upper: 10, lower: 21 }])).toEqual([3, 21, 10]);
  });

  it('keeps a pair already in order (control: the same image, the pair named the other way)', () => {
    expect(orderClasses(ch, 4, classes, [{ upper: 21, lower: 10 }])).toEqual(classes);
  });

  it('keeps the classes when a pair is missing from the tags or from the argmax, or no pair is given', () => {
    expect(orderClasses(ch, 4, classes, [{ upper: 10, lower: 7 }])).toEqual(classes);
    const noLower = grid('0111', '0111', '0111', '0111');
    expect(orderClasses(noLower, 4, classes, [{ upper: 10, lower: 21 }])).toEqual(classes);
    expect(orderClasses(ch, 4, classes, [])).toEqual(classes);
  });

  it('compares mean rows, not the top row: a tall upper region whose mass lies low still swaps', () => {
    // channel 1: one pixel in row 0 and eight in rows 2-3 (mean 2.33...); channel 2 rows 0-1 (mean 0.43)
    const tall = grid('1222', '2222', '1111', '1111');
    expect(orderClasses(tall, 4, classes, [{ upper: 10, lower: 21 }])).toEqual([3, 21, 10]);
  });

  it('applies pairs in order on the classes as swapped so far', () => {
    // rows: channel 0 at the bottom, 1 in the middle, 2 on top; pairs a/b then b/c move class 3 (upper) to the top.
    const three = grid('2222', '1111', '0000');
    expect(orderClasses(three, 4, [3, 10, 21], [{ upper: 3, lower: 10 }, { upper: 3, lower: 21 }])).toEqual([10, 21, 3]);
  });
});

describe('resolveAbove', () => {
  const names = ['bg', 'face', 'body', 'sky'];

  it('reads upper/lower names as class indices', () => {
    expect(resolveAbove(['face/body', ' sky / face '], names, 0)).toEqual([{ upper: 1, lower: 2 }, { upper: 3, lower: 1 }]);
    expect(resolveAbove([], names, 0)).toEqual([]);
  });

  it('names the entry and the reason for an unknown class, the background, a self pair or a malformed entry', () => {
    const why = (e: string) => {
      try {
        resolveAbove([e], names, 0);
      } catch (err) {
        expect(err).toBeInstanceOf(TagsegError);
        return (err as Error).message;
      }
      throw new Error(`no error for ${e}`);
    };
    expect(why('face/hair')).toMatch(/refine\.above 'face\/hair'.*no class 'hair'/);
    expect(why('bg/body')).toMatch(/'bg' is the background class/);
    expect(why('face/face')).toMatch(/cannot lie above itself/);
    expect(why('face/body/sky')).toMatch(/not 'upper\/lower'/);
  });
});

describe('refineImage with refine.above', () => {
  // 8 x 4 image, flat grey (the CRF has no edge to move); maps: tag 5 strong in the bottom half, tag 9 on top.
  const H = 8;
  const W = 4;
  const rgb = new Uint8Array(H * W * 3).fill(128);
  const maps = new Float32Array(2 * 2 * 1);
  maps.set([0.1, 1], 0); // tag 5: grid rows 0, 1 (top, bottom)
  maps.set([1, 0.1], 2); // tag 9
  const settings = (above: { upper: number; lower: number }[]) => ({
    bg: { background: null, mode: 'threshold' as const, threshold: 0.3, power: 1 },
    crf: { ...DEFAULT_CRF_OPTIONS, iterations: 0 },
    ignore: { rule: 'none' as const, margin: 0 },
    above,
  });
  const rowsOf = (m: Uint8Array, c: number) => [...m].flatMap((v, i) => (v === c ? [Math.floor(i / W)] : []));

  it('puts the upper class on top in the mask, the maps labels and the CRF labels', () => {
    const input = { maps, tags: [5, 9], h: 2, w: 1, rgb, H, W };
    const plain = refineImage(input, settings([]));
    expect(Math.min(...rowsOf(plain.mask, 5))).toBeGreaterThanOrEqual(4); // control: 5 is below without the prior
    const r = refineImage(input, settings([{ upper: 5, lower: 9 }]));
    for (const m of [r.mask, r.before, r.crf]) {
      expect(Math.max(...rowsOf(m, 5))).toBeLessThan(4);
      expect(Math.min(...rowsOf(m, 9))).toBeGreaterThanOrEqual(4);
    }
    expect(r.confidence).toEqual(plain.confidence); // the same posterior, relabelled
  });
});
