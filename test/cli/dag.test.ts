/**
 * The DAG runner on a throw-away project whose stages are tiny shell commands, so every test
 * exercises the real path: dvc.yaml -> interpolation -> graph -> hashes -> shell -> lock file.
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { DVC_LOCK, type RunCmd, buildDag, repro, shellRunCmd, status } from '../../cli/dag.js';
import { readDvcLock } from '../../cli/dvclock.js';
import { type PyMap, parsePy } from '../../cli/pyyaml.js';
import { dvcAvailable, dvcRepro } from '../../cli/dvc.js';
import { type DvcStage, parseDvcYaml } from '../../cli/dvcfile.js';
import { TagsegError } from '../../pipeline/errors.js';
import { setQuiet } from '../../pipeline/log.js';
import { DEFAULT_PARAMS_YAML, defaultParams, writeOverrides } from '../../stages/params.js';

// a: in.txt + synth.images -> a.txt        (cmd interpolates ${synth.images})
// b: a.txt + b_in.txt + params.yaml -> b.txt, lists param ingest.size
// c: b.txt -> c.txt + m.json (metric, cache: false)
// d: d_in/ (a directory) -> d.txt, independent of a/b/c
const DVC_YAML = `stages:
  a:
    cmd: sh -c 'cat in.txt > a.txt && echo \${synth.images} >> a.txt'
    deps: [in.txt]
    params: [synth.images]
    outs: [a.txt]
  b:
    cmd: sh -c 'test ! -e fail.flag && cat a.txt b_in.txt params.yaml > b.txt'
    deps: [a.txt, b_in.txt]
    params: [ingest.size]
    outs: [b.txt]
  c:
    cmd: sh -c 'cat b.txt > c.txt && echo 1 > m.json'
    deps: [b.txt]
    outs: [c.txt]
    metrics:
      - m.json:
          cache: false
  d:
    cmd: sh -c 'ls d_in > d.txt'
    deps: [d_in]
    outs: [d.txt]
`;

let root: string;
let calls: string[];
let cmds: string[];
const runCmd: RunCmd = async (cmd, opts) => {
  calls.push(opts.stage);
  cmds.push(cmd);
  return shellRunCmd(cmd, opts);
};

const write = (rel: string, text: string) => fs.writeFile(path.join(root, rel), text);
const read = (rel: string) => fs.readFile(path.join(root, rel), 'utf8');
const run = async (opts: Parameters<typeof repro>[1] = {}) => {
  calls = [];
  cmds = [];
  return repro(root, opts, runCmd);
};
const reasonsOf = async () => Object.fromEntries((await status(root)).map((s) => [s.name, s.reasons]));

beforeAll(() => setQuiet(true));

beforeEach(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-dag-'));
  await write('params.yaml', DEFAULT_PARAMS_YAML);
  await write('dvc.yaml', DVC_YAML);
  await write('in.txt', 'in\n');
  await write('b_in.txt', 'b\n');
  await fs.mkdir(path.join(root, 'd_in'));
  await write('d_in/one', '1');
  calls = [];
  cmds = [];
});
afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('repro', () => {
  it('runs every stage once in dependency order, then skips them all', async () => {
    expect(await reasonsOf()).toEqual({
      a: ['never run'],
      b: ['never run', 'upstream stale: a'],
      c: ['never run', 'upstream stale: b'],
      d: ['never run'],
    });
    const first = await run();
    expect(first).toMatchObject({ ok: true, exitCode: 0 });
    expect(calls).toEqual(['a', 'b', 'c', 'd']);
    // Exactly the interpolated cmd string went to the shell.
    expect(cmds[0]).toBe("sh -c 'cat in.txt > a.txt && echo 240 >> a.txt'");
    expect(await read('a.txt')).toBe('in\n240\n');
    expect(JSON.parse(await read('m.json'))).toBe(1);

    const second = await run();
    expect(calls).toEqual([]);
    expect(second.stages.map((s) => s.action)).toEqual(['skipped', 'skipped', 'skipped', 'skipped']);
    expect((await status(root)).every((s) => !s.stale)).toBe(true);
  });

  it('reruns a stage whose dep content changed, and its downstream only', async () => {
    await run();
    await write('b_in.txt', 'b changed\n');
    expect(await reasonsOf()).toEqual({ a: [], b: ['dep changed: b_in.txt'], c: ['upstream stale: b'], d: [] });
    await run();
    expect(calls).toEqual(['b', 'c']);
    expect(await read('c.txt')).toContain('b changed');
  });

  it('does not rerun a stage for a touch that keeps the content', async () => {
    await run();
    const later = new Date(Date.now() + 5000);
    await fs.utimes(path.join(root, 'in.txt'), later, later);
    await run();
    expect(calls).toEqual([]);
  });

  it('reruns only the stages listing a changed param (and their downstream)', async () => {
    await run();
    await writeOverrides(path.join(root, 'params.yaml'), ['ingest.size=256']);
    expect(await reasonsOf()).toEqual({
      a: [],
      b: ['param changed: ingest.size (128 -> 256)'],
      c: ['upstream stale: b'],
      d: [],
    });
    await run();
    expect(calls).toEqual(['b', 'c']);
    // A param no stage lists changes nothing.
    await writeOverrides(path.join(root, 'params.yaml'), ['ingest.concurrency=1']);
    expect((await status(root)).filter((s) => s.stale)).toEqual([]);
  });

  it('a param interpolated into cmd changes the cmd too', async () => {
    await run();
    await writeOverrides(path.join(root, 'params.yaml'), ['synth.images=7']);
    expect((await reasonsOf()).a).toEqual(['cmd changed', 'param changed: synth.images (240 -> 7)']);
    await run({ target: 'a' });
    expect(cmds).toEqual(["sh -c 'cat in.txt > a.txt && echo 7 >> a.txt'"]);
  });

  it('reruns a stage whose output was deleted or modified', async () => {
    await run();
    await fs.rm(path.join(root, 'c.txt'));
    expect((await reasonsOf()).c).toEqual(['out missing: c.txt']);
    await run();
    expect(calls).toEqual(['c']);

    await write('m.json', '2\n');
    expect((await reasonsOf()).c).toEqual(['out modified: m.json']);
    await run();
    expect(calls).toEqual(['c']);
    expect(JSON.parse(await read('m.json'))).toBe(1);
  });

  it('decides downstream after upstream ran: identical outputs do not rerun it', async () => {
    await run();
    // b.txt edited by hand: b is stale (out modified) and c sees its dep changed...
    await write('b.txt', 'tampered\n');
    expect(await reasonsOf()).toMatchObject({ b: ['out modified: b.txt'], c: ['dep changed: b.txt', 'upstream stale: b'] });
    // ...but rerunning b restores the recorded b.txt, so c is up to date again (dvc repro does the same).
    await run();
    expect(calls).toEqual(['b']);
  });

  it('a failing cmd stops the run, names the stage and keeps its lock entry', async () => {
    await run();
    const before = (await readDvcLock(root)).get('b');
    expect(before).toBeDefined();
    await write('b_in.txt', 'b2\n');
    await write('fail.flag', '');
    const r = await run();
    expect(r.ok).toBe(false);
    expect(r.exitCode).toBe(1);
    expect(r.failed?.stage).toBe('b');
    expect(r.failed?.message).toMatch(/stage 'b' failed/);
    expect(calls).toEqual(['b']); // c and d were not reached
    expect((await readDvcLock(root)).get('b')).toEqual(before);
    expect((await reasonsOf()).b).toEqual(['dep changed: b_in.txt', 'out missing: b.txt']);

    await fs.rm(path.join(root, 'fail.flag'));
    expect((await run()).ok).toBe(true);
    expect(calls).toEqual(['b', 'c']);
  });

  it('fails when a stage does not create an output, without recording it', async () => {
    await write('dvc.yaml', "stages:\n  x:\n    cmd: 'true'\n    outs: [never.txt]\n");
    const r = await run();
    expect(r.failed).toMatchObject({ stage: 'x', exitCode: 1 });
    expect(r.failed?.message).toContain("did not create its output 'never.txt'");
    expect((await readDvcLock(root)).get('x')).toBeUndefined();
  });

  it('fails before running a stage whose dep does not exist', async () => {
    await fs.rm(path.join(root, 'in.txt'));
    const r = await run();
    expect(r.failed?.message).toBe("stage 'a': dependency 'in.txt' does not exist");
    expect(calls).toEqual([]);
  });

  it('target runs the stage and its upstream; single runs only the stage; force runs up-to-date ones', async () => {
    await run({ target: 'b' });
    expect(calls).toEqual(['a', 'b']);
    await write('in.txt', 'in2\n');
    await run({ target: 'c', single: true });
    expect(calls).toEqual(['c']); // a is stale but -s ignores upstream
    expect((await reasonsOf()).a).toEqual(['dep changed: in.txt']);
    await run({ target: 'dvc.yaml:d', force: true });
    expect(calls).toEqual(['d']);
    await expect(run({ target: 'bb' })).rejects.toThrow("unknown stage 'bb' (did you mean 'b'?)");
  });

  it('records runs in dvc.lock and removes the old .tagseg/lock.json', async () => {
    await fs.mkdir(path.join(root, '.tagseg'));
    await write('.tagseg/lock.json', '{"version": 1, "stages": {}, "hashes": {}}');
    await run({ target: 'a' });
    await expect(fs.access(path.join(root, '.tagseg/lock.json'))).rejects.toThrow();
    expect([...(await readDvcLock(root)).keys()]).toEqual(['a']);
  });

  it('dry run reports what would run and changes nothing', async () => {
    const r = await run({ dryRun: true });
    expect(r.ran).toEqual(['a', 'b', 'c', 'd']);
    expect(r.stages.every((s) => s.action === 'would run')).toBe(true);
    expect(calls).toEqual([]);
    await expect(fs.access(path.join(root, DVC_LOCK))).rejects.toThrow();
    await expect(fs.access(path.join(root, '.tagseg'))).rejects.toThrow();
  });

  it('deletes outputs before running unless persist: true', async () => {
    await write(
      'dvc.yaml',
      `stages:
  p:
    cmd: sh -c 'echo x >> log.txt && echo x >> fresh.txt'
    outs:
      - log.txt:
          persist: true
      - fresh.txt
`,
    );
    await run();
    await run({ force: true });
    expect(await read('log.txt')).toBe('x\nx\n');
    expect(await read('fresh.txt')).toBe('x\n');
  });

  it('hashes directories by content as DVC does: dot-files count, .git/.dvc folders do not', async () => {
    await run();
    await fs.mkdir(path.join(root, 'd_in/.git'));
    await write('d_in/.git/HEAD', 'x');
    expect((await reasonsOf()).d).toEqual([]);
    await write('d_in/.two.tmp', 'temp');
    expect((await reasonsOf()).d).toEqual(['dep changed: d_in']);
    await fs.rm(path.join(root, 'd_in/.two.tmp'));
    expect((await reasonsOf()).d).toEqual([]);
    await write('d_in/two', '2');
    expect((await reasonsOf()).d).toEqual(['dep changed: d_in']);
    await run();
    expect(calls).toEqual(['d']);
    expect(await read('d.txt')).toBe('one\ntwo\n');
  });

  it('reuses cached file hashes while size and mtime are unchanged', async () => {
    await run();
    const cacheFile = '.tagseg/hash-cache.json';
    const cache = JSON.parse(await read(cacheFile)) as { files: Record<string, { md5: string }> };
    expect(cache.files['in.txt']?.md5).toMatch(/^[0-9a-f]{32}$/);
    // Corrupt the cached hash: a runner that re-read the file would not notice.
    cache.files['in.txt']!.md5 = '0'.repeat(32);
    await write(cacheFile, JSON.stringify(cache));
    expect((await reasonsOf()).a).toEqual(['dep changed: in.txt']);
  });

  it('refuses to run while another repro holds the project', async () => {
    await fs.mkdir(path.join(root, '.tagseg'), { recursive: true });
    await write('.tagseg/repro.pid', String(process.pid));
    await expect(run()).rejects.toThrow(/another repro is running/);
    await fs.rm(path.join(root, '.tagseg/repro.pid'));
    await write('.tagseg/repro.pid', '999999999'); // a pid that cannot exist: taken over
    expect((await run()).ok).toBe(true);
  });

  it('runs commands with the project root as cwd and the environment passed through', async () => {
    process.env.TAGSEG_TEST_VALUE = 'from-env';
    try {
      await write('dvc.yaml', `stages:\n  e:\n    cmd: sh -c 'pwd > where.txt && echo $TAGSEG_TEST_VALUE >> where.txt'\n    outs: [where.txt]\n`);
      await repro(root, {}); // the default runner
      const [where, value] = (await read('where.txt')).trim().split('\n');
      expect(await fs.realpath(where!)).toBe(await fs.realpath(root));
      expect(value).toBe('from-env');
    } finally {
      delete process.env.TAGSEG_TEST_VALUE;
    }
  });
});

describe('graph checks', () => {
  const stages = (yaml: string): DvcStage[] => parseDvcYaml(yaml, defaultParams()).stages;

  it('orders by data flow, ties broken by dvc.yaml order', () => {
    const dag = buildDag(
      stages(`stages:
  late: {cmd: x, deps: [mid.txt], outs: [late.txt]}
  first: {cmd: x, outs: [first.txt]}
  mid: {cmd: x, deps: [first.txt], outs: [mid.txt]}
  other: {cmd: x, outs: [other.txt]}
`),
    );
    expect(dag.stages.map((s) => s.name)).toEqual(['first', 'mid', 'late', 'other']);
    expect(dag.upstream.get('late')).toEqual(['mid']);
    expect(dag.downstream.get('first')).toEqual(['mid']);
  });

  it('links a dep inside an output directory and an output inside a dep directory', () => {
    const dag = buildDag(
      stages(`stages:
  gen: {cmd: x, outs: [data/gen]}
  useFile: {cmd: x, deps: [data/gen/one.png], outs: [u.txt]}
  useDir: {cmd: x, deps: [data], outs: [v.txt]}
  unrelated: {cmd: x, deps: [data/general], outs: [w.txt]}
`),
    );
    expect(dag.upstream.get('useFile')).toEqual(['gen']);
    expect(dag.upstream.get('useDir')).toEqual(['gen']);
    expect(dag.upstream.get('unrelated')).toEqual([]); // data/general is not inside data/gen
  });

  it('detects cycles and names them', () => {
    const err = (() => {
      try {
        buildDag(stages('stages:\n  p: {cmd: x, deps: [q.txt], outs: [p.txt]}\n  q: {cmd: x, deps: [p.txt], outs: [q.txt]}\n'));
      } catch (e) {
        return e as TagsegError;
      }
      return undefined;
    })();
    expect(err).toBeInstanceOf(TagsegError);
    expect(err!.message).toBe('dvc.yaml: cycle: p -> q -> p');
    expect(() => buildDag(stages('stages:\n  s: {cmd: x, deps: [o/in], outs: [o]}\n'))).toThrow(/cycle: stage 's' depends on its own output 'o'/);
  });

  it('rejects two stages writing the same or nested paths', () => {
    expect(() => buildDag(stages('stages:\n  p: {cmd: x, outs: [o.txt]}\n  q: {cmd: x, metrics: [o.txt]}\n'))).toThrow(
      "dvc.yaml: output 'o.txt' is duplicated: stages 'p' and 'q' both write it",
    );
    expect(() => buildDag(stages('stages:\n  p: {cmd: x, outs: [out]}\n  q: {cmd: x, outs: [out/sub.txt]}\n'))).toThrow(
      "overlapping outputs: 'out/sub.txt' (stage 'q') lies inside 'out' (stage 'p')",
    );
    // Siblings with a common prefix do not overlap.
    expect(() => buildDag(stages('stages:\n  p: {cmd: x, outs: [out]}\n  q: {cmd: x, outs: [out2]}\n'))).not.toThrow();
  });
});

describe('dvc.yaml templating and checks', () => {
  const parse = (yaml: string) => parseDvcYaml(yaml, defaultParams());

  it('replaces ${} in cmd, deps, outs, metrics and params from params.yaml', () => {
    const [s] = parse(`stages:
  t:
    cmd: run --size \${ingest.size} --first \${synth.out}
    deps:
      - \${dataset.root}/x
    outs:
      - \${synth.out}/out
    metrics:
      - m/\${seed}.json:
          cache: false
`).stages;
    expect(s!.cmd).toBe('run --size 128 --first datasets/synthetic');
    expect(s!.deps).toEqual(['datasets/synthetic/x']);
    expect(s!.outs).toEqual([{ path: 'datasets/synthetic/out', cache: true, persist: false }]);
    expect(s!.metrics).toEqual([{ path: 'm/0.json', cache: false, persist: false }]);
  });

  it('expands a mapping in cmd to --key value flags, as DVC does', () => {
    const vars = { ...defaultParams(), opt: { lr: 0.5, name: 'a b', tags: ['x', 'y'], on: true, off: false, nested: { k: 1 } } };
    const [s] = parseDvcYaml("stages:\n  t:\n    cmd: train ${opt} \\${literal}\n", vars).stages;
    expect(s!.cmd).toBe("train --lr 0.5 --name 'a b' --tags x y --on --nested.k 1 ${literal}");
  });

  it('names dvc.yaml and the stage for an unknown ${key}', () => {
    expect(() => parse('stages:\n  t:\n    cmd: run ${ingest.sise}\n')).toThrow(
      "dvc.yaml: stage 't': cmd: unknown variable '${ingest.sise}' (did you mean 'ingest.size'?)",
    );
    expect(() => parse('stages:\n  t:\n    cmd: run\n    deps:\n      - ${nothing.here}\n')).toThrow(/dvc.yaml: stage 't': deps: unknown variable/);
    expect(() => parse('stages:\n  t:\n    cmd: run\n    outs:\n      - ${ingest}\n')).toThrow(/only cmd can expand mappings/);
    expect(() => parse('stages:\n  t:\n    cmd: run ${dataset.splits}\n')).toThrow(/cannot interpolate the list/);
  });

  it('checks params keys and accepts only params.yaml as a params file', () => {
    expect(parse('stages:\n  t:\n    cmd: x\n    params: [seed, {params.yaml: [ingest.size]}]\n').stages[0]!.params).toEqual(['seed', 'ingest.size']);
    expect(() => parse('stages:\n  t:\n    cmd: x\n    params: [ingest.sise]\n')).toThrow("param 'ingest.sise' is not in params.yaml");
    expect(() => parse('stages:\n  t:\n    cmd: x\n    params: [{other.yaml: [lr]}]\n')).toThrow(
      "stage 't': params from 'other.yaml' are not supported",
    );
  });

  it('expands foreach (list, list of mappings, mapping, ${param}) and matrix stages as DVC names them', () => {
    const names = (y: string) => parse(y).stages.map((s) => `${s.name}: ${s.cmd}`);
    expect(names('stages:\n  s:\n    foreach: [a, 1.0, true]\n    do: {cmd: "echo ${item}"}\n')).toEqual(['s@a: echo a', 's@1.0: echo 1.0', 's@true: echo true']);
    expect(names('stages:\n  s:\n    foreach: [{n: x}, {n: y}]\n    do: {cmd: "echo ${item.n}"}\n')).toEqual(['s@0: echo x', 's@1: echo y']);
    expect(names('stages:\n  s:\n    foreach: {us: 1, uk: 2}\n    do: {cmd: "echo ${key} ${item}"}\n')).toEqual(['s@us: echo us 1', 's@uk: echo uk 2']);
    const fromParams = parseDvcYaml('stages:\n  s:\n    foreach: ${xs}\n    do: {cmd: "echo ${item}"}\n', parsePy('xs: [1.0, 0.5]\n', 'p') as PyMap);
    expect(fromParams.stages.map((s) => `${s.name}: ${s.cmd}`)).toEqual(['s@1.0: echo 1.0', 's@0.5: echo 0.5']); // Python's str(1.0)
    expect(names('stages:\n  g:\n    matrix: {m: [x], l: [[1, 2], [3]]}\n    cmd: "echo ${item.m}"\n')).toEqual(['g@x-l0: echo x', 'g@x-l1: echo x']);
  });

  it('rejects what the runner cannot honour', () => {
    expect(() => parse('stages:\n  t:\n    cmd: x\n    dep: [a]\n')).toThrow("unknown field 'dep' (did you mean 'deps'?)");
    expect(() => parse('stages:\n  t:\n    outs: [a]\n')).toThrow('`cmd` is required');
    expect(() => parse('stages:\n  t:\n    cmd: x\n    outs: [../outside]\n')).toThrow('must be a path inside the project');
    expect(() => parse('stages:\n  t:\n    foreach: [1, 2]\n    matrix: {a: [1]}\n    do: {cmd: x}\n')).toThrow('both `foreach` and `matrix`');
    expect(() => parse('stages:\n  t:\n    foreach: [1, 1]\n    do: {cmd: x}\n')).toThrow("generates 't@1' twice");
  });
});

describe('dvc bridge', () => {
  it('dvcAvailable/dvcRepro use the dvc found on PATH and pass its exit code through', async () => {
    const bin = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-fakedvc-'));
    const savedPath = process.env.PATH;
    try {
      process.env.PATH = bin; // no dvc at all
      expect(await dvcAvailable()).toBe(false);
      await fs.writeFile(
        path.join(bin, 'dvc'),
        `#!/bin/sh\nif [ "$1" = "--version" ]; then echo 3.0.0; exit 0; fi\necho "$@" > "${bin}/args.txt"\nexit 7\n`,
        { mode: 0o755 },
      );
      process.env.PATH = `${bin}:${savedPath}`;
      expect(await dvcAvailable()).toBe(true);
      expect(await dvcRepro(['--dry', 'ingest'])).toBe(7);
      expect((await fs.readFile(path.join(bin, 'args.txt'), 'utf8')).trim()).toBe('repro --dry ingest');
    } finally {
      process.env.PATH = savedPath;
      await fs.rm(bin, { recursive: true, force: true });
    }
  });
});
