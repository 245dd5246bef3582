/** Benchmark of the dense CRF in ops/crf.ts (not a test):
 * Dense CRF time per image (lattice mean field, C 5/21, 320x240 and 640x480) and O(N²) exact-reference growth.
 *   npm run bench -- crf [reps]
 *
 * 1. denseCrf, 10 iterations, PSA/pydensecrf defaults (Gaussian 3/3, bilateral 80/13/10), at
 *    320x240 and 640x480 for C = 5 and C = 21: median wall time per image over `reps` runs
 *    (default 3), split into lattice build and mean-field iterations.
 * 2. Growth with image size at 40x30, 80x60, 160x120 (C = 5): the lattice vs the brute-force
 *    reference (the same mean field with exact kernel sums, as in test/ops/crf.test.ts, but
 *    recomputing the kernel on the fly instead of storing N² weights). The reference runs 10
 *    iterations at 40x30 and 80x60; at 160x120 it runs 1 and the time for 10 is extrapolated
 *    (printed as such): normalisers + 10 iterations = 11 O(N²) passes.
 * Section 1 also runs the JS mean field (`setCrfEngine('js')`, the reference) back to back with
 * each run of the default WebAssembly one (ops/crf_wasm.ts) and prints the median of the per-pair
 * CPU-time ratios (js / wasm) and the largest |Q_js - Q_wasm|. `npm run bench -- crf 3 js` times
 * the JS engine alone (and against the unfused one, ops/crf_unfused.ts).
 * Single-threaded (one image on one core); the scene is synthetic (smooth regions + noise).
 * `CPU` is the process's user CPU time for the same call: on a shared, loaded machine wall time
 * includes waiting for a core, CPU time much less so.
 */
import { cpus, loadavg } from 'node:os';
import { performance } from 'node:perf_hooks';
import { DEFAULT_CRF_OPTIONS, NormalizedGaussianFilter, bilateralFeatures, denseCrf, positionFeatures, setCrfEngine, unaryFromProbs } from '../ops/crf.js';
import { denseCrfUnfused } from '../ops/crf_unfused.js';

const reps = Number(process.argv[2] ?? 3);
/** 'wasm' (default): the wasm engine, compared with the JS one; 'js': the JS engine, compared with the unfused one. */
const engine = process.argv[3] === 'js' ? 'js' : 'wasm';
setCrfEngine(engine);

/** The run `after` is compared with: the JS engine, or (engine js) the unfused mean field. */
function reference(unary: Float32Array, image: Uint8Array, H: number, W: number, C: number): Float32Array {
  if (engine === 'js') return denseCrfUnfused(unary, image, H, W, C);
  setCrfEngine('js');
  try {
    return denseCrf(unary, image, H, W, C);
  } finally {
    setCrfEngine(engine);
  }
}

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/** C blob-shaped regions with their own colours and gradients, pixel noise, noisy probabilities. */
function scene(H: number, W: number, C: number, seed = 1) {
  const r = rng(seed);
  const centres = Array.from({ length: C }, () => [r() * W, r() * H, 0.5 + r()]);
  const palette = Array.from({ length: C }, () => [r() * 255, r() * 255, r() * 255]);
  const image = new Uint8Array(H * W * 3);
  const probs = new Float32Array(H * W * C);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const n = y * W + x;
      let best = 0;
      let bd = Infinity;
      for (let c = 0; c < C; c++) {
        const [cx, cy, s] = centres[c];
        const dd = ((x - cx) ** 2 + (y - cy) ** 2) * s;
        if (dd < bd) {
          bd = dd;
          best = c;
        }
      }
      for (let k = 0; k < 3; k++) {
        const v = palette[best][k] + 40 * Math.sin((x + 2 * y + 17 * k) / (W / 4)) + (r() - 0.5) * 30;
        image[3 * n + k] = Math.max(0, Math.min(255, Math.round(v)));
      }
      let s = 0;
      for (let c = 0; c < C; c++) s += probs[n * C + c] = (c === best ? 1 : 0.1) + r();
      for (let c = 0; c < C; c++) probs[n * C + c] /= s;
    }
  }
  return { image, unary: unaryFromProbs(probs, C) };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

