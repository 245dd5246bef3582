/**
 * The confident-learning label quality (eval/label_quality.ts): hand-computed cases, the limits
 * in T, and an independent numpy implementation of cleanlab's softmin (pixel scores = probability
 * of the label, weights softmax((1 - s) / T)) on random masks; a control (T = 1 instead of 0.1)
 * shows that comparison can fail.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { LABEL_QUALITY_TEMPERATURE, maskQuality, softmin } from '../../eval/label_quality.js';
import { skipWithout } from '../helpers/ci.js';
import { findPython } from '../helpers/python.js';

describe('softmin label quality', () => {
  it('matches hand-computed values', () => {
    // s = [1, 0.5], T = 0.1: weights 1 and e^5 -> (1 + 0.5 e^5) / (1 + e^5)
    expect(softmin([1, 0.5])).toBeCloseTo((1 + 0.5 * Math.exp(5)) / (1 + Math.exp(5)), 12);
    expect(softmin([1, 0.5])).toBeCloseTo(0.5033464254621425, 12);
    expect(softmin([0.3, 0.3, 0.3])).toBeCloseTo(0.3, 12);
    expect(softmin([])).toBeNull();
    // 3 pixels, 2 classes; labels [0, 0, ignore] -> s = [0.9, 0.2]: 0.2 + 0.7 e / (e + e^8)
    const q = maskQuality([0.9, 0.1, 0.2, 0.8, 0.5, 0.5], [0, 0, 255], 2);
    expect(q.pixels).toBe(2);
    expect(q.selfConfidence).toBeCloseTo(0.55, 12);
    expect(q.quality).toBeCloseTo(0.2 + 0.7 / (1 + Math.exp(7)), 12);
    expect(maskQuality([0.5, 0.5], [255], 2)).toEqual({ quality: null, selfConfidence: null, pixels: 0 });
  });

  it('tends to the minimum as T -> 0 and to the mean as T grows; no overflow at small T', () => {
    const s = [0.9, 0.8, 0.05, 0.7];
    expect(softmin(s, 1e-4)).toBeCloseTo(0.05, 6);
    expect(softmin(s, 1e4)).toBeCloseTo(s.reduce((a, b) => a + b) / s.length, 4);
    expect(Number.isFinite(softmin([1, 0, 0.5], 1e-3)!)).toBe(true);
    expect(() => softmin(s, 0)).toThrow(/temperature/);
  });

  it('rejects labels outside the classes and mismatched sizes', () => {
    expect(() => maskQuality([0.5, 0.5], [2], 2)).toThrow(/not one of the 2 classes/);
    expect(() => maskQuality([0.5, 0.5, 1], [0], 2)).toThrow(/3 probabilities/);
  });

  const py = findPython(['numpy']);
  it.skipIf(skipWithout('numpy reference of the label quality', py.python ? undefined : py.why))("agrees with an independent numpy implementation (cleanlab's formula)", async () => {
    // seeded random masks: 6 images of 40 pixels, 4 classes, some ignore, peaked probabilities
    let state = 12345;
    const rand = () => ((state = (state * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    const K = 4;
    const images = Array.from({ length: 6 }, () => {
      const labels = Array.from({ length: 40 }, () => (rand() < 0.1 ? 255 : Math.floor(rand() * K)));
      const probs: number[] = [];
      for (let i = 0; i < 40; i++) {
        const logits = Array.from({ length: K }, () => 4 * rand());
        const z = logits.map(Math.exp);
        const sum = z.reduce((a, b) => a + b);
        probs.push(...z.map((v) => v / sum));
      }
      return { labels, probs };
    });
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-lq-'));
    try {
      await fs.writeFile(path.join(dir, 'in.json'), JSON.stringify({ K, T: LABEL_QUALITY_TEMPERATURE, images }));
      const script = [
        'import json, sys, numpy as np',
        'd = json.load(open(sys.argv[1]))',
        'out = []',
        'for im in d["images"]:',
        '    lab = np.array(im["labels"]); p = np.array(im["probs"], dtype=np.float64).reshape(-1, d["K"])',
        '    keep = lab != 255',
        '    s = p[np.arange(len(lab))[keep], lab[keep]]',
        '    x = (1 - s) / d["T"]; w = np.exp(x - x.max()); w = w / w.sum()',
        '    out.append(float(np.dot(s, w)))',
        'print(json.dumps(out))',
      ].join('\n');
      const r = spawnSync(py.python!, ['-c', script, path.join(dir, 'in.json')], { encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(0);
      const ref = JSON.parse(r.stdout) as number[];
      const ours = images.map((im) => maskQuality(im.probs, im.labels, K).quality!);
      for (let i = 0; i < ref.length; i++) expect(Math.abs(ours[i] - ref[i])).toBeLessThan(1e-9);
      // control: the same comparison fails for another temperature (the test can tell them apart)
      const other = images.map((im) => maskQuality(im.probs, im.labels, K, 1).quality!);
      expect(Math.max(...other.map((v, i) => Math.abs(v - ref[i])))).toBeGreaterThan(1e-3);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
