/**
 * Pretrained weights by name (nn/pretrained.ts): a models folder, the cache, a download from a
 * loopback http server standing in for the official host, checksums matched and mismatched.
 * The download from the official host itself is not tested here (no network).
 */
import * as fs from 'node:fs/promises';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { MOBILENET_PRETRAINED, loadMobileNetV1 } from '../../nn/mobilenet.js';
import { pretrainedModel, registerPretrained, resolvePretrained } from '../../nn/pretrained.js';
import { initBackend } from '../../pipeline/backend.js';
import { TagsegError } from '../../pipeline/errors.js';
import { skipWithout } from '../helpers/ci.js';
import { MODELS_DIR, MOBILENET_DIR, MOBILENET_PRESENT } from '../helpers/models.js';

const skip = skipWithout('pretrained-model', MOBILENET_PRESENT ? undefined : `no model.json in ${MOBILENET_DIR} (the weights come from ../shared/models beside the clone, or $TAGSEG_MODELS_DIR)`);

const official = pretrainedModel(MOBILENET_PRETRAINED)!;
let tmp: string;
let server: http.Server;
let base: string;
/** Files the loopback server serves (name -> bytes), and the requests it answered. */
const served = new Map<string, Buffer>();
const requests: string[] = [];

beforeAll(async () => {
  await initBackend();
  server = http.createServer((req, res) => {
    const [, dir, name] = (req.url ?? '').split('/');
    requests.push(`${dir}/${name}`);
    const body = served.get(`${dir}/${name}`);
    res.writeHead(body ? 200 : 404).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-pretrained-'));
  process.env.TAGSEG_CACHE_DIR = path.join(tmp, 'cache');
  requests.length = 0;
});
afterEach(async () => {
  process.env.TAGSEG_MODELS_DIR = MODELS_DIR;
  delete process.env.TAGSEG_CACHE_DIR;
  await fs.rm(tmp, { recursive: true, force: true });
});

/** Copy the local MobileNet into `dir`, with `edit` applied to the file named. */
async function copyModel(dir: string, edit?: { file: string; change: (b: Buffer) => Buffer }): Promise<void> {
  await fs.mkdir(dir, { recursive: true });
  for (const f of await fs.readdir(MOBILENET_DIR)) {
    const bytes = await fs.readFile(path.join(MOBILENET_DIR, f));
    await fs.writeFile(path.join(dir, f), edit?.file === f ? edit.change(bytes) : bytes);
  }
}

/** Serve the local MobileNet's files under /<prefix>/ (with `edit`), return its model.json URL. */
async function serveModel(prefix: string, edit?: { file: string; change: (b: Buffer) => Buffer }): Promise<string> {
  for (const f of await fs.readdir(MOBILENET_DIR)) {
    const bytes = await fs.readFile(path.join(MOBILENET_DIR, f));
    served.set(`${prefix}/${f}`, edit?.file === f ? edit.change(bytes) : bytes);
  }
  return `${base}/${prefix}/model.json`;
}

const flipByte = (b: Buffer): Buffer => {
  const c = Buffer.from(b);
  c[c.length >> 1] ^= 0xff;
  return c;
};

describe.skipIf(skip)('pretrained weights by name', () => {
  it('a name resolves to the checked folder under TAGSEG_MODELS_DIR, and loads', async () => {
    expect(await resolvePretrained(MOBILENET_PRETRAINED)).toBe(MOBILENET_DIR);
    const net = await loadMobileNetV1({ path: MOBILENET_PRETRAINED, outputStride: 16 });
    expect(net.pretrained).toBe(true);
    net.dispose();
    expect(requests).toEqual([]);
  });

  it('a changed weight file in the models folder stops with a TagsegError naming the file', async () => {
    process.env.TAGSEG_MODELS_DIR = path.join(tmp, 'models');
    await copyModel(path.join(tmp, 'models', 'mobilenet-v1-imagenet'), { file: 'group29-shard1of1', change: flipByte });
    const err = await resolvePretrained(MOBILENET_PRETRAINED).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TagsegError);
    expect((err as TagsegError).reason).toMatch(/sha256 mismatch for 'mobilenet_v1_1.0_224'/);
    expect((err as TagsegError).file).toBe(path.join(tmp, 'models', 'mobilenet-v1-imagenet', 'group29-shard1of1'));
    // control: the unchanged copy under the model's own name passes
    await fs.rm(path.join(tmp, 'models'), { recursive: true });
    await copyModel(path.join(tmp, 'models', 'mobilenet_v1_1.0_224'));
    expect(await resolvePretrained(MOBILENET_PRETRAINED)).toBe(path.join(tmp, 'models', 'mobilenet_v1_1.0_224'));
  });

  it('a model.json naming other weights (a changed shape) is not the named model', async () => {
    process.env.TAGSEG_MODELS_DIR = path.join(tmp, 'models');
    const reshape = (b: Buffer) => Buffer.from(b.toString('utf8').replace('"shape": [3, 3, 3, 32]', '"shape": [3, 3, 32, 3]'));
    await copyModel(path.join(tmp, 'models', 'mobilenet-v1-imagenet'), { file: 'model.json', change: reshape });
    await expect(resolvePretrained(MOBILENET_PRETRAINED)).rejects.toThrow(/model\.json names other weights: not the model/);
  });

  it('downloads a registered model once from a loopback URL into the cache, checked', async () => {
    delete process.env.TAGSEG_MODELS_DIR;
    registerPretrained('test_good', { ...official, url: await serveModel('good') });
    const dir = await resolvePretrained('test_good');
    expect(dir).toBe(path.join(tmp, 'cache', 'models', 'test_good'));
    expect((await fs.readdir(dir)).sort()).toEqual((await fs.readdir(MOBILENET_DIR)).filter((f) => f !== 'README.md').sort());
    expect(requests.length).toBe(1 + Object.keys(official.sha256).length);
    requests.length = 0;
    expect(await resolvePretrained('test_good')).toBe(dir);
    expect(requests).toEqual([]); // second use: from the cache, re-checked, no request
    const net = await loadMobileNetV1({ path: 'test_good', outputStride: 32 });
    const ref = await loadMobileNetV1({ path: MOBILENET_DIR, outputStride: 32 });
    const x = tf.randomUniform([1, 32, 32, 3], -1, 1, 'float32', 3) as tf.Tensor4D;
    const [a, b] = [net.forward(x, false).last, ref.forward(x, false).last];
    expect(tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0])).toBe(0);
    tf.dispose([x, a, b]);
    net.dispose();
    ref.dispose();
  });

  it('a download with a mismatching file stops with a TagsegError and keeps nothing', async () => {
    delete process.env.TAGSEG_MODELS_DIR;
    registerPretrained('test_bad', { ...official, url: await serveModel('bad', { file: 'group50-shard1of1', change: flipByte }) });
    const err = await resolvePretrained('test_bad').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TagsegError);
    expect((err as TagsegError).reason).toMatch(/sha256 mismatch for 'test_bad'/);
    expect((err as TagsegError).file).toMatch(/group50-shard1of1$/);
    expect(await fs.readdir(path.join(tmp, 'cache', 'models'))).toEqual([]);
  });

  it('accepts the official listing of the unrecorded conv_pw_13 kernel, unchecked', async () => {
    delete process.env.TAGSEG_MODELS_DIR;
    const withPw13 = (b: Buffer) => {
      const json = JSON.parse(b.toString('utf8'));
      json.weightsManifest.splice(36, 0, { paths: ['group37-shard1of1'], weights: [{ name: 'conv_pw_13/kernel', shape: [1, 1, 1024, 1024], dtype: 'float32' }] });
      return Buffer.from(JSON.stringify(json));
    };
    const url = await serveModel('full', { file: 'model.json', change: withPw13 });
    served.set('full/group37-shard1of1', Buffer.alloc(4 * 1024 * 1024));
    registerPretrained('test_full', { ...official, url });
    const dir = await resolvePretrained('test_full');
    expect(await fs.readdir(dir)).toContain('group37-shard1of1');
    // control: without the unrecorded entry the same listing is rejected
    registerPretrained('test_strict', { ...official, url, unrecorded: {} });
    await expect(resolvePretrained('test_strict')).rejects.toThrow(/lists unknown files group37-shard1of1/);
  });

  it('an unregistered URL downloads once without checksums; an unreachable host names the fix', async () => {
    const url = await serveModel('plain');
    const dir = await resolvePretrained(url);
    expect(path.dirname(dir)).toBe(path.join(tmp, 'cache', 'models'));
    const n = requests.length;
    expect(await resolvePretrained(url)).toBe(dir);
    expect(requests.length).toBe(n);
    registerPretrained('test_offline', { ...official, url: `${base}/missing/model.json` });
    delete process.env.TAGSEG_MODELS_DIR;
    await expect(resolvePretrained('test_offline')).rejects.toThrow(/could not download test_offline .*HTTP 404[\s\S]*TAGSEG_MODELS_DIR/);
  });

  it('a local folder or file:// URL is used as given', async () => {
    expect(await resolvePretrained(MOBILENET_DIR)).toBe(MOBILENET_DIR);
    expect(await resolvePretrained(`file://${MOBILENET_DIR}`)).toBe(MOBILENET_DIR);
    await expect(resolvePretrained('ftp://example.org/model.json')).rejects.toThrow(/only http\(s\):\/\/ and file:\/\//);
  });
});
