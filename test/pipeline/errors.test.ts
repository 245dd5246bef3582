/**
 * Every user-caused failure is a TagsegError saying what failed, on which file or key, and what to
 * do, printed without a stack unless --debug: file-system errors (EACCES, ENOSPC, EROFS), `tagseg
 * workspace` on a file, a NaN loss, a classes.json with a bad key, an output folder that cannot be
 * written (found before any training).
 */
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readClassesFile } from '../../data/manifest.js';
import { generateSynthetic } from '../../data/synth.js';
import type { Optimizer } from '../../nn/optim.js';
import { runTraining } from '../../nn/loop.js';
import { NonFiniteLossError } from '../../nn/train.js';
import { TagsegError, formatError, fsError } from '../../pipeline/errors.js';
import { loadParams } from '../../stages/params.js';
import { runStages } from '../../stages/index.js';
import { REPO_ROOT, createWorkspace } from '../../cli/workspace.js';

const TAGSEG = path.join(REPO_ROOT, 'bin/tagseg.js');
let tmp: string;
beforeAll(async () => {
  tmp = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-errors-'));
});
afterAll(async () => {
  await fs.rm(tmp, { recursive: true, force: true });
});

/** A Node file-system error as fs raises it (code, errno, syscall, path). */
function sysError(code: string, errno: number, syscall: string, file: string): NodeJS.ErrnoException {
  return Object.assign(new Error(`${code}: ${syscall} '${file}'`), { code, errno, syscall, path: file });
}

describe('file-system errors as TagsegErrors', () => {
  it.each([
    ['EACCES', -13, /permission denied \[EACCES\]/, /writable by this user/],
    ['ENOSPC', -28, /no space left on the device \[ENOSPC\]/, /free disk space/],
    ['EROFS', -30, /the file system is read-only \[EROFS\]/, /writable folder/],
  ])('%s names the file, the cause and what to do', (code, errno, what, hint) => {
    const e = fsError(sysError(code, errno, 'open', '/p/cache/.cams.arrow.ab12.tmp'), 'could not write table', '/p/cache/cams.arrow');
    expect(e).toBeInstanceOf(TagsegError);
    expect(e.file).toBe('/p/cache/cams.arrow');
    expect(e.message).toMatch(what);
    expect(e.message).toContain(`[${code}] (at /p/cache/.cams.arrow.ab12.tmp)`);
    expect(e.hint).toMatch(hint);
  });

  it('the CLI prints a user error without a stack, --debug adds it; a bug keeps "unexpected error" and its stack', async () => {
    // A real ENOSPC, not a hand-made one: /dev/full refuses every write.
    const enospc = await fs.writeFile('/dev/full', 'x').then(() => null, (e: unknown) => e);
    const plain = formatError(enospc, false);
    expect(plain).toBe('tagseg: file-system error: no space left on the device [ENOSPC]\n  hint: free disk space (df -h) and rerun; a stage keeps its previous outputs\n');
    expect(plain).not.toMatch(/\n\s+at /);
    expect(formatError(enospc, true)).toMatch(/\n\s+at /);
    const user = formatError(new TagsegError('bad', { file: 'x.json' }), false);
    expect(user).toBe('tagseg: x.json: bad\n');
    const bug = formatError(new TypeError('oops'), false);
    expect(bug).toMatch(/^tagseg: unexpected error: oops\nTypeError: oops\n\s+at /);
  });
});