function timeLattice(H: number, W: number, C: number, n: number, compare = false) {
  const { image, unary } = scene(H, W, C);
  const o = DEFAULT_CRF_OPTIONS;
  const total: number[] = [];
  const cpu: number[] = [];
  const build: number[] = [];
  const ratio: number[] = [];
  let maxDiff = 0;
  for (let k = 0; k < n; k++) {
    let c0 = process.cpuUsage();
    const before = compare ? reference(unary, image, H, W, C) : null;
    const cpuBefore = process.cpuUsage(c0).user / 1000;
    let t0 = performance.now();
    c0 = process.cpuUsage();
    const q = denseCrf(unary, image, H, W, C);
    total.push(performance.now() - t0);
    cpu.push(process.cpuUsage(c0).user / 1000);
    if (before) {
      ratio.push(cpuBefore / cpu[k]);
      for (let i = 0; i < q.length; i++) maxDiff = Math.max(maxDiff, Math.abs(q[i] - before[i]));
    }
    t0 = performance.now();
    new NormalizedGaussianFilter(positionFeatures(H, W, o.gaussian!.sxy), H * W, 2);
    new NormalizedGaussianFilter(bilateralFeatures(image, H, W, o.bilateral!.sxy, o.bilateral!.srgb), H * W, 5);
    build.push(performance.now() - t0);
  }
  const spread = ratio.length ? ` (min ${Math.min(...ratio).toFixed(2)}, max ${Math.max(...ratio).toFixed(2)})` : '';
  return { total: median(total), cpu: median(cpu), build: median(build), ratio: ratio.length ? median(ratio) : NaN, spread, maxDiff };
}

/** Exact mean field (symmetric normalisation, self term included, Potts), kernels recomputed per pass. */
function bruteForce(unary: Float32Array, image: Uint8Array, H: number, W: number, C: number, iterations: number): Float32Array {
  const N = H * W;
  const { gaussian: g, bilateral: b } = DEFAULT_CRF_OPTIONS;
  const ig = 1 / (2 * g!.sxy * g!.sxy);
  const ibp = 1 / (2 * b!.sxy * b!.sxy);
  const ibc = 1 / (2 * b!.srgb * b!.srgb);
  const px = Float64Array.from({ length: N }, (_, i) => i % W);
  const py = Float64Array.from({ length: N }, (_, i) => Math.floor(i / W));
  // pass(v, outG, outB): outG = K_g v, outB = K_b v over all pairs.
  const pass = (v: Float64Array, ch: number, outG: Float64Array, outB: Float64Array) => {
    outG.fill(0);
    outB.fill(0);
    for (let i = 0; i < N; i++) {
      for (let j = 0; j < N; j++) {
        const dx = px[i] - px[j];
        const dy = py[i] - py[j];
        const d2 = dx * dx + dy * dy;
        const dr = image[3 * i] - image[3 * j];
        const dg = image[3 * i + 1] - image[3 * j + 1];
        const db = image[3 * i + 2] - image[3 * j + 2];
        const kg = Math.exp(-d2 * ig);
        const kb = Math.exp(-d2 * ibp - (dr * dr + dg * dg + db * db) * ibc);
        for (let c = 0; c < ch; c++) {
          outG[i * ch + c] += kg * v[j * ch + c];
          outB[i * ch + c] += kb * v[j * ch + c];
        }
      }
    }
  };
  const nG = new Float64Array(N);
  const nB = new Float64Array(N);
  pass(new Float64Array(N).fill(1), 1, nG, nB);
  for (let i = 0; i < N; i++) {
    nG[i] = 1 / Math.sqrt(nG[i]);
    nB[i] = 1 / Math.sqrt(nB[i]);
  }
  const Q = new Float64Array(N * C);
  const logits = new Float64Array(N * C);
  const softmax = () => {
    for (let i = 0; i < N; i++) {
      let m = -Infinity;
      for (let c = 0; c < C; c++) m = Math.max(m, logits[i * C + c]);
      let s = 0;
      for (let c = 0; c < C; c++) s += Q[i * C + c] = Math.exp(logits[i * C + c] - m);
      for (let c = 0; c < C; c++) Q[i * C + c] /= s;
    }
  };
  for (let i = 0; i < N * C; i++) logits[i] = -unary[i];
  softmax();
  // Symmetric normalisation needs D^-1/2 on both sides; the two kernels scale Q differently, so
  // pass the two pre-scaled copies side by side (2C channels) and read each kernel's half.
  const v = new Float64Array(N * 2 * C);
  const fg = new Float64Array(N * 2 * C);
  const fb = new Float64Array(N * 2 * C);
  for (let it = 0; it < iterations; it++) {
    for (let i = 0; i < N; i++) {
      for (let c = 0; c < C; c++) {
        v[i * 2 * C + c] = Q[i * C + c] * nG[i];
        v[i * 2 * C + C + c] = Q[i * C + c] * nB[i];
      }
    }
    pass(v, 2 * C, fg, fb);
    for (let i = 0; i < N; i++) {
      for (let c = 0; c < C; c++) {
        logits[i * C + c] = -unary[i * C + c] + g!.compat * nG[i] * fg[i * 2 * C + c] + b!.compat * nB[i] * fb[i * 2 * C + C + c];
      }
    }
    softmax();
  }
  return Float32Array.from(Q);
}

