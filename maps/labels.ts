/**
 * Class bookkeeping of the CAM classifier. The dataset's class list may include a background
 * class (synthetic: index 0; MSRC: none, `extra.background: null`). Background is never a
 * classifier output: output k is the k-th non-background dataset class.
 */
import { TagsegError } from '../pipeline/errors.js';

export interface ClassMap {
  /** Dataset class list (table metadata `tagseg.classes`). */
  classes: string[];
  /** Dataset index of the background class, or null. */
  background: number | null;
  /** Dataset class index of each classifier output. */
  outputs: number[];
  /** Dataset class index -> classifier output index (-1 for background). */
  toOutput: Int32Array;
}

export function classMap(classes: string[], background: number | null): ClassMap {
  if (background !== null && !(Number.isInteger(background) && background >= 0 && background < classes.length)) {
    throw new TagsegError(`background class ${background} is not an index of the ${classes.length} classes`);
  }
  const outputs = classes.map((_, i) => i).filter((i) => i !== background);
  if (outputs.length === 0) throw new TagsegError('the dataset has no foreground class to classify');
  const toOutput = new Int32Array(classes.length).fill(-1);
  outputs.forEach((c, k) => { toOutput[c] = k; });
  return { classes, background, outputs, toOutput };
}

/**
 * Multi-hot target over the classifier outputs from an image's tags (dataset class indices).
 * A background tag is dropped (it is not an output); an index outside the class list is an error.
 */
export function tagTarget(map: ClassMap, tags: readonly number[], id = '?'): Float32Array {
  const y = new Float32Array(map.outputs.length);
  for (const t of tags) {
    if (!(Number.isInteger(t) && t >= 0 && t < map.classes.length)) {
      throw new TagsegError(`image '${id}' has tag ${t}, not an index of the ${map.classes.length} classes`);
    }
    const k = map.toOutput[t];
    if (k >= 0) y[k] = 1;
  }
  return y;
}

/** The foreground tags of an image, sorted and deduplicated (the CAM channels stored for it). */
export function foregroundTags(map: ClassMap, tags: readonly number[]): number[] {
  return [...new Set(tags)].filter((t) => map.toOutput[t] !== undefined && map.toOutput[t] >= 0).sort((a, b) => a - b);
}
