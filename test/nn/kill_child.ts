/**
 * A tiny training, run as a child process by kill.test.ts: a 2-layer MLP on 20 seeded items,
 * AdamW, 4 epochs of 5 steps, random input noise drawn from the loop's Rng, trained with
 * nn/loop.ts into `<project>/.tagseg/checkpoints/toy`, saved as the model folder
 * `<project>/models/toy`, then the training state is removed: what a network stage does.
 *
 *   node --import tsx test/nn/kill_child.ts <project> [kill point]
 *
 * The child SIGKILLs itself at the kill point (so the moment is exact, not a race):
 *   step:<epoch>:<batch>   in the middle of that epoch (1-based), before that batch's step
 *   manifest:<epoch>       writing that epoch's checkpoint: weights.bin written, manifest.json not yet
 *   latest:<epoch>         that epoch's checkpoint complete, just before `latest` is switched to it
 *   swap                   between the two renames of the model folder swap (replaceDirAtomic)
 * The file system hooks wrap node:fs/promises (syncBuiltinESMExports), so the code under test is
 * the production code, unchanged. On success it prints the LoopResult as JSON.
 */
import fsCjs from 'node:fs';
import { syncBuiltinESMExports } from 'node:module';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { saveModelDir } from '../../nn/checkpoint.js';
import { finishTraining, runTraining } from '../../nn/loop.js';
import { AdamW } from '../../nn/optim.js';
import { Rng } from '../../nn/rng.js';
import { initBackend } from '../../pipeline/backend.js';
import { setQuiet } from '../../pipeline/log.js';

const [project, kill = ''] = process.argv.slice(2);
if (!project) throw new Error('usage: kill_child.ts <project> [kill point]');
const die = (): never => {
  process.kill(process.pid, 'SIGKILL');
  throw new Error('unreachable');
};

const [what, arg, arg2] = kill.split(':');
const fsp = fsCjs.promises;
if (what === 'manifest') {
  const staged = new RegExp(`/\\.epoch-${arg!.padStart(4, '0')}\\.[0-9a-f]{8}\\.tmp/manifest\\.json$`);
  const open = fsp.open;
  fsp.open = ((file: fsCjs.PathLike, ...rest: unknown[]) => {
    if (staged.test(String(file))) die();
    return (open as (...a: unknown[]) => Promise<fsCjs.promises.FileHandle>)(file, ...rest);
  }) as typeof fsp.open;
} else if (what === 'latest' || what === 'swap') {
  const rename = fsp.rename;
  fsp.rename = (async (from: fsCjs.PathLike, to: fsCjs.PathLike) => {
    const [src, dst] = [String(from), String(to)];
    if (what === 'latest' && dst.endsWith('/latest') && fsCjs.readFileSync(src, 'utf8').trim() === `epoch-${arg!.padStart(4, '0')}`) die();
    const oldModel = fsCjs.readdirSync(path.dirname(dst)).some((n) => n.startsWith('toy.old-'));
    if (what === 'swap' && dst === path.join(project, 'models/toy') && oldModel) die();
    return rename(from, to);
  }) as typeof fsp.rename;
}
syncBuiltinESMExports();

setQuiet(true);
await initBackend();
const data = new Rng(1);
const X = Array.from({ length: 20 }, () => Array.from({ length: 8 }, () => data.normal()));
const Y = X.map((x) => (x[0]! + x[1]! > 0 ? 0 : x[2]! > 0 ? 1 : 2));
const init = new Rng(2);
const variable = (shape: number[], scale: number) => tf.variable(tf.tensor(Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => scale * init.normal()), shape));
const w1 = variable([8, 16], 0.3);
const b1 = variable([16], 0);
const w2 = variable([16, 3], 0.3);
const variables = new Map([['w1', w1], ['b1', b1], ['w2', w2]]);
const opt = new AdamW([{ name: 'all', params: variables }], { lr: 0.01 });
const checkpointDir = path.join(project, '.tagseg/checkpoints/toy');

const result = await runTraining({
  name: 'toy', size: X.length, batchSize: 4, epochs: 4, lr: 0.01, optimizer: opt, variables, meta: { toy: true },
  checkpointDir, hash: 'toy0000000000001', seed: 3,
  step: (idx, rng, ctx) => {
    const batch = ctx.iter - ctx.epoch * 5;
    if (what === 'step' && ctx.epoch + 1 === Number(arg) && batch + 1 === Number(arg2)) die();
    const noise = idx.map(() => Array.from({ length: 8 }, () => 0.1 * rng.normal()));
    const x = tf.tensor2d(idx.map((i, k) => X[i]!.map((v, j) => v + noise[k]![j]!)));
    const y = tf.oneHot(tf.tensor1d(idx.map((i) => Y[i]!), 'int32'), 3);
    try {
      const { value, grads } = opt.computeGradients(() => tf.tidy(() => tf.losses.softmaxCrossEntropy(y, tf.matMul(tf.relu(tf.add(tf.matMul(x, w1), b1)), w2)) as tf.Scalar));
      opt.applyGradients(grads);
      const loss = value.dataSync()[0]!;
      tf.dispose([value, ...Object.values(grads)]);
      return loss;
    } finally {
      tf.dispose([x, y]);
    }
  },
});
await saveModelDir(path.join(project, 'models/toy'), variables, { format: 'toy', epochs: result.epochs });
await finishTraining(checkpointDir);
process.stdout.write(`${JSON.stringify({ resumedFrom: result.resumedFrom, epochs: result.epochs, losses: result.losses })}\n`);
