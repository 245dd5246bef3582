// Native TensorFlow for @tensorflow/tfjs-node on machines where its installer cannot
// download libtensorflow (no internet). Plain Node, no dependencies: it runs during
// `npm install`, before node_modules is usable.
//
// Recipe (verified on the dev machine): the `tensorflow-cpu` wheel's libtensorflow_cc.so.2
// exports the C and eager C APIs tfjs-node 4.22 calls. deps/include = the wheel's
// tensorflow/include, deps/lib = the two .so.2 files plus the names tfjs-node links against,
// then node-gyp builds lib/napi-v8/tfjs_binding.node.
import { execFileSync, spawnSync } from 'node:child_process';
import { lookup } from 'node:dns/promises';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export const TF_WHEEL_VERSION = process.env.TAGSEG_TF_WHEEL_VERSION || '2.21.0';
/** tfjs-node 4.22 only looks for this file name before deciding to download. */
const TFJS_NODE_LIBTF_NAME = 'libtensorflow.so.2.9.1';
const NAPI_VERSION = 8;

export function say(msg) {
  process.stderr.write(`[tagseg native] ${msg}\n`);
}

export function cacheRoot() {
  const base = process.env.TAGSEG_CACHE_DIR || path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'tagseg');
  fs.mkdirSync(base, { recursive: true });
  return base;
}

/** node_modules/@tensorflow/tfjs-node of the project being installed, or null. */
export function findTfjsNode(start = process.env.npm_config_local_prefix || process.cwd()) {
  let dir = path.resolve(start);
  for (;;) {
    const candidate = path.join(dir, 'node_modules', '@tensorflow', 'tfjs-node');
    if (fs.existsSync(path.join(candidate, 'package.json'))) return candidate;
    const up = path.dirname(dir);
    if (up === dir) return null;
    dir = up;
  }
}

export function tfjsNodeVersion(tfjsNodeDir) {
  return JSON.parse(fs.readFileSync(path.join(tfjsNodeDir, 'package.json'), 'utf8')).version;
}

export function bindingPath(tfjsNodeDir) {
  return path.join(tfjsNodeDir, 'lib', `napi-v${NAPI_VERSION}`, 'tfjs_binding.node');
}

/** Loads tfjs-node in a child process and runs one op. Returns { ok, tfVersion, error }. */
export function probeBinding(projectDir) {
  const code = `
    const tf = require('@tensorflow/tfjs-node');
    const v = tf.add(tf.tensor1d([1, 2]), 1).dataSync();
    if (v[0] !== 2 || v[1] !== 3) throw new Error('wrong result');
    process.stdout.write(String(tf.backend().binding.TF_Version));`;
  const res = spawnSync(process.execPath, ['-e', code], {
    cwd: projectDir,
    env: { ...process.env, TF_CPP_MIN_LOG_LEVEL: '3' },
    encoding: 'utf8',
    timeout: 120_000,
  });
  if (res.status === 0) return { ok: true, tfVersion: res.stdout.trim() };
  const err = (res.stderr || res.error?.message || 'unknown error').split('\n').find((l) => /Error|error:/.test(l)) || res.stderr;
  return { ok: false, error: String(err).trim().slice(0, 400) };
}

/** True when Google's storage (tfjs-node's own download source) resolves within 3 s. */
export async function upstreamReachable() {
  if (process.env.TAGSEG_NATIVE === 'wheel') return false;
  if (process.env.TAGSEG_NATIVE === 'upstream') return true;
  try {
    await Promise.race([
      lookup('storage.googleapis.com'),
      new Promise((_, reject) => setTimeout(() => reject(new Error('timeout')), 3000)),
    ]);
    return true;
  } catch {
    return false;
  }
}

/**
 * A directory with include/ and the two shared libraries, from (in order):
 * TAGSEG_LIBTENSORFLOW_DIR (air-gapped machines: a libtensorflow tarball's or a wheel's
 * tensorflow/ folder), the cache, or the tensorflow-cpu wheel fetched with pip.
 * Returns { dir, lib, framework, source }.
 */
