import type { Rng } from '../../util/rng.js';
import { sampleBeta } from './distributions.js';
import { checkImage, type FloatImage } from './float_image.js';
import type { CropBox } from './geometry.js';

/**
 * CutMix (Yun et al. 2019, arXiv 1905.04899): paste a box of a partner image into this one. λ ~ Beta(α, α) is the share
 * of this image meant to survive; the box has sides √(1−λ)·W × √(1−λ)·H (truncated to whole pixels) around a uniformly
 * random centre, clipped at the borders. Clipping shrinks the box, so the λ reported is recomputed from the pasted area,
 * as the reference implementation does: λ = 1 − box area / image area.
 */
export interface CutMixDraw {
  /** The λ drawn from Beta(α, α). */
  sampledLambda: number;
  /** 1 − (pasted pixels / all pixels): the exact share of this image left. */
  lambda: number;
  box: CropBox;
}

export function sampleCutMix(rng: Rng, width: number, height: number, alpha: number): CutMixDraw {
  const sampledLambda = sampleBeta(rng, alpha, alpha);
  const cut = Math.sqrt(1 - sampledLambda);
  const cutW = Math.floor(width * cut);
  const cutH = Math.floor(height * cut);
  const cx = rng.int(width);
  const cy = rng.int(height);
  const x1 = Math.min(Math.max(cx - Math.floor(cutW / 2), 0), width);
  const x2 = Math.min(Math.max(cx + Math.floor(cutW / 2), 0), width);
  const y1 = Math.min(Math.max(cy - Math.floor(cutH / 2), 0), height);
  const y2 = Math.min(Math.max(cy + Math.floor(cutH / 2), 0), height);
  const box = { top: y1, left: x1, height: y2 - y1, width: x2 - x1 };
  return { sampledLambda, lambda: 1 - (box.width * box.height) / (width * height), box };
}

/** `base` with `box` replaced by the same pixels of `patch` (same size images). */
export function pasteBox(base: FloatImage, patch: FloatImage, box: CropBox): FloatImage {
  checkImage(base, 'cutmix base');
  checkImage(patch, 'cutmix partner');
  if (base.width !== patch.width || base.height !== patch.height) {
    throw new RangeError(`cutmix needs same-sized images, got ${base.width}x${base.height} and ${patch.width}x${patch.height}`);
  }
  const data = new Float32Array(base.data);
  for (let y = box.top; y < box.top + box.height; y++) {
    const from = 3 * (y * base.width + box.left);
    data.set(patch.data.subarray(from, from + 3 * box.width), from);
  }
  return { data, width: base.width, height: base.height };
}
