import { writeFileAtomic } from './fsutil.js';

/** DVC metrics file: pretty JSON, written atomically, numbers rounded to 4 decimals for stable diffs. */
export async function writeJsonMetrics(file: string, data: unknown): Promise<void> {
  const text = JSON.stringify(data, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 1e4) / 1e4 : v), 2);
  await writeFileAtomic(file, `${text}\n`);
}