const fmt = (ms: number) => (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);

console.log(`dense CRF (engine ${engine}), ${DEFAULT_CRF_OPTIONS.iterations} mean-field iterations, gaussian sxy 3 / bilateral sxy 80 srgb 13; median of ${reps}, node ${process.version}`);
console.log(`${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
console.log('\n1. lattice, per image');
for (const [W, H] of [
  [320, 240],
  [640, 480],
]) {
  for (const C of [5, 21]) {
    const { total, cpu, build, ratio, spread, maxDiff } = timeLattice(H, W, C, reps, true);
    console.log(`  ${W}x${H}  C=${String(C).padEnd(2)}  total ${fmt(total).padStart(9)}   (lattice build ${fmt(build)}, iterations ${fmt(total - build)}; CPU ${fmt(cpu)})`);
    console.log(`             ${engine === 'js' ? 'unfused / fused JS' : 'js / wasm engine'} CPU ${ratio.toFixed(2)}x${spread}, max |dQ| ${maxDiff.toExponential(1)}`);
  }
}

console.log('\n2. growth with size, C=5: lattice vs exact O(N^2) reference');
for (const [W, H] of [
  [40, 30],
  [80, 60],
  [160, 120],
]) {
  const C = 5;
  const { image, unary } = scene(H, W, C);
  const { total: lat, cpu: latCpu } = timeLattice(H, W, C, reps);
  const its = W * H > 2000 ? 1 : DEFAULT_CRF_OPTIONS.iterations;
  const t0 = performance.now();
  const c0 = process.cpuUsage();
  const ref = bruteForce(unary, image, H, W, C, its);
  let bf = performance.now() - t0;
  let bfCpu = process.cpuUsage(c0).user / 1000;
  let note = '';
  if (its !== DEFAULT_CRF_OPTIONS.iterations) {
    bf = (bf * (DEFAULT_CRF_OPTIONS.iterations + 1)) / (its + 1);
    bfCpu = (bfCpu * (DEFAULT_CRF_OPTIONS.iterations + 1)) / (its + 1);
    note = ` (extrapolated from ${its} iteration)`;
  } else {
    // Both ran the full 10 iterations: report how close they are.
    const q = denseCrf(unary, image, H, W, C);
    let mad = 0;
    for (let i = 0; i < q.length; i++) mad += Math.abs(q[i] - ref[i]);
    note = `  (mean |Q_lattice - Q_exact| = ${(mad / q.length).toFixed(4)})`;
  }
  console.log(`  ${W}x${H} (N=${W * H})  lattice ${fmt(lat).padStart(9)} (CPU ${fmt(latCpu)})   exact ${fmt(bf).padStart(9)} (CPU ${fmt(bfCpu)})${note}`);
}
console.log(`\nload average at end ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
