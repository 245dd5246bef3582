/**
 * TensorFlow backend selection. Every module imports `@tensorflow/tfjs` (one shared tfjs-core);
 * `initBackend()` registers the fastest backend that loads here and makes it current:
 *   tfjs-node-gpu (when installed and it sees a GPU) > tfjs-node (native libtensorflow)
 *   > wasm (with the missing Conv2DBackpropFilter kernel registered) > cpu (pure JS).
 * Measured on the 2-core dev machine, one training step of a 4-conv net: native 51 ms,
 * wasm 1,084 ms, cpu 64,519 ms -- so the slow ones warn loudly.
 */
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { TagsegError, messageOf } from './errors.js';
import { log } from './log.js';

export type BackendFlavour = 'tfjs-node-gpu' | 'tfjs-node' | 'wasm' | 'cpu';

export interface BackendInfo {
  /** tfjs backend name: 'tensorflow' for both native flavours. */
  name: string;
  flavour: BackendFlavour;
  gpu: boolean;
  /** libtensorflow version of the native binding, when native. */
  tfVersion?: string;
  tfjsVersion: string;
  /** Notes on what was tried and why it was skipped. */
  notes: string[];
}

const require = createRequire(import.meta.url);
let current: BackendInfo | undefined;

const CHOICES: Record<string, BackendFlavour> = {
  gpu: 'tfjs-node-gpu',
  'tfjs-node-gpu': 'tfjs-node-gpu',
  tensorflow: 'tfjs-node',
  native: 'tfjs-node',
  node: 'tfjs-node',
  'tfjs-node': 'tfjs-node',
  wasm: 'wasm',
  cpu: 'cpu',
};

/**
 * Load and select a backend once per process. `want` (or env TAGSEG_BACKEND) forces one:
 * gpu | tensorflow | wasm | cpu. Without it, the first that works in the order above.
 */
export async function initBackend(want: string | undefined = process.env.TAGSEG_BACKEND): Promise<BackendInfo> {
  if (current) return current;
  // libtensorflow prints oneDNN/CPU-feature banners on load; keep stderr for our own messages.
  process.env.TF_CPP_MIN_LOG_LEVEL ??= '2';
  const notes: string[] = [];
  let order: BackendFlavour[] = ['tfjs-node-gpu', 'tfjs-node', 'wasm', 'cpu'];
  if (want) {
    const forced = CHOICES[want.toLowerCase()];
    if (!forced) {
      throw new TagsegError(`unknown backend '${want}'`, {
        hint: `TAGSEG_BACKEND must be one of: ${Object.keys(CHOICES).join(', ')}`,
      });
    }
    order = [forced];
  }
  for (const flavour of order) {
    try {
      const info = await tryFlavour(flavour, notes, Boolean(want)); // TAGSEG_BACKEND= (empty) forces nothing
      if (info) {
        current = info;
        if (flavour === 'wasm' || flavour === 'cpu') {
          log.warn(
            `using the ${flavour} backend: training is ${flavour === 'wasm' ? '~20x' : '~1000x'} slower than native ` +
              `TensorFlow. Run \`npm install\` again (or \`node scripts/check-native.mjs\`) to build the native binding.` +
              (notes.length ? `\n  ${notes.join('\n  ')}` : ''),
          );
        }
        return info;
      }
    } catch (err) {
      if (want) throw new TagsegError(`backend '${want}' failed to load: ${messageOf(err)}`, { cause: err });
      notes.push(`${flavour}: ${firstLine(messageOf(err))}`);
    }
  }
  throw new TagsegError('no TensorFlow.js backend could be loaded', { hint: notes.join('; ') });
}

/** The backend chosen by `initBackend`, or undefined before it ran. */
export function backendInfo(): BackendInfo | undefined {
  return current;
}

async function tryFlavour(flavour: BackendFlavour, notes: string[], forced: boolean): Promise<BackendInfo | undefined> {
  switch (flavour) {
    case 'tfjs-node-gpu': {
      let gpuPkg: unknown;
      try {
        gpuPkg = require('@tensorflow/tfjs-node-gpu');
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        // Absence is normal: tfjs-node-gpu is an opt-in install on CUDA 11.2 machines.
        notes.push(code === 'MODULE_NOT_FOUND' ? 'tfjs-node-gpu: not installed' : `tfjs-node-gpu: ${firstLine(messageOf(err))} (treated as no GPU)`);
        if (forced) throw err;
        return undefined;
      }
      void gpuPkg;
      await tf.setBackend('tensorflow');
      const gpu = Boolean((tf.backend() as unknown as { isUsingGpuDevice?: boolean }).isUsingGpuDevice);
      if (!gpu) notes.push('tfjs-node-gpu: loaded but sees no GPU; running native TensorFlow on CPU');
      return native('tfjs-node-gpu', gpu, notes);
    }
    case 'tfjs-node': {
      require('@tensorflow/tfjs-node');
      await tf.setBackend('tensorflow');
      return native('tfjs-node', false, notes);
    }
    case 'wasm': {
      const wasm = await import('@tensorflow/tfjs-backend-wasm');
      const dist = path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
      wasm.setWasmPaths(`${dist}/`);
      const { registerWasmGradientKernels } = await import('./wasm_kernels.js');
      registerWasmGradientKernels();
      if (!(await tf.setBackend('wasm'))) throw new Error('wasm backend failed to initialise');
      return { name: 'wasm', flavour, gpu: false, tfjsVersion: tf.version.tfjs, notes };
    }
    case 'cpu': {
      await import('@tensorflow/tfjs-backend-cpu');
      await tf.setBackend('cpu');
      return { name: 'cpu', flavour, gpu: false, tfjsVersion: tf.version.tfjs, notes };
    }
  }
}

function native(flavour: BackendFlavour, gpu: boolean, notes: string[]): BackendInfo {
  const binding = (tf.backend() as unknown as { binding?: { TF_Version?: string } }).binding;
  return { name: 'tensorflow', flavour, gpu, tfVersion: binding?.TF_Version, tfjsVersion: tf.version.tfjs, notes };
}

function firstLine(s: string): string {
  return s.split('\n')[0] ?? s;
}
