/**
 * Which pixels of a refined label map to trust. Input: the CRF posterior Q [N, K] (pixel-major;
 * without a CRF, the normalised scores) and the label each pixel had before the CRF (the maps'
 * own argmax). Rules (`refine.ignore`):
 * - 'margin':   ignore where top1(Q) - top2(Q) < `margin` (the posterior cannot tell two classes apart);
 * - 'disagree': ignore where argmax Q differs from the maps' label (the CRF moved the pixel: a
 *   boundary region where colour and maps conflict; IRN likewise keeps a pixel only where its two
 *   CRF-refined maps agree, methods.md 2);
 * - 'either':   both; 'none': keep every pixel.
 * Ignored pixels become 255 and are skipped by the segmentation loss (ignore-aware CE).
 */
import { TagsegError } from '../../pipeline/errors.js';

export type IgnoreRuleName = 'none' | 'margin' | 'disagree' | 'either';

export interface IgnoreRule {
  rule: IgnoreRuleName;
  /** Minimum top1 - top2 posterior margin ('margin', 'either'). */
  margin: number;
}

export interface Decision {
  /** [N] chosen channel per pixel, 255 = ignore. */
  channel: Uint8Array;
  /** [N] round(255 x posterior of argmax Q), set before ignoring (ignored pixels keep theirs). */
  confidence: Uint8Array;
  /** Pixels set to ignore. */
  ignored: number;
  /** Mean top1 - top2 margin over the kept pixels; 0 when none is kept. */
  meanMargin: number;
}

/**
 * Apply `rule` to the posterior `q` [N, K] given the pre-CRF labels `before` [N] (channel indices).
 * With K = 1 every pixel has margin 1 (there is nothing to confuse it with).
 */
export function decide(q: Float32Array, N: number, K: number, before: Uint8Array, rule: IgnoreRule): Decision {
  if (q.length !== N * K) throw new TagsegError(`decide: ${q.length} posterior values, expected ${N} x ${K}`);
  if (before.length !== N) throw new TagsegError(`decide: ${before.length} pre-CRF labels for ${N} pixels`);
  if (K < 1 || K > 255) throw new TagsegError(`decide: ${K} channels (1..255 fit uint8 with 255 = ignore)`);
  const useMargin = rule.rule === 'margin' || rule.rule === 'either';
  const useDisagree = rule.rule === 'disagree' || rule.rule === 'either';
  const channel = new Uint8Array(N);
  const confidence = new Uint8Array(N);
  let ignored = 0;
  let marginSum = 0;
  for (let i = 0; i < N; i++) {
    const b = i * K;
    let best = 0;
    let p1 = q[b];
    let p2 = 0;
    for (let k = 1; k < K; k++) {
      const v = q[b + k];
      if (v > p1) {
        p2 = p1;
        p1 = v;
        best = k;
      } else if (v > p2) {
        p2 = v;
      }
    }
    const margin = p1 - p2;
    confidence[i] = Math.round(255 * Math.min(1, Math.max(0, p1)));
    if ((useMargin && margin < rule.margin) || (useDisagree && best !== before[i])) {
      channel[i] = 255;
      ignored++;
    } else {
      channel[i] = best;
      marginSum += margin;
    }
  }
  const kept = N - ignored;
  return { channel, confidence, ignored, meanMargin: kept > 0 ? marginSum / kept : 0 };
}
