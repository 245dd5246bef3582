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
    // Timing and RSS vary run to run, the dataset's absolute path with the checkout, and the skipped
    // items (file paths) are a list: all in the summary and the run log, not in the DVC metrics.
    const { seconds: _s, imagesPerSecond: _r, peakRssMiB: _m, dataset: _d, classes, skipped, ...stable } = r;
    await writeJsonMetrics(ctx.path(INGEST_OUTPUTS.metrics), { dataset: p.dataset.root, ...stable, classes: classes.length, skipped: skipped.length });
    if (!ctx.json) process.stderr.write(`${formatIngest(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};
