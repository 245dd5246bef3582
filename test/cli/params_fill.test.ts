import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_PARAMS_YAML, loadParams } from '../../stages/params.js';
import { fillMissingSections, sectionBlocks } from '../../cli/params_fill.js';

describe('params.yaml upgrade', () => {
  it('splits the defaults into one block per top-level section', () => {
    const blocks = sectionBlocks(DEFAULT_PARAMS_YAML);
    expect([...blocks.keys()].slice(0, 4)).toEqual(['seed', 'dataset', 'synth', 'ingest']);
    expect([...blocks.values()].join('')).toBe(DEFAULT_PARAMS_YAML.replace(/\n+$/, '\n'));
  });

  it('appends only the missing sections with their comments and keeps user values', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-fill-'));
    const file = path.join(dir, 'params.yaml');
    const blocks = sectionBlocks(DEFAULT_PARAMS_YAML);
    const last = [...blocks.keys()].at(-1)!;
    // An "older" file: every section but the last, with a user edit.
    const old = [...blocks].filter(([k]) => k !== last).map(([, b]) => b).join('').replace('size: 128 ', 'size: 256 ');
    await fs.writeFile(file, old);
    await expect(loadParams(file)).rejects.toThrow(last);
    expect(await fillMissingSections(file)).toEqual([last]);
    const text = await fs.readFile(file, 'utf8');
    expect(text.startsWith(old)).toBe(true);
    expect(text.endsWith(blocks.get(last)!)).toBe(true);
    const p = await loadParams(file);
    expect(p.ingest.size).toBe(256);
    expect(await fillMissingSections(file)).toEqual([]);
    await fs.rm(dir, { recursive: true, force: true });
  });

  it('adds a key a present section lacks (a key a newer tagseg added) with its default, keeping user values and comments', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-fill-'));
    const file = path.join(dir, 'params.yaml');
    // An "older" file: segment without `head`, cam.epochs edited by the user.
    const old = DEFAULT_PARAMS_YAML.replace(/^ {2}head: .*\n/m, '').replace(/^(cam:[\s\S]*?\n {2}epochs: )\d+/m, '$17');
    expect(old).not.toBe(DEFAULT_PARAMS_YAML);
    await fs.writeFile(file, old);
    await expect(loadParams(file)).rejects.toThrow(/missing key 'segment\.head'.*--fill/);
    expect(await fillMissingSections(file)).toEqual(['segment.head']);
    const p = await loadParams(file);
    expect(p.segment.head).toBe('deeplab');
    expect(p.cam.epochs).toBe(7);
    const text = await fs.readFile(file, 'utf8');
    expect(text).toContain('# '); // comments kept
    expect(await fillMissingSections(file)).toEqual([]);
    expect(await fs.readFile(file, 'utf8')).toBe(text); // nothing missing: untouched
    await fs.rm(dir, { recursive: true, force: true });
  });
});
