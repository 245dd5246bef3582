import { readFileSync } from 'node:fs';

let cached: string | undefined;

/** tagseg's version from package.json (stamped into every Arrow table and metrics file). */
export function tagsegVersion(): string {
  cached ??= (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  return cached;
}
