/**
 * Checkpoints: named variables + optimizer state + JSON training state in one directory:
 *   manifest.json  { format, version, tensors: [{name, shape, dtype, offset, byteLength}],
 *                    weightsSha256, optimizer (JSON part), trainState, meta }
 *   weights.bin    all tensors, little-endian, concatenated in manifest order
 * Model variables are stored under 'model/<name>', optimizer slots under 'optimizer/<slot>/<name>'.
 *
 * Written atomically: everything goes into a temp sibling directory, which then replaces the
 * target (pipeline/fsutil replaceDirAtomic), so a kill leaves the old or the new checkpoint,
 * never a mix. The bytes are a function of the tensors and the JSON given (no time, no host), so
 * a model folder is a pure function of its training. Read and written with node:fs only (no tfjs-node file:// handlers), so it works
 * on every backend. Loading validates every name, shape, dtype and the weights' hash BEFORE
 * assigning anything, so a failed load leaves the model untouched.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { ensureDir, removeLeftovers, replaceDirAtomic, tempPathFor, writeFileSynced } from '../pipeline/fsutil.js';
import type { Optimizer, OptimizerStateJson } from './optim.js';
import type { NamedVariables } from './params.js';

export const CHECKPOINT_FORMAT = 'tagseg-checkpoint';
export const CHECKPOINT_VERSION = 1;
const MANIFEST = 'manifest.json';
const WEIGHTS = 'weights.bin';
const MODEL_PREFIX = 'model/';
const OPTIM_PREFIX = 'optimizer/';

export type CheckpointDtype = 'float32' | 'int32';

export interface TensorEntry {
  name: string;
  shape: number[];
  dtype: CheckpointDtype;
  /** Byte offset in weights.bin. */
  offset: number;
  byteLength: number;
}

export interface CheckpointManifest {
  format: typeof CHECKPOINT_FORMAT;
  version: number;
  tensors: TensorEntry[];
  weightsSha256: string;
  optimizer?: OptimizerStateJson;
  /** Training progress (epoch, iter, rng state, ...), any JSON. */
  trainState?: unknown;
  /** Free-form JSON (config, backbone name, class list, ...). */
  meta?: unknown;
}

export interface SaveCheckpointOptions {
  /** Variables to store, under stable names (e.g. mergeNamed(backbone.params.named('backbone/'), ...)). */
  variables: NamedVariables;
  optimizer?: Optimizer;
  /** JSON training state, e.g. { epoch, iter, rng: rng.state() }. */
  trainState?: unknown;
  meta?: unknown;
}

export interface LoadCheckpointOptions {
  /** Variables to fill; names must match the saved ones. */
  variables: NamedVariables;
  /** Restores its state when given (the checkpoint must have one). */
  optimizer?: Optimizer;
  /** Allow saved model variables that are not in `variables` (e.g. load a backbone out of a full model). Default false. */
  allowUnexpected?: boolean;
  /** Allow `variables` the checkpoint lacks (they keep their values). Default false. */
  allowMissing?: boolean;
}

/** Save atomically to `dir` (replaced whole if it exists). */
export async function saveCheckpoint(dir: string, opts: SaveCheckpointOptions): Promise<void> {
  const named: [string, tf.Tensor][] = [];
  for (const [k, v] of opts.variables) named.push([MODEL_PREFIX + k, v]);
  if (opts.optimizer) for (const [k, t] of opts.optimizer.stateTensors()) named.push([OPTIM_PREFIX + k, t]);

  const entries: TensorEntry[] = [];
  const chunks: Uint8Array[] = [];
  const seen = new Set<string>();
  let offset = 0;
  for (const [name, t] of named) {
    if (seen.has(name)) throw new TagsegError(`duplicate tensor name '${name}' in checkpoint`);
    seen.add(name);
    if (t.dtype !== 'float32' && t.dtype !== 'int32') throw new TagsegError(`checkpoint tensor '${name}' has unsupported dtype ${t.dtype}`);
    const data = (await t.data()) as Float32Array | Int32Array;
    const bytes = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    chunks.push(bytes);
    entries.push({ name, shape: [...t.shape], dtype: t.dtype, offset, byteLength: bytes.byteLength });
    offset += bytes.byteLength;
  }
  const weights = Buffer.concat(chunks);
  const manifest: CheckpointManifest = {
    format: CHECKPOINT_FORMAT,
    version: CHECKPOINT_VERSION,
    tensors: entries,
    weightsSha256: createHash('sha256').update(weights).digest('hex'),
    ...(opts.optimizer ? { optimizer: opts.optimizer.stateJson() } : {}),
    ...(opts.trainState !== undefined ? { trainState: opts.trainState } : {}),
    ...(opts.meta !== undefined ? { meta: opts.meta } : {}),
  };
  const manifestText = `${JSON.stringify(manifest, null, 1)}\n`;

  const target = path.resolve(dir);
  await ensureDir(path.dirname(target));
  const staged = tempPathFor(target);
  try {
    await fs.mkdir(staged);
    await writeFileSynced(path.join(staged, WEIGHTS), weights);
    await writeFileSynced(path.join(staged, MANIFEST), manifestText);
    await replaceDirAtomic(staged, target);
  } catch (err) {
    await fs.rm(staged, { recursive: true, force: true });
    throw new TagsegError(`could not write checkpoint: ${messageOf(err)}`, { file: target, cause: err });
  }
}

