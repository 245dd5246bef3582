/**
 * dvc.lock as DVC 3.64 writes it, checked byte for byte against ../shared/dvc-fixtures/basic (a
 * project run by the real `dvc repro`, with its outputs): hashes, params, foreach/matrix stages,
 * YAML layout; and staleness against the fixture's `dvc status --json` after a param change.
 */
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { lockFromWorkspace, repro, status } from '../../cli/dag.js';
import { DvcHasher, dirListing, lockText } from '../../cli/dvclock.js';
import { setQuiet } from '../../pipeline/log.js';
import type { PyMap } from '../../cli/pyyaml.js';

const FIXTURE = path.resolve(__dirname, '../../../shared/dvc-fixtures/basic');
let root: string;

/** The fixture project with its outputs in place, writable (the fixture files are read-only). */
async function copyFixture(dest: string): Promise<void> {
  for (const f of ['dvc.yaml', 'params.yaml', 'data', 'src']) await fs.cp(path.join(FIXTURE, f), path.join(dest, f), { recursive: true });
  for (const f of ['out', 'metrics', 'plots', 'models.txt', 'shards', 'grid']) {
    await fs.cp(path.join(FIXTURE, 'outputs', f), path.join(dest, f), { recursive: true });
  }
  for (const e of await fs.readdir(dest, { recursive: true })) {
    const abs = path.join(dest, e);
    await fs.chmod(abs, (await fs.stat(abs)).isDirectory() ? 0o755 : 0o644);
  }
}

const fixtureLock = () => fs.readFile(path.join(FIXTURE, 'dvc.lock'), 'utf8');
const computedLock = async () => {
  const entries = await lockFromWorkspace(root, { validate: false });
  for (const [name, e] of entries) expect(e, `stage ${name} has all its deps and outs`).not.toBeNull();
  return lockText(entries as Map<string, PyMap>);
};

beforeAll(() => setQuiet(true));
beforeEach(async () => {
  root = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-dvclock-'));
  await copyFixture(root);
});
afterEach(async () => {
  await fs.rm(root, { recursive: true, force: true });
});

