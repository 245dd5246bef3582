/**
 * Presets (cli/preset.ts, presets/*.yaml) applied by `tagseg workspace --preset`: the
 * `photos` preset gives exactly the params of the bash array it replaced (with the values decided
 * since, DECIDED_SINCE), --set wins over a
 * preset, and a bad preset stops with an error naming its file before anything is created.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { TagsegError } from '../../pipeline/errors.js';
import { defaultParams, getParam, loadParams } from '../../stages/params.js';
import { presetOverrides } from '../../cli/preset.js';
import { REPO_ROOT, createWorkspace } from '../../cli/workspace.js';

/** bench/msrc_recipe.sh's MSRC_SETS as of commit f7a91b4 (the array presets/photos.yaml replaces). */
const OLD_MSRC_SETS = [
  'ingest.size=320',
  'cam.backbone=mobilenet',
  'cam.norm=frozen',
  'cam.output_stride=16',
  'cam.probe_iters=500',
  'cam.optimizer=adamw',
  'cam.lr=0.0001',
  'cam.head_lr_mult=100',
  'cam.epochs=8',
  'cam.batch_size=16',
  'cam.crop=224',
  'cam.crop_scale=[0.7,1.0]',
  'cam.scales=[1.0,0.5,1.5]',
  'cam.recam_weight=1',
  'contrast.recam_weight=1',
  'affinity.crop=128',
  'affinity.beta=16',
  'affinity.logt=6',
  'contrast.crop=224',
  'contrast.crop_scale=[0.7,1.0]',
  'contrast.lr=0.0001',
  'contrast.head_lr_mult=10',
  'contrast.epochs=6',
  'contrast.scales=[1.0,0.5,1.5]',
  'segment.crop=224',
  'segment.batch_size=8',
  'segment.optimizer=adamw',
  'segment.lr=0.0001',
  'segment.head_lr_mult=30',
  'segment.epochs=20',
  'segment.head_dim=64',
  'segment.scales=[1.0,0.75,1.25]',
  'segment.contrast=reco',
];

let tmp: string;
beforeEach(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-preset-'));
});
afterEach(() => fs.rm(tmp, { recursive: true, force: true }));

/** Values of the photos preset changed after it replaced the array, each on the cv protocol (presets/photos.yaml says why). */
const DECIDED_SINCE = ['segment.contrast=none', 'refine.ignore=none', 'segment.frozen_stages=3', 'contrast.flip=false'];

