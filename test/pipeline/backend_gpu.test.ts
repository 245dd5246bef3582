/**
 * The tfjs-node-gpu path on a machine without a GPU (pipeline/backend.ts): `tagseg doctor --json`
 * in child processes that find a stand-in `@tensorflow/tfjs-node-gpu` on NODE_PATH. The stand-ins
 * load the real tfjs-node (the GPU package is the same binding built against CUDA) and then:
 * fail like a missing CUDA library, see no GPU, or report a GPU device. What this cannot check:
 * the real package, CUDA or any kernel on a GPU.
 */
import { execFile } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { DoctorReport } from '../../cli/doctor.js';
import { REPO } from '../helpers/python.js';

const run = promisify(execFile);
let tmp: string;

const STAND_INS = {
  // a CUDA machine without the right libcudart: the load itself throws
  broken: "throw new Error('libcudart.so.11.0: cannot open shared object file: No such file or directory');",
  // installed, loads, no GPU visible: native TensorFlow on the CPU
  nogpu: "require('@tensorflow/tfjs-node');",
  // loads and its backend reports a GPU device (what tfjs-node-gpu's NodeJSKernelBackend sets)
  gpu: "require('@tensorflow/tfjs-node'); require('@tensorflow/tfjs-core').findBackend('tensorflow').isUsingGpuDevice = true;",
} as const;

beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-gpu-'));
  for (const [name, code] of Object.entries(STAND_INS)) {
    const dir = path.join(tmp, name, '@tensorflow', 'tfjs-node-gpu');
    await fs.mkdir(dir, { recursive: true });
    await fs.writeFile(path.join(dir, 'package.json'), JSON.stringify({ name: '@tensorflow/tfjs-node-gpu', version: '4.22.0', main: 'index.js' }));
    await fs.writeFile(path.join(dir, 'index.js'), `${code}\n`);
  }
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

/** `tagseg doctor --json` with `standIn` (or none) resolvable as @tensorflow/tfjs-node-gpu. */
async function doctor(standIn: keyof typeof STAND_INS | null, env: Record<string, string> = {}): Promise<DoctorReport> {
  const nodePath = [...(standIn ? [path.join(tmp, standIn)] : []), path.join(REPO, 'node_modules')].join(path.delimiter);
  const base: NodeJS.ProcessEnv = { ...process.env, NODE_PATH: nodePath };
  delete base.TAGSEG_BACKEND;
  const { stdout } = await run(process.execPath, [path.join(REPO, 'bin/tagseg.js'), 'doctor', '--json'], { cwd: REPO, env: { ...base, ...env } });
  return JSON.parse(stdout) as DoctorReport;
}

describe('tfjs-node-gpu selection without a GPU', () => {
  it('not installed: native tfjs-node, noted once (also with an empty TAGSEG_BACKEND)', async () => {
    for (const env of [{}, { TAGSEG_BACKEND: '' }] as Record<string, string>[]) {
      const r = await doctor(null, env);
      expect([r.backend, r.flavour, r.gpu]).toEqual(['tensorflow', 'tfjs-node', false]);
      expect(r.notes.filter((n) => n.startsWith('tfjs-node-gpu'))).toEqual(['tfjs-node-gpu: not installed']);
    }
  }, 60_000);

  it('installed but failing to load (missing CUDA library): treated as no GPU, falls back to tfjs-node', async () => {
    const r = await doctor('broken');
    expect([r.backend, r.flavour, r.gpu]).toEqual(['tensorflow', 'tfjs-node', false]);
    expect(r.notes.join('\n')).toMatch(/tfjs-node-gpu: libcudart\.so\.11\.0: cannot open shared object file.*\(treated as no GPU\)/);
  }, 60_000);

  it('installed, no GPU visible: the GPU package runs native TensorFlow on the CPU, doctor says so', async () => {
    const r = await doctor('nogpu');
    expect([r.backend, r.flavour, r.gpu]).toEqual(['tensorflow', 'tfjs-node-gpu', false]);
    expect(r.notes).toContain('tfjs-node-gpu: loaded but sees no GPU; running native TensorFlow on CPU');
    expect(r.probe.conv2dGflops).toBeGreaterThan(0);
  }, 60_000);

  it('installed and seeing a GPU: chosen first, doctor reports the GPU', async () => {
    const r = await doctor('gpu');
    expect([r.backend, r.flavour, r.gpu]).toEqual(['tensorflow', 'tfjs-node-gpu', true]);
    expect(r.notes.filter((n) => n.startsWith('tfjs-node-gpu'))).toEqual([]);
  }, 60_000);

  it('TAGSEG_BACKEND=gpu fails loudly instead of falling back when the GPU package cannot load', async () => {
    const err = await doctor('broken', { TAGSEG_BACKEND: 'gpu' }).then(() => null, (e: { stderr: string; code: number }) => e);
    expect(err?.code).toBe(1);
    expect(err?.stderr).toMatch(/backend 'gpu' failed to load: libcudart\.so\.11\.0/);
    const none = await doctor(null, { TAGSEG_BACKEND: 'gpu' }).then(() => null, (e: { stderr: string }) => e);
    expect(none?.stderr).toMatch(/backend 'gpu' failed to load: Cannot find module '@tensorflow\/tfjs-node-gpu'/);
  }, 60_000);
});
