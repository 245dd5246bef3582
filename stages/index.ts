/**
 * Every stage tagseg can run, in pipeline order. Adding a stage = a folder under stages/
 * exporting `stage`, an entry here, and its entry in dvc.yaml (a test checks they agree).
 */
import type { Stage } from '../pipeline/stage.js';
import { stage as affinity } from './affinity/index.js';
import { stage as audit } from './audit/index.js';
import { stage as cam } from './cam/index.js';
import { stage as contrast } from './contrast/index.js';
import { stage as ingest } from './ingest/index.js';
import { stage as refine } from './refine/index.js';
import { stage as segment } from './segment/index.js';

export const STAGES: Stage[] = [ingest, cam, affinity, contrast, refine, segment, audit];

export function findStage(name: string): Stage | undefined {
  return STAGES.find((s) => s.name === name);
}