describe('presets', () => {
  it('photos gives exactly the values of the old MSRC-v2 --set array, with the decisions made since', async () => {
    expect(OLD_MSRC_SETS).toHaveLength(33);
    const sets = await presetOverrides('photos', defaultParams());
    const key = (s: string) => s.split('=')[0];
    expect(sets.map(key).sort()).toEqual([...new Set([...OLD_MSRC_SETS, ...DECIDED_SINCE].map(key))].sort());

    const fromArray = await loadParams(path.join(await createWorkspace(path.join(tmp, 'a'), [...OLD_MSRC_SETS, ...DECIDED_SINCE]), 'params.yaml'));
    const fromPreset = await loadParams(path.join(await createWorkspace(path.join(tmp, 'b'), [], 'photos'), 'params.yaml'));
    expect(fromPreset).toEqual(fromArray);
    // control: the recipe is not the defaults
    expect(fromArray).not.toEqual(defaultParams());
    expect(getParam(fromPreset, 'cam.backbone')).toBe('mobilenet');
    expect(getParam(fromPreset, 'cam.crop_scale')).toEqual([0.7, 1.0]);
    expect(getParam(fromPreset, 'segment.contrast')).toBe('none');
    // control: the old array alone differs from the preset exactly in the decided values
    const oldArray = await loadParams(path.join(await createWorkspace(path.join(tmp, 'e'), OLD_MSRC_SETS), 'params.yaml'));
    expect(getParam(oldArray, 'segment.contrast')).toBe('reco');
    expect(getParam(oldArray, 'refine.ignore')).toBe('either');
    expect({ ...oldArray, refine: { ...oldArray.refine, ignore: 'none' }, segment: { ...oldArray.segment, contrast: 'none', frozen_stages: 3 }, contrast: { ...oldArray.contrast, flip: false } }).toEqual(fromPreset);
    // the workspace's params.yaml keeps its comments and says where its values came from
    const text = await fs.readFile(path.join(tmp, 'b', 'params.yaml'), 'utf8');
    expect(text.startsWith('# tagseg workspace --preset photos')).toBe(true);
    expect(text).toMatch(/^ {2}backbone: mobilenet +# resnet \(from scratch\)/m);
  });

  it('--set overrides win over the preset; a preset may be a path', async () => {
    const ws = await createWorkspace(path.join(tmp, 'c'), ['cam.lr=0.5', 'segment.epochs=3'], 'photos');
    const p = await loadParams(path.join(ws, 'params.yaml'));
    expect([getParam(p, 'cam.lr'), getParam(p, 'segment.epochs'), getParam(p, 'contrast.lr')]).toEqual([0.5, 3, 0.0001]);

    // the same through the command line
    await execa('node', [path.join(REPO_ROOT, 'bin/tagseg.js'), 'workspace', path.join(tmp, 'cli'), '--preset', 'photos', '--set', 'cam.lr=0.5']);
    expect(await loadParams(path.join(tmp, 'cli', 'params.yaml'))).toEqual({ ...p, segment: { ...p.segment, epochs: 20 } });

    const file = path.join(tmp, 'mine.yaml');
    await fs.writeFile(file, 'cam:\n  lr: 0.01\n  scales: [1.0, 2.0]\n');
    const q = await loadParams(path.join(await createWorkspace(path.join(tmp, 'd'), ['cam.epochs=2'], file), 'params.yaml'));
    expect([getParam(q, 'cam.lr'), getParam(q, 'cam.scales'), getParam(q, 'cam.epochs')]).toEqual([0.01, [1, 2], 2]);
    expect(getParam(q, 'cam.backbone')).toBe(getParam(defaultParams(), 'cam.backbone'));
  });

  it('msrc-v2 is photos plus its part-order prior, through _base_', async () => {
    const photos = await loadParams(path.join(await createWorkspace(path.join(tmp, 'p'), [], 'photos'), 'params.yaml'));
    const msrc = await loadParams(path.join(await createWorkspace(path.join(tmp, 'm'), [], 'msrc-v2'), 'params.yaml'));
    expect(getParam(msrc, 'refine.above')).toEqual(['face/body']);
    expect(getParam(photos, 'refine.above')).toEqual([]); // control: photos knows no classes
    expect({ ...msrc, refine: { ...msrc.refine, above: [] } }).toEqual(photos);
  });

  it('_base_ may be a path relative to the preset; own keys win over the base, lists whole', async () => {
    await fs.mkdir(path.join(tmp, 'presets'));
    await fs.writeFile(path.join(tmp, 'presets', 'base.yaml'), 'cam:\n  lr: 0.01\n  epochs: 3\n  scales: [1.0, 2.0]\n');
    await fs.writeFile(path.join(tmp, 'presets', 'child.yaml'), '_base_: base.yaml\ncam:\n  lr: 0.02\n  scales: [1.0]\n');
    const p = await loadParams(path.join(await createWorkspace(path.join(tmp, 'w'), [], path.join(tmp, 'presets', 'child.yaml')), 'params.yaml'));
    expect([getParam(p, 'cam.lr'), getParam(p, 'cam.epochs'), getParam(p, 'cam.scales')]).toEqual([0.02, 3, [1]]);
  });

  it('a _base_ cycle, a missing base or a _base_ that is not a name stops with an error naming the file', async () => {
    const write = (name: string, text: string) => fs.writeFile(path.join(tmp, name), text);
    await write('a.yaml', '_base_: ./b.yaml\ncam:\n  lr: 0.1\n');
    await write('b.yaml', '_base_: ./a.yaml\ncam:\n  lr: 0.2\n');
    await write('c.yaml', '_base_: nosuch\ncam:\n  lr: 0.1\n');
    await write('d.yaml', '_base_: [photos]\ncam:\n  lr: 0.1\n');
    const errorOf = async (file: string) => (await createWorkspace(path.join(tmp, `ws-${file}`), [], path.join(tmp, file)).then(() => new Error(`no error for ${file}`), (e: unknown) => e as Error));
    expect((await errorOf('a.yaml')).message).toMatch(/_base_ makes a cycle: .*a\.yaml -> .*b\.yaml -> .*a\.yaml/);
    expect((await errorOf('c.yaml')).message).toMatch(/preset not found \('nosuch'\)/);
    expect((await errorOf('d.yaml')).message).toMatch(/d\.yaml.*_base_ must be one preset/);
  });

  it('a bad preset stops with an error naming its file and key, and creates nothing', async () => {
    const cases: [string, RegExp][] = [
      ['cam:\n  lrr: 0.01\n', /unknown key.*cam\.lrr|cam.*lrr.*did you mean 'lr'/],
      ['cam:\n  lr: fast\n', /cam\.lr/],
      ['cam:\n  backbone: vgg\n', /cam\.backbone.*resnet \| mobilenet/],
      ['- cam\n', /a preset must be a mapping/],
      ['cam: [\n', /invalid YAML/],
    ];
    for (const [i, [yaml, message]] of cases.entries()) {
      const file = path.join(tmp, `bad${i}.yaml`);
      await fs.writeFile(file, yaml);
      const err = await createWorkspace(path.join(tmp, `ws${i}`), [], file).catch((e: unknown) => e);
      expect(err, yaml).toBeInstanceOf(TagsegError);
      expect((err as TagsegError).message, yaml).toMatch(message);
      expect((err as TagsegError).message, yaml).toContain(`bad${i}.yaml`);
      await expect(fs.access(path.join(tmp, `ws${i}`))).rejects.toThrow();
    }
    await expect(createWorkspace(path.join(tmp, 'x'), [], 'photoz')).rejects.toThrow(/preset not found[\s\S]*presets: msrc-v2, photos/);
    // a bad --set is blamed on --set, before anything is created
    await expect(createWorkspace(path.join(tmp, 'y'), ['cam.lr=fast'], 'photos')).rejects.toThrow(/--set: cam\.lr/);
    await expect(fs.access(path.join(tmp, 'y'))).rejects.toThrow();
  });
});
