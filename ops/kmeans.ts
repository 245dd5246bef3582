/**
 * Seeded k-means (Lloyd) on the rows of a tensor, shared by RCA's memory summary (stage
 * `contrast`: 10 centroids per class queue at every epoch start, maeve07/RCA models/rca.py uses
 * sklearn KMeans there) and SPML's spherical k-means of pixel embeddings (stage `segment`).
 *
 * - Init: k-means++ (Arthur & Vassilvitskii 2007) drawn from `Rng(seed)`: the first centre is a
 *   uniform row, each next one a row drawn with probability proportional to its squared distance
 *   to the nearest centre so far; when every row already coincides with a centre (fewer than k
 *   distinct rows) the next centre is a uniform row (a duplicate).
 * - Iterations: assign each row to its nearest centre (ties -> the lower centre index), move each
 *   centre to the mean of its rows; stop early when no assignment changes.
 * - Empty clusters, deterministically: in increasing centre index, an empty centre moves to the
 *   row farthest from its own centre (ties -> the lower row index) that no other empty centre took
 *   in this iteration, when that distance is > 0; otherwise (all rows sit on centres) it keeps its
 *   place.
 * - `spherical`: rows are L2-normalised, the distance is 1 - cosine, and each centre is the
 *   normalised mean of its rows (SPML's spherical k-means). A zero row stays zero.
 *
 * The returned `assign` always refers to the returned `centroids` (one final assignment step).
 * Everything is computed in float32 tensors except the init and the empty-cluster bookkeeping
 * (plain arrays, read back once per iteration), so a seed gives the same result on every backend
 * up to float rounding of the distances.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../nn/rng.js';
import { TagsegError } from '../pipeline/errors.js';

export interface KMeansOptions {
  /** Lloyd iterations at most (0 = the k-means++ init, assigned). */
  iters: number;
  seed: number;
  /** Cosine k-means on L2-normalised rows (SPML). Default false (Euclidean). */
  spherical?: boolean;
}

export interface KMeansResult {
  /** [k, D] float32; unit rows when spherical (a centre of zero rows stays zero). */
  centroids: tf.Tensor2D;
  /** [N] int32: the centre of each row. */
  assign: tf.Tensor1D;
}

/** x [N, D] -> KMeansResult. The caller disposes both tensors; no other tensor outlives the call. */
export function kmeans(x: tf.Tensor2D, k: number, opts: KMeansOptions): KMeansResult {
  if (x.rank !== 2 || x.shape[0] < 1 || x.shape[1] < 1) throw new TagsegError(`kmeans: x must be [N, D] with N, D >= 1, got [${x.shape.join(', ')}]`);
  if (!Number.isInteger(k) || k < 1) throw new TagsegError(`kmeans: k must be a positive integer, got ${k}`);
  if (!Number.isInteger(opts.iters) || opts.iters < 0) throw new TagsegError(`kmeans: iters must be a non-negative integer, got ${opts.iters}`);
  const [n, d] = x.shape;
  const spherical = opts.spherical ?? false;
  const data = spherical ? tf.tidy(() => l2Rows(tf.cast(x, 'float32') as tf.Tensor2D)) : (tf.cast(x, 'float32') as tf.Tensor2D);
  try {
    const rows = data.dataSync() as Float32Array;
    let centroids = tf.tensor2d(kmeansPlusPlus(rows, n, d, k, new Rng(opts.seed)), [k, d]);
    let prev: Int32Array | null = null;
    for (let it = 0; it < opts.iters; it++) {
      const { assign, dist } = nearest(data, centroids, spherical);
      const a = assign.dataSync() as Int32Array;
      if (prev && a.every((v, i) => v === prev![i])) {
        tf.dispose([assign, dist]);
        break;
      }
      const counts = new Int32Array(k);
      for (const c of a) counts[c]++;
      const moved = tf.tidy(() => {
        const sums = tf.unsortedSegmentSum(data, assign, k);
        const cnt = tf.tensor2d(Float32Array.from(counts, (c) => Math.max(c, 1)), [k, 1]);
        const mean = spherical ? l2Rows(tf.div(sums, cnt) as tf.Tensor2D) : (tf.div(sums, cnt) as tf.Tensor2D);
        // an empty centre keeps its place unless relocateEmpty finds it a row below
        const has = tf.tensor2d(Uint8Array.from(counts, (c) => (c > 0 ? 1 : 0)), [k, 1], 'bool');
        return tf.where(has, mean, centroids) as tf.Tensor2D;
      });
      let next = moved;
      if (counts.some((c) => c === 0)) {
        next = relocateEmpty(moved, rows, counts, a, dist.dataSync() as Float32Array, d);
        moved.dispose();
      }
      tf.dispose([assign, dist, centroids]);
      centroids = next;
      prev = a;
    }
    const { assign, dist } = nearest(data, centroids, spherical);
    dist.dispose();
    return { centroids, assign };
  } finally {
    data.dispose();
  }
}

