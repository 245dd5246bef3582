/**
 * A part-order prior for classes that tags cannot tell apart (refine.above, issue #22).
 *
 * Two classes tagged together in (almost) every photo give the classifier nothing that says which
 * region is which: MSRC-v2 tags face with body in all 60 photos that have a face. Its RCA + random
 * walk maps put "face" below "body" in all 35 train photos with masks and both tags, while the
 * ground truth has the face above in all 35. A pair 'upper/lower' states the part-whole fact the
 * tags lack: where an image's argmax has both classes and the upper one's pixels lie lower (mean
 * row), the two classes swap channels. The CRF's Potts model is symmetric in the labels, so
 * swapping the labels after it equals swapping the maps before it.
 */
import { meanRows } from '../../maps/rows.js';
import { TagsegError } from '../../pipeline/errors.js';

/** One 'upper/lower' pair as dataset class indices. */
export interface AbovePair { upper: number; lower: number }

/**
 * The channel -> class list `classes` with each pair's two classes swapped where the upper class's
 * pixels of `channel` ([H, W] argmax channel indices, row-major, width W) have a larger mean row
 * than the lower class's. Pairs apply in order; a class absent from `classes` or from the argmax
 * leaves its pair as it is.
 */
export function orderClasses(channel: Uint8Array, W: number, classes: readonly number[], pairs: readonly AbovePair[]): number[] {
  const out = [...classes];
  if (pairs.length === 0) return out;
  const row = meanRows(channel, W, classes.length);
  for (const { upper, lower } of pairs) {
    const a = out.indexOf(upper);
    const b = out.indexOf(lower);
    // NaN (a class without pixels) compares false: the pair stays as it is
    if (a >= 0 && b >= 0 && row[a] > row[b]) [out[a], out[b]] = [lower, upper];
  }
  return out;
}

/** refine.above's 'upper/lower' names as class indices; an unknown or background class, or a class paired with itself, is an error naming the entry. */
export function resolveAbove(entries: readonly string[], classes: readonly string[], background: number | null): AbovePair[] {
  return entries.map((entry) => {
    const names = entry.split('/').map((s) => s.trim());
    const fail = (why: string) => new TagsegError(`refine.above '${entry}': ${why}`, { file: 'params.yaml', hint: `entries are 'upper/lower' class names, e.g. face/body; classes: ${classes.join(', ')}` });
    if (names.length !== 2 || names.some((n) => n === '')) throw fail("not 'upper/lower'");
    const [upper, lower] = names.map((n) => classes.indexOf(n)) as [number, number];
    for (const [n, i] of [[names[0], upper], [names[1], lower]] as const) {
      if (i < 0) throw fail(`no class '${n}' in the dataset`);
      if (i === background) throw fail(`'${n}' is the background class`);
    }
    if (upper === lower) throw fail('a class cannot lie above itself');
    return { upper, lower };
  });
}
