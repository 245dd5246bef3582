import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TagsegError } from '../../pipeline/errors.js';
import {
  DEFAULT_PARAMS_YAML,
  defaultParams,
  getParam,
  loadParams,
  paramsHash,
  validateParams,
  writeOverrides,
} from '../../pipeline/params.js';

let dir: string;
beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-params-'));
});
afterAll(async () => {
  await fs.rm(dir, { recursive: true, force: true });
});

async function writeParams(text: string, name = 'params.yaml'): Promise<string> {
  const file = path.join(dir, name);
  await fs.writeFile(file, text);
  return file;
}

/** The TagsegError thrown by `fn` (fails the test when nothing or something else is thrown). */
async function errorOf(fn: () => Promise<unknown>): Promise<TagsegError> {
  try {
    await fn();
  } catch (err) {
    expect(err).toBeInstanceOf(TagsegError);
    return err as TagsegError;
  }
  throw new Error('expected a TagsegError, nothing was thrown');
}

describe('params.yaml schema', () => {
  it('parses the defaults into the documented values', async () => {
    const p = await loadParams(await writeParams(DEFAULT_PARAMS_YAML));
    expect(p).toEqual({
      seed: 0,
      dataset: { root: 'datasets/synthetic', format: 'voc', csv: 'tags.csv', splits: [], train_split: 'train', classes: '', corrections: 'review/corrections' },
      synth: { out: 'datasets/synthetic', images: 240, size: 128, classes: 4, val_fraction: 0.25 },
      ingest: { size: 128, concurrency: 4, on_error: 'fail' },
      cam: {
        backbone: 'resnet', pretrained: '', width: 16, depth: [1, 1, 1, 1], output_stride: 8, norm: 'batch', probe_iters: 0, recam_weight: 0, optimizer: 'adamw',
        lr: 0.003, head_lr_mult: 10, weight_decay: 0.0001, epochs: 12, batch_size: 16, crop: 112, crop_scale: [0.35, 1],
        jitter: 0.3, scales: [1, 0.5, 1.5, 2], flip: true, dtype: 'float16',
      },
      affinity: {
        radius: 5, conf_fg: 0.65, conf_bg: 0.05, margin: 0.2, floor: 0.3, crf: true, dim: 448, levels: [0, 1, 2, 3],
        reduce: [32, 64, 128, 128], optimizer: 'adamw', lr: 0.001, head_lr_mult: 10, weight_decay: 0.0001, epochs: 6,
        batch_size: 8, crop: 96, beta: 8, logt: 4, alpha: 16,
      },
      contrast: {
        region: 'cam', pooling: 'mask', memory_size: 500, memory_update: 'replace', memory_momentum: 0.99, enqueue_prob: 0.7,
        centroids: 10, kmeans_iters: 10, dim: 64, similarity: 'softmax', aggregation: true, contrast_weight: 0.01, temperature: 0.07,
        contrast_from: 2, coarse_weight: 0.4, recam_weight: 0, optimizer: 'adamw', lr: 0.0005, head_lr_mult: 10, weight_decay: 0.0001, epochs: 12,
        batch_size: 16, crop: 112, crop_scale: [0.35, 1], jitter: 0.3, scales: [1, 0.5, 1.5, 2], flip: true, dtype: 'float16',
      },
      refine: {
        source: 'contrast', bg: 'threshold', bg_threshold: 0.25, bg_power: 16,
        crf: { iterations: 10, gaussian_sxy: 3, gaussian_compat: 3, bilateral_sxy: 50, bilateral_srgb: 5, bilateral_compat: 10 },
        ignore: 'either', ignore_margin: 0.1, mostly_ignore: 0.5, concurrency: 4, shards: 1,
      },
      segment: {
        labels: 'pseudo', val_fraction: 0.2, head_dim: 64, decoder: true, contrast: 'none', contrast_weight: 0.1, contrast_dim: 64, pixel_memory: 5000,
        optimizer: 'adamw', lr: 0.002, head_lr_mult: 10, weight_decay: 0.0001, epochs: 12, batch_size: 8, crop: 96,
        scale_range: [0.75, 1.25], jitter: 0.2, scales: [1], flip: true,
        crf: { iterations: 10, gaussian_sxy: 3, gaussian_compat: 3, bilateral_sxy: 50, bilateral_srgb: 5, bilateral_compat: 10 },
      },
      audit: {
        rca_map: 'propagated', cam_threshold: 0.15, random_walk_threshold: 0.25, rca_threshold: 0.25, edge_quantile: 0.9,
        edge_floor: 16, edge_tolerance: 2, large_area: 0.3, low_confidence: 0.5,
        weights: { ignore: 1, low_confidence: 1, disagreement: 1, empty_tags: 1, fragmentation: 0.5, misalignment: 0.5, large_low_confidence: 0.5 },
        bad_miou: 0.5, bad_coverage: 0.5, top: 20, thumb_size: 160, full_overlays: true,
      },
    });
    expect(defaultParams()).toEqual(p);
  });

  it("the repo's params.yaml is valid and has the same keys as the defaults", async () => {
    const repo = await loadParams(path.resolve('params.yaml'));
    const keys = (o: unknown, prefix = ''): string[] =>
      o && typeof o === 'object' && !Array.isArray(o)
        ? Object.entries(o).flatMap(([k, v]) => [prefix + k, ...keys(v, `${prefix}${k}.`)])
        : [];
    expect(keys(repo).sort()).toEqual(keys(defaultParams()).sort());
  });

  it('names an unknown key with a did-you-mean', async () => {
    const file = await writeParams(DEFAULT_PARAMS_YAML.replace('  size: 128                   # long', '  sise: 128                   # long'));
    const err = await errorOf(() => loadParams(file));
    expect(err.message).toMatch(/params\.yaml: unknown key 'ingest\.sise' \(did you mean 'ingest\.size'\?\)$/);
    expect(err.reason).toBe("unknown key 'ingest.sise' (did you mean 'ingest.size'?)");
  });

  it('names an unknown top-level section', async () => {
    const err = await errorOf(async () => validateParams({ ...defaultParams(), ingset: {} }));
    expect(err.message).toBe("params.yaml: unknown key 'ingset' (did you mean 'ingest'?)");
  });

  it('names a wrong type with the value it got', async () => {
    const bad = YAML.parse(DEFAULT_PARAMS_YAML) as { ingest: Record<string, unknown> };
    bad.ingest.size = 'abc';
    const err = await errorOf(async () => validateParams(bad));
    expect(err.message).toBe('params.yaml: ingest.size: expected a number, got string "abc"');
  });

  it('rejects out-of-range and non-integer values and bad enums', async () => {
    const p = defaultParams();
    await expect(async () => validateParams({ ...p, ingest: { ...p.ingest, size: 1.5 } })).rejects.toThrow(
      'params.yaml: ingest.size: expected an integer, got number 1.5',
    );
    await expect(async () => validateParams({ ...p, synth: { ...p.synth, val_fraction: 1 } })).rejects.toThrow(
      'params.yaml: synth.val_fraction: expected a number < 1, got number 1',
    );
    await expect(async () => validateParams({ ...p, ingest: { ...p.ingest, on_error: 'ignore' } })).rejects.toThrow(
      'params.yaml: ingest.on_error: expected one of fail | skip, got string "ignore"',
    );
    const { concurrency: _c, ...noConcurrency } = p.ingest;
    await expect(async () => validateParams({ ...p, ingest: noConcurrency })).rejects.toThrow(
      "params.yaml: missing key 'ingest.concurrency' (expected a number)",
    );
  });

  it('checks that affinity.reduce has one channel count per affinity.levels entry', async () => {
    const p = defaultParams();
    await expect(async () => validateParams({ ...p, affinity: { ...p.affinity, reduce: [32, 64] } })).rejects.toThrow(
      'params.yaml: affinity.reduce: needs one channel count per level: 4 levels, got 2 counts',
    );
    await expect(async () => validateParams({ ...p, affinity: { ...p.affinity, levels: [1, 1], reduce: [8, 8] } })).rejects.toThrow(
      'params.yaml: affinity.levels: levels must be distinct',
    );
  });

  it('reports a missing file and invalid YAML as TagsegErrors', async () => {
    expect((await errorOf(() => loadParams(path.join(dir, 'nope.yaml')))).reason).toBe('file not found');
    const file = await writeParams('seed: [1\n', 'broken.yaml');
    expect((await errorOf(() => loadParams(file))).reason).toMatch(/^invalid YAML/);
  });
});

