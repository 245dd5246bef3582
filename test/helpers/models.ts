import { existsSync } from 'node:fs';
import * as path from 'node:path';
import { REPO } from './python.js';

/**
 * The folder of pretrained models tests use: $TAGSEG_MODELS_DIR (what .ci/run exports), else the
 * project's shared models beside the checkout. Sets $TAGSEG_MODELS_DIR so named models resolve
 * there and never download.
 */
export const MODELS_DIR = path.resolve(process.env.TAGSEG_MODELS_DIR || path.join(REPO, '../shared/models'));
process.env.TAGSEG_MODELS_DIR = MODELS_DIR;

/** The local MobileNet v1 copy (its model.json lacks conv_pw_13/kernel), and whether it is there. */
export const MOBILENET_DIR = path.join(MODELS_DIR, 'mobilenet-v1-imagenet');
export const MOBILENET_PRESENT = existsSync(path.join(MOBILENET_DIR, 'model.json'));
