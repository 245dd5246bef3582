/**
 * `tagseg predict` on hostile folders (stages/segment/predict.ts, predict_files.ts): every raster
 * format sharp reads is segmented whatever the extension's case; other entries, subfolders and
 * (with --on-error skip) corrupt or missing images are listed with their reason; the default
 * stops at a bad image with an error naming it. --overlay: the photo blended with the class
 * palette of data/palette.ts plus a legend, checked pixel by pixel on a hand-made case. --tags:
 * a hand-made probability map restricted to the tagged classes, and masks that hold only those.
 * The CRF pool: the same bytes with 1 and 2 threads, and as segmentBatch (the sequential path).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeImage } from '../../data/decode.js';
import { VOC_PALETTE, classPalette, decodeIndexedPng } from '../../data/palette.js';
import { initBackend } from '../../pipeline/backend.js';
import { CAM_MODEL_FORMAT, buildCamNet, saveCamModel } from '../../nn/cam_net.js';
import { loadSegModel, saveSegModel, segNetFromCam } from '../../stages/segment/net.js';
import { segmentBatch } from '../../stages/segment/infer.js';
import { crfFromKeys } from '../../ops/crf.js';
import { defaultParams } from '../../stages/params.js';
import { predictFolder } from '../../stages/segment/predict.js';
import { PREDICT_EXTS } from '../../stages/segment/predict_files.js';
import { LEGEND_BACKGROUND, legendEntries, overlayWithLegend } from '../../stages/segment/predict_overlay.js';
import { overlayRgb } from '../../data/overlay.js';
import { readTagsFile } from '../../stages/segment/predict_tags.js';
import { restrictProbs } from '../../stages/segment/infer.js';

let tmp: string;
let model: string;
let images: string;

/** A tiny untrained segment model directory (3 classes, background 0, working size 24). */
async function makeModel(dir: string): Promise<void> {
  const cam = await buildCamNet({
    format: CAM_MODEL_FORMAT, version: 1, backbone: { kind: 'resnet', outputStride: 8, norm: 'batch', width: 4, depth: [1, 1, 1, 1] },
    classes: ['bg', 'a', 'b'], background: 0, outputs: [1, 2],
  }, 5, true);
  await saveCamModel(path.join(dir, 'cam'), cam);
  cam.dispose();
  const net = await segNetFromCam(path.join(dir, 'cam'), { classes: ['bg', 'a', 'b'], background: 0, dim: 8, decoder: true, workingSize: 24, scales: [1], flip: false, crf: null, seed: 2 });
  await saveSegModel(path.join(dir, 'seg'), net);
  net.dispose();
}

/** A W x H gradient photo. */
const photo = (W: number, H: number) => {
  const px = Buffer.alloc(W * H * 3);
  for (let i = 0; i < W * H; i++) px.set([(i * 7) % 256, (i * 3) % 256, 90], i * 3);
  return sharp(px, { raw: { width: W, height: H, channels: 3 } });
};

const GOOD = { 'a.png': (s: sharp.Sharp) => s.png(), 'b.JPG': (s: sharp.Sharp) => s.jpeg(), 'c.webp': (s: sharp.Sharp) => s.webp(), 'd.TIF': (s: sharp.Sharp) => s.tiff(), 'e.gif': (s: sharp.Sharp) => s.gif(), 'f.avif': (s: sharp.Sharp) => s.avif() };

beforeAll(async () => {
  await initBackend();
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-predict-'));
  await makeModel(tmp);
  model = path.join(tmp, 'seg');
  images = path.join(tmp, 'images');
  await fs.mkdir(path.join(images, 'sub'), { recursive: true });
  let w = 30;
  for (const [name, enc] of Object.entries(GOOD)) await enc(photo(w++, 20)).toFile(path.join(images, name));
  await photo(10, 10).png().toFile(path.join(images, 'sub/inner.png'));
  await fs.writeFile(path.join(images, 'notes.txt'), 'not an image');
  await fs.writeFile(path.join(images, '.DS_Store'), 'x');
  const jpeg = await photo(40, 30).jpeg().toBuffer();
  await fs.writeFile(path.join(images, 'broken.jpg'), jpeg.subarray(0, jpeg.length >> 1));
}, 60_000);
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

const base = () => ({ model, images, batchSize: 2, out: path.join(tmp, `out-${Math.random().toString(36).slice(2)}`) });