describe('dvc.lock against DVC 3.64 (fixtures/basic)', () => {
  it('the lock computed from the workspace equals the dvc.lock real DVC wrote, byte for byte', async () => {
    expect(await computedLock()).toBe(await fixtureLock());
  });

  it('hashes a directory from DVC\'s json listing: out/dir equals out-dir.dir.json', async () => {
    const listingBytes = await fs.readFile(path.join(FIXTURE, 'out-dir.dir.json'));
    const info = await new DvcHasher(root).info('out/dir');
    expect(info).toEqual({ path: 'out/dir', md5: `${createHash('md5').update(listingBytes).digest('hex')}.dir`, size: 23, nfiles: 2 });
    const entries = [
      { relpath: 'nested/b.txt', md5: '3586bc8c9933d81bde147aac45a950ed' },
      { relpath: 'a.txt', md5: '9f9f90dbe3e5ee1218c86b8839db1995' },
    ];
    expect(dirListing(entries)).toBe(listingBytes.toString('utf8'));
  });

  it('negative control: one CRLF turned into LF changes the hashes (no line-ending normalisation)', async () => {
    const file = path.join(root, 'data/images/sub/b.txt');
    const bytes = await fs.readFile(file);
    expect(bytes.includes('\r\n')).toBe(true);
    await fs.writeFile(file, bytes.toString('latin1').replace('\r\n', '\n'), 'latin1');
    const text = await computedLock();
    expect(text).not.toBe(await fixtureLock());
    expect(text).not.toContain('c5d0dbdebb04538daedc92444b06cc4f.dir');
    expect(text).toContain('size: 31'); // one byte less
  });

  it('records isexec for an executable file, as dvc-data\'s Meta does (mode & 0o111)', async () => {
    const h = new DvcHasher(root);
    expect((await h.info('src/report.sh'))?.isexec).toBeUndefined();
    await fs.chmod(path.join(root, 'src/report.sh'), 0o755);
    expect(await new DvcHasher(root).info('src/report.sh')).toEqual({ path: 'src/report.sh', md5: 'dde51ff57ef86819f47b6481e10380ee', size: 158, isexec: true });
    expect(await computedLock()).toContain('      size: 158\n      isexec: true\n');
  });

  it('expands foreach and matrix stages as DVC names them', async () => {
    const names = [...(await lockFromWorkspace(root, { validate: false })).keys()];
    expect(names).toEqual(['prepare', 'report', 'shard@0', 'shard@1', 'grid@a-1', 'grid@a-2', 'grid@b-1', 'grid@b-2']);
  });

  it('status reads the fixture dvc.lock: up to date, then train.epochs=4 matches `dvc status --json`', async () => {
    await fs.copyFile(path.join(FIXTURE, 'dvc.lock'), path.join(root, 'dvc.lock'));
    expect((await status(root, { validate: false })).filter((s) => s.stale)).toEqual([]);

    const params = path.join(root, 'params.yaml');
    await fs.writeFile(params, (await fs.readFile(params, 'utf8')).replace('epochs: 3', 'epochs: 4'));
    const st = await status(root, { validate: false });
    const dvcJson = Object.fromEntries(st.filter((s) => s.dvc.length).map((s) => [s.name, s.dvc]));
    expect(dvcJson).toEqual(JSON.parse(await fs.readFile(path.join(FIXTURE, 'status-after-train-epochs-4.json'), 'utf8')));
    const reasons = Object.fromEntries(st.map((s) => [s.name, s.reasons]));
    expect(reasons.prepare).toEqual(['param changed: train.epochs (3 -> 4)']);
    expect(reasons.report).toEqual(['param changed: train.epochs (3 -> 4)', 'upstream stale: prepare']);
    // shard@* read prepare's out/file.bin: tagseg reports them as possibly rerunning after it; DVC's
    // status lists only a stage's own changes, which is what `dvc` holds.
    expect(reasons['shard@0']).toEqual(['upstream stale: prepare']);
    expect(reasons['grid@a-1']).toEqual([]);
  });

  it('tagseg repro writes the same dvc.lock as DVC, and rewrites nothing when up to date', async () => {
    for (const d of ['out', 'metrics', 'plots', 'models.txt', 'shards', 'grid']) await fs.rm(path.join(root, d), { recursive: true, force: true });
    // report.sh's outputs include models.txt (persist) and the cache: false metrics and plots.
    const r = await repro(root, { validate: false });
    expect(r.ok).toBe(true);
    expect(r.ran).toHaveLength(8);
    expect(await fs.readFile(path.join(root, 'dvc.lock'), 'utf8')).toBe(await fixtureLock());
    const again = await repro(root, { validate: false });
    expect(again.ran).toEqual([]);
    await expect(fs.access(path.join(root, '.dvc'))).rejects.toThrow(); // not a DVC project: no cache
  });

  it('in a DVC project, repro puts cached outputs into .dvc/cache as DVC 3 lays it out (not cache: false ones)', async () => {
    for (const d of ['out', 'metrics', 'plots', 'models.txt', 'shards', 'grid']) await fs.rm(path.join(root, d), { recursive: true, force: true });
    await fs.mkdir(path.join(root, '.dvc'));
    await fs.writeFile(path.join(root, '.dvc/config'), '');
    expect((await repro(root, { validate: false })).ok).toBe(true);
    const obj = (md5: string) => path.join(root, '.dvc/cache/files/md5', md5.slice(0, 2), md5.slice(2));
    expect(await fs.readFile(obj('7c0127b3aafd54693bc54a3055a35b32'))).toEqual(await fs.readFile(path.join(FIXTURE, 'outputs/out/file.bin')));
    expect(await fs.readFile(obj('2af3288ffb08df75bc779c7ba9170cad.dir'), 'utf8')).toBe(await fs.readFile(path.join(FIXTURE, 'out-dir.dir.json'), 'utf8'));
    expect(await fs.readFile(obj('3586bc8c9933d81bde147aac45a950ed'))).toEqual(await fs.readFile(path.join(FIXTURE, 'outputs/out/dir/nested/b.txt')));
    expect(await fs.readFile(obj('678e5e019a79526d0fcca5e29f6e5f78'), 'utf8')).toBe('done\n'); // models.txt
    await expect(fs.access(obj('483be52ddfe54ccdac34c8049d12f4be'))).rejects.toThrow(); // metrics/report.json: cache: false
    expect(((await fs.stat(obj('7c0127b3aafd54693bc54a3055a35b32'))).mode & 0o222)).toBe(0); // read-only, as DVC keeps it
  });
});
