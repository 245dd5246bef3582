/**
 * `tagseg repro` / `tagseg status` hand over to dvc only in a DVC project (`.dvc/`) with dvc on
 * PATH, and say which runner runs; `repro --dry-run` prints the plan and writes nothing. dvc is a
 * stub script that records its argv; PATH holds only the stub and the tools the stages use.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it, vi } from 'vitest';
import { setQuiet } from '../../pipeline/log.js';
import { DEFAULT_PARAMS_YAML } from '../../stages/params.js';
import { reproCommand, statusCommand } from '../../cli/runner.js';

const DVC_YAML = `stages:
  a:
    cmd: sh -c 'cat in.txt > a.txt && echo \${synth.images} >> a.txt'
    deps: [in.txt]
    params: [synth.images]
    outs: [a.txt]
  b:
    cmd: sh -c 'cat a.txt > b.txt'
    deps: [a.txt]
    outs: [b.txt]
`;

let root: string;
let bin: string;
let savedPath: string | undefined;
let stderr: string[];
let stdout: string[];
const argvFile = () => path.join(bin, 'argv.txt');
const dvcCalls = async () => (await fs.readFile(argvFile(), 'utf8').catch(() => '')).split('\n').filter(Boolean);

/** PATH with the tools the stages need, plus (when `withDvc`) a dvc stub that records its argv and exits 5. */
async function setPath(withDvc: boolean): Promise<void> {
  await fs.rm(path.join(bin, 'dvc'), { force: true });
  if (withDvc) {
    const stub = `#!/bin/sh\nif [ "$1" = "--version" ]; then echo 3.64.0; exit 0; fi\necho "$*" >> '${argvFile()}'\nexit 5\n`;
    await fs.writeFile(path.join(bin, 'dvc'), stub, { mode: 0o755 });
  }
  process.env.PATH = bin;
}

async function snapshot(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const e of await fs.readdir(dir, { recursive: true, withFileTypes: true })) {
    const abs = path.join(e.parentPath, e.name);
    out[path.relative(dir, abs)] = e.isFile() ? await fs.readFile(abs, 'utf8') : 'dir';
  }
  return out;
}

beforeAll(async () => {
  setQuiet(false);
});

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-handoff-'));
  bin = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-handoff-bin-'));
  for (const tool of ['sh', 'cat', 'echo']) {
    const real = ['/bin', '/usr/bin'].map((d) => path.join(d, tool));
    const found = await Promise.any(real.map(async (r) => (await fs.access(r), r)));
    await fs.symlink(found, path.join(bin, tool));
  }
  await fs.writeFile(path.join(root, 'params.yaml'), DEFAULT_PARAMS_YAML);
  await fs.writeFile(path.join(root, 'dvc.yaml'), DVC_YAML);
  await fs.writeFile(path.join(root, 'in.txt'), 'in\n');
  savedPath = process.env.PATH;
  stderr = [];
  stdout = [];
  vi.spyOn(process.stderr, 'write').mockImplementation((s) => (stderr.push(String(s)), true));
  vi.spyOn(process.stdout, 'write').mockImplementation((s) => (stdout.push(String(s)), true));
});

afterEach(async () => {
  vi.restoreAllMocks();
  process.env.PATH = savedPath;
  await fs.rm(root, { recursive: true, force: true });
  await fs.rm(bin, { recursive: true, force: true });
});

const opts = (o: Partial<Parameters<typeof reproCommand>[2]> = {}) => ({ dvc: true, set: [], ...o });

describe('hand-off to dvc', () => {
  it('no .dvc/: tagseg runs its own runner even with dvc on PATH, and says so', async () => {
    await setPath(true);
    expect(await reproCommand(root, undefined, opts())).toBe(0);
    expect(await dvcCalls()).toEqual([]);
    expect(stderr.join('')).toContain("no .dvc/ folder here (not a DVC project): tagseg's own runner");
    expect(await fs.readFile(path.join(root, 'b.txt'), 'utf8')).toBe('in\n240\n');
    expect(await fs.readFile(path.join(root, 'dvc.lock'), 'utf8')).toMatch(/^schema: '2.0'\nstages:\n {2}a:\n/);

    const st = await statusCommand(root, {});
    expect('stages' in st && st.text).toBe('ok     a\nok     b');
    expect(await dvcCalls()).toEqual([]);
  });

  it('.dvc/ and dvc on PATH: repro and status hand over with the right args and pass the exit code', async () => {
    await fs.mkdir(path.join(root, '.dvc'));
    await setPath(true);
    expect(await reproCommand(root, 'b', opts({ force: true, single: true }))).toBe(5);
    expect(await statusCommand(root, { json: true })).toEqual({ exitCode: 5 });
    expect(await dvcCalls()).toEqual(['repro --force --single-item b', 'status --json']);
    expect(stderr.join('')).toContain('DVC project and dvc on PATH: handing over to dvc');
    await expect(fs.access(path.join(root, 'dvc.lock'))).rejects.toThrow(); // tagseg ran nothing
  });

  it('.dvc/ without dvc, or --no-dvc: tagseg\'s own runner', async () => {
    await fs.mkdir(path.join(root, '.dvc'));
    await setPath(false);
    expect(await reproCommand(root, 'a', opts())).toBe(0);
    expect(stderr.join('')).toContain("dvc is not on PATH: tagseg's own runner");
    await setPath(true);
    expect(await reproCommand(root, undefined, opts({ dvc: false }))).toBe(0);
    expect(stderr.join('')).toContain("--no-dvc: tagseg's own runner");
    expect(await dvcCalls()).toEqual([]);
    expect(await fs.readFile(path.join(root, 'b.txt'), 'utf8')).toBe('in\n240\n');
  });
});

describe('repro --dry-run', () => {
  it('prints each stage that would run and why, applies --set in memory and writes nothing', async () => {
    await setPath(false);
    expect(await reproCommand(root, undefined, opts())).toBe(0);
    const before = await snapshot(root);
    stdout = [];

    expect(await reproCommand(root, undefined, opts({ dryRun: true, set: ['synth.images=7'] }))).toBe(0);
    expect(stdout.join('')).toBe(
      [
        'with synth.images=7 (not written to params.yaml):',
        'would run  a',
        '             cmd changed',
        '             param changed: synth.images (240 -> 7)',
        'would run  b',
        '             upstream stale: a',
        '2 stage(s) would run; nothing was run or written',
        '',
      ].join('\n'),
    );
    expect(await snapshot(root)).toEqual(before); // params.yaml, dvc.lock, outputs, .tagseg untouched

    stdout = [];
    expect(await reproCommand(root, undefined, opts({ dryRun: true }))).toBe(0);
    expect(stdout.join('')).toBe('up to date a\nup to date b\nnothing to run; nothing was written\n');
  });

  it('in a DVC project: --set keeps tagseg\'s planner (dvc is not called), plain --dry-run hands over', async () => {
    await fs.mkdir(path.join(root, '.dvc'));
    await setPath(true);
    const before = await snapshot(root);
    expect(await reproCommand(root, 'a', opts({ dryRun: true, set: ['synth.images=7'] }))).toBe(0);
    expect(stdout.join('')).toContain('would run  a\n             never run\n');
    expect(await dvcCalls()).toEqual([]);
    expect(await snapshot(root)).toEqual(before);

    expect(await reproCommand(root, 'a', opts({ dryRun: true }))).toBe(5);
    expect(await dvcCalls()).toEqual(['repro --dry a']);
  });
});
