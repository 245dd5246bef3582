/**
 * Stage `ingest`: the first node of the DAG. params.yaml `dataset` + `ingest` in ->
 * cache/dataset.arrow + cache/images.arrow + metrics/ingest.json out.
 */
import { datasetRelative } from '../../data/manifest.js';
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
    code: ['data', 'pipeline', 'stages/ingest'],
    params: PARAMS,
  }),
  async run(ctx) {
    const p = ctx.params;
    const root = ctx.path(p.dataset.root);
    const r = await ingestDataset({
      root,
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
    // Paths as params name them (dataset.root) or relative to it: the file must not depend on the checkout's location.
    const skippedItems = r.skipped.map((s) => ({ ...s, file: datasetRelative(root, s.file) }));
    await writeJsonMetrics(ctx.path(INGEST_OUTPUTS.metrics), { ...stable, dataset: p.dataset.root, skipped: r.skipped.length, skippedItems });
    if (!ctx.json) process.stderr.write(`${formatIngest(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};
