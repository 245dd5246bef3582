/**
 * `tagseg doctor`: what this machine gives tagseg. The throughput probe is short (~2 s) and
 * measures what training spends its time on: a 3x3 conv and a matmul, forward only.
 */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs';
import { execa } from 'execa';
import sharp from 'sharp';
import { initBackend } from '../pipeline/backend.js';
import { messageOf } from '../pipeline/errors.js';
import { tagsegVersion } from './version.js';

export interface DoctorReport {
  tagseg: string;
  node: string;
  backend: string;
  flavour: string;
  gpu: boolean;
  tensorflow: string | null;
  tfjs: string;
  threads: { cpus: number; intraOp: string | null; interOp: string | null; uvThreadpool: number };
  probe: { conv2dGflops: number; matmulGflops: number; seconds: number };
  sharp: { sharp: string; libvips: string };
  dvc: string | null;
  notes: string[];
}

/** Runs `fn` and waits for its result. Returns nothing from tf.tidy on purpose: tidy walks
 * every element of a returned TypedArray looking for tensors (150x slower for a 2M-value map). */
function runOnce(fn: () => tf.Tensor): void {
  const out = fn();
  out.dataSync();
  out.dispose();
}

/** Median-of-runs GFLOP/s of `fn`, which performs `flops` floating point operations. */
function gflops(fn: () => tf.Tensor, flops: number, runs: number): number {
  runOnce(fn); // warm-up: kernel selection, oneDNN primitive creation
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = performance.now();
    runOnce(fn);
    times.push((performance.now() - t0) / 1000);
  }
  times.sort((a, b) => a - b);
  return flops / times[Math.floor(times.length / 2)] / 1e9;
}

export function throughputProbe(runs = 5): DoctorReport['probe'] {
  const t0 = performance.now();
  // Shapes of a mid-network conv at training size: batch 8, 64x64, 64 -> 64 channels.
  const [b, h, w, cin, cout] = [8, 64, 64, 64, 64];
  const x = tf.randomNormal([b, h, w, cin]) as tf.Tensor4D;
  const k = tf.randomNormal([3, 3, cin, cout]) as tf.Tensor4D;
  const conv = gflops(() => tf.conv2d(x, k, 1, 'same'), 2 * b * h * w * cin * cout * 9, runs);
  const n = 1024;
  const a = tf.randomNormal([n, n]) as tf.Tensor2D;
  const mm = gflops(() => tf.matMul(a, a), 2 * n ** 3, runs);
  tf.dispose([x, k, a]);
  return { conv2dGflops: round(conv), matmulGflops: round(mm), seconds: round((performance.now() - t0) / 1000) };
}

async function dvcVersion(): Promise<string | null> {
  try {
    const { stdout } = await execa('dvc', ['--version'], { timeout: 15_000 });
    return stdout.trim();
  } catch {
    return null;
  }
}

export async function doctor(): Promise<DoctorReport> {
  const info = await initBackend();
  const notes = [...info.notes];
  let probe: DoctorReport['probe'];
  try {
    probe = throughputProbe(info.flavour === 'cpu' ? 1 : 5);
  } catch (err) {
    notes.push(`probe failed: ${messageOf(err)}`);
    probe = { conv2dGflops: 0, matmulGflops: 0, seconds: 0 };
  }
  return {
    tagseg: tagsegVersion(),
    node: process.version,
    backend: info.name,
    flavour: info.flavour,
    gpu: info.gpu,
    tensorflow: info.tfVersion ?? null,
    tfjs: info.tfjsVersion,
    threads: {
      cpus: os.availableParallelism(),
      intraOp: process.env.TF_NUM_INTRAOP_THREADS ?? null,
      interOp: process.env.TF_NUM_INTEROP_THREADS ?? null,
      uvThreadpool: Number(process.env.UV_THREADPOOL_SIZE ?? 4),
    },
    probe,
    sharp: { sharp: sharp.versions.sharp ?? 'unknown', libvips: sharp.versions.vips },
    dvc: await dvcVersion(),
    notes,
  };
}

export function formatDoctor(r: DoctorReport): string {
  const lines = [
    `tagseg      ${r.tagseg} (node ${r.node})`,
    `backend:    ${r.backend} (${r.flavour}${r.gpu ? ', GPU' : ''})`,
    `tensorflow: ${r.tensorflow ?? '-'}   tfjs ${r.tfjs}`,
    `threads:    ${r.threads.cpus} cpus, TF intra-op ${r.threads.intraOp ?? 'default (all)'}, libuv pool ${r.threads.uvThreadpool}`,
    `probe:      conv2d ${r.probe.conv2dGflops} GFLOP/s, matmul ${r.probe.matmulGflops} GFLOP/s (${r.probe.seconds} s)`,
    `sharp:      ${r.sharp.sharp} (libvips ${r.sharp.libvips})`,
    `dvc:        ${r.dvc ?? 'not on PATH (tagseg repro runs dvc.yaml itself)'}`,
  ];
  for (const n of r.notes) lines.push(`note:       ${n}`);
  return lines.join('\n');
}

function round(x: number): number {
  return Math.round(x * 10) / 10;
}