describe('predict inputs', () => {
  it('accepts the raster formats sharp reads, in any case', () => {
    for (const ext of ['.jpg', '.jpeg', '.png', '.webp', '.tif', '.tiff', '.gif', '.avif']) expect(PREDICT_EXTS).toContain(ext);
    expect(PREDICT_EXTS).not.toContain('.txt');
    expect(PREDICT_EXTS).not.toContain('.svg');
  });

  it('stops by default at a corrupt image, naming it', async () => {
    const o = base();
    await expect(predictFolder(o)).rejects.toThrow(/broken\.jpg/);
  });

  it('with skip: segments every format, lists the corrupt image, subfolder and other files with reasons', async () => {
    const o = base();
    const r = await predictFolder({ ...o, onError: 'skip' });
    expect(r.images).toBe(6);
    const written = (await fs.readdir(o.out)).sort();
    expect(written).toEqual(['a.png', 'b.png', 'c.png', 'd.png', 'e.png', 'f.png']);
    let w = 30;
    for (const f of written) {
      const m = decodeIndexedPng(await fs.readFile(path.join(o.out, f)), f);
      expect([m.width, m.height]).toEqual([w++, 20]); // original size of each format's file
      expect(Math.max(...m.data)).toBeLessThan(3);
    }
    const why = Object.fromEntries(r.skipped.map((s) => [path.basename(s.file), s.reason]));
    expect(Object.keys(why).sort()).toEqual(['.DS_Store', 'broken.jpg', 'notes.txt', 'sub']);
    expect(why.sub).toMatch(/subfolder/);
    expect(why['notes.txt']).toMatch(/not an image format.*\.txt/);
    expect(why['.DS_Store']).toMatch(/hidden/);
    expect(why['broken.jpg']).toMatch(/decode|truncat|premature|corrupt/i);
  });

  it('names the ids file for a missing id, lists it with skip, and refuses an id with two files', async () => {
    const idsFile = path.join(tmp, 'ids.txt');
    await expect(predictFolder({ ...base(), ids: ['a', 'zz'], idsFile })).rejects.toThrow(/ids\.txt: missing image: no zz\./);
    const r = await predictFolder({ ...base(), ids: ['a', 'zz'], idsFile, onError: 'skip' });
    expect(r.images).toBe(1);
    expect(r.skipped.filter((s) => s.reason.includes('zz'))).toEqual([{ file: idsFile, reason: expect.stringMatching(/missing image/) }]);
    const dup = path.join(tmp, 'dup');
    await fs.mkdir(dup);
    await photo(8, 8).png().toFile(path.join(dup, 'x.png'));
    await photo(8, 8).jpeg().toFile(path.join(dup, 'x.jpg'));
    await expect(predictFolder({ ...base(), images: dup })).rejects.toThrow(/"x" matches several files: x\.jpg, x\.png/);
    await fs.writeFile(path.join(dup, 'readme.md'), '');
    await fs.rm(path.join(dup, 'x.jpg'));
    await fs.rm(path.join(dup, 'x.png'));
    await expect(predictFolder({ ...base(), images: dup })).rejects.toThrow(/no images to segment \(1 entries skipped\)/);
  });
});

/** Raw RGB of a PNG. */
async function rawOf(png: Buffer): Promise<{ data: Buffer; width: number; height: number }> {
  const { data, info } = await sharp(png).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height };
}