/** Whether `dir` holds a checkpoint manifest. */
export async function checkpointExists(dir: string): Promise<boolean> {
  try {
    await fs.access(path.join(dir, MANIFEST));
    return true;
  } catch {
    return false;
  }
}

/**
 * Read a checkpoint's manifest and tensors (verified against the hash and the manifest).
 * Tensor names keep their 'model/' / 'optimizer/' prefixes. The caller owns the tensors.
 */
export async function readCheckpoint(dir: string): Promise<{ manifest: CheckpointManifest; tensors: Map<string, tf.Tensor> }> {
  const manifestFile = path.join(dir, MANIFEST);
  const weightsFile = path.join(dir, WEIGHTS);
  let manifest: CheckpointManifest;
  try {
    manifest = JSON.parse(await fs.readFile(manifestFile, 'utf8')) as CheckpointManifest;
  } catch (err) {
    throw new TagsegError(`cannot read checkpoint manifest: ${messageOf(err)}`, { file: manifestFile, hint: 'is this a tagseg checkpoint directory?' });
  }
  if (manifest.format !== CHECKPOINT_FORMAT || !Array.isArray(manifest.tensors)) {
    throw new TagsegError(`not a ${CHECKPOINT_FORMAT} manifest`, { file: manifestFile });
  }
  if (manifest.version > CHECKPOINT_VERSION) {
    throw new TagsegError(`checkpoint version ${manifest.version} is newer than this code (${CHECKPOINT_VERSION})`, { file: manifestFile });
  }
  let buf: Buffer;
  try {
    buf = await fs.readFile(weightsFile);
  } catch (err) {
    throw new TagsegError(`cannot read checkpoint weights: ${messageOf(err)}`, { file: weightsFile });
  }
  const sha = createHash('sha256').update(buf).digest('hex');
  if (sha !== manifest.weightsSha256) {
    throw new TagsegError('checkpoint weights do not match the manifest hash (corrupt or partial file)', { file: weightsFile });
  }
  const tensors = new Map<string, tf.Tensor>();
  try {
    for (const e of manifest.tensors) {
      const n = e.shape.reduce((a, b) => a * b, 1);
      if (e.byteLength !== 4 * n || e.offset < 0 || e.offset + e.byteLength > buf.byteLength || (e.dtype !== 'float32' && e.dtype !== 'int32')) {
        throw new TagsegError(`checkpoint tensor '${e.name}' has an inconsistent manifest entry`, { file: manifestFile });
      }
      // Copy into a fresh, aligned buffer (Buffer slices may not be 4-byte aligned).
      const bytes = new Uint8Array(e.byteLength);
      bytes.set(buf.subarray(e.offset, e.offset + e.byteLength));
      const data = e.dtype === 'float32' ? new Float32Array(bytes.buffer) : new Int32Array(bytes.buffer);
      tensors.set(e.name, tf.tensor(data, e.shape, e.dtype));
    }
  } catch (err) {
    tf.dispose([...tensors.values()]);
    throw err;
  }
  return { manifest, tensors };
}

/**
 * Loads a saved model folder's weights (`<dir>/weights`) into `net`; a failed load disposes `net`,
 * so a bad model folder leaves no tensors behind. What every model loader ends with.
 */
export async function loadModelWeights<N extends { named(): NamedVariables; dispose(): void }>(net: N, dir: string): Promise<N> {
  try {
    await loadCheckpoint(path.join(dir, 'weights'), { variables: net.named() });
  } catch (err) {
    net.dispose();
    throw err;
  }
  return net;
}

/**
 * Load into `opts.variables` (and `opts.optimizer`). Everything is checked first; on any
 * mismatch a TagsegError lists the problems and nothing is modified. Returns the JSON parts.
 */
