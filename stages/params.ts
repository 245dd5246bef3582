/**
 * The params registry: every section of params.yaml, assembled from the folders that own them
 * (seed, dataset, synth: pipeline/shared_params.ts; each algorithm folder's stages/<x>/params.ts),
 * for what needs them all: the CLI, `tagseg workspace`, the defaults, full validation. The default
 * params.yaml (DEFAULT_PARAMS_YAML, and the repo's params.yaml, which a test keeps equal to it) is
 * generated from those declarations.
 *
 * Adding a section = its folder's params.ts exporting `sections`, and one line in SECTIONS.
 * It sits in the stage layer because it imports every stage folder's params.ts. Stage code does not
 * import it at run time (it would make every params file a code dep of every stage): stages use
 * pipeline/params_core.ts, and this module only for the `Params` type, as the core does.
 */
import YAML from 'yaml';
import { z } from 'zod';
import { sections as affinity } from './affinity/params.js';
import { sections as audit } from './audit/params.js';
import { sections as cam } from './cam/params.js';
import { sections as contrast } from './contrast/params.js';
import { sections as ingest } from './ingest/params.js';
import { sections as refine } from './refine/params.js';
import { sections as segment } from './segment/params.js';
import {
  type Override, type ParamSpec, checkParams, editParams, editParamsText, paramKeys, parseOverrideIn, readParams,
} from '../pipeline/params_core.js';
import { paramsYaml } from '../pipeline/params_spec.js';
import { SHARED_SECTIONS } from '../pipeline/shared_params.js';

export { type Override, closest, getParam, isPlainObject, paramsHash, setIn, stableStringify } from '../pipeline/params_core.js';

/** Top-level sections of params.yaml, in file order: one line per folder that owns some. */
export const SECTIONS = { ...SHARED_SECTIONS, ...ingest, ...cam, ...affinity, ...contrast, ...refine, ...segment, ...audit };

export const paramsSchema = z.strictObject(SECTIONS);
export type Params = z.infer<typeof paramsSchema>;

const FULL: ParamSpec = { sections: SECTIONS, zod: paramsSchema, partial: false };

/** The commented params.yaml a new project starts from, generated from the sections' declarations. */
export const DEFAULT_PARAMS_YAML = paramsYaml(SECTIONS);

/** The defaults as a validated object (tests and `tagseg init`-like code start from these). */
export function defaultParams(): Params {
  return validateParams(YAML.parse(DEFAULT_PARAMS_YAML), 'DEFAULT_PARAMS_YAML');
}

/**
 * Read, apply `overrides` (`a.b=value`, value parsed as YAML: `dataset.splits=[train,test]`) and
 * validate every section. Errors name the file (or `--set` for a bad override) and the dotted key.
 */
export async function loadParams(file = 'params.yaml', overrides: string[] = []): Promise<Params> {
  return (await readParams(FULL, file, overrides)) as Params;
}

/** Validate an already parsed params object; `source` names it in error messages. */
export function validateParams(raw: unknown, source = 'params.yaml', overrides: string[] = []): Params {
  return checkParams(FULL, raw, source, overrides) as Params;
}

/**
 * Parse and check one override against the schema. The key must be a known dotted path.
 * Where the schema wants a string, a value YAML would read as a number/boolean (`2007`, `yes`)
 * is kept as its text: `--set dataset.train_split=2007` means the split named "2007".
 */
export function parseOverride(raw: string): Override {
  return parseOverrideIn(FULL, raw);
}

/**
 * Apply `overrides` to params.yaml and rewrite it atomically, keeping comments and layout
 * (params_core.ts editParams). Validated before anything is written. Returns the new params.
 */
export async function writeOverrides(file: string, overrides: string[]): Promise<Params> {
  return (await editParams(FULL, file, overrides)) as Params;
}

/** params.yaml's text with `overrides` spliced in (comments and layout kept); the file is not written. */
export async function applyOverridesToText(file: string, overrides: string[]): Promise<string> {
  return editParamsText(FULL, file, overrides);
}

/** Every dotted path the schema knows (sections and leaves). */
export function knownParamKeys(): string[] {
  return paramKeys(FULL);
}
