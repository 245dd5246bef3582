import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VOC_CLASSES } from '../../data/manifest.js';
import { encodeIndexedPng } from '../../data/palette.js';
import { parseVocObjectNames, scanVoc } from '../../data/voc.js';
import { setQuiet } from '../../pipeline/log.js';
import { expectTagsegError, makeTemp, rmTemp, writeRgb } from './helpers.js';

setQuiet(true);
let dir: string;
let n = 0;
beforeAll(async () => {
  dir = await makeTemp();
});
afterAll(async () => {
  await rmTemp(dir);
});

const PERSON = VOC_CLASSES.indexOf('person');
const DOG = VOC_CLASSES.indexOf('dog');
const CAT = VOC_CLASSES.indexOf('cat');
const BIRD = VOC_CLASSES.indexOf('bird');

const xml = (...objects: string[]) =>
  `<annotation><filename>x.jpg</filename>${objects.map((o) => `<object>${o}</object>`).join('\n')}</annotation>`;

/**
 * A tiny VOC tree: images a.jpg, b.png, c.jpg, d.jpg (d in no split); masks for a and b;
 * train = a, b; val = c; trainval (ignored by default); Annotations for a and c.
 */
async function buildVoc(extra: Record<string, string> = {}): Promise<string> {
  const root = path.join(dir, `voc${n++}`);
  await Promise.all([
    writeRgb(path.join(root, 'JPEGImages', 'a.jpg'), 8, 6),
    writeRgb(path.join(root, 'JPEGImages', 'b.png'), 8, 6),
    writeRgb(path.join(root, 'JPEGImages', 'c.jpg'), 8, 6),
    writeRgb(path.join(root, 'JPEGImages', 'd.jpg'), 8, 6),
  ]);
  await fs.mkdir(path.join(root, 'SegmentationClass'), { recursive: true });
  const mask = new Uint8Array(48);
  mask.fill(BIRD, 0, 20);
  mask[30] = 255;
  await fs.writeFile(path.join(root, 'SegmentationClass', 'a.png'), encodeIndexedPng(mask, 8, 6));
  await fs.writeFile(path.join(root, 'SegmentationClass', 'b.png'), encodeIndexedPng(mask, 8, 6));
  const files: Record<string, string> = {
    'ImageSets/Segmentation/train.txt': 'a\nb\n',
    'ImageSets/Segmentation/val.txt': 'c\n',
    'ImageSets/Segmentation/trainval.txt': 'a\nb\nc\n',
    'Annotations/a.xml': xml(
      '<name>person</name><pose>Left</pose><part><name>head</name></part><part><name>hand</name></part>',
      '<name>dog</name><bndbox><xmin>1</xmin></bndbox>',
      '<name> person </name>',
    ),
    'Annotations/c.xml': xml('<name>cat</name>'),
    ...extra,
  };
  for (const [rel, text] of Object.entries(files)) {
    const f = path.join(root, rel);
    await fs.mkdir(path.dirname(f), { recursive: true });
    if (text === '<delete>') await fs.rm(f, { force: true });
    else await fs.writeFile(f, text);
  }
  return root;
}