/** Rows divided by their L2 norm (zero rows stay zero). */
function l2Rows(t: tf.Tensor2D): tf.Tensor2D {
  return tf.tidy(() => {
    const norm = tf.sqrt(tf.sum(tf.square(t), 1, true));
    return tf.div(t, tf.maximum(norm, 1e-12)) as tf.Tensor2D;
  });
}

/**
 * Nearest centre of every row: assign [N] int32 and the distance to it [N] (squared Euclidean,
 * or 1 - cosine when spherical). argMin returns the first minimum, so ties go to the lower index.
 */
function nearest(x: tf.Tensor2D, c: tf.Tensor2D, spherical: boolean): { assign: tf.Tensor1D; dist: tf.Tensor1D } {
  return tf.tidy(() => {
    const dot = tf.matMul(x, c, false, true); // [N, k]
    const dd = spherical
      ? tf.sub(1, dot)
      : tf.relu(tf.add(tf.sub(tf.sum(tf.square(x), 1, true), tf.mul(2, dot)), tf.reshape(tf.sum(tf.square(c), 1), [1, -1])));
    return { assign: tf.cast(tf.argMin(dd, 1), 'int32') as tf.Tensor1D, dist: tf.min(dd, 1) as tf.Tensor1D };
  });
}

/** k-means++ seeding on plain rows [n * d] -> centres [k * d]. */
export function kmeansPlusPlus(rows: Float32Array, n: number, d: number, k: number, rng: Rng): Float32Array {
  const out = new Float32Array(k * d);
  const best = new Float64Array(n).fill(Infinity);
  let pick = rng.int(0, n);
  for (let c = 0; c < k; c++) {
    out.set(rows.subarray(pick * d, (pick + 1) * d), c * d);
    if (c === k - 1) break;
    let total = 0;
    for (let i = 0; i < n; i++) {
      let s = 0;
      for (let j = 0; j < d; j++) {
        const v = rows[i * d + j] - out[c * d + j];
        s += v * v;
      }
      if (s < best[i]) best[i] = s;
      total += best[i];
    }
    if (total > 0) {
      let r = rng.next() * total;
      pick = n - 1;
      for (let i = 0; i < n; i++) {
        r -= best[i];
        if (r < 0 && best[i] > 0) {
          pick = i;
          break;
        }
      }
      // float rounding can leave r >= 0 after the loop: take the last row with a positive weight
      if (best[pick] === 0) for (let i = n - 1; i >= 0; i--) if (best[i] > 0) { pick = i; break; }
    } else {
      pick = rng.int(0, n);
    }
  }
  return out;
}

/**
 * Empty centres (counts 0, in index order) move to the farthest row from its own centre that no
 * earlier empty centre took, when that distance is > 0 (see the file comment). `counts` is updated
 * in place (the row leaves its old cluster). centroids [k, D], rows [N * D], assign/dist [N] ->
 * new centroids [k, D].
 */
export function relocateEmpty(centroids: tf.Tensor2D, rows: Float32Array, counts: Int32Array, assign: Int32Array, dist: Float32Array, d: number): tf.Tensor2D {
  const c = centroids.dataSync().slice() as Float32Array;
  const taken = new Set<number>();
  for (let j = 0; j < counts.length; j++) {
    if (counts[j] > 0) continue;
    let far = -1;
    for (let i = 0; i < dist.length; i++) {
      if (taken.has(i) || !(dist[i] > 0)) continue;
      if (far < 0 || dist[i] > dist[far]) far = i;
    }
    if (far < 0) continue;
    taken.add(far);
    c.set(rows.subarray(far * d, (far + 1) * d), j * d);
    counts[j] = 1;
    counts[assign[far]]--;
  }
  return tf.tensor2d(c, centroids.shape);
}
