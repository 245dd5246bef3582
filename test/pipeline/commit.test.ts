/**
 * A stage commits all its outputs together or none (pipeline/commit.ts): a kill at any step of a
 * stage run leaves, once the next tagseg command has recovered, the previous run's outputs whole or
 * the new run's whole. Kills are simulated in-process (a crash that skips every cleanup) at each
 * step, and once for real (SIGKILL of a child `tagseg run`).
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { generateSynthetic } from '../../data/synth.js';
import { TableWriter, readAll } from '../../pipeline/arrow.js';
import { SimulatedCrash, recoverCommits, setCommitFault, withStageCommit } from '../../pipeline/commit.js';
import { TagsegError } from '../../pipeline/errors.js';
import { replaceDirAtomic, tempPathFor, writeFileAtomic } from '../../pipeline/fsutil.js';
import { loadParams } from '../../stages/params.js';
import { runStages } from '../../stages/index.js';
import { REPO_ROOT, createWorkspace } from '../../cli/workspace.js';
import { ingestDataset } from '../../stages/ingest/ingest.js';

const OUTPUTS = ['cache/dataset.arrow', 'cache/images.arrow', 'metrics/ingest.json'];
let tmp: string;
let root: string;

async function hashes(r = root): Promise<string[]> {
  return Promise.all(OUTPUTS.map(async (f) => createHash('sha256').update(await fs.readFile(path.join(r, f))).digest('hex')));
}
/** Every file under the output folders and .tagseg/commit: no staged leftovers, no journal. */
async function listing(r = root): Promise<string[]> {
  const out: string[] = [];
  for (const d of ['cache', 'metrics', '.tagseg/commit']) {
    for (const f of await fs.readdir(path.join(r, d)).catch(() => [] as string[])) out.push(`${d}/${f}`);
  }
  return out.sort();
}
/** Old run: size 32, every split; new run: size 24, the train split only (so every output differs). */
const ingest = (size: 24 | 32) => runStages(root, ['ingest'], [`ingest.size=${size}`, size === 24 ? 'dataset.splits=[train]' : 'dataset.splits=[]'], true);

let oldH: string[];
let newH: string[];
beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-commit-'));
  root = await createWorkspace(path.join(tmp, 'ws'), ['synth.images=12', 'synth.size=40']);
  const p = await loadParams(path.join(root, 'params.yaml'));
  await generateSynthetic({ out: path.join(root, p.synth.out), images: p.synth.images, size: p.synth.size, classes: p.synth.classes, valFraction: p.synth.val_fraction, seed: p.seed });
  await ingest(24);
  newH = await hashes();
  await ingest(32);
  oldH = await hashes();
  expect(newH.every((h, i) => h !== oldH[i])).toBe(true);
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});
afterEach(() => {
  setCommitFault(undefined);
  vi.restoreAllMocks();
});