export function provisionLibtensorflow() {
  const user = process.env.TAGSEG_LIBTENSORFLOW_DIR;
  if (user) {
    const found = describeLibDir(path.resolve(user));
    if (!found) {
      throw new Error(
        `TAGSEG_LIBTENSORFLOW_DIR=${user} has no usable libtensorflow: expected include/tensorflow/c/c_api.h and ` +
          `lib/libtensorflow.so.2 (libtensorflow tarball layout) or libtensorflow_cc.so.2 + libtensorflow_framework.so.2 (wheel layout)`,
      );
    }
    return { ...found, source: `TAGSEG_LIBTENSORFLOW_DIR (${user})` };
  }
  const cached = path.join(cacheRoot(), `libtensorflow-${TF_WHEEL_VERSION}-cpu`);
  const hit = describeLibDir(cached);
  if (hit) return { ...hit, source: `cache (${cached})` };
  extractWheel(cached);
  const fresh = describeLibDir(cached);
  if (!fresh) throw new Error(`extracted the tensorflow-cpu wheel into ${cached} but found no libraries there`);
  return { ...fresh, source: `tensorflow-cpu ${TF_WHEEL_VERSION} wheel via pip` };
}

/** Accepts the libtensorflow tarball layout (include/, lib/) and the wheel layout (include/, *.so.2 at top). */
function describeLibDir(dir) {
  const include = path.join(dir, 'include');
  if (!fs.existsSync(path.join(include, 'tensorflow', 'c', 'c_api.h'))) return null;
  for (const libdir of [dir, path.join(dir, 'lib')]) {
    const pairs = [
      ['libtensorflow_cc.so.2', 'libtensorflow_framework.so.2'],
      ['libtensorflow.so.2', 'libtensorflow_framework.so.2'],
    ];
    for (const [lib, framework] of pairs) {
      if (fs.existsSync(path.join(libdir, lib)) && fs.existsSync(path.join(libdir, framework))) {
        return { dir, include, lib: path.join(libdir, lib), framework: path.join(libdir, framework) };
      }
    }
  }
  return null;
}

function python() {
  for (const py of [process.env.TAGSEG_PYTHON, 'python3', 'python'].filter(Boolean)) {
    if (spawnSync(py, ['-c', 'import pip'], { stdio: 'ignore' }).status === 0) return py;
  }
  throw new Error('python3 with pip is needed to fetch the tensorflow-cpu wheel (or set TAGSEG_LIBTENSORFLOW_DIR)');
}

