// Preload of bench/budget.ts (node --import): where one process's seconds go. Not part of tagseg.
/*
 * On the main thread it wraps every kernel of the native 'tensorflow' backend with a timer, and
 * its readSync (tensor.data() / dataSync()), and at exit writes TAGSEG_BUDGET_FILE (JSON):
 *   wallS       from this preload to exit
 *   cpuS        user + system CPU of the whole process (every thread: TensorFlow's pool, CRF
 *               workers, sharp's decoders), so cpuS / wallS is the cores kept busy
 *   elu         the event loop's active and idle ms (idle: awaiting I/O, workers, timers)
 *   kernelS     time inside TensorFlow kernels (tfjs-node runs each op synchronously on this
 *               thread, the op itself on TensorFlow's thread pool), by kernel name with calls
 *   readS       time reading tensors back to JS
 *   flops       floating point operations of the conv / depthwise / matmul kernels, forward and
 *               backward, counted from their shapes (2 per multiply-add), with their kernel time
 *   cut         true when TAGSEG_BUDGET_SECONDS ended the process before the stage finished
 * Main thread JS (and native work outside TensorFlow: Arrow, PNG, CRF dispatch) is
 * elu.active - kernel - read. With TAGSEG_BUDGET_SECONDS the process exits after that many
 * seconds: a window of a long stage (its outputs stay as they were: stages commit at the end).
 */
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { isMainThread } from 'node:worker_threads';

const file = process.env.TAGSEG_BUDGET_FILE;
// Only the process the driver started: a child would inherit the variables and overwrite the file.
const mine = process.env.TAGSEG_BUDGET_PID === undefined;
if (isMainThread && file && mine) {
  process.env.TAGSEG_BUDGET_PID = String(process.pid);
  const require = createRequire(`${process.cwd()}/`);
  const tf = require('@tensorflow/tfjs');
  require('@tensorflow/tfjs-node');
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const elu0 = performance.eventLoopUtilization();
  const kernels = new Map();
  const flopsBy = new Map();
  let readMs = 0;
  const prod = (s) => s.reduce((a, b) => a * b, 1);
  /** FLOPs of one call (2 per multiply-add), or 0 for kernels that are not convolutions or matmuls. */
  const flopsOf = (name, inputs, attrs, out) => {
    const o = Array.isArray(out) ? out[0] : out;
    switch (name) {
      case 'Conv2D':
      case 'FusedConv2D': {
        const [fh, fw, cin] = inputs.filter.shape;
        return 2 * prod(o.shape) * fh * fw * cin;
      }
      case 'Conv2DBackpropInput': {
        const [fh, fw, cin] = inputs.filter.shape;
        return 2 * prod(inputs.dy.shape) * fh * fw * cin;
      }
      case 'Conv2DBackpropFilter': {
        const [fh, fw, cin] = attrs.filterShape;
        return 2 * prod(inputs.dy.shape) * fh * fw * cin;
      }
      case 'DepthwiseConv2dNative':
      case 'FusedDepthwiseConv2D': {
        const [fh, fw] = inputs.filter.shape;
        return 2 * prod(o.shape) * fh * fw;
      }
      case 'DepthwiseConv2dNativeBackpropInput': {
        const [fh, fw] = inputs.filter.shape;
        return 2 * prod(inputs.dy.shape) * fh * fw;
      }
      case 'DepthwiseConv2dNativeBackpropFilter': {
        const [fh, fw] = attrs.filterShape;
        return 2 * prod(inputs.dy.shape) * fh * fw;
      }
      case 'BatchMatMul':
      case '_FusedMatMul': {
        const a = inputs.a.shape;
        const k = attrs.transposeA ? a[a.length - 2] : a[a.length - 1];
        return 2 * prod(o.shape) * k;
      }
      default:
        return 0;
    }
  };
  for (const config of tf.getKernelsForBackend('tensorflow')) {
    const { kernelName, kernelFunc } = config;
    const stat = { calls: 0, ms: 0 };
    kernels.set(kernelName, stat);
    tf.unregisterKernel(kernelName, 'tensorflow');
    tf.registerKernel({
      ...config,
      kernelFunc: (args) => {
        const t = performance.now();
        const out = kernelFunc(args);
        const ms = performance.now() - t;
        stat.calls++;
        stat.ms += ms;
        const f = flopsOf(kernelName, args.inputs, args.attrs ?? {}, out);
        if (f > 0) {
          const s = flopsBy.get(kernelName) ?? { flops: 0, ms: 0 };
          s.flops += f;
          s.ms += ms;
          flopsBy.set(kernelName, s);
        }
        return out;
      },
    });
  }
  const backendClass = Object.getPrototypeOf(tf.findBackend('tensorflow'));
  const readSync = backendClass.readSync;
  backendClass.readSync = function (...a) {
    const t = performance.now();
    try {
      return readSync.apply(this, a);
    } finally {
      readMs += performance.now() - t;
    }
  };
  let cut = false;
  process.on('exit', () => {
    const wallMs = performance.now() - t0;
    const cpu = process.cpuUsage(cpu0);
    const elu = performance.eventLoopUtilization(elu0);
    const byKernel = Object.fromEntries([...kernels].filter(([, s]) => s.calls > 0).sort((a, b) => b[1].ms - a[1].ms).map(([k, s]) => [k, { calls: s.calls, s: s.ms / 1000 }]));
    fs.writeFileSync(file, JSON.stringify({
      wallS: wallMs / 1000,
      cpuS: (cpu.user + cpu.system) / 1e6,
      elu: { activeS: elu.active / 1000, idleS: elu.idle / 1000 },
      kernelS: [...kernels.values()].reduce((s, k) => s + k.ms, 0) / 1000,
      readS: readMs / 1000,
      flops: Object.fromEntries([...flopsBy].map(([k, s]) => [k, { gflop: s.flops / 1e9, s: s.ms / 1000 }])),
      byKernel,
      cut,
    }, null, 1));
  });
  const seconds = Number(process.env.TAGSEG_BUDGET_SECONDS ?? 0);
  if (seconds > 0) {
    setTimeout(() => {
      cut = true;
      process.exit(0);
    }, seconds * 1000).unref();
  }
}
