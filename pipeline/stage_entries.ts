/**
 * The module of each pipeline stage, in pipeline order: the one registration of a stage.
 * stages/index.ts imports a stage's module from here (only when it runs), and a stage's code deps
 * start at it (pipeline/code_closure.ts). A train stage and its map stage share their algorithm's
 * folder. This module imports nothing, so the dispatcher loads no stage or tool by reading it.
 */
export const STAGE_ENTRIES: Record<string, string> = {
  ingest: 'stages/ingest/index.ts',
  cam_train: 'stages/cam/train_stage.ts',
  cam: 'stages/cam/index.ts',
  affinity_train: 'stages/affinity/train_stage.ts',
  affinity: 'stages/affinity/index.ts',
  contrast_train: 'stages/contrast/train_stage.ts',
  contrast: 'stages/contrast/index.ts',
  refine: 'stages/refine/index.ts',
  segment: 'stages/segment/index.ts',
  audit: 'stages/audit/index.ts',
  audit_report: 'stages/audit/report_stage.ts',
};
