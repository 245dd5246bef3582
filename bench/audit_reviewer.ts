/**
 * What the audit is worth: a simulated reviewer corrects the 5% / 10% most suspect training masks
 * with the ground truth (and, as the control, as many random ones), segment retrains under the CV
 * protocol, and the gain over no correction is reported, mean ± sd over seeds (cli/reviewer.ts).
 *   npm run bench -- audit_reviewer --root DIR [--folds 3] [--seeds 3] [--epochs-factor 1] [--fractions 0.05,0.1] [--random-seed 0] [--rankings suspicion,label_quality]
 * (the cheap protocol: --seeds 1 --epochs-factor 0.5; gains are then paired by fold)
 * DIR: a workspace with ground-truth masks, run through audit (cache/audit_images.arrow gives the
 * suspicion ranking; review/label_quality.csv, when `tagseg cv --oof` filled it, a second one).
 * Every finished run is kept under DIR/runs/reviewer: stop and rerun to continue.
 */
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { readLabelQuality } from '../eval/label_quality.js';
import { formatReviewer, runReviewer } from '../cli/reviewer.js';
import { readAll } from '../pipeline/arrow.js';
import { initBackend } from '../pipeline/backend.js';

const { values: a } = parseArgs({
  options: {
    root: { type: 'string' }, folds: { type: 'string', default: '3' }, seeds: { type: 'string', default: '3' },
    'epochs-factor': { type: 'string', default: '1' }, fractions: { type: 'string', default: '0.05,0.1' }, 'random-seed': { type: 'string', default: '0' },
    rankings: { type: 'string', default: 'suspicion,label_quality' },
  },
});
if (!a.root) {
  console.error('usage: npm run bench -- audit_reviewer --root DIR [--folds 3] [--seeds 3] [--epochs-factor 1] [--fractions 0.05,0.1] [--rankings suspicion,label_quality]');
  process.exit(2);
}
await initBackend();
const root = path.resolve(a.root);
const images = await readAll(path.join(root, 'cache/audit_images.arrow'));
const rankings = [{ name: 'suspicion', ids: [...images].sort((x, y) => (x.rank as number) - (y.rank as number)).map((r) => r.id as string) }];
const lq = await readLabelQuality(path.join(root, 'review/label_quality.csv'));
if (lq) {
  const scored = [...lq.values()].filter((r) => r.label_quality !== null);
  rankings.push({ name: 'label_quality', ids: scored.sort((x, y) => x.label_quality! - y.label_quality! || (x.id < y.id ? -1 : 1)).map((r) => r.id) });
}
const wanted = a.rankings!.split(',').map((x) => x.trim());
const unknown = wanted.filter((w) => !['suspicion', 'label_quality'].includes(w));
if (unknown.length) {
  console.error(`--rankings: unknown ${unknown.join(', ')} (suspicion, label_quality)`);
  process.exit(2);
}
const r = await runReviewer({
  root, folds: Number(a.folds), seeds: Number(a.seeds), epochsFactor: Number(a['epochs-factor']),
  fractions: a.fractions!.split(',').map(Number), randomSeed: Number(a['random-seed']), rankings: rankings.filter((x) => wanted.includes(x.name)),
  onRun: (x, trained) => console.error(`fold ${x.fold} seed ${x.seed}: ${x.segmenter.miou === null ? '-' : (100 * x.segmenter.miou).toFixed(1)}${trained ? ` (${x.seconds.toFixed(0)} s)` : ' (kept)'}`),
});
console.log(formatReviewer(r));
console.log(`-> ${path.join(root, 'runs/reviewer/reviewer.json')}`);
