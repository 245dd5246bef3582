/**
 * Hostile-input fixture: every dataset below is generated here (sharp + fast-png, in a temp dir),
 * imported with `--on-error skip` and with the default `fail`, and its outcome asserted. One row
 * of `CASES` per case; `npx vitest run test/hostile --reporter verbose` lists them with their
 * outcomes, and `CASES` (exported) holds the same list for the closing note.
 *
 * Two base datasets, both with the classes background, cat, dog, "potted plant":
 *   voc  JPEGImages/{a,b}.png, ImageSets/Segmentation/train.txt (a, b), tags.csv (a,cat / b,dog), classes.json
 *   csv  {a,b}.png, tags.csv (a,cat / b,dog), classes.json
 * Each case adds its hostile item (usually `x`) to a fresh copy. Outcomes:
 *   imported  the ids in the tables, in order (images.arrow), plus `check` on the rows
 *   skipped   items left out with `skip`, each with the file at fault (relative to the dataset
 *             root) and the reason; with `fail` the first one is the TagsegError thrown
 *   fatal     the whole import fails in both modes (not an item's error)
 */
import { encode as encodePng } from 'fast-png';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { crc32, deflateSync } from 'node:zlib';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { encodeIndexedPng } from '../../data/palette.js';
import { readAll, type Row } from '../../pipeline/arrow.js';
import { TagsegError } from '../../pipeline/errors.js';
import { setQuiet } from '../../pipeline/log.js';
import { ingestDataset, type IngestSummary } from '../../stages/ingest/ingest.js';
import { makeTemp, rmTemp } from '../data/helpers.js';

setQuiet(true);

const CLASSES = { classes: ['background', 'cat', 'dog', 'potted plant'], background: 0, void: 255 };
const [CAT, DOG, PLANT] = [1, 2, 3];
const W = 6;
const H = 4;

type Layout = 'voc' | 'csv';
interface Skip {
  id: string;
  /** Relative to the dataset root. */
  file: string;
  reason: RegExp;
}
interface Ctx {
  root: string;
  out: string;
  summary: IngestSummary;
  rows: Row[];
}
interface Case {
  name: string;
  layout: Layout;
  /** Adds the hostile input to a fresh base dataset at `root` (`dir` is a scratch folder beside it). */
  build: (root: string, dir: string) => Promise<void>;
  imported?: string[];
  skipped?: Skip[];
  fatal?: { file: string; reason: RegExp };
  /** Ingest options besides the defaults (e.g. a pinned classes file), given the case dir. */
  options?: (dir: string) => { classesFile?: string; withoutClasses?: boolean };
  check?: (c: Ctx) => void | Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Writers

/** RGB PNG of `w x h` filled by `f`. */
async function png(file: string, w: number, h: number, f: (x: number, y: number) => number[], orientation?: number): Promise<void> {
  const buf = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) buf.set(f(x, y), (y * w + x) * 3);
  await fs.mkdir(path.dirname(file), { recursive: true });
  let img = sharp(buf, { raw: { width: w, height: h, channels: 3 } }).png();
  if (orientation !== undefined) img = img.withMetadata({ orientation });
  await img.toFile(file);
}
const solid = (rgb: number[]) => () => rgb;

async function write(file: string, data: string | Uint8Array): Promise<void> {
  await fs.mkdir(path.dirname(file), { recursive: true });
  await fs.writeFile(file, data);
}
const append = (file: string, text: string) => fs.appendFile(file, text);

/** Mask `[h, w]` of class indices, as a palette PNG (or 8-bit grey / RGB with `kind`). */
async function mask(file: string, w: number, h: number, f: (x: number, y: number) => number, kind: 'palette' | 'grey' | 'rgb' = 'palette'): Promise<void> {
  const data = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) data[y * w + x] = f(x, y);
  if (kind === 'palette') return write(file, encodeIndexedPng(data, w, h));
  if (kind === 'grey') return write(file, encodePng({ width: w, height: h, data, depth: 8, channels: 1 }));
  const rgb = new Uint8Array(w * h * 3);
  data.forEach((v, i) => rgb.set([v, v, v], i * 3));
  return write(file, encodePng({ width: w, height: h, data: rgb, depth: 8, channels: 3 }));
}

