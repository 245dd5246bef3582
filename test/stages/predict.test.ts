/**
 * `tagseg predict` on hostile folders (stages/segment/predict.ts, predict_files.ts): every raster
 * format sharp reads is segmented whatever the extension's case; other entries, subfolders and
 * (with --on-error skip) corrupt or missing images are listed with their reason; the default
 * stops at a bad image with an error naming it.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeIndexedPng } from '../../data/palette.js';
import { initBackend } from '../../pipeline/backend.js';
import { CAM_MODEL_FORMAT, buildCamNet, saveCamModel } from '../../stages/cam/net.js';
import { saveSegModel, segNetFromCam } from '../../stages/segment/net.js';
import { predictFolder } from '../../stages/segment/predict.js';
import { PREDICT_EXTS } from '../../stages/segment/predict_files.js';

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
