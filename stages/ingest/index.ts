/**
 * Stage `ingest`: the first node of the DAG. params.yaml `dataset` + `ingest` in ->
 * cache/dataset.arrow + cache/images.arrow + metrics/ingest.json out.
 */
import { writeJsonMetrics } from '../../pipeline/metrics_file.js';
import { paramsHash } from '../../pipeline/params.js';
import type { Stage } from '../../pipeline/stage.js';
import { INGEST_OUTPUTS, formatIngest, ingestDataset } from './ingest.js';

const PARAMS = ['seed', 'dataset', 'ingest'];

export const stage: Stage = {
  name: 'ingest',
  summary: 'dataset (VOC layout or images + CSV) -> cache/dataset.arrow + cache/images.arrow',
  io: (p) => ({
    reads: [p.dataset.root],
    writes: [INGEST_OUTPUTS.dataset, INGEST_OUTPUTS.images],
    metrics: [INGEST_OUTPUTS.metrics],
    plots: [],
    params: PARAMS,
  }),
  async run(ctx) {
    const p = ctx.params;
    const r = await ingestDataset({
      root: ctx.path(p.dataset.root),
      format: p.dataset.format,
      csv: p.dataset.csv,
      splits: p.dataset.splits,
      size: p.ingest.size,
      concurrency: p.ingest.concurrency,
      onError: p.ingest.on_error,
      datasetTable: ctx.path(INGEST_OUTPUTS.dataset),
      imagesTable: ctx.path(INGEST_OUTPUTS.images),
      paramsHash: paramsHash(p, PARAMS),
    });
    // Timing and RSS vary run to run: kept out of the DVC metrics file so `dvc metrics diff` shows data changes only.
    const { seconds: _s, imagesPerSecond: _r, peakRssMiB: _m, ...stable } = r;
    await writeJsonMetrics(ctx.path(INGEST_OUTPUTS.metrics), { ...stable, skipped: r.skipped.length, skippedItems: r.skipped });
    if (!ctx.json) process.stderr.write(`${formatIngest(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};
