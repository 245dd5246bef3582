/**
 * Pretrained weights by name. `cam.pretrained` is a registered model name (resolved to a local
 * folder, checked against the sha256 checksums recorded below), a local folder / model.json, or
 * an http(s) URL of a tfjs LayersModel (downloaded once into the cache, unchecked).
 *
 * A name resolves, in order, to: `$TAGSEG_MODELS_DIR/<folder>` (air-gapped installs and CI point
 * it at a folder of models), the cache (`$TAGSEG_CACHE_DIR/models/<name>`, default
 * ~/.cache/tagseg), or a download from the model's official URL into the cache. Every use
 * re-checks the checksums, so a corrupted or substituted copy stops with a TagsegError.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { TagsegError, messageOf } from '../pipeline/errors.js';
import { ensureDir, exists, hashFile, replaceDirAtomic, tempPathFor } from '../pipeline/fsutil.js';
import { log } from '../pipeline/log.js';

export interface PretrainedModel {
  /** model.json of the official published tfjs LayersModel. */
  url: string;
  /** Folder names under $TAGSEG_MODELS_DIR that hold this model (the name first). */
  folders: string[];
  /** sha256 of each weight file, by its path in the weights manifest. */
  sha256: Record<string, string>;
  /** sha256 of the weights manifest (names, shapes, dtypes) of the recorded files, see `manifestDigest`. */
  manifestSha256: string;
  /** Weight files the manifest may list without a recorded checksum, and why. */
  unrecorded?: Record<string, string>;
}

/**
 * Checksums recorded from the copy in the project's shared models folder (mobilenet-v1-imagenet).
 * That copy lacks group37-shard1of1 (conv_pw_13/kernel) and its model.json omits it from the
 * manifest, so model.json's bytes are not the official file's: model.json is checked through its
 * manifest digest, not its bytes. The official download lists group37 too; it is accepted
 * unchecked with a warning since tagseg never reads conv_pw_13 (the backbone stops before it).
 */
