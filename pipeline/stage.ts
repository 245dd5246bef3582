/**
 * The contract every pipeline stage implements. `tagseg run <name>` and the `cmd` that
 * dvc.yaml runs for the stage call the same `run`. A stage reads only the files it declares
 * in `io(params).reads` and writes only those in `writes`/`metrics`/`plots`; a test checks
 * dvc.yaml's deps/outs against these declarations, and its code deps against the imports.
 */
import type { Params } from '../stages/params.js';
import type { Shard } from './shard.js';

export interface StageIO {
  /**
   * Data inputs (files or directories), relative to the project root. Code deps are not declared:
   * cli/code_deps.ts derives them from the imports.
   */
  reads: string[];
  /** Outputs DVC caches (Arrow tables, model folders, exported masks). */
  writes: string[];
  /** JSON metrics files (DVC `metrics`, cache: false). */
  metrics: string[];
  /** Plot data files (DVC `plots`, cache: false). */
  plots: string[];
  /** params.yaml keys the stage depends on (top-level sections or dotted keys). */
  params: string[];
}

export interface StageContext {
  /** Validated params (after --set overrides). */
  params: Params;
  /** Project root: params.yaml, dvc.yaml, cache/, models/ ... live here. */
  root: string;
  /** Resolve a project-relative path. */
  path(rel: string): string;
  /** Print a JSON summary instead of human text. */
  json: boolean;
  /** `--shard k/N`: run only this shard (stages with `sharded`); absent: every shard in turn. */
  shard?: Shard;
}

/** A stage whose per-image pass runs in shards (pipeline/shard.ts). */
export interface ShardedStage {
  /** params.yaml key holding the shard count N, e.g. refine.shards. */
  param: string;
  /** What shard `s` alone writes (project paths): its table parts, folders and metrics, in the order of io()'s writes and metrics. */
  outputs(s: Shard): { writes: string[]; metrics: string[] };
}

export interface Stage {
  name: string;
  /** One line for `tagseg --help` and `tagseg status`. */
  summary: string;
  io(params: Params): StageIO;
  /** Set when `tagseg run <name> --shard k/N` is supported. */
  sharded?: ShardedStage;
  /** Runs the stage; returns a JSON-able summary (also printed with --json). */
  run(ctx: StageContext): Promise<Record<string, unknown>>;
}
