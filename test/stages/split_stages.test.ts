/**
 * Training apart from per-image maps (issue 20 item 4): each algorithm that trains is two stages,
 * `<x>_train` (the model) and `<x>` (the maps from it). Their params deps come from one split per
 * algorithm (stages/<x>/io.ts), so an inference key reruns only the map stage and a training key
 * the train stage (then the maps, whose model changed); the split covers the whole section and the
 * training hash ignores exactly the inference keys. A map stage without its model, or with one
 * trained for other classes, stops with an error naming the model.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { SectionKeys } from '../../nn/stage_training.js';
import { repro, status } from '../../cli/dag.js';
import { TagsegError } from '../../pipeline/errors.js';
import { setQuiet } from '../../pipeline/log.js';
import { type Params, defaultParams, knownParamKeys, loadParams, writeOverrides } from '../../stages/params.js';
import { createWorkspace } from '../../cli/workspace.js';
import { CAM_KEYS, trainHash as camTrainHash } from '../../stages/cam/io.js';
import { runCam } from '../../stages/cam/index.js';
import { AFFINITY_KEYS, affinityTrainHash } from '../../stages/affinity/io.js';
import { CONTRAST_KEYS, contrastTrainHash } from '../../stages/contrast/io.js';

/**
 * Every algorithm split into a train and a map stage: its keys, its training hash and the training
 * keys that hash leaves out on purpose (affinity: the label keys that do not apply to the dataset).
 */
const SPLITS: { name: string; keys: SectionKeys; hash: (p: Params) => string; unhashed?: string[] }[] = [
  { name: 'cam', keys: CAM_KEYS, hash: (p) => camTrainHash(p, 'data') },
  { name: 'affinity (background class)', keys: AFFINITY_KEYS, hash: (p) => affinityTrainHash(p, 'data', 0), unhashed: ['margin', 'floor'] },
  { name: 'affinity (no background)', keys: AFFINITY_KEYS, hash: (p) => affinityTrainHash(p, 'data', null), unhashed: ['conf_fg', 'conf_bg'] },
  { name: 'contrast', keys: CONTRAST_KEYS, hash: (p) => contrastTrainHash(p, 'data') },
];

/** A value of another kind than `v` for the same key, so that the params differ in it. */
function changed(v: unknown): unknown {
  if (typeof v === 'number') return v + 1;
  if (typeof v === 'boolean') return !v;
  if (typeof v === 'string') return `${v}x`;
  if (Array.isArray(v)) return [...v, ...v];
  return { other: v };
}

function withKey(p: Params, section: string, key: string): Params {
  const copy = structuredClone(p) as unknown as Record<string, Record<string, unknown>>;
  copy[section][key] = changed(copy[section][key]);
  return copy as unknown as Params;
}

describe('the params split of each trained algorithm', () => {
  for (const { name, keys, hash, unhashed = [] } of SPLITS) {
    it(`${name}: train and map keys cover the section, and only the map keys stay out of the training hash`, () => {
      const all = knownParamKeys().filter((k) => k.split('.').length === 2 && k.startsWith(`${keys.section}.`)).map((k) => k.split('.')[1]);
      const dotted = (ks: string[]) => ks.filter((k) => k.startsWith(`${keys.section}.`)).map((k) => k.slice(keys.section.length + 1));
      const train = dotted(keys.trainParams);
      const map = dotted(keys.mapParams);
      expect([...train, ...map].sort()).toEqual([...all].sort());
      expect(train.filter((k) => map.includes(k))).toEqual([]);
      expect(map).toEqual([...keys.mapOnly]);
      expect(keys.trainParams).toEqual(expect.arrayContaining(['seed', 'dataset.train_split', `${keys.section}.epochs`]));
      const p = defaultParams();
      for (const k of map) expect(hash(withKey(p, keys.section, k)), `${k} is inference only`).toBe(hash(p));
      for (const k of train.filter((x) => !unhashed.includes(x))) expect(hash(withKey(p, keys.section, k)), `${k} shapes the weights`).not.toBe(hash(p));
      for (const k of unhashed) expect(hash(withKey(p, keys.section, k)), `${k} does not apply`).toBe(hash(p));
    });
  }
});

const TINY = [
  'synth.images=12', 'synth.size=32', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]',
  'affinity.epochs=1', 'affinity.radius=3', 'affinity.batch_size=4', 'affinity.crop=32', 'affinity.dim=16', 'affinity.logt=4',
];
let root: string;
beforeAll(async () => {
  setQuiet(true);
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-split-'));
  root = await createWorkspace(path.join(tmp, 'ws'), TINY);
});
afterAll(async () => fs.rm(path.dirname(root), { recursive: true, force: true }));