const MOBILENET_V1_100_224: PretrainedModel = {
  // The layers-format MobileNet that tfjs-examples and tfjs-models (mobilenet 0.x) load.
  url: 'https://storage.googleapis.com/tfjs-models/tfjs/mobilenet_v1_1.0_224/model.json',
  folders: ['mobilenet_v1_1.0_224', 'mobilenet-v1-imagenet'],
  manifestSha256: '033d7748f2c5522a7b029ed88dd8cdfab8f5cb632d8b983509d5c7959cce8597',
  sha256: {
    'group1-shard1of1': 'ac47f5e879eee80e5a3dd34e0c4b603c008c22697bd385a807b552196469cf8d',
    'group2-shard1of1': '926336e665f89179ae48d22b321ef040d3d8e3c4934c7c34723dbd1de3586392',
    'group3-shard1of1': 'e8f32b3d128117cc17ff7e6577806a1af8db83045a036fb6c6bf5ee5f28a9235',
    'group4-shard1of1': '825588712ad3472b2c3b38cc44902e527b7a2f445cb597ae40a2cbc51977167c',
    'group5-shard1of1': '974e18c0dc5b9a6019858d30a5565577f0d8ea312026ac085a408f79d536cf20',
    'group6-shard1of1': '9b4d71617f631e117d1b79254977e6dced7388bd611db803cbf6d792054f1294',
    'group7-shard1of1': '9433ee1ea01855ce72da0a1025b708ac55dec728e309c9089c1c7dffa18a86b0',
    'group8-shard1of1': 'cc8b9923e8c1715bc1d49123a62d66972b4189a5683121ee59780ed15f1265c8',
    'group9-shard1of1': 'd5a6eb3aca535d2e29d6abe60e487f2a56fab1397af6b65bcfe23b8e248b456f',
    'group10-shard1of1': 'd1e1d589dd26aa17b8e7a7de103b941a43001f61cb3d59d5c237aacf9a9cef29',
    'group11-shard1of1': '32e4d7d093e54f8bfbf1d114695b3e3ad62cd8677903010c65bed89aac19c302',
    'group12-shard1of1': '2460ac8019d24487c3d4ac62ecd6070c457d5cba907de5c6574adfad899987de',
    'group13-shard1of1': '050245f715febbb7cb23ef89c2785441f5ff1a40189e290e81b7f90f13561ffe',
    'group14-shard1of1': '0f547921c1176411876a109a32f3753fdbd0ed14b4a98b179b31cd3c53752c7e',
    'group15-shard1of1': '47337dadf5b8c0e796cc8b379df6267fc19001436636c068026acdf287d7e9f9',
    'group16-shard1of1': 'a850a0cbcf85ec192302a012c153eae688e4256bae59205fa4b4509855b37d20',
    'group17-shard1of1': '49f5a8ba9bebfbf9b336bd040abc6d4842497a3d47a396e8876cf0c704cf5325',
    'group18-shard1of1': '8cec047146c18f723aaa728aa38ca2f2b04bacd9992eeb2aba3f07aa44ce00fc',
    'group19-shard1of1': '1427f5a54802f9a058909705bb533ac4ecb94b617987e691c74cc3f2beea3f63',
    'group20-shard1of1': 'd24cf40560fc4ad7a7842c9c17c3230c2a30633ac0ed397022bbbbe3f83f053c',
    'group21-shard1of1': '5b8541d7f40659d311f46cf83bc0c1c4429b0b8efeeb98d91a98d56492ecbe36',
    'group22-shard1of1': '8bc3f01dc12e506d8cad386abeef95fda46a79ca0d83798595664fee72283c20',
    'group23-shard1of1': '0468e6901ec155cf9f2d8e4dc7f4b7dbbd8eec6ea857d0a2b7a7eb1b737089d9',
    'group24-shard1of1': '3fef53547ee5e03d641edecdba198262e51e2fa659b43fee258a119bd12cf69e',
    'group25-shard1of1': 'c966a3f767bf9ca947c8a8606d77eb7ab42a294ea273b238dbcdde6a46d6b8d8',
    'group26-shard1of1': '0ca49a466f72a989190a937f8743b251c23a7f5030b777d24c97ae8e259415ab',
    'group27-shard1of1': '96e41ae0bb8880e0c0fdc4c9126fef1c642bfbbd04c2170b05dffd2111493026',
    'group28-shard1of1': 'ef5ad407e32120b20370ba6a54cdf03f339f6ace8fb7415348ac568285e5ec8f',
    'group29-shard1of1': 'bfd7420872d4bceb70b686cb0c80fffb6530a6b43f5a86238504c2837707a211',
    'group30-shard1of1': '2399805be0d87c6787065c05bb40dfef2d3f5085d9313091c79c653454212aa2',
    'group31-shard1of1': '9df450b5a6c9272224ba9114878f2513c3d7a4662a5d7e68562b44d1a21bcebd',
    'group32-shard1of1': 'b6530681265b4869dad58babd4070d59539dd17bd5e1b007a376bf4f8aa8975c',
    'group33-shard1of1': 'df0f5e2fa512880a1f75002fcd0f953ba2b96222aa869772435701296ade8674',
    'group34-shard1of1': '885bb00463357c8ff83e8405c71e18663b3661886d80fcbfb8c135bafd4a99d9',
    'group35-shard1of1': 'c1ae02f6cd5759a0550639e91918f2186a8331b9b711a97d73c97ea44cd28f17',
    'group36-shard1of1': 'f6997576dcb181aaed44a6c1eaf221f2a1cc4257fd29816a328c0e5a7230e81e',
    'group38-shard1of1': '61020647623bcf0359f743e4244ff93a1bf81d3002e29ef33117897b3e57cd29',
    'group39-shard1of1': 'b2fca54b325e305fb0e024910e11d80474d013262d85bac7f1eb64c5f58fe266',
    'group40-shard1of1': 'c3f84328d85fb80b0ce341b2481fb1b9c71ab521f9f98fdd27451c727e00e302',
    'group41-shard1of1': '1ca13d51a3434ff2dcb156c1cc6d44975d0e915d5c178e0b7b37fdc71846f939',
    'group42-shard1of1': 'e74d4ab14b8137393eaf3e1eab8ac4a6ad5508148802a91631b2da23b987ecea',
    'group43-shard1of1': '9adab0633661a9417f8abe693b5e1aa53f33868aa542d0bba9eb06afc1e49ae1',
    'group44-shard1of1': '31a0da2cee66a6fa5b85d087b98f967a1566a05a6871abadb198cfc7094e3dc7',
    'group45-shard1of1': 'b4e9c284d376ab48186ed8629d396c4a02cb76bc3c89837f6c936a1f26234834',
    'group46-shard1of1': '752f6b8009dfc953e2e0e4d66d2c0d81f52efa4a9280c4013e9d928c03e90c24',
    'group47-shard1of1': 'e32ad47dd3800ac264dbb7687ed73e453b09368fe35c7e7ce27c63dd8262e88e',
    'group48-shard1of1': 'b2b63567b6fa40c5231451a3a4a1ec94ee45aa80bb802c166ba93f470c53a3f9',
    'group49-shard1of1': '19212241aa418c35ca5e9d83c4bac8b9be9abd4a48ac5f01e912c14bc6a23b7b',
    'group50-shard1of1': '1fb6d436f6334c585615d69786a7d5530f0302e23dbdedff27b73097a82a7cf0',
    'group51-shard1of1': '95950eba41daa55425261a1a544bb22f0fa7a52a08d1780b096a4c0d3c749cb4',
    'group52-shard1of1': 'a072338a6d7b5df47e673e454a6b35d34c6c055a7fbd355a84db78811fdaa1c5',
    'group53-shard1of1': '9fdde22824b7e5cb812fb8479eeba2a2da2fe1abee8bb532ec202909339e03b6',
    'group54-shard1of1': '887b0cac140eb3004f6f0ec265580c4681ad9277d8d2c88773373c0159e07188',
    'group55-shard1of1': 'e1a37a68fe9411f21df16e0c2c4ddd0099a590f3728c1dfc1f95eb43025659eb',
  },
  unrecorded: { 'group37-shard1of1': 'conv_pw_13/kernel: missing from the copy the checksums were recorded from; tagseg never reads it' },
};

