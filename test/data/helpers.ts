import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { expect } from 'vitest';
import { TagsegError } from '../../pipeline/errors.js';

/** A fresh temp dir under os.tmpdir(); remove it with `rmTemp`. */
export async function makeTemp(prefix = 'tagseg-data-'): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), prefix));
}

export async function rmTemp(dir: string | undefined): Promise<void> {
  if (dir) await fs.rm(dir, { recursive: true, force: true });
}

/** A small RGB image `[h, w, 3]` filled by `f(x, y) -> [r, g, b]`, written with sharp. */
export async function writeRgb(
  file: string,
  width: number,
  height: number,
  f: (x: number, y: number) => [number, number, number] = () => [90, 120, 150],
): Promise<void> {
  const buf = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) buf.set(f(x, y), (y * width + x) * 3);
  await fs.mkdir(path.dirname(file), { recursive: true });
  await sharp(buf, { raw: { width, height, channels: 3 } }).toFile(file);
}

/**
 * Await `p`, expect a TagsegError whose `file` is `file` and whose message matches `reason`.
 * Returns the error for further checks.
 */
export async function expectTagsegError(p: Promise<unknown>, file: string, reason: RegExp): Promise<TagsegError> {
  let caught: unknown;
  try {
    await p;
  } catch (err) {
    caught = err;
  }
  expect(caught).toBeInstanceOf(TagsegError);
  const err = caught as TagsegError;
  expect(err.file).toBe(file);
  expect(err.reason).toMatch(reason);
  expect(err.message).toContain(file);
  return err;
}
