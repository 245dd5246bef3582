/**
 * End to end through the real CLI and dvc.yaml cmds: synth -> ingest -> Arrow -> read back,
 * then the runner's skip/rerun logic on the real stages.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readAll } from '../../pipeline/arrow.js';
import { repro, status } from '../../cli/dag.js';
import { writeOverrides } from '../../stages/params.js';
import { createWorkspace } from '../../cli/workspace.js';
import { decodeIndexedPng } from '../../data/palette.js';

let root: string;

beforeAll(async () => {
  const tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-e2e-'));
  root = await createWorkspace(path.join(tmp, 'ws'), ['synth.images=16', 'synth.size=48', 'ingest.size=32']);
});
afterAll(async () => {
  await fs.rm(path.dirname(root), { recursive: true, force: true });
});

describe('foundation end to end', () => {
  it('repro runs synth and ingest, and the tables hold what the dataset holds', async () => {
    const r = await repro(root, { target: 'ingest' });
    expect(r.ok).toBe(true);
    expect(r.stages.map((s) => [s.name, s.action])).toEqual([['synth', 'ran'], ['ingest', 'ran']]);

    const manifest = await readAll(path.join(root, 'cache/dataset.arrow'), { stage: 'ingest' });
    const images = await readAll(path.join(root, 'cache/images.arrow'), { stage: 'ingest' });
    expect(manifest).toHaveLength(16);
    expect(images.map((r) => r.id)).toEqual(manifest.map((r) => r.id));
    for (const row of images) {
      const [w, h] = [row.width as number, row.height as number];
      expect(Math.max(w, h)).toBe(32);
      expect((row.pixels as Uint8Array).length).toBe(w * h * 3);
      const mask = row.mask as Uint8Array;
      expect(mask.length).toBe(w * h);
      // Tags are exactly the non-background classes of the full-size ground truth.
      const src = manifest.find((m) => m.id === row.id)!;
      expect(path.isAbsolute(src.mask_path as string)).toBe(false); // relative to dataset.root
      const maskFile = path.join(root, 'datasets/synthetic', src.mask_path as string);
      const full = decodeIndexedPng(await fs.readFile(maskFile), maskFile);
      const present = [...new Set(full.data)].filter((c) => c !== 0 && c !== 255).sort((a, b) => a - b);
      expect(row.tags).toEqual(present);
    }
    const metrics = JSON.parse(await fs.readFile(path.join(root, 'metrics/ingest.json'), 'utf8'));
    expect(metrics.images).toBe(16);
  });

  it('a second repro skips everything; a changed ingest param reruns ingest only', async () => {
    const again = await repro(root, { target: 'ingest' });
    expect(again.stages.map((s) => s.action)).toEqual(['skipped', 'skipped']);
    expect((await status(root)).filter((s) => ['synth', 'ingest'].includes(s.name)).every((s) => !s.stale)).toBe(true);

    await writeOverrides(path.join(root, 'params.yaml'), ['ingest.size=24']);
    const st = await status(root);
    expect(st.find((s) => s.name === 'synth')!.stale).toBe(false);
    expect(st.find((s) => s.name === 'ingest')!.reasons.join(' ')).toContain('ingest.size');
    const rerun = await repro(root, { target: 'ingest' });
    expect(rerun.stages.map((s) => [s.name, s.action])).toEqual([['synth', 'skipped'], ['ingest', 'ran']]);
    const images = await readAll(path.join(root, 'cache/images.arrow'));
    expect(Math.max(images[0].width as number, images[0].height as number)).toBe(24);
  });
});
