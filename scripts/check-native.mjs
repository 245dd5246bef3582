#!/usr/bin/env node
// Root postinstall: make sure `require('@tensorflow/tfjs-node')` works, building the native
// binding ourselves when tfjs-node's installer did not produce one (offline machine, npm with
// dependency scripts disabled, a user-given libtensorflow). Idempotent: a working binding is
// left alone, and a built one is cached (~/.cache/tagseg) so reinstalls take seconds.
// Env: TAGSEG_LIBTENSORFLOW_DIR (use this libtensorflow), TAGSEG_CACHE_DIR, TAGSEG_NATIVE=wheel|upstream,
// TAGSEG_ALLOW_NO_NATIVE=1 (warn instead of failing when no binding can be built).
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  bindingPath, buildBinding, depsReady, findTfjsNode, populateDeps, probeBinding, provisionLibtensorflow,
  restoreCachedBinding, saveBindingToCache, say,
} from '../native/lib.mjs';

const project = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

function fail(msg) {
  const help = [
    'tagseg cannot use native TensorFlow; training would run on the ~1000x slower pure-JS backend.',
    msg,
    'Fixes: make `python3 -m pip download tensorflow-cpu==2.21.0` work (a package index or proxy),',
    '  or set TAGSEG_LIBTENSORFLOW_DIR to an unpacked libtensorflow (include/ + lib/), then `npm rebuild tagseg-native && npm run postinstall`;',
    '  or set TAGSEG_ALLOW_NO_NATIVE=1 to install anyway and run on wasm/cpu.',
  ].join('\n  ');
  if (process.env.TAGSEG_ALLOW_NO_NATIVE === '1') {
    say(`WARNING: ${help}`);
    process.exit(0);
  }
  say(`ERROR: ${help}`);
  process.exit(1);
}

const tfjsNode = findTfjsNode(project);
if (!tfjsNode) fail('@tensorflow/tfjs-node is not installed (run `npm install` in the project root).');

let probe = probeBinding(project);
if (!probe.ok) {
  say(`tfjs-node does not load yet (${probe.error}); building the binding`);
  try {
    const userLib = Boolean(process.env.TAGSEG_LIBTENSORFLOW_DIR);
    if (userLib || !depsReady(tfjsNode)) populateDeps(tfjsNode, provisionLibtensorflow());
    if (userLib || !restoreCachedBinding(tfjsNode) || !probeBinding(project).ok) buildBinding(tfjsNode);
  } catch (err) {
    fail(err instanceof Error ? err.message : String(err));
  }
  probe = probeBinding(project);
  if (!probe.ok) fail(`the built binding at ${bindingPath(tfjsNode)} does not load: ${probe.error}`);
}
if (depsReady(tfjsNode) && !process.env.TAGSEG_LIBTENSORFLOW_DIR) saveBindingToCache(tfjsNode, probe.tfVersion);
say(`native TensorFlow ${probe.tfVersion} ready for @tensorflow/tfjs-node`);