describe('scanVoc on a tiny VOC tree', () => {
  it('lists splits (trainval excluded), masks, XML tags, VOC default classes', async () => {
    const root = await buildVoc();
    const m = await scanVoc(root, {});
    expect(m.root).toBe(root);
    expect(m.classes).toEqual(VOC_CLASSES);
    expect(m.classes.length).toBe(21);
    expect(m.background).toBe(0);
    expect(m.void).toBe(255);
    expect(m.items.map((i) => [i.id, i.split])).toEqual([
      ['a', 'train'],
      ['b', 'train'],
      ['c', 'val'],
    ]);
    const [a, b, c] = m.items;
    expect(a.imagePath).toBe(path.join(root, 'JPEGImages', 'a.jpg'));
    expect(b.imagePath).toBe(path.join(root, 'JPEGImages', 'b.png'));
    expect(a.maskPath).toBe(path.join(root, 'SegmentationClass', 'a.png'));
    expect(c.maskPath).toBeNull();
    expect(a.tags).toEqual([DOG, PERSON].sort((x, y) => x - y)); // parts (head, hand) ignored, duplicates merged
    expect(b.tags).toBeNull(); // no XML: derive from the mask later
    expect(c.tags).toEqual([CAT]);
  });

  it('reads only the requested splits', async () => {
    const root = await buildVoc();
    const m = await scanVoc(root, { splits: ['val'] });
    expect(m.items.map((i) => i.id)).toEqual(['c']);
    const tv = await scanVoc(root, { splits: ['trainval'] });
    expect(tv.items.map((i) => i.id)).toEqual(['a', 'b', 'c']);
  });

  it('prefers tags.csv (header, | separators, a class name with a space) and classes.json', async () => {
    const root = await buildVoc({
      'classes.json': JSON.stringify({ classes: ['bg', 'bird', 'cat', 'dog', 'sea lion'], background: 0, void: 255 }),
      'tags.csv': 'image_id,tags\na,dog|bird\nb,"sea lion|cat"\nc,cat | dog\nd,bird\n',
    });
    const m = await scanVoc(root, {});
    expect(m.classes).toEqual(['bg', 'bird', 'cat', 'dog', 'sea lion']);
    expect(m.items.map((i) => i.tags)).toEqual([[1, 3], [2, 4], [2, 3]]);
  });

  it('drops the background name from tag lists', async () => {
    const root = await buildVoc({ 'tags.csv': 'a,background|dog\nb,dog\nc,cat\n' });
    const m = await scanVoc(root, {});
    expect(m.items[0].tags).toEqual([DOG]);
  });

  it('without ImageSets/Segmentation every image is train', async () => {
    const root = await buildVoc({ 'tags.csv': 'a,dog\nb,dog\nc,cat\nd,cat\n' });
    await fs.rm(path.join(root, 'ImageSets'), { recursive: true });
    const m = await scanVoc(root, {});
    expect(m.items.map((i) => `${i.id}:${i.split}`)).toEqual(['a:train', 'b:train', 'c:train', 'd:train']);
  });

  it('parses VOC object names, skipping parts', () => {
    const names = parseVocObjectNames(
      // A part listed before the object's own name must not be taken for it.
      xml('<part><name>head</name></part><name>person</name>', '<difficult>0</difficult><name>bottle</name>'),
    );
    expect(names).toEqual(['person', 'bottle']);
  });
});

