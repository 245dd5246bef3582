/**
 * The mean row of each label of a label map: the vertical order that refine.above enforces on the
 * pseudo-masks (stages/refine/order.ts) and that the audit counts for class pairs the tags cannot
 * separate (stages/audit/summary.ts).
 */

/** labels [h, width] (row-major) -> per label l < k, the mean row index of its pixels (NaN where it has none); labels >= k are left out. */
export function meanRows(labels: Uint8Array, width: number, k: number): Float64Array {
  const sum = new Float64Array(k);
  const count = new Float64Array(k);
  for (let i = 0; i < labels.length; i++) {
    const l = labels[i];
    if (l < k) {
      sum[l] += Math.floor(i / width);
      count[l]++;
    }
  }
  return sum.map((s, l) => (count[l] > 0 ? s / count[l] : NaN));
}
