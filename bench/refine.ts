/** Benchmark of the refine stage (not a test):
 * Pseudo-mask throughput (images/s) vs refine.concurrency, CRF ms/image and the chain table, on an existing workspace.
 *   npm run bench -- refine <workspace> [concurrencies, default 1,2,4] [key=value ...]
 *
 * Reads the workspace's cache/*.arrow and the dataset + refine sections of its params.yaml (plus `key=value` overrides, e.g.
 * refine.source=affinity or refine.crf.bilateral_sxy=50) and writes pseudo_masks.arrow, the
 * PNGs and refine.json into a temp folder, never into the workspace. For each concurrency it runs
 * the whole stage once and prints images/s (decode + CRF + write, the stage's own loop), the mean
 * CRF time per image, and for the first run the chain table (mIoU on the train split at the
 * original size). Concurrency overlaps sharp decoding (libuv threads) with the CRF, which is
 * synchronous JS on the main thread, so the gain is bounded by the decode share of the time.
 */
import * as fs from 'node:fs/promises';
import { cpus, loadavg, tmpdir } from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { defaultParams, validateParams } from '../stages/params.js';
import { setQuiet } from '../pipeline/log.js';
import { formatRefine, runRefine } from '../stages/refine/index.js';

const ws = path.resolve(process.argv[2] ?? '.');
const concurrencies = (process.argv[3] ?? '1,2,4').split(',').map(Number);
const overrides = process.argv.slice(4);

// Only the sections refine reads come from the workspace: other stages' sections may lag behind
// the code's schema in an older workspace, which must not stop this benchmark.
const raw = YAML.parse(await fs.readFile(path.join(ws, 'params.yaml'), 'utf8')) as Record<string, unknown>;
const base = defaultParams() as unknown as Record<string, unknown>;
const params = validateParams({ ...base, dataset: raw.dataset ?? base.dataset, refine: raw.refine ?? base.refine }, path.join(ws, 'params.yaml'), overrides);
const out = await fs.mkdtemp(path.join(tmpdir(), 'tagseg-bench-refine-'));
const OWN = ['cache/pseudo_masks.arrow', 'outputs/', 'metrics/'];
const at = (rel: string) => (OWN.some((o) => rel.startsWith(o)) ? path.join(out, rel) : path.join(ws, rel));
setQuiet(true);
console.log(`refine on ${ws} (${overrides.join(' ') || 'workspace params'}), node ${process.version}`);
console.log(`${cpus().length} CPUs (${cpus()[0]?.model ?? '?'}), load average at start ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
try {
  for (const [k, c] of concurrencies.entries()) {
    const r = await runRefine({ params: { ...params, refine: { ...params.refine, concurrency: c } }, path: at });
    if (k === 0) console.log(formatRefine(r));
    console.log(`concurrency ${c}: ${r.images} images in ${r.seconds.toFixed(1)} s = ${r.images_per_second.toFixed(2)} images/s, CRF ${(1000 * r.crf_seconds_per_image).toFixed(1)} ms/image`);
  }
} finally {
  await fs.rm(out, { recursive: true, force: true });
}
console.log(`load average at end ${loadavg().map((l) => l.toFixed(2)).join(' ')}`);