describe('--set overrides', () => {
  it('applies dotted overrides with YAML values', async () => {
    const file = await writeParams(DEFAULT_PARAMS_YAML);
    const p = await loadParams(file, ['ingest.size=256', 'dataset.splits=[train,test]', 'ingest.on_error=skip']);
    expect(p.ingest.size).toBe(256);
    expect(p.ingest.on_error).toBe('skip');
    expect(p.dataset.splits).toEqual(['train', 'test']);
    // The file itself is untouched by loadParams.
    expect(await fs.readFile(file, 'utf8')).toBe(DEFAULT_PARAMS_YAML);
  });

  it('keeps a number-looking value as text where a string is expected', async () => {
    const p = await loadParams(await writeParams(DEFAULT_PARAMS_YAML), ['dataset.train_split=2007']);
    expect(p.dataset.train_split).toBe('2007');
  });

  it('names --set for an unknown key, a bad value and a malformed override', async () => {
    const file = await writeParams(DEFAULT_PARAMS_YAML);
    expect((await errorOf(() => loadParams(file, ['ingest.sise=256']))).message).toBe(
      "--set: unknown key 'ingest.sise' (did you mean 'ingest.size'?)",
    );
    expect((await errorOf(() => loadParams(file, ['ingest.size=abc']))).message).toBe(
      '--set: ingest.size: expected a number, got string "abc"',
    );
    expect((await errorOf(() => loadParams(file, ['ingest.size']))).message).toMatch(/^--set: 'ingest.size' is not key=value/);
  });

  it('blames the file, not --set, for a problem the override did not cause', async () => {
    const file = await writeParams(DEFAULT_PARAMS_YAML.replace('concurrency: 4', 'concurrency: many'));
    const err = await errorOf(() => loadParams(file, ['ingest.size=64']));
    expect(err.file).not.toBe('--set');
    expect(err.reason).toBe('ingest.concurrency: expected a number, got string "many"');
  });
});