describe('stage commit: outputs of one run, never two', () => {
  it('outputs stay old until the stage returns, then change together', async () => {
    const dir = path.join(tmp, 'unit');
    await fs.mkdir(path.join(dir, 'model'), { recursive: true });
    await fs.writeFile(path.join(dir, 'a.json'), 'old');
    await fs.writeFile(path.join(dir, 'model', 'w'), 'old');
    await withStageCommit(dir, 'unit', ['a.json', 'model', 't.arrow'], async () => {
      await writeFileAtomic(path.join(dir, 'a.json'), 'new');
      const staged = tempPathFor(path.join(dir, 'model'));
      await fs.mkdir(staged);
      await fs.writeFile(path.join(staged, 'w'), 'new');
      await replaceDirAtomic(staged, path.join(dir, 'model'));
      const w = await TableWriter.open(path.join(dir, 't.arrow'), [{ name: 'x', type: 'int32' }], { stage: 'unit', paramsHash: '', classes: [] });
      await w.write({ x: 1 });
      await w.close();
      // Nothing is in place yet: a reader still sees the previous run whole.
      expect(await fs.readFile(path.join(dir, 'a.json'), 'utf8')).toBe('old');
      expect(await fs.readFile(path.join(dir, 'model', 'w'), 'utf8')).toBe('old');
      await expect(fs.access(path.join(dir, 't.arrow'))).rejects.toThrow();
      // A write outside the declared outputs lands at once.
      await writeFileAtomic(path.join(dir, 'elsewhere.txt'), 'now');
      expect(await fs.readFile(path.join(dir, 'elsewhere.txt'), 'utf8')).toBe('now');
    });
    expect(await fs.readFile(path.join(dir, 'a.json'), 'utf8')).toBe('new');
    expect(await fs.readFile(path.join(dir, 'model', 'w'), 'utf8')).toBe('new');
    expect((await readAll(path.join(dir, 't.arrow'))).map((r) => r.x)).toEqual([1]);
    expect((await fs.readdir(dir)).sort()).toEqual(['.tagseg', 'a.json', 'elsewhere.txt', 'model', 't.arrow']);
    expect(await fs.readdir(path.join(dir, '.tagseg', 'commit'))).toEqual([]);
  });

  it('a stage that fails keeps every previous output and leaves nothing staged', async () => {
    const err = new TagsegError('boom');
    await expect(runStagesWithFailure(err)).rejects.toBe(err);
    expect(await hashes()).toEqual(oldH);
    expect(await listing()).toEqual([...OUTPUTS].sort());
  });

  // Steps in order; a crash at `staged` is before the commit point (old), any later one after it (new).
  const STEPS: [string, 'old' | 'new'][] = [['staged', 'old'], ['committing', 'new'], ['moved:0', 'new'], ['moved:1', 'new'], ['moved:2', 'new'], ['done', 'new']];
  it.each(STEPS)('a crash at commit step %s is recovered to the %s outputs whole', async (step, want) => {
    setCommitFault(step);
    await expect(ingest(24)).rejects.toBeInstanceOf(SimulatedCrash);
    setCommitFault(undefined);
    if (step === 'moved:0') {
      // The crash really left two runs side by side on disk: the recovery is what repairs it.
      const h = await hashes();
      expect([h[0] === newH[0], h[1] === oldH[1]]).toEqual([true, true]);
    }
    const did = await recoverCommits(root);
    expect(did).toHaveLength(1);
    expect(await hashes()).toEqual(want === 'old' ? oldH : newH);
    expect(await listing()).toEqual([...OUTPUTS].sort());
    await ingest(32);
    expect(await hashes()).toEqual(oldH);
  });

  it('a real SIGKILL between two renames: the next tagseg command finishes the commit', async () => {
    const tagseg = path.join(REPO_ROOT, 'bin/tagseg.js');
    const r = await execa('node', [tagseg, '--root', root, '-q', 'run', 'ingest', '--set', 'ingest.size=24', '--set', 'dataset.splits=[train]'], {
      reject: false, env: { TAGSEG_FAULT: 'commit:moved:1' },
    });
    expect(r.signal).toBe('SIGKILL');
    const torn = await hashes();
    expect([torn[0], torn[1], torn[2]]).toEqual([newH[0], newH[1], oldH[2]]);
    const st = await execa('node', [tagseg, '--root', root, 'status'], { reject: false });
    expect(st.stderr).toContain("stage 'ingest': finished committing");
    expect(await hashes()).toEqual(newH);
    expect(await listing()).toEqual([...OUTPUTS].sort());
    await ingest(32);
  }, 120_000);

  it('disk full writing images.arrow: no new dataset.arrow beside the old images.arrow', async () => {
    // A real ENOSPC error object (from /dev/full), thrown by the first large write: the images batch at close.
    const enospc = await fs.writeFile('/dev/full', 'x').then(() => null, (e: unknown) => e);
    expect((enospc as NodeJS.ErrnoException).code).toBe('ENOSPC');
    const probe = await fs.open(path.join(tmp, 'probe'), 'w');
    const proto = Object.getPrototypeOf(probe) as { writev: (...a: unknown[]) => Promise<unknown> };
    await probe.close();
    const writev = proto.writev;
    vi.spyOn(proto, 'writev').mockImplementation(function (this: unknown, ...a: unknown[]) {
      const bytes = (a[0] as Uint8Array[]).reduce((n, c) => n + c.byteLength, 0);
      return bytes > 20_000 ? Promise.reject(enospc) : writev.apply(this, a);
    });
    const err = await ingest(24).then(() => null, (e: unknown) => e);
    expect(err).toBeInstanceOf(TagsegError);
    expect((err as TagsegError).file).toBe(path.join(root, 'cache/images.arrow'));
    expect((err as TagsegError).message).toMatch(/no space left on the device/);
    expect((err as TagsegError).hint).toMatch(/free disk space/);
    expect(await hashes()).toEqual(oldH);
    expect(await listing()).toEqual([...OUTPUTS].sort());

    // Negative control: the writers alone (no stage commit) do leave the mix the issue reported.
    const p = await loadParams(path.join(root, 'params.yaml'));
    await expect(ingestDataset({
      root: path.join(root, p.dataset.root), format: 'voc', csv: 'tags.csv', splits: ['train'], size: 24, concurrency: 1, onError: 'fail',
      datasetTable: path.join(root, OUTPUTS[0]), imagesTable: path.join(root, OUTPUTS[1]), paramsHash: 'x',
    })).rejects.toThrow(/no space/);
    vi.restoreAllMocks();
    const mixed = await hashes();
    expect(mixed[0]).not.toBe(oldH[0]);
    expect(mixed[1]).toBe(oldH[1]);
    await ingest(32);
    expect(await hashes()).toEqual(oldH);
  });
});

/** The ingest stage run through runStages, failing after it wrote everything. */
async function runStagesWithFailure(err: Error): Promise<unknown> {
  const { loadStage } = await import('../../stages/index.js');
  const ingestStage = (await loadStage('ingest'))!; // the module's own object: runStages loads the same
  const run = ingestStage.run;
  ingestStage.run = async (ctx) => {
    await run(ctx);
    throw err;
  };
  try {
    return await ingest(24);
  } finally {
    ingestStage.run = run;
  }
}