describe('predict --overlay', () => {
  it('blends each class with its palette colour (no background: class 0 tinted too) and draws a legend swatch in it', async () => {
    const H = 12;
    const W = 10;
    const rgb = new Uint8Array(H * W * 3).fill(100);
    // class 0 on the left 4 columns, class 2 on the rest (a dataset without background)
    const labels = Uint8Array.from({ length: H * W }, (_, p) => (p % W < 4 ? 0 : 2));
    const { data, width, height } = await rawOf(await overlayWithLegend(rgb, labels, H, W, ['building', 'grass', 'sky'], null));
    expect([width, height]).toEqual([W + 200, 2 * 8 + 2 * 22]);
    const pal = classPalette(null);
    const at = (x: number, y: number) => Array.from(data.subarray((y * width + x) * 3, (y * width + x) * 3 + 3));
    const blend = (c: number) => [0, 1, 2].map((j) => Math.trunc(100 + (pal[3 * c + j] - 100) * 0.5));
    expect(at(1, 5)).toEqual(blend(0));
    expect(at(7, 5)).toEqual(blend(2));
    expect(at(3, 5)).toEqual([255, 255, 255]); // outline between the two regions
    // control: the palette really is the dataset's (VOC would leave class 0 black, darkening the photo)
    expect(blend(0)).not.toEqual([50, 50, 50]);
    expect(Array.from(VOC_PALETTE.subarray(0, 3))).toEqual([0, 0, 0]);
    // legend: sky (60% of the pixels) first, then building; swatches in the palette colours
    expect(legendEntries(labels, ['building', 'grass', 'sky'], null).map((e) => e.c)).toEqual([2, 0]);
    expect(at(W + 8 + 8, 8 + 8)).toEqual(Array.from(pal.subarray(6, 9)));
    expect(at(W + 8 + 8, 8 + 22 + 8)).toEqual(Array.from(pal.subarray(0, 3)));
    expect(at(W + 190, 5)).toEqual([LEGEND_BACKGROUND.r, LEGEND_BACKGROUND.g, LEGEND_BACKGROUND.b]);
    // with a background class at 0, background stays untinted
    const bg = await rawOf(await overlayWithLegend(rgb, labels, H, W, ['background', 'grass', 'sky'], 0));
    expect(Array.from(bg.data.subarray((5 * bg.width + 1) * 3, (5 * bg.width + 1) * 3 + 3))).toEqual([100, 100, 100]);
  });

  it('writes one overlay per mask: the original photo blended with its predicted mask, legend beside it', async () => {
    const o = base();
    const overlay = path.join(tmp, 'overlay');
    const r = await predictFolder({ ...o, ids: ['a', 'c'], overlay });
    expect(r.images).toBe(2);
    expect((await fs.readdir(overlay)).sort()).toEqual(['a.png', 'c.png']);
    for (const [id, file] of [['a', 'a.png'], ['c', 'c.webp']]) {
      const mask = decodeIndexedPng(await fs.readFile(path.join(o.out, `${id}.png`)), id);
      const photoRgb = await decodeImage(path.join(images, file), 0);
      const want = overlayRgb(photoRgb.rgb, mask.data, mask.height, mask.width, 0);
      const got = await rawOf(await fs.readFile(path.join(overlay, `${id}.png`)));
      expect(got.width).toBe(mask.width + 200);
      for (let y = 0; y < mask.height; y++) {
        expect(Array.from(got.data.subarray(y * got.width * 3, (y * got.width + mask.width) * 3))).toEqual(Array.from(want.subarray(y * mask.width * 3, (y + 1) * mask.width * 3)));
      }
    }
    await expect(predictFolder({ ...o, overlay: o.out })).rejects.toThrow(/--overlay must be another folder than --out/);
  });
});