/** A PNG whose header declares `w x h` 8-bit grey pixels but which holds a few bytes of data. */
function bombPng(w: number, h: number): Buffer {
  const chunk = (type: string, body: Buffer) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(body.length);
    const tb = Buffer.concat([Buffer.from(type, 'ascii'), body]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(tb));
    return Buffer.concat([len, tb, crc]);
  };
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0);
  ihdr.writeUInt32BE(h, 4);
  ihdr.set([8, 0, 0, 0, 0], 8);
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', deflateSync(Buffer.alloc(1024))),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

// ---------------------------------------------------------------------------------------------
// EXIF orientation: the displayed image D (W x H, every pixel distinct) and its mask are fixed;
// the stored pixels S are D laid out as orientation `o` says, so that applying the tag gives D.

const displayed = (x: number, y: number) => [20 + 40 * x, 30 + 60 * y, 7];
const displayedMask = (x: number, y: number) => (y === 0 ? PLANT : x < W / 2 ? CAT : DOG);

/** Where stored pixel (xs, ys) is displayed under EXIF orientation `o` (TIFF 6.0 / EXIF 2.3 wording). */
function displayedAt(o: number, xs: number, ys: number): [number, number] {
  switch (o) {
    case 1: return [xs, ys]; // row 0 top, column 0 left
    case 2: return [W - 1 - xs, ys]; // row 0 top, column 0 right
    case 3: return [W - 1 - xs, H - 1 - ys]; // row 0 bottom, column 0 right
    case 4: return [xs, H - 1 - ys]; // row 0 bottom, column 0 left
    case 5: return [ys, xs]; // row 0 left, column 0 top
    case 6: return [W - 1 - ys, xs]; // row 0 right, column 0 top
    case 7: return [W - 1 - ys, H - 1 - xs]; // row 0 right, column 0 bottom
    default: return [ys, H - 1 - xs]; // 8: row 0 left, column 0 bottom
  }
}

async function orientedPng(file: string, o: number): Promise<void> {
  const [ws, hs] = o >= 5 ? [H, W] : [W, H];
  await png(file, ws, hs, (xs, ys) => displayed(...displayedAt(o, xs, ys)), o);
}

