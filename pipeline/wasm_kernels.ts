/**
 * Kernels the tfjs wasm backend lacks but training needs. tfjs-backend-wasm 4.22 has no
 * Conv2DBackpropFilter, so any conv net fails to train on it; we run the cpu backend's
 * implementation on the wasm tensors' values (slow, but wasm is only the fallback).
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';

type Vals = Float32Array | Int32Array | Uint8Array;

interface WasmLike {
  readSync(dataId: object): Vals;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: Vals): tf.TensorInfo;
}
interface CpuLike {
  makeTensorInfo(shape: number[], dtype: tf.DataType, values: Vals): tf.TensorInfo;
  readSync(dataId: object): Vals;
  disposeIntermediateTensorInfo(t: tf.TensorInfo): void;
}

/** Re-run a cpu kernel on values copied out of the wasm heap; copy the result back. */
function viaCpu(kernelName: string): tf.KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const wasm = backend as unknown as WasmLike;
    const cpu = tf.findBackend('cpu') as unknown as CpuLike;
    const cpuKernel = tf.getKernel(kernelName, 'cpu');
    if (!cpu || !cpuKernel) throw new Error(`cpu kernel ${kernelName} unavailable`);
    const cpuInputs: Record<string, tf.TensorInfo> = {};
    for (const [name, t] of Object.entries(inputs)) {
      const info = t as tf.TensorInfo;
      cpuInputs[name] = cpu.makeTensorInfo(info.shape, info.dtype, wasm.readSync(info.dataId));
    }
    const out = cpuKernel.kernelFunc({ inputs: cpuInputs, backend: cpu as unknown as tf.KernelBackend, attrs }) as tf.TensorInfo;
    const result = wasm.makeOutput(out.shape, out.dtype, undefined, cpu.readSync(out.dataId));
    for (const t of [...Object.values(cpuInputs), out]) cpu.disposeIntermediateTensorInfo(t);
    return result;
  };
}

const MISSING = ['Conv2DBackpropFilter'];

/** Idempotent: registers only kernels the wasm backend does not have. */
export function registerWasmGradientKernels(): void {
  for (const name of MISSING) {
    if (!tf.getKernel(name, 'wasm')) tf.registerKernel({ kernelName: name, backendName: 'wasm', kernelFunc: viaCpu(name) });
  }
}
