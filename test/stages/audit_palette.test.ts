/**
 * One class palette everywhere: refine's PNG export, the report's legend and the audit overlays
 * all take their colours from data/palette.ts classPalette, so a class looks the same in each.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { classPalette, paletteColour, paletteHex } from '../../data/palette.js';
import { overlayRgb } from '../../data/overlay.js';
import { reportPayload } from '../../stages/audit/report.js';
import type { AuditSummary } from '../../stages/audit/summary.js';
import { PngExport } from '../../data/mask_png.js';

const MSRC = classPalette(null);

describe('class palette in PNGs, overlays and the report', () => {
  it('refine exports masks in the dataset palette (no black class without a background)', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-palette-'));
    try {
      const out = path.join(dir, 'pseudo_masks');
      const exp = await PngExport.open(out, MSRC);
      await exp.write('a', new Uint8Array([0, 1, 2, 255]), 2, 2);
      await exp.commit();
      const { data } = await sharp(path.join(out, 'a.png')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
      expect(Array.from(data)).toEqual([...paletteColour(MSRC, 0), ...paletteColour(MSRC, 1), ...paletteColour(MSRC, 2), 224, 224, 192]);
      expect(Array.from(data.subarray(0, 3))).not.toEqual([0, 0, 0]);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it('overlays tint a class with its palette colour; background stays untinted', () => {
    const pixels = new Uint8Array(2 * 3).fill(100);
    // 1 x 2 image, same label twice (no outline): class 0 of a dataset without background
    const noBg = overlayRgb(pixels, new Uint8Array([0, 0]), 1, 2, null);
    const c = paletteColour(MSRC, 0);
    expect(Array.from(noBg.subarray(0, 3))).toEqual(c.map((v) => Math.trunc(100 + (v - 100) * 0.5)));
    const withBg = overlayRgb(pixels, new Uint8Array([0, 0]), 1, 2, 0);
    expect(Array.from(withBg.subarray(0, 3))).toEqual([100, 100, 100]);
    const voc1 = overlayRgb(pixels, new Uint8Array([1, 1]), 1, 2, 0);
    expect(Array.from(voc1.subarray(0, 3))).toEqual([114, 50, 50]); // VOC (128,0,0) blended
  });

  it("the report's legend uses the same colours, with readable text", () => {
    const summary = { classes: [], gt: null } as unknown as AuditSummary;
    const base = { title: 't', generated: 'g', images: { splits: new Set<string>(), anyGt: false }, summary, overview: { meanSuspicion: null, meanIgnore: null, gt: null, labelQualityImages: 0, corrected: 0, ranking: '' }, imageColumns: [], classColumns: [] };
    const msrc = reportPayload({ ...base, classes: ['building', 'grass'], background: null }).classes as { colour: string; ink: string }[];
    expect(msrc.map((k) => k.colour)).toEqual([paletteHex(MSRC, 0), paletteHex(MSRC, 1)]);
    expect(msrc[0]).toEqual({ name: 'building', colour: '#800000', ink: '#fff' });
    const voc = reportPayload({ ...base, classes: ['background', 'aeroplane'], background: 0 }).classes as { colour: string; ink: string }[];
    expect(voc.map((k) => k.colour)).toEqual(['#000000', '#800000']);
  });
});
