import { writeFileAtomic } from './fsutil.js';

/**
 * DVC metrics or plot file: pretty JSON, written atomically, numbers rounded to 4 decimals for
 * stable diffs. Metrics hold a handful of scalars per stage (`dvc metrics show`); per-class
 * figures and curves go to plot files; run statistics to the run log (pipeline/run_log.ts).
 */
export async function writeJsonMetrics(file: string, data: unknown): Promise<void> {
  const text = JSON.stringify(data, (_k, v: unknown) => (typeof v === 'number' && !Number.isInteger(v) ? Math.round(v * 1e4) / 1e4 : v), 2);
  await writeFileAtomic(file, `${text}\n`);
}

/** One bar of a per-class plot (dvc.yaml: template bar_horizontal, x = a figure, y = label). */
export interface ClassPlotRow {
  /** `<class> <step>`: one bar per class and step. */
  label: string;
  class: string;
  step: string;
  [figure: string]: string | number | null;
}

/** Per-class figures of each step as plot rows; `figures[step][class] = {iou: .., ...}`. */
export function classPlotRows(figures: Record<string, Record<string, object> | null | undefined>): ClassPlotRow[] {
  const rows: ClassPlotRow[] = [];
  for (const [step, classes] of Object.entries(figures)) {
    for (const [cls, f] of Object.entries(classes ?? {})) rows.push({ label: `${cls} ${step}`, class: cls, step, ...(f as Record<string, number | null>) });
  }
  return rows;
}

/** Per-epoch curves as plot rows: `{epoch: 1.., <name>: value}` (dvc.yaml: x = epoch). */
export function epochPlotRows(curves: Record<string, readonly number[] | undefined>): Record<string, number>[] {
  const n = Math.max(0, ...Object.values(curves).map((c) => c?.length ?? 0));
  return Array.from({ length: n }, (_, i) => {
    const row: Record<string, number> = { epoch: i + 1 };
    for (const [name, c] of Object.entries(curves)) if (c && i < c.length) row[name] = c[i]!;
    return row;
  });
}

/**
 * What a `<x>_train` stage tracks: its headline figures plus the final loss (metrics), and the
 * loss per epoch (plot). The caller leaves timings and run-only figures out of `stable`.
 */
export async function writeTrainingMetrics(metricsFile: string, lossPlotFile: string, stable: object, losses: readonly number[]): Promise<void> {
  await writeJsonMetrics(metricsFile, { ...stable, finalLoss: losses.at(-1) ?? null });
  await writeJsonMetrics(lossPlotFile, epochPlotRows({ loss: losses }));
}

/** A map step's scores without its per-class IoU (`iou`), for a headline metrics file. */
export function headline<T extends { iou?: unknown }>(s: T): Omit<T, 'iou'>;
export function headline<T extends { iou?: unknown }>(s: T | null | undefined): Omit<T, 'iou'> | null;
export function headline<T extends { iou?: unknown }>(s: T | null | undefined): Omit<T, 'iou'> | null {
  if (!s) return null;
  const { iou: _iou, ...rest } = s;
  return rest;
}

/** `{class: iou}` from a map of per-class values (IoU maps of the stages' summaries). */
export function iouFigures(iou: Record<string, number | null> | undefined): Record<string, Record<string, number | null>> {
  return Object.fromEntries(Object.entries(iou ?? {}).map(([c, v]) => [c, { iou: v }]));
}