const REGISTRY = new Map<string, PretrainedModel>([['mobilenet_v1_1.0_224', MOBILENET_V1_100_224]]);

/** Register a named model (tests register one served from loopback). */
export function registerPretrained(name: string, model: PretrainedModel): void {
  REGISTRY.set(name, model);
}

/** The registered model `name`, or undefined. */
export function pretrainedModel(name: string): PretrainedModel | undefined {
  return REGISTRY.get(name);
}

export function pretrainedNames(): string[] {
  return [...REGISTRY.keys()];
}

/** tagseg's cache folder: $TAGSEG_CACHE_DIR, else $XDG_CACHE_HOME/tagseg, else ~/.cache/tagseg (as native/lib.mjs). */
export function cacheDir(): string {
  return process.env.TAGSEG_CACHE_DIR || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'tagseg');
}

const isUrl = (s: string): boolean => /^[a-z][a-z0-9+.-]*:\/\//i.test(s);

/**
 * A local path (folder or model.json) for `spec`: a registered name, an http(s) URL (downloaded
 * once into the cache), a file:// URL, or a local path (returned resolved, not checked here).
 */
export async function resolvePretrained(spec: string): Promise<string> {
  const named = REGISTRY.get(spec);
  if (named) return resolveNamed(spec, named);
  if (/^file:\/\//i.test(spec)) return fileURLToPath(spec);
  if (/^https?:\/\//i.test(spec)) return downloadUrl(spec);
  if (isUrl(spec)) throw new TagsegError(`cannot fetch '${spec}': only http(s):// and file:// URLs are supported`);
  return path.resolve(spec);
}

async function resolveNamed(name: string, model: PretrainedModel): Promise<string> {
  const modelsDir = process.env.TAGSEG_MODELS_DIR;
  for (const folder of modelsDir ? model.folders : []) {
    const dir = path.resolve(modelsDir!, folder);
    if (await exists(path.join(dir, 'model.json'))) {
      await verifyModelDir(dir, name, model, `this is not ${name}: replace the folder, or unset TAGSEG_MODELS_DIR to download it`);
      return dir;
    }
  }
  const cached = path.join(cacheDir(), 'models', name);
  if (await exists(path.join(cached, 'model.json'))) {
    await verifyModelDir(cached, name, model, 'delete it to download it again');
    return cached;
  }
  return download(model.url, cached, name, model);
}

/** An unregistered URL: downloaded once into the cache under a hash of the URL, without checksums. */
async function downloadUrl(url: string): Promise<string> {
  const dir = path.join(cacheDir(), 'models', `url-${createHash('sha256').update(url).digest('hex').slice(0, 16)}`);
  if (await exists(path.join(dir, 'model.json'))) return dir;
  log.warn(`${url} is not a registered model: downloaded without checksums`);
  return download(url, dir, url);
}

/** Download model.json and its weight files into `target` (staged, checked, then moved into place). */
async function download(url: string, target: string, label: string, model?: PretrainedModel): Promise<string> {
  await ensureDir(path.dirname(target));
  const staged = tempPathFor(target);
  await ensureDir(staged);
  try {
    const json = await fetchBytes(url, label, model);
    await fs.writeFile(path.join(staged, 'model.json'), json);
    for (const p of manifestPaths(parseModelJson(json.toString('utf8'), url))) {
      await fs.writeFile(path.join(staged, p), await fetchBytes(new URL(p, url).href, label, model));
    }
    const unchecked = model ? await verifyModelDir(staged, label, model, `${url} did not serve the recorded files; nothing was kept`) : [];
    for (const p of unchecked) log.warn(`${label}: ${p} has no recorded checksum (${model!.unrecorded![p]}); kept unchecked`);
    await replaceDirAtomic(staged, target);
  } catch (err) {
    await fs.rm(staged, { recursive: true, force: true });
    throw err;
  }
  log.info(`pretrained model ${label}: downloaded into ${target}`);
  return target;
}

async function fetchBytes(url: string, label: string, model?: PretrainedModel): Promise<Buffer> {
  const hint = model ? `offline? set TAGSEG_MODELS_DIR to a folder holding ${model.folders.map((f) => `${f}/`).join(' or ')}` : undefined;
  let res: Response;
  try {
    res = await fetch(url);
  } catch (err) {
    throw new TagsegError(`could not download ${label} from ${url}: ${messageOf(err)}`, { hint, cause: err });
  }
  if (!res.ok) throw new TagsegError(`could not download ${label} from ${url}: HTTP ${res.status}`, { hint });
  return Buffer.from(await res.arrayBuffer());
}

interface ModelJson {
  modelTopology?: unknown;
  weightsManifest?: { paths: string[]; weights: { name: string; shape: number[]; dtype?: string }[] }[];
}

function parseModelJson(text: string, file: string): ModelJson {
  let json: ModelJson;
  try {
    json = JSON.parse(text) as ModelJson;
  } catch (err) {
    throw new TagsegError(`model.json is not JSON: ${messageOf(err)}`, { file });
  }
  if (!json.modelTopology || !Array.isArray(json.weightsManifest)) {
    throw new TagsegError('not a tfjs LayersModel (model.json needs modelTopology and weightsManifest)', { file });
  }
  return json;
}

/** The weight files a model.json lists; plain file names only (a remote manifest must not write outside its folder). */
function manifestPaths(json: ModelJson): string[] {
  const paths = json.weightsManifest!.flatMap((g) => g.paths);
  const bad = paths.find((p) => !/^[\w.-]+$/.test(p) || p === '.' || p === '..');
  if (bad !== undefined) throw new TagsegError(`model.json lists a weight file '${bad}' outside its folder`);
  return paths;
}

/** sha256 of the manifest groups whose files are all recorded: weight names, shapes and dtypes, in order. */
export function manifestDigest(json: ModelJson, recorded: Record<string, string>): string {
  const groups = json.weightsManifest!.filter((g) => g.paths.every((p) => p in recorded));
  const canonical = groups.map((g) => ({ paths: g.paths, weights: g.weights.map((w) => [w.name, w.shape, w.dtype ?? 'float32']) }));
  return createHash('sha256').update(JSON.stringify(canonical)).digest('hex');
}

/**
 * Check a model folder against the recorded checksums: the manifest must list exactly the
 * recorded files (plus any `unrecorded` ones) with the recorded names and shapes, and every
 * recorded file must have its recorded sha256. Returns the listed files that have no checksum.
 */
export async function verifyModelDir(dir: string, name: string, model: PretrainedModel, fix: string): Promise<string[]> {
  const file = path.join(dir, 'model.json');
  const json = parseModelJson(await fs.readFile(file, 'utf8'), file);
  const listed = manifestPaths(json);
  const unrecorded = model.unrecorded ?? {};
  const strange = listed.filter((p) => !(p in model.sha256) && !(p in unrecorded));
  const missing = Object.keys(model.sha256).filter((p) => !listed.includes(p));
  if (strange.length || missing.length || manifestDigest(json, model.sha256) !== model.manifestSha256) {
    const what = strange.length ? `lists unknown files ${strange.join(', ')}` : missing.length ? `lacks ${missing.join(', ')}` : 'names other weights';
    throw new TagsegError(`model.json ${what}: not the model '${name}'`, { file, hint: fix });
  }
  for (const [p, expected] of Object.entries(model.sha256)) {
    const got = await hashFile(path.join(dir, p)).catch((err: unknown) => {
      throw new TagsegError(`cannot read a weight file of '${name}': ${messageOf(err)}`, { file: path.join(dir, p), hint: fix });
    });
    if (got !== expected) {
      throw new TagsegError(`sha256 mismatch for '${name}': expected ${expected}, got ${got}`, { file: path.join(dir, p), hint: fix });
    }
  }
  return listed.filter((q) => q in unrecorded);
}
