import { readFileSync } from 'node:fs';

/** Under CI (CI=true, as CI services set it) a test never skips for a missing tool: it fails. */
export const IN_CI = ['true', '1'].includes((process.env.CI ?? '').toLowerCase());

/** The tests allowed to skip under CI: those needing a GPU, by full name (one list, test/gpu_tests.json). */
export const GPU_TESTS: string[] = (JSON.parse(readFileSync(new URL('../gpu_tests.json', import.meta.url), 'utf8')) as { tests: string[] }).tests;

/**
 * Whether tests needing `what` must skip, given `missing` (why it is unavailable; undefined when it
 * is there). Locally they skip with the reason printed; under CI=true this throws, failing the file.
 */
export function skipWithout(what: string, missing: string | undefined): boolean {
  if (missing === undefined) return false;
  if (IN_CI) throw new Error(`CI=true and ${what} is missing: ${missing}. .ci/run installs it; under CI this test never skips.`);
  process.stdout.write(`skipping the ${what} tests: ${missing}\n`);
  return true;
}