describe('scanVoc errors name the file and the reason', () => {
  it('split file naming an id that has no image', async () => {
    const root = await buildVoc({ 'ImageSets/Segmentation/train.txt': 'a\nb\nzz\n' });
    await expectTagsegError(scanVoc(root, {}), path.join(root, 'ImageSets/Segmentation/train.txt'), /^line 3: missing image: no zz\.jpg/);
  });

  it('an id that differs from an image only in Unicode normalisation: missing, with a hint naming the image', async () => {
    const nfd = 'cafe\u0301';
    const root = await buildVoc({ 'ImageSets/Segmentation/train.txt': 'a\nb\ncaf\u00e9\n' });
    await writeRgb(path.join(root, 'JPEGImages', `${nfd}.png`), 8, 6);
    const err = await expectTagsegError(scanVoc(root, {}), path.join(root, 'ImageSets/Segmentation/train.txt'), /^line 3: missing image: no "café"\.jpg/);
    // The combining accent is escaped, so the two spellings look different in the message.
    expect(err.hint).toBe('an image with the id "cafe\\u0301" exists: the names differ in Unicode normalisation or spacing');
  });

  it('duplicate id across splits', async () => {
    const root = await buildVoc({ 'ImageSets/Segmentation/val.txt': 'c\na\n' });
    const err = await expectTagsegError(scanVoc(root, {}), path.join(root, 'ImageSets/Segmentation/val.txt'), /line 2: duplicate image id "a"/);
    expect(err.reason).toContain('train.txt:1');
  });

  it('unknown class in tags.csv lists the known classes', async () => {
    const root = await buildVoc({ 'tags.csv': 'a,dog\nb,unicorn\nc,cat\n' });
    const err = await expectTagsegError(scanVoc(root, {}), path.join(root, 'tags.csv'), /line 2: unknown class "unicorn"/);
    expect(err.hint).toContain('known classes: aeroplane, bicycle');
    expect(err.hint).not.toContain('background');
  });

  it('unknown class in an XML annotation', async () => {
    const root = await buildVoc({ 'Annotations/c.xml': xml('<name>kat</name>') });
    await expectTagsegError(scanVoc(root, {}), path.join(root, 'Annotations', 'c.xml'), /unknown class "kat"/);
  });

  it('empty tag list', async () => {
    const root = await buildVoc({ 'tags.csv': 'image_id,tags\na,dog\nb,\nc,cat\n' });
    await expectTagsegError(scanVoc(root, {}), path.join(root, 'tags.csv'), /line 3: empty tag list for image b/);
  });

  it('malformed CSV line, with its line number', async () => {
    const root = await buildVoc({ 'tags.csv': 'image_id,tags\na,dog\nb,dog,cat\n' });
    await expectTagsegError(scanVoc(root, {}), path.join(root, 'tags.csv'), /line 3: malformed line/);
    const q = await buildVoc({ 'tags.csv': 'a,dog\n\nb,"dog\n' });
    await expectTagsegError(scanVoc(q, {}), path.join(q, 'tags.csv'), /line 3: unterminated quoted field/);
  });

  it('duplicate id in tags.csv and tags for a missing image', async () => {
    const root = await buildVoc({ 'tags.csv': 'a,dog\nb,dog\na,cat\n' });
    await expectTagsegError(scanVoc(root, {}), path.join(root, 'tags.csv'), /line 3: duplicate image id "a"/);
    const r2 = await buildVoc({ 'tags.csv': 'a,dog\nb,dog\nc,cat\nq,cat\n' });
    await expectTagsegError(scanVoc(r2, {}), path.join(r2, 'tags.csv'), /line 4: missing image/);
  });

  it('an item with neither tags nor a mask', async () => {
    const root = await buildVoc({ 'Annotations/c.xml': '<delete>' });
    await expectTagsegError(scanVoc(root, {}), path.join(root, 'JPEGImages', 'c.jpg'), /image c has no tags .* and no mask/);
  });

  it('a requested split that does not exist; a folder that is not VOC', async () => {
    const root = await buildVoc();
    await expectTagsegError(scanVoc(root, { splits: ['nope'] }), path.join(root, 'ImageSets/Segmentation/nope.txt'), /not found/);
    await fs.rm(path.join(root, 'JPEGImages'), { recursive: true });
    await expectTagsegError(scanVoc(root, {}), path.join(root, 'JPEGImages'), /no JPEGImages folder/);
    await expectTagsegError(scanVoc(path.join(dir, 'missing'), {}), path.join(dir, 'missing'), /dataset folder not found/);
  });

  it('an invalid classes.json', async () => {
    const root = await buildVoc({ 'classes.json': '{"classes": ["a", "a"]}' });
    await expectTagsegError(scanVoc(root, {}), path.join(root, 'classes.json'), /listed twice/);
    const r2 = await buildVoc({ 'classes.json': '{"classes": "a"}' });
    await expectTagsegError(scanVoc(r2, {}), path.join(r2, 'classes.json'), /invalid classes file/);
  });
});

describe('scanVoc on the real MSRC-v2 dataset', () => {
  const root = '/work/shared/datasets/msrc-v2';
  it('has 335 train + 256 test items, 23 classes, no background, test without masks', async () => {
    const m = await scanVoc(root, {});
    expect(m.classes.length).toBe(23);
    expect(m.classes[0]).toBe('building');
    expect(m.background).toBeNull();
    expect(m.void).toBe(255);
    const train = m.items.filter((i) => i.split === 'train');
    const test = m.items.filter((i) => i.split === 'test');
    expect(train.length).toBe(335);
    expect(test.length).toBe(256);
    expect(m.items.length).toBe(591);
    expect(m.items.slice(0, 335).every((i) => i.split === 'train')).toBe(true); // train first
    expect(new Set(m.items.map((i) => i.id)).size).toBe(591);
    expect(train.every((i) => i.maskPath !== null && i.maskPath.endsWith(`/SegmentationClass/${i.id}.png`))).toBe(true);
    expect(test.every((i) => i.maskPath === null)).toBe(true);
    expect(m.items.every((i) => i.tags !== null && i.tags.length > 0 && i.tags.every((t) => t >= 0 && t < 23))).toBe(true);
    const firstTrain = (await fs.readFile(path.join(root, 'ImageSets/Segmentation/train.txt'), 'utf8')).split('\n')[0].trim();
    expect(m.items[0].id).toBe(firstTrain);
    expect(m.items[0].imagePath).toBe(path.join(root, 'JPEGImages', `${firstTrain}.jpg`));
  });
});
