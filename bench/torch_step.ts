/**
 * One CAM training step, tagseg (tfjs-node, native TensorFlow) vs PyTorch CPU, as a ratio measured
 * in one run (issue #3: "tagseg should not be slower").
 *   node --import tsx bench/torch_step.ts [width] [batch] [size] [rounds] [steps-per-round]
 *   (defaults 16 16 112 8 3; bench/torch_step.sh wraps it; env PYTHON = a python with torch,
 *   default .cache/py/bin/python: python3 -m venv .cache/py && .cache/py/bin/pip install torch)
 *
 * Same network, shapes and optimiser on both sides (bench/torch_step.py): ResNet basic blocks,
 * depth [1,1,1,1], width 16, output stride 8, BatchNorm with batch statistics, GAP + 1x1 conv
 * head (4 classes), multi-label soft-margin loss, AdamW (lr 0.003, head 10x, wd 1e-4); batch 16
 * of 112x112 RGB. tagseg's step is nn/train.ts trainStep (gradients, finite-loss check, AdamW,
 * BN moving averages); torch's is zero_grad / forward / backward / step / loss.item().
 *
 * Fairness: torch keeps its default thread count (torch.get_num_threads(), or OMP_NUM_THREADS);
 * TensorFlow gets the same intra-op count through TF_NUM_INTRAOP_THREADS (set before the native
 * library loads, unless already set). Both processes live for the whole run and the timing is
 * interleaved: each round runs `steps` steps of one framework then of the other, alternating who
 * goes first, so load from other processes hits both alike. Reported: median and min step time
 * of each side, the ratio of the medians, the median of the per-round ratios, and the load
 * averages before and after (the machine is shared; trust runs with a low load only).
 */
import { spawn } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const [width, batch, size, rounds, steps] = [16, 16, 112, 8, 3].map((d, i) => Number(process.argv[2 + i] ?? d));
const python = process.env.PYTHON ?? path.join(root, '.cache/py/bin/python');
const load0 = os.loadavg();

// Torch first: its thread count decides TensorFlow's.
const py = spawn(python, [path.join(root, 'bench/torch_step.py'), '--serve', String(width), String(batch), String(size)], {
  stdio: ['pipe', 'pipe', 'inherit'],
});
py.on('error', (err) => {
  console.error(`cannot run ${python}: ${err.message} (set PYTHON to a python with torch)`);
  process.exit(1);
});
const lines = readline.createInterface({ input: py.stdout })[Symbol.asyncIterator]();
async function nextJson<T>(): Promise<T> {
  const { value, done } = await lines.next();
  if (done) throw new Error('bench/torch_step.py exited early');
  return JSON.parse(value as string) as T;
}
const torchInfo = await nextJson<{ version: string; threads: number; interop_threads: number }>();
process.env.TF_NUM_INTRAOP_THREADS ??= String(torchInfo.threads);

const tf = await import('@tensorflow/tfjs');
const { initBackend } = await import('../pipeline/backend.js');
const { CamHead } = await import('../nn/heads.js');
const { multilabelSoftMarginLoss } = await import('../nn/losses.js');
const { AdamW } = await import('../nn/optim.js');
const { ResNet } = await import('../nn/resnet.js');
const { trainStep } = await import('../nn/train.js');

const info = await initBackend();
const net = new ResNet({ width, depth: [1, 1, 1, 1], outputStride: 8 });
const head = new CamHead(net.channels[3], 4);
const opt = new AdamW(
  [
    { name: 'backbone', params: net.params.namedTrainable('b/') },
    { name: 'head', params: head.params.namedTrainable('h/'), lrMult: 10 },
  ],
  { lr: 0.003, weightDecay: 1e-4 },
);
const x = tf.randomUniform([batch, size, size, 3]) as import('@tensorflow/tfjs').Tensor4D;
const y = tf.cast(tf.greater(tf.randomUniform([batch, 4]), 0.5), 'float32') as import('@tensorflow/tfjs').Tensor2D;
const step = () => trainStep(opt, (u) => multilabelSoftMarginLoss(head.classifierLogits(net.forward(x, true, u).last), y));
for (let i = 0; i < 2; i++) step();
const n0 = tf.memory().numTensors;

function tagsegRound(): number[] {
  const out: number[] = [];
  for (let i = 0; i < steps; i++) {
    const t = performance.now();
    step();
    out.push(performance.now() - t);
  }
  return out;
}
async function torchRound(): Promise<number[]> {
  py.stdin.write(`${steps}\n`);
  return (await nextJson<{ times: number[] }>()).times;
}

const median = (v: number[]) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const ours: number[] = [];
const theirs: number[] = [];
const roundRatios: number[] = [];
for (let r = 0; r < rounds; r++) {
  let a: number[];
  let b: number[];
  if (r % 2 === 0) {
    a = tagsegRound();
    b = await torchRound();
  } else {
    b = await torchRound();
    a = tagsegRound();
  }
  ours.push(...a);
  theirs.push(...b);
  roundRatios.push(median(a) / median(b));
}
py.stdin.end();
const leak = tf.memory().numTensors - n0;
const r2 = (v: number) => Math.round(v * 100) / 100;
const result = {
  shapes: { width, batch, size, rounds, stepsPerRound: steps },
  tagseg: {
    backend: `${info.flavour} (TF ${info.tfVersion})`,
    intraOpThreads: process.env.TF_NUM_INTRAOP_THREADS,
    interOpThreads: process.env.TF_NUM_INTEROP_THREADS ?? 'TF default',
    median_ms: r2(median(ours)),
    min_ms: r2(Math.min(...ours)),
    leakedTensors: leak,
  },
  torch: { version: torchInfo.version, threads: torchInfo.threads, interOpThreads: torchInfo.interop_threads, median_ms: r2(median(theirs)), min_ms: r2(Math.min(...theirs)) },
  ratio_of_medians: r2(median(ours) / median(theirs)),
  median_round_ratio: r2(median(roundRatios)),
  loadavg_before: load0.map(r2),
  loadavg_after: os.loadavg().map(r2),
};
console.log(JSON.stringify(result));
console.log(
  `tagseg ${result.tagseg.median_ms} ms vs torch ${result.torch.median_ms} ms per step (medians of ${ours.length}); ` +
    `tagseg/torch ${result.ratio_of_medians} (per-round median ${result.median_round_ratio}); load ${result.loadavg_before.join(' ')} -> ${result.loadavg_after.join(' ')}`,
);
if (leak !== 0) {
  console.error(`tagseg step leaked ${leak} tensors`);
  process.exitCode = 1;
}
