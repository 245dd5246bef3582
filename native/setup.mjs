// Runs in npm's preinstall phase, which npm completes for every dependency before any
// dependency's `install` script: so this prepares tfjs-node's deps/ before tfjs-node's own
// installer looks at them. With deps/lib present, that installer builds (or finds the cached
// binding) instead of downloading libtensorflow from Google, which fails offline and would
// fail the whole `npm install`.
import { depsReady, findTfjsNode, populateDeps, probeBinding, provisionLibtensorflow, restoreCachedBinding, say, upstreamReachable } from './lib.mjs';

try {
  const tfjsNode = findTfjsNode();
  if (!tfjsNode) {
    say('@tensorflow/tfjs-node is not in this install; nothing to prepare');
  } else if (depsReady(tfjsNode) && probeBinding(process.env.npm_config_local_prefix || process.cwd()).ok) {
    say('native TensorFlow binding already works');
  } else if (!process.env.TAGSEG_LIBTENSORFLOW_DIR && (await upstreamReachable())) {
    say("libtensorflow's download host is reachable: leaving the install to @tensorflow/tfjs-node");
  } else {
    const libtf = provisionLibtensorflow();
    populateDeps(tfjsNode, libtf);
    say(`libtensorflow from ${libtf.source} laid out in ${tfjsNode}/deps`);
    if (!process.env.TAGSEG_LIBTENSORFLOW_DIR && restoreCachedBinding(tfjsNode)) say('reusing the cached tfjs_binding.node');
  }
} catch (err) {
  // Never fail here: the root postinstall (scripts/check-native.mjs) verifies and explains.
  say(`could not prepare libtensorflow: ${err instanceof Error ? err.message : err}`);
}
