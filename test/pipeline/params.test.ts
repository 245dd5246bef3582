import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { z } from 'zod';
import { TagsegError } from '../../pipeline/errors.js';
import {
  DEFAULT_PARAMS_YAML,
  SECTIONS,
  defaultParams,
  getParam,
  loadParams,
  paramsHash,
  validateParams,
  writeOverrides,
} from '../../stages/params.js';
import { readParams, stageSpec } from '../../pipeline/params_core.js';
import { key, paramsYaml, sectionDefaults } from '../../pipeline/params_spec.js';
import { sections as camSections } from '../../stages/cam/params.js';

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
  it("the repo's params.yaml is the text generated from the sections' declarations (stages/<x>/params.ts, shared_params.ts)", async () => {
    const repo = await fs.readFile(path.resolve('params.yaml'), 'utf8');
    expect(repo, 'regenerate it: node bin/tagseg.js params --defaults > params.yaml').toBe(DEFAULT_PARAMS_YAML);
    expect(DEFAULT_PARAMS_YAML).toBe(paramsYaml(SECTIONS));
  });

  it('the generated text loads back to exactly the declared defaults, every key commented where documented', async () => {
    const p = await loadParams(await writeParams(DEFAULT_PARAMS_YAML));
    expect(p).toEqual(sectionDefaults(SECTIONS));
    expect(defaultParams()).toEqual(p);
    // Spot checks of the rendering: comment column, real-valued lists, nested groups, quoting.
    expect(DEFAULT_PARAMS_YAML).toContain('seed: 0                       # global seed for every RNG\n');
    expect(DEFAULT_PARAMS_YAML).toContain("  classes: ''                 # classes.json");
    expect(DEFAULT_PARAMS_YAML).toContain('  scales: [1.0, 0.5, 1.5, 2.0] # CAM inference scales');
    expect(DEFAULT_PARAMS_YAML).toContain('  crf:                        # dense CRF on the original image');
    expect(DEFAULT_PARAMS_YAML).toContain('    iterations: 10            # mean-field iterations (PSA/IRN 10; 0 = no CRF)\n');
    expect(DEFAULT_PARAMS_YAML).toContain('  weight_decay: 0.0001\n');
  });

  it('a changed default is caught by the params.yaml check, on its line only (control)', async () => {
    const changed = { ...SECTIONS, ingest: z.strictObject({ ...SECTIONS.ingest.shape, size: key(z.number().int().min(0), 256, 'long side of the working size in pixels (0 = keep original)') }) };
    const text = paramsYaml(changed);
    const repo = await fs.readFile(path.resolve('params.yaml'), 'utf8');
    expect(text).not.toBe(repo);
    const differ = text.split('\n').filter((l, i) => l !== repo.split('\n')[i]);
    expect(differ).toEqual(['  size: 256                   # long side of the working size in pixels (0 = keep original)']);
    expect((await loadParams(await writeParams(text, 'changed.yaml'))).ingest.size).toBe(256);
  });

  it('a default its own schema rejects fails where it is declared, and a key without a default cannot be generated', () => {
    expect(() => key(z.number().int().min(1), 0)).toThrow(/default 0 does not satisfy its schema/);
    expect(() => paramsYaml({ toy: z.strictObject({ a: key(z.number(), 1), b: z.number() }) })).toThrow("params key 'b' has no default");
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

describe('a stage run validates the shared sections and its own only (stageSpec)', () => {
  const spec = stageSpec(camSections);

  it('checks its own and the shared sections, passes the others through unchecked', async () => {
    const bad = DEFAULT_PARAMS_YAML.replace('  on_error: fail ', '  on_error: maybe').replace('  radius: 5 ', '  radius: x');
    const p = await readParams(spec, await writeParams(bad, 'stage.yaml'));
    expect((p.cam as { lr: number }).lr).toBe(0.003);
    expect((p.ingest as { on_error: string }).on_error).toBe('maybe'); // another stage's section: its run checks it
    // Control: the full registry rejects the same file.
    await expect(loadParams(path.join(dir, 'stage.yaml'))).rejects.toThrow(/ingest\.on_error/);
  });

  it('rejects a typo or a bad value in its own or a shared section, and a missing own section', async () => {
    const typo = await writeParams(DEFAULT_PARAMS_YAML.replace('  lr: 0.003 ', '  lrr: 0.003'), 'typo.yaml');
    expect((await errorOf(() => readParams(spec, typo))).reason).toMatch(/^unknown key 'cam\.lrr' \(did you mean 'cam\.lr'\?\)/);
    const file = await writeParams(DEFAULT_PARAMS_YAML, 'ok.yaml');
    expect((await errorOf(() => readParams(spec, file, ['seed=-1']))).reason).toMatch(/^seed: expected a number >= 0/);
    expect((await errorOf(() => readParams(spec, file, ['cam.lr=0']))).message).toMatch(/^--set: cam\.lr: expected a number > 0/);
    expect((await readParams(spec, file, ['affinity.radius=7'])).affinity).toMatchObject({ radius: 7 }); // unchecked section: taken as given
    const noCam = YAML.parse(DEFAULT_PARAMS_YAML) as Record<string, unknown>;
    delete noCam.cam;
    const missing = await writeParams(YAML.stringify(noCam), 'nocam.yaml');
    expect((await errorOf(() => readParams(spec, missing))).reason).toMatch(/^missing key 'cam'/);
  });
});