function expectDisplayed(r: Row): void {
  expect([r.width, r.height]).toEqual([W, H]);
  const px = r.pixels as Uint8Array;
  const m = r.mask as Uint8Array;
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      expect(Array.from(px.subarray((y * W + x) * 3, (y * W + x) * 3 + 3))).toEqual(displayed(x, y));
      expect(m[y * W + x]).toBe(displayedMask(x, y));
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The cases

const TRAIN = 'ImageSets/Segmentation/train.txt';
const byId = (c: Ctx, id: string) => c.rows.find((r) => r.id === id) as Row;
const colourOf = (r: Row) => Array.from((r.pixels as Uint8Array).subarray(0, 3));

/** A VOC item `x` with image, optional mask and optional tags.csv line. */
async function vocItem(root: string, id: string, o: { image?: (f: string) => Promise<void>; tags?: string; mask?: (f: string) => Promise<void> } = {}) {
  await append(path.join(root, TRAIN), `${id}\n`);
  if (o.image) await o.image(path.join(root, 'JPEGImages', `${id}.png`));
  if (o.mask) await o.mask(path.join(root, 'SegmentationClass', `${id}.png`));
  if (o.tags !== undefined) await append(path.join(root, 'tags.csv'), `${id},${o.tags}\n`);
}
const blue = (f: string) => png(f, W, H, solid([0, 0, 200]));

const EXIF_CASES: Case[] = [1, 2, 3, 4, 5, 6, 7, 8].map((o) => ({
  name: `voc: EXIF orientation ${o} with its mask (mask drawn on the displayed image)`,
  layout: 'voc',
  build: (root) => vocItem(root, 'x', { image: (f) => orientedPng(f, o), mask: (f) => mask(f, W, H, displayedMask) }),
  imported: ['a', 'b', 'x'],
  check: (c) => {
    expectDisplayed(byId(c, 'x'));
    expect(byId(c, 'x').tags).toEqual([CAT, DOG, PLANT]);
  },
}));

export const CASES: Case[] = [
  // --- per-item errors, VOC layout
  {
    name: 'voc: split line naming a missing image',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { tags: 'cat' }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: TRAIN, reason: /^line 3: missing image: no x\.jpg\/\.jpeg\/\.png in JPEGImages$/ }],
  },
  {
    name: 'voc: unknown class in tags.csv',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: blue, tags: 'cat|unicorn' }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: unknown class "unicorn" for image x$/ }],
  },
  {
    name: 'voc: empty tag list',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: blue, tags: ' | ' }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: empty tag list for image x$/ }],
  },
  {
    name: 'voc: duplicate id across splits (the later line is skipped)',
    layout: 'voc',
    build: (root) => write(path.join(root, 'ImageSets/Segmentation/val.txt'), 'b\n'),
    imported: ['a', 'b'],
    skipped: [{ id: 'b', file: 'ImageSets/Segmentation/val.txt', reason: /^line 1: duplicate image id "b" \(first seen at ImageSets\/Segmentation\/train\.txt:2\)$/ }],
    check: (c) => expect(byId(c, 'b').split).toBe('train'),
  },
  {
    name: 'voc: two tags.csv rows for one id (ambiguous tags: the item is skipped)',
    layout: 'voc',
    build: (root) => append(path.join(root, 'tags.csv'), 'b,cat\n'),
    imported: ['a'],
    skipped: [{ id: 'b', file: 'tags.csv', reason: /^line 3: duplicate image id "b" \(first seen at tags\.csv:2\)$/ }],
  },
  {
    name: 'voc: split line "x y" is the id "x y" (not x), with x.png present',
    layout: 'voc',
    build: async (root) => {
      await png(path.join(root, 'JPEGImages', 'x.png'), W, H, solid([9, 9, 9]));
      await append(path.join(root, 'tags.csv'), 'x,dog\n');
      await vocItem(root, 'x y', { image: blue, tags: 'cat' });
    },
    imported: ['a', 'b', 'x y'],
    check: (c) => {
      expect(colourOf(byId(c, 'x y'))).toEqual([0, 0, 200]);
      expect(byId(c, 'x y').tags).toEqual([CAT]);
    },
  },
  {
    name: 'voc: split line "x y" without "x y.png" is a missing "x y" (never x.png)',
    layout: 'voc',
    build: async (root) => {
      await png(path.join(root, 'JPEGImages', 'x.png'), W, H, solid([9, 9, 9]));
      await vocItem(root, 'x y', { tags: 'cat' });
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x y', file: TRAIN, reason: /^line 3: missing image: no "x y"\.jpg/ }],
  },
  {
    name: 'voc: unicode id with a space ("猫 1") is imported whole; with a no-break space the message escapes it',
    layout: 'voc',
    build: async (root) => {
      await vocItem(root, '猫 1', { image: blue, tags: 'cat' });
      await vocItem(root, '猫\u00a01', { tags: 'cat' });
    },
    imported: ['a', 'b', '猫 1'],
    skipped: [{ id: '猫\u00a01', file: TRAIN, reason: /^line 4: missing image: no "猫\\u00a01"\.jpg\/\.jpeg\/\.png in JPEGImages$/ }],
  },
  {
    name: 'voc: id with path traversal (../../etc/passwd, ../secret) reads nothing',
    layout: 'voc',
    build: async (root, dir) => {
      await png(path.join(dir, 'secret.png'), W, H, solid([1, 2, 3])); // reachable as JPEGImages/../../secret.png
      await vocItem(root, '../../etc/passwd', { tags: 'cat' });
      await vocItem(root, '../../secret', { tags: 'cat' });
    },
    imported: ['a', 'b'],
    skipped: [
      { id: '../../etc/passwd', file: TRAIN, reason: /^line 3: missing image: no \.\.\/\.\.\/etc\/passwd\.jpg/ },
      { id: '../../secret', file: TRAIN, reason: /^line 4: missing image/ },
    ],
  },
  {
    name: 'voc: a directory named like an image (JPEGImages/x.jpg/)',
    layout: 'voc',
    build: async (root) => {
      await fs.mkdir(path.join(root, 'JPEGImages', 'x.jpg'));
      await vocItem(root, 'x', { tags: 'cat' });
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: TRAIN, reason: /^line 3: image x: JPEGImages\/x\.jpg is a directory, not an image file$/ }],
  },
  {
    name: 'voc: symlink loop (x.png -> y.png -> x.png)',
    layout: 'voc',
    build: async (root) => {
      await fs.symlink('y.png', path.join(root, 'JPEGImages', 'x.png'));
      await fs.symlink('x.png', path.join(root, 'JPEGImages', 'y.png'));
      await vocItem(root, 'x', { tags: 'cat' });
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: TRAIN, reason: /^line 3: image JPEGImages\/x\.png is a symlink loop$/ }],
  },
  {
    name: 'voc: a directory symlink loop inside JPEGImages is not followed',
    layout: 'voc',
    build: (root) => fs.symlink('.', path.join(root, 'JPEGImages', 'loop')),
    imported: ['a', 'b'],
  },
  {
    name: 'voc: the same file reached by two ids (symlink x.png -> a.png)',
    layout: 'voc',
    build: async (root) => {
      await fs.symlink('a.png', path.join(root, 'JPEGImages', 'x.png'));
      await vocItem(root, 'x', { tags: 'dog' });
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: TRAIN, reason: /^line 3: image JPEGImages\/x\.png is the same file as image a's \(reached by two ids\)$/ }],
  },
  {
    name: 'voc: the same file reached by two ids (hard link)',
    layout: 'voc',
    build: async (root) => {
      await fs.link(path.join(root, 'JPEGImages', 'b.png'), path.join(root, 'JPEGImages', 'x.png'));
      await vocItem(root, 'x', { tags: 'dog' });
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: TRAIN, reason: /same file as image b's/ }],
  },
  {
    name: 'voc: corrupt image (not an image at all)',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: (f) => write(f, 'this is not a png'), tags: 'cat' }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'JPEGImages/x.png', reason: /^cannot decode image/ }],
  },
  {
    name: 'voc: truncated image (first half of a PNG)',
    layout: 'voc',
    build: (root, dir) =>
      vocItem(root, 'x', {
        image: async (f) => {
          const full = path.join(dir, 'full.png');
          await png(full, 64, 64, (x, y) => [(x * 37 + y * 11) % 256, (x * y) % 256, (x ^ y) % 256]);
          const bytes = await fs.readFile(full);
          await write(f, bytes.subarray(0, bytes.length >> 1));
        },
        tags: 'cat',
      }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'JPEGImages/x.png', reason: /^cannot decode image/ }],
  },
  {
    name: 'voc: zero-byte image',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: (f) => write(f, ''), tags: 'cat' }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'JPEGImages/x.png', reason: /^cannot decode image/ }],
  },
  {
    name: 'voc: decompression bomb (a 1 kB PNG declaring 20000x20000 pixels)',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: (f) => write(f, bombPng(20000, 20000)), tags: 'cat' }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'JPEGImages/x.png', reason: /^image declares 20000x20000 pixels, above the decode limit of 268402689 \(a decompression bomb\?\)$/ }],
  },
  {
    name: 'voc: mask size differs from its image',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: blue, mask: (f) => mask(f, W + 1, H, () => CAT) }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'SegmentationClass/x.png', reason: /^mask is 7x4 but image is 6x4$/ }],
  },
  {
    name: 'voc: corrupt mask (not a PNG)',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: blue, mask: (f) => write(f, 'garbage') }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'SegmentationClass/x.png', reason: /^mask is not a PNG file$/ }],
  },
  {
    name: 'voc: RGB mask (colours, not class indices)',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: blue, mask: (f) => mask(f, W, H, () => CAT, 'rgb') }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'SegmentationClass/x.png', reason: /^mask is a 8-bit RGB PNG, not a palette or 8-bit greyscale PNG$/ }],
  },
  {
    name: 'voc: mask value beyond the class count (9 of 4 classes)',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: blue, mask: (f) => mask(f, W, H, (x) => (x < 2 ? 9 : CAT)) }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'SegmentationClass/x.png', reason: /^mask has value 9 but the dataset has 4 classes \(void = 255\)$/ }],
  },
  {
    name: 'voc: mask holding only background and void (no tags to derive)',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: blue, mask: (f) => mask(f, W, H, (x) => (x < 2 ? 255 : 0)) }),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'SegmentationClass/x.png', reason: /^empty tag list for image x/ }],
  },
  {
    name: 'voc: grey 8-bit mask (value = class, 255 = void) -> tags from the mask',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: blue, mask: (f) => mask(f, W, H, (x) => (x === 0 ? 255 : x < 3 ? DOG : 0), 'grey') }),
    imported: ['a', 'b', 'x'],
    check: (c) => {
      expect(byId(c, 'x').tags).toEqual([DOG]);
      expect(Array.from((byId(c, 'x').mask as Uint8Array).subarray(0, W))).toEqual([255, DOG, DOG, 0, 0, 0]);
    },
  },
  {
    name: 'voc: palette mask (palette index = class) -> tags from the mask',
    layout: 'voc',
    build: (root) => vocItem(root, 'x', { image: blue, mask: (f) => mask(f, W, H, (_x, y) => (y < 2 ? PLANT : CAT)) }),
    imported: ['a', 'b', 'x'],
    check: (c) => expect(byId(c, 'x').tags).toEqual([CAT, PLANT]),
  },
  ...EXIF_CASES,

  // --- CSV folder layout
  {
    name: 'csv: row naming a missing image',
    layout: 'csv',
    build: (root) => append(path.join(root, 'tags.csv'), 'x,cat\n'),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: missing image: no x\.jpg\/\.jpeg\/\.png in \.$/ }],
  },
  {
    name: 'csv: row with an explicit path to a missing image',
    layout: 'csv',
    build: (root) => append(path.join(root, 'tags.csv'), 'photos/x.png,cat\n'),
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: missing image photos\/x\.png$/ }],
  },
  {
    name: 'csv: unknown class (pinned classes.json)',
    layout: 'csv',
    build: async (root) => {
      await png(path.join(root, 'x.png'), W, H, solid([0, 0, 200]));
      await append(path.join(root, 'tags.csv'), 'x,horse\n');
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: unknown class "horse" for image x$/ }],
  },
  {
    name: 'csv: "cat dog" / "cat;dog" are one (unknown) class each, never split on spaces or ;',
    layout: 'csv',
    build: async (root) => {
      await png(path.join(root, 'x.png'), W, H, solid([0, 0, 200]));
      await png(path.join(root, 'y.png'), W, H, solid([0, 0, 201]));
      await append(path.join(root, 'tags.csv'), 'x,cat dog\ny,cat;dog\n');
    },
    imported: ['a', 'b'],
    skipped: [
      { id: 'x', file: 'tags.csv', reason: /^line 3: unknown class "cat dog"/ },
      { id: 'y', file: 'tags.csv', reason: /^line 4: unknown class "cat;dog"/ },
    ],
  },
  {
    name: 'csv: empty tag list',
    layout: 'csv',
    build: async (root) => {
      await png(path.join(root, 'x.png'), W, H, solid([0, 0, 200]));
      await append(path.join(root, 'tags.csv'), 'x,""\n');
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: empty tag list for image x$/ }],
  },
  {
    name: 'csv: duplicate id (a and a.png; the later row is skipped)',
    layout: 'csv',
    build: (root) => append(path.join(root, 'tags.csv'), 'a.png,dog\n'),
    imported: ['a', 'b'],
    skipped: [{ id: 'a', file: 'tags.csv', reason: /^line 3: duplicate image id "a" \(first seen at tags\.csv:1\)$/ }],
    check: (c) => expect(byId(c, 'a').tags).toEqual([CAT]),
  },
  {
    name: 'csv: malformed row (an unquoted comma inside the tags)',
    layout: 'csv',
    build: async (root) => {
      await png(path.join(root, 'x.png'), W, H, solid([0, 0, 200]));
      await append(path.join(root, 'tags.csv'), 'x,cat,dog,train\n');
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: malformed line, expected "image_id,tags\[,split\]" \(got 4 field\(s\)\)$/ }],
  },
  {
    name: 'csv: d,"potted plant" is the class "potted plant"',
    layout: 'csv',
    build: async (root) => {
      await png(path.join(root, 'd.png'), W, H, solid([0, 0, 200]));
      await append(path.join(root, 'tags.csv'), 'd,"potted plant"\n');
    },
    imported: ['a', 'b', 'd'],
    check: (c) => expect(byId(c, 'd').tags).toEqual([PLANT]),
  },
  {
    name: 'csv: BOM, CRLF, header, quoted id with a comma and doubled quotes, quoted line break',
    layout: 'csv',
    build: async (root) => {
      await png(path.join(root, 'say "hi", x.png'), W, H, solid([0, 0, 200]));
      await png(path.join(root, 'y.png'), W, H, solid([0, 0, 201]));
      await write(path.join(root, 'tags.csv'), '\uFEFFimage_id,tags\r\na,cat\r\n"say ""hi"", x","dog|\r\ncat"\r\ny,"potted plant"\r\nb,dog\r\n');
    },
    imported: ['a', 'say "hi", x', 'y', 'b'],
    check: (c) => {
      expect(byId(c, 'say "hi", x').tags).toEqual([CAT, DOG]);
      expect(byId(c, 'y').tags).toEqual([PLANT]);
    },
  },
  {
    name: 'csv: line numbers after a quoted line break stay right',
    layout: 'csv',
    build: (root) => write(path.join(root, 'tags.csv'), 'a,"cat|\ndog"\nb,dog\nzz,cat\n'),
    imported: ['a', 'b'],
    skipped: [{ id: 'zz', file: 'tags.csv', reason: /^line 4: missing image/ }],
  },
  {
    name: 'csv: unterminated quote fails the whole import, naming its line',
    layout: 'csv',
    build: (root) => append(path.join(root, 'tags.csv'), 'x,"cat\n'),
    fatal: { file: 'tags.csv', reason: /^line 3: unterminated quoted field$/ },
  },
  {
    name: 'csv: id cell "x y" is the id "x y" (x.png present, not used)',
    layout: 'csv',
    build: async (root) => {
      await png(path.join(root, 'x.png'), W, H, solid([9, 9, 9]));
      await png(path.join(root, 'x y.png'), W, H, solid([0, 0, 200]));
      await append(path.join(root, 'tags.csv'), 'x y,dog\n');
    },
    imported: ['a', 'b', 'x y'],
    check: (c) => expect(colourOf(byId(c, 'x y'))).toEqual([0, 0, 200]),
  },
  {
    name: 'csv: id with path traversal (../../etc/passwd, ../secret) reads nothing',
    layout: 'csv',
    build: async (root, dir) => {
      await png(path.join(dir, 'secret.png'), W, H, solid([1, 2, 3]));
      await append(path.join(root, 'tags.csv'), '../../etc/passwd,cat\n../secret,cat\n');
    },
    imported: ['a', 'b'],
    skipped: [
      { id: '../../etc/passwd', file: 'tags.csv', reason: /^line 3: missing image: no \.\.\/\.\.\/etc\/passwd\.jpg/ },
      { id: '../secret', file: 'tags.csv', reason: /^line 4: missing image: no \.\.\/secret\.jpg/ },
    ],
  },
  {
    name: 'csv: the same file reached by two ids (symlink x.png -> a.png)',
    layout: 'csv',
    build: async (root) => {
      await fs.symlink('a.png', path.join(root, 'x.png'));
      await append(path.join(root, 'tags.csv'), 'x,dog\n');
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: image x\.png is the same file as image a's/ }],
  },
  {
    name: 'csv: a directory named like an image (photos/x.jpg/), by path',
    layout: 'csv',
    build: async (root) => {
      await fs.mkdir(path.join(root, 'photos', 'x.jpg'), { recursive: true });
      await append(path.join(root, 'tags.csv'), 'photos/x.jpg,cat\n');
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: image photos\/x\.jpg is a directory$/ }],
  },
  {
    name: 'csv: without classes.json the sorted tags are the classes, written beside the tables (not into the dataset)',
    layout: 'csv',
    options: () => ({ withoutClasses: true }),
    build: async (root) => {
      await png(path.join(root, 'd.png'), W, H, solid([0, 0, 200]));
      await append(path.join(root, 'tags.csv'), 'd,potted plant|dog\n');
    },
    imported: ['a', 'b', 'd'],
    check: async (c) => {
      expect(c.summary.classes).toEqual(['cat', 'dog', 'potted plant']);
      expect(c.summary.classesDerived).toBe(true);
      expect(byId(c, 'd').tags).toEqual([1, 2]);
      const pinned = JSON.parse(await fs.readFile(path.join(c.out, 'classes.json'), 'utf8'));
      expect(pinned).toEqual({ classes: ['cat', 'dog', 'potted plant'], background: null, void: 255 });
      expect((await fs.readdir(c.root)).sort()).toEqual(['a.png', 'b.png', 'd.png', 'tags.csv']);
    },
  },
  {
    name: 'csv: a later import with a new tag against the pinned classes keeps the indices; the new tag is an unknown class',
    layout: 'csv',
    options: (dir) => ({ classesFile: path.join(dir, 'pinned.json') }),
    build: async (root, dir) => {
      await write(path.join(dir, 'pinned.json'), JSON.stringify({ classes: ['cat', 'dog'], background: null, void: 255 }));
      await png(path.join(root, 'x.png'), W, H, solid([0, 0, 200]));
      await append(path.join(root, 'tags.csv'), 'x,bird|dog\n'); // bird sorts first: derived indices would shift
    },
    imported: ['a', 'b'],
    skipped: [{ id: 'x', file: 'tags.csv', reason: /^line 3: unknown class "bird" for image x$/ }],
    check: (c) => {
      expect(c.summary.classes).toEqual(['cat', 'dog']);
      expect([byId(c, 'a').tags, byId(c, 'b').tags]).toEqual([[0], [1]]);
    },
  },
];