describe('writeOverrides', () => {
  it('edits values in place, keeping every comment and the comment column', async () => {
    const file = await writeParams(DEFAULT_PARAMS_YAML);
    const p = await writeOverrides(file, ['ingest.size=2048', 'dataset.splits=[train, val]', 'synth.images=12']);
    expect(p.ingest.size).toBe(2048);
    const text = await fs.readFile(file, 'utf8');
    expect(text).toBe(
      DEFAULT_PARAMS_YAML.replace('  size: 128                   # long', '  size: 2048                  # long')
        .replace('  splits: []                  # VOC', '  splits: [train, val]        # VOC')
        .replace('  images: 240\n', '  images: 12\n'),
    );
    expect(await loadParams(file)).toEqual(p);
  });

  it('leaves the file untouched when an override is invalid', async () => {
    const file = await writeParams(DEFAULT_PARAMS_YAML);
    await expect(writeOverrides(file, ['ingest.size=64', 'ingest.on_error=maybe'])).rejects.toThrow(/--set: ingest.on_error/);
    expect(await fs.readFile(file, 'utf8')).toBe(DEFAULT_PARAMS_YAML);
  });

  it('adds a key that is missing from the file', async () => {
    const file = await writeParams(DEFAULT_PARAMS_YAML.replace('  concurrency: 4\n', ''));
    await expect(loadParams(file)).rejects.toThrow("missing key 'ingest.concurrency'");
    await writeOverrides(file, ['ingest.concurrency=2']);
    expect((await loadParams(file)).ingest.concurrency).toBe(2);
    expect(await fs.readFile(file, 'utf8')).toContain('# global seed for every RNG');
  });

  it('writes atomically: no temp files are left next to params.yaml', async () => {
    const sub = await fs.mkdtemp(path.join(dir, 'atomic-'));
    const file = path.join(sub, 'params.yaml');
    await fs.writeFile(file, DEFAULT_PARAMS_YAML);
    await writeOverrides(file, ['seed=7']);
    expect(await fs.readdir(sub)).toEqual(['params.yaml']);
    expect((await loadParams(file)).seed).toBe(7);
  });
});

describe('paramsHash and getParam', () => {
  const base = defaultParams();

  it('is a 16-hex-char hash, stable and independent of key order', () => {
    const h = paramsHash(base, ['seed', 'ingest']);
    expect(h).toMatch(/^[0-9a-f]{16}$/);
    expect(paramsHash(base, ['ingest', 'seed'])).toBe(h);
    expect(paramsHash(base, ['ingest', 'seed', 'seed'])).toBe(h);
    // Object key order in the values does not matter either.
    const reordered = { ...base, ingest: { on_error: base.ingest.on_error, concurrency: base.ingest.concurrency, size: base.ingest.size } };
    expect(paramsHash(reordered, ['seed', 'ingest'])).toBe(h);
    // The hash depends on which keys are listed.
    expect(paramsHash(base, ['seed'])).not.toBe(h);
  });

  it('changes when a listed value changes, not when an unlisted one does', () => {
    const keys = ['seed', 'ingest.size'];
    const h = paramsHash(base, keys);
    expect(paramsHash({ ...base, ingest: { ...base.ingest, size: 256 } }, keys)).not.toBe(h);
    expect(paramsHash({ ...base, seed: 1 }, keys)).not.toBe(h);
    expect(paramsHash({ ...base, ingest: { ...base.ingest, concurrency: 1 } }, keys)).toBe(h);
    expect(paramsHash({ ...base, synth: { ...base.synth, images: 1 } }, keys)).toBe(h);
  });

  it('getParam reads sections and dotted keys, and names unknown ones', () => {
    expect(getParam(base, 'ingest.size')).toBe(128);
    expect(getParam(base, 'dataset')).toEqual(base.dataset);
    expect(() => getParam(base, 'ingest.sise')).toThrow("unknown param 'ingest.sise' (did you mean 'ingest.size'?)");
    expect(() => paramsHash(base, ['nope'])).toThrow(TagsegError);
  });
});
