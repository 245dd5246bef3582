// predict's rate with the CRF on one thread vs on every core (ops/crf_pool.ts), or before vs after (BASE=<checkout>), back to back in one run.
/*
 * (not a test)
 *   npm run bench -- predict [images=../shared/datasets/msrc-v2/JPEGImages] [n=30] [ids=<images>/../ImageSets/Segmentation/test.txt] [model]
 *   BASE=/path/to/another/checkout npm run bench -- predict ...      (before vs after)
 * Without a model folder it builds a throwaway one shaped like the MSRC-v2 recipe's (pretrained
 * MobileNet v1 at stride 16, 23 classes, working size 320, scales 1, 0.75, 1.25 + flip, the dense
 * CRF of params.yaml's segment.crf; its head is untrained: the masks are meaningless, the work is
 * the real one). The first `n` ids are linked into a temp folder and `predictFolder` runs on them
 * with --threads 1 (the CRF on the main thread, as before the pool) and with every core, in that
 * order, then both again; it prints images/s of each run, the ratio of the summed times, and
 * whether the two wrote the same mask bytes (if not, how many pixels differ in label). With BASE, the two sides are instead BASE's
 * predictFolder (its own checkout, e.g. `git worktree add` of main with node_modules linked) and
 * this one's, both on every core, in the order base, this, this, base, and the masks are compared
 * between them. The dev machine has 2 cores shared with other jobs: read the figures with the
 * load average printed before and after each run.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { decodeIndexedPng } from '../data/palette.js';
import { crfFromKeys } from '../ops/crf.js';
import { initBackend } from '../pipeline/backend.js';
import { defaultParams } from '../stages/params.js';
import { CAM_MODEL_FORMAT, buildCamNet, saveCamModel } from '../nn/cam_net.js';
import { saveSegModel, segNetFromCam } from '../stages/segment/net.js';
import { predictFolder } from '../stages/segment/predict.js';

const argv = process.argv.slice(2);
const images = path.resolve(argv[0] ?? '../shared/datasets/msrc-v2/JPEGImages');
const n = Number(argv[1] ?? 30);
const idsFile = path.resolve(argv[2] ?? path.join(images, '../ImageSets/Segmentation/test.txt'));
const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-bench-predict-'));

async function throwawayModel(): Promise<string> {
  await initBackend();
  const classes = Array.from({ length: 23 }, (_, i) => `class${i}`);
  const cam = await buildCamNet({
    format: CAM_MODEL_FORMAT, version: 1, backbone: { kind: 'mobilenet', outputStride: 16, norm: 'frozen' }, classes, background: null, outputs: classes.map((_, i) => i),
  }, 0, true);
  await saveCamModel(path.join(tmp, 'cam'), cam);
  cam.dispose();
  const net = await segNetFromCam(path.join(tmp, 'cam'), {
    classes, background: null, dim: 64, decoder: true, workingSize: 320, scales: [1, 0.75, 1.25], flip: true, crf: crfFromKeys(defaultParams().segment.crf), seed: 0,
  });
  await saveSegModel(path.join(tmp, 'seg'), net);
  net.dispose();
  return path.join(tmp, 'seg');
}

try {
  const model = argv[3] ? path.resolve(argv[3]) : await throwawayModel();
  const ids = (await fs.readFile(idsFile, 'utf8')).split(/\r?\n/).map((l) => l.trim()).filter(Boolean).slice(0, n);
  const folder = path.join(tmp, 'images');
  await fs.mkdir(folder);
  const names = new Map((await fs.readdir(images)).map((f) => [path.parse(f).name, f]));
  for (const id of ids) await fs.symlink(path.join(images, names.get(id) ?? `${id}.jpg`), path.join(folder, names.get(id) ?? `${id}.jpg`));
  const load = () => os.loadavg().map((l) => l.toFixed(2)).join(' ');
  console.log(`predict on ${ids.length} images of ${images}; ${os.cpus().length} cores, load average ${load()}`);
  const base = process.env.BASE ? path.resolve(process.env.BASE) : null;
  const basePredict = base ? ((await import(path.join(base, 'stages/segment/predict.ts'))) as { predictFolder: typeof predictFolder }).predictFolder : null;
  // [label, predict, threads] of the two sides; the rounds run them a b, then b a.
  const sides: [string, typeof predictFolder, number][] = basePredict
    ? [['base', basePredict, os.availableParallelism()], ['this', predictFolder, os.availableParallelism()]]
    : [['one thread', predictFolder, 1], ['every core', predictFolder, os.availableParallelism()]];
  const seconds = [0, 0];
  for (const round of [1, 2]) {
    for (const s of round === 1 || !base ? [0, 1] : [1, 0]) {
      const [label, run, threads] = sides[s];
      const out = path.join(tmp, `out-${s}`);
      const before = load();
      const r = await run({ model, images: folder, out, batchSize: 4, threads });
      seconds[s] += r.seconds;
      console.log(`round ${round}  ${label} (threads ${r.threads}): ${r.images} images in ${r.seconds.toFixed(1)} s, ${r.imagesPerSecond.toFixed(3)} images/s; load average ${before} -> ${load()}`);
    }
  }
  let same = true;
  let [pixels, differ] = [0, 0];
  for (const f of await fs.readdir(path.join(tmp, 'out-0'))) {
    const [a, b] = [path.join(tmp, 'out-0', f), path.join(tmp, 'out-1', f)];
    const [ba, bb] = [await fs.readFile(a), await fs.readFile(b)];
    if (Buffer.compare(ba, bb) === 0) continue;
    same = false;
    // Pixel values are class indices (the palette may differ between checkouts).
    const [ia, ib] = [decodeIndexedPng(ba, a).data, decodeIndexedPng(bb, b).data];
    for (let i = 0; i < ia.length; i++) differ += ia[i] !== ib[i] ? 1 : 0;
    pixels += ia.length;
  }
  const labels = same ? '' : ` (${differ} of the differing masks' ${pixels} pixels have another label)`;
  console.log(`${sides[1][0]} / ${sides[0][0]}: ${(seconds[0] / seconds[1]).toFixed(2)}x the rate; same mask bytes: ${same}${labels}; load average now ${load()}`);
} finally {
  await fs.rm(tmp, { recursive: true, force: true });
}
