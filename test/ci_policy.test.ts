/**
 * CI fails instead of skipping: under CI=true a missing tool is an error, and scripts/check-skips.mjs
 * fails a vitest report with any skip but the listed GPU tests.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { REPO } from './helpers/python.js';

afterEach(() => {
  vi.unstubAllEnvs();
  vi.resetModules();
});

async function loadCi(ci: string | undefined) {
  vi.stubEnv('CI', ci as string);
  vi.resetModules();
  return import('./helpers/ci.js');
}

describe('CI skip policy', () => {
  it('a missing tool skips locally (reason printed) and throws under CI=true', async () => {
    const local = await loadCi('');
    expect(local.skipWithout('thing', 'not installed')).toBe(true);
    expect(local.skipWithout('thing', undefined)).toBe(false);
    const ci = await loadCi('true');
    expect(() => ci.skipWithout('thing', 'not installed')).toThrow(/CI=true and thing is missing: not installed/);
    expect(ci.skipWithout('thing', undefined)).toBe(false);
  });

  it('check-skips passes a report without skips and fails one with a skip not in the GPU list', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'tagseg-skips-'));
    const check = async (statuses: string[]) => {
      const file = path.join(dir, 'r.json');
      const assertionResults = statuses.map((status, i) => ({ fullName: `suite t${i}`, status }));
      await fs.writeFile(file, JSON.stringify({ testResults: [{ name: 'x.test.ts', assertionResults }] }));
      return spawnSync('node', [path.join(REPO, 'scripts/check-skips.mjs'), file], { encoding: 'utf8' });
    };
    try {
      const ok = await check(['passed', 'passed']);
      expect(ok.status).toBe(0);
      expect(ok.stdout).toContain('2 tests in 1 files, 0 allowed GPU skips, 0 other skips');
      for (const s of ['skipped', 'pending', 'todo']) {
        const bad = await check(['passed', s]);
        expect(bad.status).toBe(1);
        expect(bad.stderr).toContain(`${s}: suite t1`);
      }
      expect((await check([])).status).toBe(1);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });
});
