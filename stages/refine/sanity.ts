/**
 * Image-level sanity of a pseudo-mask, recorded (never fixed) in pseudo_masks.arrow `flags` for
 * the audit stage and people: a tagged class that got no pixel ('empty:<class name>': the tag says
 * it is there, the mask lost it), and a mask that is almost all ignore ('mostly_ignore': the
 * image teaches the segmentation network next to nothing).
 */
import { TagsegError } from '../../pipeline/errors.js';

/** Pixels per dataset class of `mask` (255 = ignore is not counted); length = numClasses. */
export function classPixelCounts(mask: Uint8Array, numClasses: number): number[] {
  const counts = new Array<number>(numClasses).fill(0);
  for (let i = 0; i < mask.length; i++) {
    const v = mask[i];
    if (v === 255) continue;
    if (v >= numClasses) throw new TagsegError(`classPixelCounts: label ${v} at pixel ${i}, only ${numClasses} classes`);
    counts[v]++;
  }
  return counts;
}

export interface SanityInput {
  /** Foreground tags (dataset class indices). */
  tags: readonly number[];
  /** From classPixelCounts. */
  classPixels: readonly number[];
  /** Dataset class names. */
  classes: readonly string[];
  ignoreFraction: number;
  /** Flag 'mostly_ignore' when ignoreFraction is above this. */
  mostlyIgnore: number;
}

/** Flags of one image, in a stable order: the empty tags (ascending class index), then mostly_ignore. */
export function imageFlags(x: SanityInput): string[] {
  const flags: string[] = [];
  for (const t of [...new Set(x.tags)].sort((a, b) => a - b)) {
    if (!(t >= 0 && t < x.classes.length)) throw new TagsegError(`imageFlags: tag ${t} is not one of the ${x.classes.length} classes`);
    if ((x.classPixels[t] ?? 0) === 0) flags.push(`empty:${x.classes[t]}`);
  }
  if (x.ignoreFraction > x.mostlyIgnore) flags.push('mostly_ignore');
  return flags;
}
