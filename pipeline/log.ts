import cliProgress from 'cli-progress';

/**
 * Logging and progress for long work. Progress bars go to stderr and only when it is a TTY
 * (DVC logs and CI stay readable); otherwise a line every ~10% is printed instead.
 */
export interface Progress {
  tick(n?: number, payload?: Record<string, string | number>): void;
  stop(): void;
}

let quiet = false;
export function setQuiet(q: boolean): void {
  quiet = q;
}

export const log = {
  info(msg: string): void {
    if (!quiet) process.stderr.write(`${msg}\n`);
  },
  warn(msg: string): void {
    process.stderr.write(`warning: ${msg}\n`);
  },
};

/**
 * A progress bar over `total` units. `fields` names payload values shown after the bar
 * (e.g. loss, img/s), updated through `tick(n, { loss: 0.31 })`.
 */
export function progress(label: string, total: number, fields: string[] = []): Progress {
  const start = Date.now();
  let done = 0;
  if (quiet) return { tick: () => undefined, stop: () => undefined };
  const fmt = (v: string | number | undefined) =>
    typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toPrecision(4)) : (v ?? '-');
  const fmtPayload = (p: Record<string, string | number>) => fields.map((f) => `${f} ${fmt(p[f])}`).join('  ');
  if (!process.stderr.isTTY) {
    let nextPct = 10;
    let payload: Record<string, string | number> = {};
    return {
      tick(n = 1, p) {
        done += n;
        if (p) payload = { ...payload, ...p };
        const pct = total > 0 ? (100 * done) / total : 100;
        if (pct >= nextPct || done === total) {
          const rate = done / Math.max(1e-3, (Date.now() - start) / 1000);
          process.stderr.write(`${label}: ${done}/${total} (${pct.toFixed(0)}%) ${rate.toFixed(1)}/s ${fmtPayload(payload)}\n`);
          while (nextPct <= pct) nextPct += 10;
        }
      },
      stop() {},
    };
  }
  const bar = new cliProgress.SingleBar(
    {
      format: `${label} [{bar}] {value}/{total} {percentage}% {rate}/s eta {eta_formatted} {extra}`,
      stream: process.stderr,
      hideCursor: true,
    },
    cliProgress.Presets.shades_classic,
  );
  bar.start(total, 0, { rate: '0.0', extra: '' });
  let payload: Record<string, string | number> = {};
  return {
    tick(n = 1, p) {
      done += n;
      if (p) payload = { ...payload, ...p };
      const rate = done / Math.max(1e-3, (Date.now() - start) / 1000);
      bar.update(done, { rate: rate.toFixed(1), extra: fmtPayload(payload) });
    },
    stop() {
      bar.stop();
    },
  };
}
