#!/usr/bin/env node
// Optional Python side of the test suite: a venv at .cache/py with pyarrow + duckdb + numpy (the README's Python snippet), used by
// test/pipeline/arrow.python.test.ts to prove our Arrow files are readable outside arrow-js.
// Locally it never fails the caller: without python3 or a reachable package index the python tests
// skip (and say why), so this script prints a notice and exits 0. Under CI=true those tests must
// run, so a venv it cannot set up is an error (exit 1).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import process from 'node:process';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const venv = join(root, '.cache', 'py');
const py = join(venv, 'bin', 'python');
const shown = relative(root, venv);

/** Runs quietly; returns stderr's last line on failure so the notice says what went wrong. */
function run(cmd, args) {
  const r = spawnSync(cmd, args, { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  if (r.error) return { ok: false, why: r.error.message };
  const lastLine = (r.stderr || r.stdout || '').trim().split('\n').pop() ?? '';
  return { ok: r.status === 0, why: lastLine || `exit ${r.status}` };
}

const inCi = ['true', '1'].includes((process.env.CI ?? '').toLowerCase());

function done(line) {
  process.stdout.write(`python-env: ${line}\n`);
  process.exit(0);
}

/** A setup failure: a notice locally (the python tests skip), an error under CI. */
function failed(line) {
  if (!inCi) done(`${line}; python tests will skip`);
  process.stderr.write(`python-env: ${line}\nCI=true: the python tests must run (install python3 and python3-venv, and let pip reach its index)\n`);
  process.exit(1);
}

if (existsSync(py) && run(py, ['-c', 'import pyarrow, duckdb, numpy']).ok) {
  done(`${shown} already has pyarrow, duckdb and numpy`);
}
if (!existsSync(py)) {
  const made = run('python3', ['-m', 'venv', venv]);
  if (!made.ok) failed(`could not create ${shown} (python3 -m venv: ${made.why})`);
}
const pip = run(py, ['-m', 'pip', 'install', '-q', 'pyarrow', 'duckdb', 'numpy']);
if (!pip.ok) failed(`pip install pyarrow duckdb numpy into ${shown} failed (${pip.why})`);
if (!run(py, ['-c', 'import pyarrow, duckdb, numpy']).ok) failed(`${shown} still cannot import pyarrow, duckdb and numpy after pip install`);
done(`installed pyarrow, duckdb and numpy into ${shown}`);