// ---------------------------------------------------------------------------------------------
// Runner

let tmp: string;
let n = 0;
beforeAll(async () => {
  tmp = await makeTemp('tagseg-hostile-');
});
afterAll(async () => {
  await rmTemp(tmp);
});

async function buildBase(layout: Layout, root: string, withClasses: boolean): Promise<void> {
  const imgDir = layout === 'voc' ? path.join(root, 'JPEGImages') : root;
  await png(path.join(imgDir, 'a.png'), W, H, solid([200, 0, 0]));
  await png(path.join(imgDir, 'b.png'), W, H, solid([0, 200, 0]));
  await write(path.join(root, 'tags.csv'), 'a,cat\nb,dog\n');
  if (withClasses) await write(path.join(root, 'classes.json'), JSON.stringify(CLASSES));
  if (layout === 'voc') {
    await write(path.join(root, TRAIN), 'a\nb\n');
    await fs.mkdir(path.join(root, 'SegmentationClass'));
  }
}

async function runIngest(c: Case, dir: string, root: string, onError: 'fail' | 'skip'): Promise<{ summary: IngestSummary; out: string }> {
  const out = path.join(dir, `out-${onError}`);
  const summary = await ingestDataset({
    root,
    format: c.layout,
    csv: 'tags.csv',
    splits: [],
    size: 0,
    concurrency: 2,
    onError,
    classesFile: c.options?.(dir).classesFile,
    datasetTable: path.join(out, 'dataset.arrow'),
    imagesTable: path.join(out, 'images.arrow'),
    paramsHash: 'hostile',
  });
  return { summary, out };
}

