/**
 * Adding a stage: a folder (test/pipeline/toy_stage: index.ts exporting `stage` and `sections`,
 * params.ts declaring its section) plus one registration line. Its run validates its own section
 * through its module, and its section is written into params.yaml with the generated defaults.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SECTIONS, loadParams } from '../../stages/params.js';
import { paramsYaml } from '../../pipeline/params_spec.js';
import { STAGE_NAMES, registerStage, runStages } from '../../stages/index.js';
import { sections as toySections } from './toy_stage/params.js';

let root: string;
beforeAll(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-toystage-'));
});
afterAll(() => fs.rm(root, { recursive: true, force: true }));

describe('a toy stage: one folder plus one registration line', () => {
  it('registers, appears in the generated defaults, runs through runStages with its params validated', async () => {
    registerStage('toy', () => import('./toy_stage/index.js')); // the one line
    expect(STAGE_NAMES).toContain('toy');
    expect(() => registerStage('toy', () => import('./toy_stage/index.js'))).toThrow(/already registered/);

    // The defaults with its section: generated from its params.ts, comments included.
    const text = paramsYaml({ ...SECTIONS, ...toySections });
    expect(text.endsWith('toy:\n  word: hello                 # what the toy stage writes\n  times: 3                    # how many times (>= 1)\n')).toBe(true);
    await fs.writeFile(path.join(root, 'params.yaml'), text);

    const r = await runStages(root, ['toy'], ['seed=5', 'toy.times=2'], true);
    expect(r.toy).toEqual({ text: 'hello hello' });
    expect(JSON.parse(await fs.readFile(path.join(root, 'toy/out.json'), 'utf8'))).toEqual({ seed: 5, text: 'hello hello' });
  });

  it("its run rejects a bad value in its own section (control: the section is really checked on the run path)", async () => {
    await expect(runStages(root, ['toy'], ['toy.times=0'], true)).rejects.toThrow(/--set: toy\.times: expected a number >= 1/);
    await expect(runStages(root, ['toy'], ['toy.wrod=x'], true)).rejects.toThrow(/unknown key 'toy\.wrod' \(did you mean 'toy\.word'\?\)/);
    // The static registry does not know a stage registered at run time: its full check names the section.
    await expect(loadParams(path.join(root, 'params.yaml'))).rejects.toThrow(/unknown key 'toy'/);
  });
});
