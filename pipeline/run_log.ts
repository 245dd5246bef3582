/**
 * The run log: `.tagseg/runs/<stage>.json` (git-ignored, never a DVC output), the statistics of a
 * stage's last run -- wall seconds, peak RSS, threads, the stage's whole summary with its timings.
 * Tracked metrics must be a pure function of deps + params, so everything that depends on the
 * machine or the clock goes here instead.
 */
import { availableParallelism, hostname } from 'node:os';
import * as path from 'node:path';
import { writeFileAtomic } from './fsutil.js';

export const RUN_LOG_DIR = '.tagseg/runs';

export function runLogPath(root: string, stage: string): string {
  return path.join(root, RUN_LOG_DIR, `${stage}.json`);
}

export async function writeRunLog(root: string, stage: string, seconds: number, summary: Record<string, unknown>): Promise<void> {
  const entry = {
    stage,
    finished: new Date().toISOString(),
    seconds,
    peak_rss_mib: Math.round(process.resourceUsage().maxRSS / 1024),
    cores: availableParallelism(),
    host: hostname(),
    node: process.version,
    summary,
  };
  await writeFileAtomic(runLogPath(root, stage), `${JSON.stringify(entry, null, 1)}\n`);
}