export async function loadCheckpoint(
  dir: string,
  opts: LoadCheckpointOptions,
): Promise<{ trainState: unknown; meta: unknown; manifest: CheckpointManifest }> {
  const { manifest, tensors } = await readCheckpoint(dir);
  const file = path.join(dir, MANIFEST);
  try {
    const problems: string[] = [];
    const model = new Map<string, tf.Tensor>();
    const optim = new Map<string, tf.Tensor>();
    for (const [k, t] of tensors) {
      if (k.startsWith(MODEL_PREFIX)) model.set(k.slice(MODEL_PREFIX.length), t);
      else if (k.startsWith(OPTIM_PREFIX)) optim.set(k.slice(OPTIM_PREFIX.length), t);
      else problems.push(`unknown tensor '${k}'`);
    }
    for (const [name, v] of opts.variables) {
      const t = model.get(name);
      if (!t) {
        if (!opts.allowMissing) problems.push(`missing in checkpoint: '${name}' [${v.shape.join(', ')}]`);
        continue;
      }
      if (!sameShape(t.shape, v.shape)) problems.push(`shape mismatch for '${name}': checkpoint [${t.shape.join(', ')}], model [${v.shape.join(', ')}]`);
      if (t.dtype !== v.dtype) problems.push(`dtype mismatch for '${name}': checkpoint ${t.dtype}, model ${v.dtype}`);
    }
    if (!opts.allowUnexpected) {
      for (const name of model.keys()) if (!opts.variables.has(name)) problems.push(`unexpected in checkpoint: '${name}'`);
    }
    if (opts.optimizer && !manifest.optimizer) problems.push('the checkpoint has no optimizer state');
    if (problems.length) {
      const shown = problems.slice(0, 20).join('\n    ');
      throw new TagsegError(`checkpoint does not match the model (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n    ${shown}`, {
        file,
        hint: 'was it saved by another network configuration (width, depth, classes, norm)?',
      });
    }
    if (opts.optimizer && manifest.optimizer) {
      try {
        opts.optimizer.loadState(manifest.optimizer, optim); // validates before it changes anything
      } catch (err) {
        throw new TagsegError(`checkpoint optimizer state does not fit: ${messageOf(err)}`, { file, cause: err });
      }
    }
    for (const [name, v] of opts.variables) {
      const t = model.get(name);
      if (t) v.assign(t);
    }
    return { trainState: manifest.trainState, meta: manifest.meta, manifest };
  } finally {
    tf.dispose([...tensors.values()]);
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * The JSON training state of the checkpoint in `dir`, without loading weights; undefined when
 * `dir` holds no manifest. A manifest that exists but does not parse is a TagsegError naming it,
 * not a warning and a fresh start: checkpoints are written to a temp folder, fsynced and renamed,
 * so a corrupt one means a failing disk or a hand edit, which the user should see before hours of
 * training are overwritten; starting over is one `rm -r` of the folder the hint names.
 */
export async function readTrainState<T>(dir: string): Promise<T | undefined> {
  const file = path.join(dir, MANIFEST);
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new TagsegError(`cannot read checkpoint manifest: ${messageOf(err)}`, { file, cause: err });
  }
  let m: { format?: string; trainState?: T };
  try {
    m = JSON.parse(text) as { format?: string; trainState?: T };
  } catch (err) {
    throw new TagsegError(`corrupt checkpoint manifest (${messageOf(err)})`, { file, hint: `delete ${dir} to train from scratch` });
  }
  if (m?.format !== CHECKPOINT_FORMAT) throw new TagsegError(`not a ${CHECKPOINT_FORMAT} manifest`, { file, hint: `delete ${dir} to train from scratch` });
  return m.trainState;
}

/**
 * A model folder, the form every network stage saves (models/cam, models/affinity, ...):
 * `<dir>/weights/` (a checkpoint of `variables`, without optimizer state), `<dir>/config.json`
 * (`config`) and any `extra` files (a string is written as is, anything else as JSON). The folder
 * is built whole next to `dir` and swapped in (replaceDirAtomic), so no temp file ever lies
 * inside it (it is a DVC output, hashed whole) and a kill leaves the old or the new model.
 */
export async function saveModelDir(dir: string, variables: NamedVariables, config: object, extra: Record<string, unknown> = {}): Promise<void> {
  const target = path.resolve(dir);
  await ensureDir(path.dirname(target));
  await removeLeftovers(target);
  const staged = tempPathFor(target);
  try {
    await fs.mkdir(staged);
    await saveCheckpoint(path.join(staged, 'weights'), { variables, meta: config });
    for (const [name, value] of Object.entries(extra)) {
      await writeFileSynced(path.join(staged, name), typeof value === 'string' ? value : `${JSON.stringify(value, null, 1)}\n`);
    }
    await writeFileSynced(path.join(staged, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
    await replaceDirAtomic(staged, target);
  } catch (err) {
    await fs.rm(staged, { recursive: true, force: true });
    throw err instanceof TagsegError ? err : new TagsegError(`could not write the model folder: ${messageOf(err)}`, { file: target, cause: err });
  }
}

/**
 * `<dir>/config.json` of a model folder, checked for its `format` tag. `what` names the model in
 * errors ('CAM model'); `hint` says how to make one.
 */
export async function readModelConfig<T extends { format: string }>(dir: string, format: T['format'], what: string, hint: string): Promise<T> {
  const file = path.join(dir, 'config.json');
  let config: T;
  try {
    config = JSON.parse(await fs.readFile(file, 'utf8')) as T;
  } catch (err) {
    throw new TagsegError(`cannot read the ${what} config: ${messageOf(err)}`, { file, hint });
  }
  if (config?.format !== format) throw new TagsegError(`not a ${format} config (format '${String(config?.format)}')`, { file, hint });
  return config;
}
