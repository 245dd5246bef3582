/**
 * What the train stages (cam_train, affinity_train, contrast_train) and their map stages share
 * around the resumable loop (loop.ts):
 * - sectionKeys: one list per algorithm of the params keys that only shape the maps; every other
 *   key of the section shapes the weights. The training hash and both stages' params deps come
 *   from it, so they cannot disagree.
 * - trainAndSave: the checkpoint store keyed by the training hash + the stage's code, the network
 *   built and disposed whatever happens, the finished model saved with its provenance (hash,
 *   epochs), then the resumable state removed; a stage that also scores the model (segment)
 *   does so in `afterSave`, before the network is disposed.
 * - loadTrainedModel: a map stage's model, or a TagsegError naming it when it is missing or was
 *   trained for other classes.
 */
import * as path from 'node:path';
import { ownCodeDeps } from '../pipeline/code_closure.js';
import { TagsegError } from '../pipeline/errors.js';
import { exists } from '../pipeline/fsutil.js';
import type { Params } from '../stages/params.js';
import { type LoopResult, type TrainedSection, finishTraining, trainingHash, trainingStore } from './loop.js';

export interface SectionKeys {
  section: TrainedSection;
  /** Every key of the section's schema. */
  all: readonly string[];
  /** Keys of the section that only change the maps computed from the model (inference). */
  mapOnly: readonly string[];
  /** The train stage's params deps: seed, the train split and every other key of the section. */
  trainParams: string[];
  /** The map stage's params deps: its inference keys and the split its evaluation scores. */
  mapParams: string[];
}

/** Split the keys of `section` (`all`: every key of its schema, stages/<x>/params.ts) into map-only and training keys. */
export function sectionKeys(section: TrainedSection, all: readonly string[], mapOnly: readonly string[]): SectionKeys {
  const unknown = mapOnly.filter((k) => !all.includes(k));
  if (unknown.length) throw new Error(`sectionKeys: ${unknown.join(', ')} not in the ${section} schema`);
  if (mapOnly.includes('epochs')) throw new Error('sectionKeys: epochs shapes the weights');
  return {
    section,
    all,
    mapOnly,
    trainParams: ['seed', 'dataset.train_split', ...all.filter((k) => !mapOnly.includes(k)).map((k) => `${section}.${k}`)],
    mapParams: [...mapOnly.map((k) => `${section}.${k}`), 'dataset.train_split'],
  };
}

/** The training hash of `keys`' section: seed, split, every key but the map-only ones (and `alsoExcluded`), the data. */
export function sectionTrainHash(p: Params, keys: SectionKeys, dataHash: string, alsoExcluded: readonly string[] = []): string {
  return trainingHash(p, keys.section, [...keys.mapOnly, ...alsoExcluded], dataHash);
}

export interface TrainedNet { config: { paramsHash?: string; epochs?: number }; dispose(): void }

export interface TrainAndSave<N extends TrainedNet, T extends LoopResult> {
  /** The train stage: names its store folder and the code fingerprinted in the store key. */
  stage: string;
  /** The stage module's own URL (`module: import.meta.url`): its code deps go into the resume key. */
  module: string;
  /** The training hash (sectionTrainHash), recorded in the model's config. */
  hash: string;
  /** Epochs to train; a run that stops earlier (tests' stopAfter) saves no model. */
  epochs: number;
  /** The model folder, project-relative (models/<x>). */
  model: string;
  path(rel: string): string;
  build(): Promise<N>;
  train(net: N, store: { checkpointDir: string; key: string }): Promise<T>;
  /** Between training and saving (contrast: summarise the memory the model is saved with). */
  beforeSave?(net: N, training: T): void;
  save(dir: string, net: N): Promise<void>;
  /** After the model is saved and the store emptied, before the net is disposed (segment: its validation scores). */
  afterSave?(net: N, training: T): Promise<void>;
}

export async function trainAndSave<N extends TrainedNet, T extends LoopResult>(o: TrainAndSave<N, T>): Promise<T> {
  const store = await trainingStore(o.stage, await ownCodeDeps(o.module), o.hash, o.path);
  const net = await o.build();
  try {
    const training = await o.train(net, store);
    if (training.epochs < o.epochs) return training; // cut short: the state stays for the resume
    o.beforeSave?.(net, training);
    net.config.paramsHash = o.hash;
    net.config.epochs = training.epochs;
    await o.save(o.path(o.model), net);
    await finishTraining(store.checkpointDir);
    await o.afterSave?.(net, training);
    return training;
  } finally {
    net.dispose();
  }
}

/**
 * The model in `model` (project-relative) for a map stage, checked to be trained for `classes`
 * (`classesOf` reads them from its config). The caller disposes it.
 */
export async function loadTrainedModel<N extends { dispose(): void }>(
  model: string, o: { path(rel: string): string; trainStage: string; classes: readonly string[]; load(dir: string): Promise<N>; classesOf(net: N): readonly string[] },
): Promise<N> {
  const dir = o.path(model);
  const hint = `run \`tagseg repro ${o.trainStage}\` (or \`tagseg run ${o.trainStage}\`) first`;
  if (!(await exists(path.join(dir, 'config.json')))) throw new TagsegError(`no trained model in ${model}`, { file: model, hint });
  const net = await o.load(dir);
  const trained = o.classesOf(net);
  if (JSON.stringify(trained) !== JSON.stringify(o.classes)) {
    net.dispose();
    throw new TagsegError(`${model} was trained for other classes [${trained.join(', ')}] than the images' [${o.classes.join(', ')}]`, { file: model, hint: `the dataset changed: ${hint}` });
  }
  return net;
}
