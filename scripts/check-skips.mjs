#!/usr/bin/env node
// CI gate: reads vitest's JSON report and fails when any test was skipped (or left todo) other than
// the GPU tests listed in test/gpu_tests.json. Usage: node scripts/check-skips.mjs <vitest-report.json>
import { readFileSync } from 'node:fs';
import process from 'node:process';
import { URL } from 'node:url';

const file = process.argv[2];
if (!file) {
  process.stderr.write('usage: node scripts/check-skips.mjs <vitest-report.json>\n');
  process.exit(2);
}
const report = JSON.parse(readFileSync(file, 'utf8'));
const allowed = new Set(JSON.parse(readFileSync(new URL('../test/gpu_tests.json', import.meta.url), 'utf8')).tests);
const results = (report.testResults ?? []).flatMap((f) => (f.assertionResults ?? []).map((t) => ({ ...t, file: f.name })));
const notRun = results.filter((t) => t.status !== 'passed' && t.status !== 'failed');
const bad = notRun.filter((t) => !allowed.has(t.fullName));
const files = new Set(results.map((t) => t.file)).size;
process.stdout.write(`check-skips: ${results.length} tests in ${files} files, ${notRun.length - bad.length} allowed GPU skips, ${bad.length} other skips\n`);
if (results.length === 0) {
  process.stderr.write(`check-skips: ${file} lists no tests\n`);
  process.exit(1);
}
for (const t of bad) process.stderr.write(`  ${t.status}: ${t.fullName} (${t.file})\n`);
if (bad.length) {
  process.stderr.write('check-skips: under CI only the GPU tests in test/gpu_tests.json may skip\n');
  process.exit(1);
}