async function failure(p: Promise<unknown>): Promise<TagsegError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(TagsegError);
  return err as TagsegError;
}

function outcome(c: Case): string {
  if (c.fatal) return `fails: ${c.fatal.file}: ${c.fatal.reason.source}`;
  const skipped = (c.skipped ?? []).map((s) => `${s.id} (${s.file}: ${s.reason.source})`);
  return `imports [${c.imported?.join(', ')}]${skipped.length ? `; skips ${skipped.join(', ')}` : ''}`;
}

describe('hostile inputs: each case with its asserted outcome', () => {
  it(`has at least 25 uniquely named cases (${CASES.length})`, () => {
    expect(CASES.length).toBeGreaterThanOrEqual(25);
    expect(new Set(CASES.map((c) => c.name)).size).toBe(CASES.length);
  });

  for (const c of CASES) {
    it(`${c.name} -> ${outcome(c)}`, async () => {
      const dir = path.join(tmp, `case${n++}`);
      const root = path.join(dir, 'ds');
      await buildBase(c.layout, root, !c.options?.(dir).withoutClasses);
      await c.build(root, dir);

      if (c.fatal) {
        for (const mode of ['skip', 'fail'] as const) {
          const err = await failure(runIngest(c, dir, root, mode));
          expect(err.file).toBe(path.join(root, c.fatal.file));
          expect(err.reason).toMatch(c.fatal.reason);
        }
        return;
      }
      const { summary, out } = await runIngest(c, dir, root, 'skip');
      const rows = await readAll(path.join(out, 'images.arrow'), { stage: 'ingest' });
      expect(rows.map((r) => r.id)).toEqual(c.imported);
      const skipped = c.skipped ?? [];
      expect(summary.skipped.map((s) => [s.id, path.relative(root, s.file)])).toEqual(skipped.map((s) => [s.id, s.file]));
      summary.skipped.forEach((s, i) => expect(s.reason).toMatch(skipped[i].reason));
      await c.check?.({ root, out, summary, rows });

      if (skipped.length > 0) {
        // Default: the first bad item stops the import with a TagsegError naming its file and reason.
        const err = await failure(runIngest(c, dir, root, 'fail'));
        expect([err.file, err.reason]).toEqual([path.join(root, skipped[0].file), expect.stringMatching(skipped[0].reason)]);
        expect(err.message).toContain(path.join(root, skipped[0].file));
      }
    });
  }
});
