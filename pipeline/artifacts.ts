/**
 * Every file or folder a stage hands to another stage or to the user, named once: stages import
 * a path from here instead of retyping it, their io() is built from it, and a test checks
 * dvc.yaml's outs/metrics/plots and each io() against this table (test/pipeline/artifacts.test.ts).
 * Paths are relative to the project root. This module imports nothing, so it adds no code dep.
 */
export type ArtifactKind = 'table' | 'model' | 'dir' | 'metrics' | 'plots';

export interface Artifact {
  path: string;
  /** The stage that writes it (dvc.yaml stage name). */
  stage: string;
  kind: ArtifactKind;
  /**
   * A table's columns: `<module>#<export>`, a ColumnSpec[] or a function of the stored dtype
   * returning one. Named, not imported, so this module adds no code dep; the e2e pipeline test
   * checks every written table against it (test/e2e/pipeline.test.ts).
   */
  schema?: string;
}

export const ARTIFACTS = {
  dataset: { path: 'cache/dataset.arrow', stage: 'ingest', kind: 'table', schema: 'stages/ingest/tables.ts#DATASET_COLUMNS' },
  images: { path: 'cache/images.arrow', stage: 'ingest', kind: 'table', schema: 'stages/ingest/tables.ts#IMAGES_COLUMNS' },
  ingestMetrics: { path: 'metrics/ingest.json', stage: 'ingest', kind: 'metrics' },

  camModel: { path: 'models/cam', stage: 'cam_train', kind: 'model' },
  camTrainMetrics: { path: 'metrics/cam_train.json', stage: 'cam_train', kind: 'metrics' },
  camLossPlot: { path: 'plots/cam_loss.json', stage: 'cam_train', kind: 'plots' },
  cams: { path: 'cache/cams.arrow', stage: 'cam', kind: 'table', schema: 'maps/cams_table.ts#camColumns' },
  camMetrics: { path: 'metrics/cam.json', stage: 'cam', kind: 'metrics' },
  camThresholdPlot: { path: 'plots/cam_threshold.json', stage: 'cam', kind: 'plots' },
  camClassesPlot: { path: 'plots/cam_classes.json', stage: 'cam', kind: 'plots' },

  affinityModel: { path: 'models/affinity', stage: 'affinity_train', kind: 'model' },
  affinityTrainMetrics: { path: 'metrics/affinity_train.json', stage: 'affinity_train', kind: 'metrics' },
  affinityLossPlot: { path: 'plots/affinity_loss.json', stage: 'affinity_train', kind: 'plots' },
  affinityCams: { path: 'cache/affinity_cams.arrow', stage: 'affinity', kind: 'table', schema: 'maps/cams_table.ts#camColumns' },
  affinityMetrics: { path: 'metrics/affinity.json', stage: 'affinity', kind: 'metrics' },
  affinityClassesPlot: { path: 'plots/affinity_classes.json', stage: 'affinity', kind: 'plots' },

  contrastModel: { path: 'models/contrast', stage: 'contrast_train', kind: 'model' },
  contrastTrainMetrics: { path: 'metrics/contrast_train.json', stage: 'contrast_train', kind: 'metrics' },
  contrastLossPlot: { path: 'plots/contrast_loss.json', stage: 'contrast_train', kind: 'plots' },
  contrastCams: { path: 'cache/contrast_cams.arrow', stage: 'contrast', kind: 'table', schema: 'stages/contrast/tables.ts#contrastColumns' },
  contrastMetrics: { path: 'metrics/contrast.json', stage: 'contrast', kind: 'metrics' },
  contrastClassesPlot: { path: 'plots/contrast_classes.json', stage: 'contrast', kind: 'plots' },

  pseudoMasks: { path: 'cache/pseudo_masks.arrow', stage: 'refine', kind: 'table', schema: 'stages/refine/tables.ts#PSEUDO_MASK_COLUMNS' },
  pseudoMaskPngs: { path: 'outputs/pseudo_masks', stage: 'refine', kind: 'dir' },
  refineMetrics: { path: 'metrics/refine.json', stage: 'refine', kind: 'metrics' },
  refineClassesPlot: { path: 'plots/refine_classes.json', stage: 'refine', kind: 'plots' },

  segmentModel: { path: 'models/segment', stage: 'segment', kind: 'model' },
  segmentMetrics: { path: 'metrics/segment.json', stage: 'segment', kind: 'metrics' },
  segmentClassesPlot: { path: 'plots/segment_classes.json', stage: 'segment', kind: 'plots' },
  segmentLossPlot: { path: 'plots/segment_loss.json', stage: 'segment', kind: 'plots' },

  auditClasses: { path: 'cache/audit.arrow', stage: 'audit', kind: 'table', schema: 'stages/audit/columns.ts#AUDIT_CLASS_COLUMNS' },
  auditMeasures: { path: 'cache/audit_measures.arrow', stage: 'audit', kind: 'table', schema: 'stages/audit/columns.ts#AUDIT_MEASURE_COLUMNS' },
  auditOverlays: { path: 'cache/audit_overlays', stage: 'audit', kind: 'dir' },
  auditImages: { path: 'cache/audit_images.arrow', stage: 'audit_report', kind: 'table', schema: 'stages/audit/columns.ts#AUDIT_IMAGE_COLUMNS' },
  auditReport: { path: 'reports/audit', stage: 'audit_report', kind: 'dir' },
  auditMetrics: { path: 'metrics/audit.json', stage: 'audit_report', kind: 'metrics' },
  auditClassesPlot: { path: 'plots/audit_classes.json', stage: 'audit_report', kind: 'plots' },
} as const satisfies Record<string, Artifact>;

export type ArtifactName = keyof typeof ARTIFACTS;

/** The path of an artifact, by name. */
export function artifact<N extends ArtifactName>(name: N): (typeof ARTIFACTS)[N]['path'] {
  return ARTIFACTS[name].path;
}

/** The artifacts a stage writes, by kind. */
export function artifactsOf(stage: string, kind?: ArtifactKind): string[] {
  return Object.values(ARTIFACTS as Record<string, Artifact>).filter((a) => a.stage === stage && (kind === undefined || a.kind === kind)).map((a) => a.path);
}
