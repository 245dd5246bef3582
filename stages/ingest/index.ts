/**
 * Stage `ingest`: the first node of the DAG. params.yaml `dataset` + `ingest` in ->
 * cache/dataset.arrow + cache/images.arrow + metrics/ingest.json out.
 */
import { log } from '../../pipeline/log.js';
import { writeJsonMetrics } from '../../pipeline/metrics_file.js';
import { editParams, paramsHash, stageSpec } from '../../pipeline/params_core.js';
import type { Stage } from '../../pipeline/stage.js';
import { DERIVED_CLASSES, INGEST_OUTPUTS, formatIngest, ingestDataset, ingestRecord } from './ingest.js';
import { sections } from './params.js';

/** The params.yaml sections a run of this stage validates (besides seed, dataset, synth). */
export { sections };

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
    const root = ctx.path(p.dataset.root);
    const r = await ingestDataset({
      root,
      format: p.dataset.format,
      csv: p.dataset.csv,
      splits: p.dataset.splits,
      size: p.ingest.size,
      concurrency: p.ingest.concurrency,
      onError: p.ingest.on_error,
      classesFile: p.dataset.classes ? ctx.path(p.dataset.classes) : undefined,
      derivedClassesFile: ctx.path(DERIVED_CLASSES),
      datasetTable: ctx.path(INGEST_OUTPUTS.dataset),
      imagesTable: ctx.path(INGEST_OUTPUTS.images),
      paramsHash: paramsHash(p, PARAMS),
    });
    // Timing, RSS and absolute paths vary run to run: kept out of the DVC metrics file (`dvc metrics diff` shows data changes only).
    await writeJsonMetrics(ctx.path(INGEST_OUTPUTS.metrics), ingestRecord(r, p.dataset.root));
    if (r.classesDerived) {
      // Later runs must keep these indices: the param now names the file (a new tag is then an unknown class).
      await editParams(stageSpec(sections), ctx.path('params.yaml'), [`dataset.classes=${DERIVED_CLASSES}`]);
      log.warn(`params.yaml: dataset.classes set to ${DERIVED_CLASSES}`);
    }
    if (!ctx.json) process.stderr.write(`${formatIngest(r)}\n`);
    return r as unknown as Record<string, unknown>;
  },
};
