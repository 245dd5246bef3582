// Module resolve hook of record_loads.mjs: records only resolutions that succeeded.
import { appendFileSync } from 'node:fs';

export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  const log = process.env.TAGSEG_LOAD_LOG;
  if (log && r.url.startsWith('file:')) appendFileSync(log, `${r.url}\n`);
  return r;
}
