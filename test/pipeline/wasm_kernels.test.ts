import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { describe, expect, it } from 'vitest';

/** Filter gradient of a strided 'same' conv, computed on the current backend. */
function filterGrad(x: number[], w: number[]): Float32Array {
  const xs = tf.tensor4d(x, [1, 5, 5, 2]);
  const ws = tf.variable(tf.tensor4d(w, [3, 3, 2, 3]));
  const { grads } = tf.variableGrads(() => tf.conv2d(xs, ws, 2, 'same').square().sum() as tf.Scalar, [ws]);
  const out = grads[ws.name].dataSync() as Float32Array;
  tf.dispose([xs, ws, grads[ws.name]]);
  return out;
}

describe('wasm gradient kernels', () => {
  it('Conv2DBackpropFilter on wasm matches the cpu backend', async () => {
    const wasmPkg = await import('@tensorflow/tfjs-backend-wasm');
    const { createRequire } = await import('node:module');
    const path = await import('node:path');
    const req = createRequire(import.meta.url);
    wasmPkg.setWasmPaths(`${path.dirname(req.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'))}/`);
    const x = Array.from({ length: 50 }, (_, i) => Math.sin(i));
    const w = Array.from({ length: 54 }, (_, i) => Math.cos(i * 0.7));

    await tf.setBackend('cpu');
    const reference = filterGrad(x, w);

    const { registerWasmGradientKernels } = await import('../../pipeline/wasm_kernels.js');
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')).toBeUndefined();
    registerWasmGradientKernels();
    expect(await tf.setBackend('wasm')).toBe(true);
    const onWasm = filterGrad(x, w);
    expect(onWasm.length).toBe(reference.length);
    for (let i = 0; i < reference.length; i++) expect(onWasm[i]).toBeCloseTo(reference[i], 4);
  });
});