async function reasons(): Promise<Record<string, string[]>> {
  return Object.fromEntries((await status(root)).map((s) => [s.name, s.reasons]));
}
const actions = (r: Awaited<ReturnType<typeof repro>>) => Object.fromEntries(r.stages.map((s) => [s.name, s.action]));
const weights = (model: string) => fs.readFile(path.join(root, 'models', model, 'weights/weights.bin'));

describe('train and map stages in the pipeline', () => {
  it('cam: an inference key reruns only cam; a training key reruns cam_train, then cam', async () => {
    const first = await repro(root, { target: 'cam' });
    expect(first.failed?.message).toBeUndefined();
    expect(actions(first)).toMatchObject({ cam_train: 'ran', cam: 'ran' });
    const model = await weights('cam');

    await writeOverrides(path.join(root, 'params.yaml'), ['cam.scales=[1.0, 0.5]']);
    const r = await reasons();
    expect(r.cam_train).toEqual([]);
    expect(r.cam).toEqual([expect.stringMatching(/^param changed: cam\.scales/)]);
    const again = await repro(root, { target: 'cam' });
    expect(actions(again)).toMatchObject({ cam_train: 'skipped', cam: 'ran' });
    expect((await weights('cam')).equals(model)).toBe(true);

    await writeOverrides(path.join(root, 'params.yaml'), ['cam.epochs=2']);
    const r2 = await reasons();
    expect(r2.cam_train).toEqual([expect.stringMatching(/^param changed: cam\.epochs \(1 -> 2\)/)]);
    expect(r2.cam).toEqual(['upstream stale: cam_train']);
    const dry = await repro(root, { target: 'cam', dryRun: true });
    expect(actions(dry)).toMatchObject({ cam_train: 'would run', cam: 'would run' });
  }, 300_000);

  it('affinity: a walk key reruns only affinity; a training key reruns affinity_train, then affinity', async () => {
    const first = await repro(root, { target: 'affinity' });
    expect(first.failed?.message).toBeUndefined();
    expect(actions(first)).toMatchObject({ cam_train: 'ran', cam: 'ran', affinity_train: 'ran', affinity: 'ran' });
    const model = await weights('affinity');

    await writeOverrides(path.join(root, 'params.yaml'), ['affinity.beta=4']);
    const r = await reasons();
    expect(r.affinity_train).toEqual([]);
    expect(r.affinity).toEqual([expect.stringMatching(/^param changed: affinity\.beta/)]);
    const again = await repro(root, { target: 'affinity' });
    expect(actions(again)).toMatchObject({ cam_train: 'skipped', cam: 'skipped', affinity_train: 'skipped', affinity: 'ran' });
    expect((await weights('affinity')).equals(model)).toBe(true);

    await writeOverrides(path.join(root, 'params.yaml'), ['affinity.lr=0.002']);
    const r2 = await reasons();
    expect(r2.affinity_train).toEqual([expect.stringMatching(/^param changed: affinity\.lr/)]);
    expect(r2.affinity).toEqual(['upstream stale: affinity_train']);
    expect(r2.cam).toEqual([]);
  }, 300_000);

  it('a map stage without its model, or with one trained for other classes, names the model', async () => {
    const p = await loadParams(path.join(root, 'params.yaml'));
    const at = (rel: string) => path.join(root, rel);
    const config = path.join(root, 'models/cam/config.json');
    const text = await fs.readFile(config, 'utf8');
    const other = JSON.parse(text) as { classes: string[] };
    other.classes = [...other.classes.slice(0, -1), 'zebra'];
    await fs.writeFile(config, JSON.stringify(other));
    const wrong = await runCam({ params: p, path: at }).catch((e: unknown) => e);
    expect(wrong).toBeInstanceOf(TagsegError);
    expect((wrong as Error).message).toMatch(/models\/cam was trained for other classes \[.*zebra\]/);
    await fs.rm(path.join(root, 'models/cam'), { recursive: true });
    const missing = await runCam({ params: p, path: at }).catch((e: unknown) => e);
    expect(missing).toBeInstanceOf(TagsegError);
    expect((missing as Error).message).toMatch(/no trained model in models\/cam/);
    expect((missing as TagsegError).hint).toMatch(/cam_train/);
  }, 120_000);
});