describe('user errors named', () => {
  it('tagseg workspace on an existing file (and on a folder holding project files)', async () => {
    const file = path.join(tmp, 'afile');
    await fs.writeFile(file, 'x');
    await expect(createWorkspace(file)).rejects.toThrow(new TagsegError('exists and is not a folder', { file, hint: 'give `tagseg workspace` a new folder name (or an existing empty folder)' }));
    const r = await execa('node', [TAGSEG, 'workspace', file], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toBe(`tagseg: ${file}: exists and is not a folder\n  hint: give \`tagseg workspace\` a new folder name (or an existing empty folder)`);
    const full = path.join(tmp, 'full');
    await fs.mkdir(path.join(full, 'bin'), { recursive: true });
    await expect(createWorkspace(full)).rejects.toThrow(/is not empty: bin would be overwritten/);
  });

  it('a NaN or infinite loss names the stage, epoch and iteration, and suggests lowering its lr', async () => {
    for (const bad of [Number.NaN, Number.POSITIVE_INFINITY]) {
      let iter = 0;
      const err = await runTraining({
        name: 'cam', size: 8, batchSize: 4, epochs: 3, lr: 0.01, optimizer: { lr: 0 } as unknown as Optimizer,
        variables: new Map(), meta: {}, checkpointDir: path.join(tmp, 'none'), hash: 'h', seed: 1,
        step: () => (++iter === 2 ? bad : 1),
      }).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(TagsegError);
      expect((err as TagsegError).message).toContain(`stage 'cam': the training loss is not finite: loss is ${bad} at epoch 1, iteration 1 (of 3 epochs)`);
      expect((err as TagsegError).hint).toBe('lower cam.lr in params.yaml (now 0.01), e.g. --set cam.lr=0.001');
    }
    // The stages' steps call trainStep, which throws before returning a NaN: the same message.
    const viaStep = await runTraining({
      name: 'segment', size: 4, batchSize: 4, epochs: 2, lr: 0.5, optimizer: { lr: 0 } as unknown as Optimizer,
      variables: new Map(), meta: {}, checkpointDir: path.join(tmp, 'none'), hash: 'h', seed: 1,
      step: () => { throw new NonFiniteLossError(Number.NaN, 0); },
    }).then(() => null, (e: unknown) => e);
    expect((viaStep as TagsegError).message).toContain("stage 'segment': the training loss is not finite: loss is NaN at epoch 1, iteration 0 (of 2 epochs)");
    expect((viaStep as TagsegError).hint).toMatch(/^lower segment\.lr in params\.yaml \(now 0\.5\)/);
  });

  it('a classes.json with an unknown or mistyped key names the key', async () => {
    const file = path.join(tmp, 'classes.json');
    await fs.writeFile(file, JSON.stringify({ classes: ['bg', 'cat'], backgound: 0 }));
    await expect(readClassesFile(file)).rejects.toThrow(new TagsegError("unknown key 'backgound' (did you mean 'background'?)", { file, hint: 'a classes file has the keys classes, void, background' }));
    await fs.writeFile(file, JSON.stringify({ classes: ['bg', 'cat'], void: 'x' }));
    await expect(readClassesFile(file)).rejects.toThrow(/invalid classes file \(key 'void': /);
    await fs.writeFile(file, JSON.stringify({ classes: ['bg', 'cat'], background: 0, void: 255 }));
    await expect(readClassesFile(file)).resolves.toMatchObject({ classes: ['bg', 'cat'], background: 0, void: 255 });
  });
});

describe('outputs checked before a stage starts', () => {
  let root: string;
  beforeAll(async () => {
    root = await createWorkspace(path.join(tmp, 'ws'), ['synth.images=8', 'synth.size=40', 'ingest.size=32', 'cam.width=8', 'cam.epochs=1', 'cam.batch_size=4', 'cam.crop=32', 'cam.scales=[1.0]']);
    const p = await loadParams(path.join(root, 'params.yaml'));
    await generateSynthetic({ out: path.join(root, p.synth.out), images: 8, size: 40, classes: p.synth.classes, valFraction: p.synth.val_fraction, seed: p.seed });
    await runStages(root, ['ingest'], [], true);
  });

  it('a file where an output folder belongs fails before cam_train trains, naming it', async () => {
    await fs.writeFile(path.join(root, 'models'), 'in the way');
    try {
      const err = await runStages(root, ['cam_train'], [], true).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(TagsegError);
      expect((err as TagsegError).file).toBe(path.join(root, 'models'));
      expect((err as TagsegError).message).toMatch(/cannot create the folder for the outputs of stage 'cam_train'/);
      await expect(fs.access(path.join(root, 'models/cam'))).rejects.toThrow();
    } finally {
      await fs.rm(path.join(root, 'models'));
    }
  });

  it('a disk without room for outputs the size of the previous ones fails before the stage runs', async () => {
    // A sparse file: 8 TiB by its size, no blocks on disk, more than any test machine has free.
    const file = path.join(root, 'cache/dataset.arrow');
    await fs.rename(file, `${file}.keep`);
    try {
      const fh = await fs.open(file, 'w');
      await fh.truncate(8 * 2 ** 40);
      await fh.close();
      const err = await runStages(root, ['ingest'], [], true).then(() => null, (e: unknown) => e);
      expect(err).toBeInstanceOf(TagsegError);
      expect((err as TagsegError).file).toBe(path.join(root, 'cache'));
      expect((err as TagsegError).message).toMatch(/not enough free space for the outputs of stage 'ingest': [\d.]+ MiB free, its previous outputs take 838860\d\.\d MiB/);
      expect((err as TagsegError).hint).toMatch(/free disk space there/);
    } finally {
      await fs.rename(`${file}.keep`, file);
    }
  });

  it('a read-only output folder (EACCES, as an unprivileged user) fails before training: no stack, models untouched', async () => {
    // Root ignores permission bits through CAP_DAC_OVERRIDE: run the CLI as root without capabilities
    // then (still the owner of the checkout, which may sit in a folder nobody else can enter).
    const asUser = process.getuid?.() === 0 ? ['setpriv', '--inh-caps=-all', '--bounding-set=-all'] : [];
    for (const d of ['cache', 'metrics', 'plots', '.tagseg', '.tagseg/commit']) {
      await fs.mkdir(path.join(root, d), { recursive: true });
      await fs.chmod(path.join(root, d), 0o777);
    }
    await fs.mkdir(path.join(root, 'models'), { mode: 0o555 });
    await fs.chmod(path.join(root, 'models'), 0o555);
    const [cmd, ...args] = [...asUser, 'node', TAGSEG, '--root', root, 'run', 'cam_train'];
    const r = await execa(cmd, args, { reject: false, env: { HOME: tmp } });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`tagseg: ${path.join(root, 'models')}: cannot write the outputs of stage 'cam_train': permission denied [EACCES]`);
    expect(r.stderr).toContain('hint: make');
    expect(r.stderr).not.toMatch(/unexpected error|\n\s+at |train epoch/);
    expect(await fs.readdir(path.join(root, 'models'))).toEqual([]);
    const debug = await execa(cmd, [...args, '--debug'], { reject: false, env: { HOME: tmp } });
    expect(debug.stderr).toMatch(/\n\s+at /);
  }, 120_000);
});