/** pip download the wheel, unpack only include/ and the two libraries, then rename into place. */
function extractWheel(target) {
  const py = python();
  const work = fs.mkdtempSync(path.join(path.dirname(target), '.wheel-'));
  try {
    say(`fetching tensorflow-cpu==${TF_WHEEL_VERSION} with pip (about 270 MB, once; cached in ${path.dirname(target)})`);
    const dl = spawnSync(
      py,
      ['-m', 'pip', 'download', '--no-deps', '--only-binary=:all:', '--retries', '1', '--timeout', '15', '-d', work, `tensorflow-cpu==${TF_WHEEL_VERSION}`],
      { stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' },
    );
    const wheel = fs.readdirSync(work).find((f) => f.endsWith('.whl'));
    if (!wheel) throw new Error(`pip could not download tensorflow-cpu==${TF_WHEEL_VERSION}: ${(dl.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
    say(`unpacking ${wheel}`);
    const staged = path.join(work, 'out');
    const script = `
import sys, zipfile, os
whl, out = sys.argv[1], sys.argv[2]
keep = ('tensorflow/include/', 'tensorflow/libtensorflow_cc.so.2', 'tensorflow/libtensorflow_framework.so.2')
with zipfile.ZipFile(whl) as z:
    for info in z.infolist():
        name = info.filename
        if not name.startswith(keep) or name.endswith('/'):
            continue
        dest = os.path.join(out, name[len('tensorflow/'):])
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        with z.open(info) as src, open(dest, 'wb') as dst:
            while True:
                buf = src.read(1 << 20)
                if not buf:
                    break
                dst.write(buf)
`;
    execFileSync(py, ['-c', script, path.join(work, wheel), staged], { stdio: 'inherit' });
    fs.rmSync(target, { recursive: true, force: true });
    fs.renameSync(staged, target);
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
}

/** Hard link (same file system: no copy, survives cache deletion), else copy. */
function linkOrCopy(src, dest) {
  fs.rmSync(dest, { force: true });
  try {
    fs.linkSync(src, dest);
  } catch {
    fs.copyFileSync(src, dest);
  }
}

function symlink(target, linkPath) {
  fs.rmSync(linkPath, { force: true, recursive: true });
  fs.symlinkSync(target, linkPath);
}

/** Lay out tfjs-node's deps/ so that its installer builds instead of downloading. */
export function populateDeps(tfjsNodeDir, libtf) {
  const deps = path.join(tfjsNodeDir, 'deps');
  const lib = path.join(deps, 'lib');
  fs.mkdirSync(lib, { recursive: true });
  symlink(libtf.include, path.join(deps, 'include'));
  const libName = path.basename(libtf.lib);
  linkOrCopy(libtf.lib, path.join(lib, libName));
  linkOrCopy(libtf.framework, path.join(lib, 'libtensorflow_framework.so.2'));
  symlink(libName, path.join(lib, 'libtensorflow.so'));
  symlink('libtensorflow_framework.so.2', path.join(lib, 'libtensorflow_framework.so'));
  if (libName !== TFJS_NODE_LIBTF_NAME) symlink(libName, path.join(lib, TFJS_NODE_LIBTF_NAME));
  if (libName !== 'libtensorflow.so.2') symlink(libName, path.join(lib, 'libtensorflow.so.2'));
}

export function depsReady(tfjsNodeDir) {
  return fs.existsSync(path.join(tfjsNodeDir, 'deps', 'lib', TFJS_NODE_LIBTF_NAME));
}

function bindingCacheFile(tfjsNodeDir, tfVersion) {
  const key = `tfjs-node-${tfjsNodeVersion(tfjsNodeDir)}-napi${NAPI_VERSION}-tf${tfVersion}-${process.platform}-${process.arch}`;
  return path.join(cacheRoot(), 'bindings', key, 'tfjs_binding.node');
}

/** Copies a binding built earlier for the same tfjs-node + libtensorflow, if any. */
export function restoreCachedBinding(tfjsNodeDir, tfVersion = TF_WHEEL_VERSION) {
  const cached = bindingCacheFile(tfjsNodeDir, tfVersion);
  if (!fs.existsSync(cached)) return false;
  fs.mkdirSync(path.dirname(bindingPath(tfjsNodeDir)), { recursive: true });
  fs.copyFileSync(cached, bindingPath(tfjsNodeDir));
  return true;
}

export function saveBindingToCache(tfjsNodeDir, tfVersion = TF_WHEEL_VERSION) {
  const cached = bindingCacheFile(tfjsNodeDir, tfVersion);
  fs.mkdirSync(path.dirname(cached), { recursive: true });
  const tmp = `${cached}.${process.pid}.tmp`;
  fs.copyFileSync(bindingPath(tfjsNodeDir), tmp);
  fs.renameSync(tmp, cached);
}

/** node-gyp: npm's own copy (no network), headers from the running Node's prefix. */
function nodeGyp() {
  const candidates = [
    process.env.npm_config_node_gyp,
    path.join(path.dirname(process.execPath), '..', 'lib', 'node_modules', 'npm', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'),
  ].filter(Boolean);
  const found = candidates.find((p) => fs.existsSync(p));
  if (!found) throw new Error('node-gyp not found (it ships with npm); install build tools: python3, make, g++');
  return found;
}

function nodeHeadersDir() {
  const fromNpm = process.env.npm_config_nodedir;
  if (fromNpm && fs.existsSync(path.join(fromNpm, 'include', 'node', 'node_api.h'))) return fromNpm;
  const prefix = path.resolve(path.dirname(process.execPath), '..');
  if (fs.existsSync(path.join(prefix, 'include', 'node', 'node_api.h'))) return prefix;
  return null; // node-gyp will try to download headers
}

/** Compile tfjs_binding.node against deps/ (what tfjs-node's own fallback build does). */
export function buildBinding(tfjsNodeDir) {
  const args = [nodeGyp(), 'rebuild'];
  const headers = nodeHeadersDir();
  if (headers) args.push(`--nodedir=${headers}`);
  args.push('--', '-Dmodule_name=tfjs_binding', `-Dmodule_path=./lib/napi-v${NAPI_VERSION}`, `-Dnapi_build_version=${NAPI_VERSION}`);
  say('compiling tfjs_binding.node with node-gyp (about 15 s)');
  const res = spawnSync(process.execPath, args, { cwd: tfjsNodeDir, stdio: ['ignore', 'ignore', 'pipe'], encoding: 'utf8' });
  if (res.status !== 0) {
    const tail = (res.stderr || '').trim().split('\n').slice(-8).join('\n');
    throw new Error(`node-gyp failed (exit ${res.status}):\n${tail}`);
  }
}