describe('predict --tags', () => {
  const info = { classes: ['background', 'cat', 'dog', 'sheep'], background: 0, void: 255 };

  it('restricts a hand-made probability map to the tagged classes plus background, renormalised', () => {
    // 3 pixels x 4 classes (background, cat, dog, sheep)
    const probs = Float32Array.from([
      0.1, 0.6, 0.2, 0.1, // cat wins untagged
      0.0, 0.5, 0.0, 0.5, // only untagged classes: uniform over the allowed ones
      0.3, 0.1, 0.5, 0.1,
    ]);
    const untagged = [0, 1, 2].map((p) => Array.from(probs.subarray(4 * p, 4 * p + 4)).indexOf(Math.max(...probs.subarray(4 * p, 4 * p + 4))));
    expect(untagged).toEqual([1, 1, 2]); // control: cat would win pixel 0
    const allowed = Uint8Array.from([1, 0, 1, 0]); // tags: dog (+ background)
    restrictProbs(probs, allowed);
    const want = [1 / 3, 0, 2 / 3, 0, 0.5, 0, 0.5, 0, 0.375, 0, 0.625, 0];
    Array.from(probs).forEach((v, i) => expect(v).toBeCloseTo(want[i], 6));
  });

  it('reads the importer CSV: header, paths as ids, background name dropped; errors name file and line', async () => {
    const f = path.join(tmp, 'tags.csv');
    await fs.writeFile(f, 'image_id,tags,split\nphotos/a.JPG,cat|background,test\nb,"dog|sheep"\n');
    const tags = await readTagsFile(f, info);
    expect([...tags.keys()]).toEqual(['a', 'b']);
    expect(Array.from(tags.get('a')!)).toEqual([1, 1, 0, 0]);
    expect(Array.from(tags.get('b')!)).toEqual([1, 0, 1, 1]);
    // a dataset without background: only the tags
    await fs.writeFile(f, 'b,dog|sheep\n');
    expect(Array.from((await readTagsFile(f, { classes: ['cat', 'dog', 'sheep', 'x'], background: null, void: 255 })).get('b')!)).toEqual([0, 1, 1, 0]);
    await fs.writeFile(f, 'a,cat\nb,horse\n');
    await expect(readTagsFile(f, info)).rejects.toThrow(/tags\.csv: line 2: unknown class "horse"/);
    await fs.writeFile(f, 'a,cat\na,dog\n');
    await expect(readTagsFile(f, info)).rejects.toThrow(/line 2: duplicate image id "a"/);
  });

  it('predicts only tagged classes (+ background); an image without a row stops the run or is skipped', async () => {
    const untagged = await predictFolder({ ...base(), ids: ['a', 'b', 'c', 'd'], crf: true });
    const classesOf = async (out: string, id: string) => new Set(decodeIndexedPng(await fs.readFile(path.join(out, `${id}.png`)), id).data);
    // tag each image with a class its untagged mask lacks where possible, so the restriction has work to do
    const f = path.join(tmp, 'tags2.csv');
    const rows: string[] = [];
    const allowed: Record<string, number[]> = {};
    let excluded = 0;
    for (const id of ['a', 'b', 'c', 'd']) {
      const seen = await classesOf(untagged.out, id);
      const tag = seen.has(1) ? 2 : 1;
      allowed[id] = [0, tag];
      excluded += [...seen].filter((c) => !allowed[id].includes(c)).length;
      rows.push(`${id},${['bg', 'a', 'b'][tag]}`);
    }
    expect(excluded).toBeGreaterThan(0); // control: untagged, some image has a class its tags exclude
    await fs.writeFile(f, `${rows.join('\n')}\n`);
    const r = await predictFolder({ ...base(), ids: ['a', 'b', 'c', 'd'], crf: true, tags: f });
    expect(r.images).toBe(4);
    for (const id of ['a', 'b', 'c', 'd']) for (const c of await classesOf(r.out, id)) expect(allowed[id]).toContain(c);
    await expect(predictFolder({ ...base(), ids: ['a', 'e'], tags: f })).rejects.toThrow(/tags2\.csv: no row for image "e"/);
    const skip = await predictFolder({ ...base(), ids: ['a', 'e'], tags: f, onError: 'skip' });
    expect(skip.images).toBe(1);
    expect(skip.skipped.map((s) => s.reason)).toContainEqual(expect.stringMatching(/no row for image "e"/));
  });
});

describe('predict on the CRF pool', () => {
  it('writes the same mask bytes with 1 and 2 CRF threads, equal to segmentBatch image by image', async () => {
    const ids = ['a', 'b', 'c', 'd', 'f'];
    const one = await predictFolder({ ...base(), ids, crf: true, threads: 1 });
    const two = await predictFolder({ ...base(), ids, crf: true, threads: 2 });
    expect(one.threads).toBe(1);
    expect(two.threads).toBe(Math.min(2, os.availableParallelism()));
    const net = await loadSegModel(model);
    try {
      const crf = crfFromKeys(defaultParams().segment.crf);
      let differs = 0;
      for (const [id, file] of [['a', 'a.png'], ['b', 'b.JPG'], ['c', 'c.webp'], ['d', 'd.TIF'], ['f', 'f.avif']]) {
        const bytes = await fs.readFile(path.join(one.out, `${id}.png`));
        expect(Buffer.compare(bytes, await fs.readFile(path.join(two.out, `${id}.png`)))).toBe(0);
        const im = await decodeImage(path.join(images, file), 24);
        const [want] = await segmentBatch(net, [im.rgb], im.height, im.width, [im.origHeight, im.origWidth], { scales: [1], flip: false, crf });
        expect(Array.from(decodeIndexedPng(bytes, id).data)).toEqual(Array.from(want));
        const [plain] = await segmentBatch(net, [im.rgb], im.height, im.width, [im.origHeight, im.origWidth], { scales: [1], flip: false });
        differs += want.some((v, i) => v !== plain[i]) ? 1 : 0;
      }
      expect(differs).toBeGreaterThan(0); // control: the CRF changes some masks, so its path was compared
    } finally {
      net.dispose();
    }
  });
});
