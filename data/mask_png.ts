/**
 * outputs/pseudo_masks/<id>.png: the pseudo-masks as 8-bit palette PNGs with tagseg's class
 * palette (data/palette.ts classPalette: VOC's colours with a background class at 0, shifted so no
 * class is black without one; pixel value = class index, 255 = ignore in VOC's void colour), the format VOC tools
 * read directly (e.g. PIL: np.array(Image.open(f)) gives the class indices). Written into a staged
 * sibling directory and swapped in whole (fsutil.replaceDirAtomic), so a killed run leaves the
 * previous export intact and no stale PNG of a removed image survives a rerun.
 */
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { VOC_PALETTE, encodeIndexedPng } from './palette.js';
import { TagsegError } from '../pipeline/errors.js';
import { ensureDir, replaceDirAtomic, tempPathFor } from '../pipeline/fsutil.js';
import { removeTree } from '../pipeline/remove_tree.js';

/** An image id usable as a file name: no path separator, NUL, '.' or '..'. */
export function pngName(id: string): string {
  if (id === '' || id === '.' || id === '..' || /[/\\\0]/.test(id)) {
    throw new TagsegError(`image id '${id}' cannot be a file name`, { hint: 'ids with path separators cannot be exported as <id>.png' });
  }
  return `${id}.png`;
}

export class PngExport {
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private readonly names = new Set<string>();
  private pending: Promise<void>[] = [];

  private constructor(readonly target: string, readonly staged: string, readonly palette: Uint8Array) {}

  /** `palette`: the dataset's classPalette(background), so the PNGs show the report's colours. */
  static async open(target: string, palette: Uint8Array = VOC_PALETTE): Promise<PngExport> {
    await ensureDir(path.dirname(target));
    const staged = tempPathFor(target);
    await fs.mkdir(staged);
    return new PngExport(target, staged, palette);
  }

  /** Encode `mask` [height, width] and write `<id>.png` into the staged directory (writes run concurrently; commit awaits them). */
  async write(id: string, mask: Uint8Array, width: number, height: number): Promise<void> {
    if (this.state !== 'open') throw new TagsegError(`PNG export is already ${this.state}`, { file: this.target });
    const name = pngName(id);
    if (this.names.has(name)) throw new TagsegError(`two images have the id '${id}'`, { file: this.target });
    this.names.add(name);
    const png = encodeIndexedPng(mask, width, height, this.palette);
    const p = fs.writeFile(path.join(this.staged, name), png);
    p.catch(() => undefined); // its failure is thrown by the next flush; unhandled until then, it would crash the process
    this.pending.push(p);
    if (this.pending.length >= 16) await this.flush();
  }

  private async flush(): Promise<void> {
    const p = this.pending;
    this.pending = [];
    await Promise.all(p);
  }

  /** Wait for the writes, then replace `target` by the staged directory. Returns the number of PNGs. */
  async commit(): Promise<number> {
    if (this.state !== 'open') throw new TagsegError(`PNG export is already ${this.state}`, { file: this.target });
    try {
      await this.flush();
      await replaceDirAtomic(this.staged, this.target);
      this.state = 'committed';
      return this.names.size;
    } catch (err) {
      await this.abort();
      throw err;
    }
  }

  /** Remove the staged directory; the previous `target` stays. */
  async abort(): Promise<void> {
    if (this.state === 'committed') return;
    this.state = 'aborted';
    await Promise.allSettled(this.pending);
    await removeTree(this.staged);
  }
}
