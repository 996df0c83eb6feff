import { UsageError } from '../util/errors.js';
import { Rng } from '../util/rng.js';
import { augmentSchema, type AugmentConfig, type AugmentInput } from './augment_schema.js';
import { applyColorJitter, jitterRange, sampleColorJitter, type ColorJitterParams, type ColorJitterRanges } from './augment/color.js';
import { pasteBox, sampleCutMix } from './augment/cutmix.js';
import { floatToRgb8, rgb8ToFloat, type FloatImage } from './augment/float_image.js';
import { flipHorizontal, resizedCrop, sampleResizedCropBox, type CropBox } from './augment/geometry.js';
import type { Sample } from './dataset.js';

export * from './augment/color.js';
export * from './augment/cutmix.js';
export * from './augment/distributions.js';
export * from './augment/float_image.js';
export * from './augment/geometry.js';
export { augmentSchema, type AugmentConfig, type AugmentInput } from './augment_schema.js';

/**
 * The augmentation pipeline every trainer shares: RandomResizedCrop → horizontal flip → ColorJitter on each sample,
 * then CutMix with a partner sample (torchvision's usual order, with CutMix last as a batch transform would be).
 *
 * Determinism: everything drawn for a sample comes from `new Rng(seed).fork(`aug:${epoch}:${index}`)`, one forked
 * stream per stage, and nothing else. So a resumed run that revisits (epoch, index) gets identical pixels, and turning
 * one stage on or off does not change what the other stages draw.
 *
 * Trainers using `flip` here should leave BatchSampler's own `flip` off, or samples get mirrored twice over.
 */

/** What the augmentation of one sample depends on: the run's seed and where the sample is in the schedule. */
export interface AugmentKey {
  seed: number;
  epoch: number;
  /** Dataset index of the sample. */
  index: number;
}

/** A Dataset satisfies this. */
export interface AugmentSource {
  readonly length: number;
  readonly width: number;
  readonly height: number;
  get(index: number): Pick<Sample, 'image' | 'caption'>;
  mirrorCaption?(caption: string): string;
}

/** Which random choices were made, for logging, previews and loss weighting. */
export interface AugmentRecord {
  crop: CropBox | null;
  flipped: boolean;
  jitter: ColorJitterParams | null;
  cutmix: CutMixRecord | null;
}

export interface CutMixRecord {
  partnerIndex: number;
  /** The partner's caption after its own flip mirroring. */
  partnerCaption: string;
  /** Share of the output that is this sample (1 − pasted area / image area). */
  lambda: number;
  /** λ as drawn from Beta(α, α), before the box was clipped at the borders. */
  sampledLambda: number;
  /** Where the partner's pixels are. */
  box: CropBox;
  /** How the partner itself was cropped/flipped/jittered: the same as its own sample this epoch. */
  partner: Omit<AugmentRecord, 'cutmix'>;
}

export interface AugmentedSample {
  /** HWC RGB, 8 bits, the source's size. */
  image: Uint8Array;
  /** The same pixels before rounding, in [0, 1]. */
  pixels: FloatImage;
  caption: string;
  /**
   * Weight of `caption` as a description of the image: 1 without CutMix; with CutMix, the share of the image the
   * caption's own sample covers (λ for this sample's caption, 1 − λ for the partner's), so a trainer can weight a loss.
   */
  captionWeight: number;
  record: AugmentRecord;
}

function checkKey(key: AugmentKey): void {
  for (const name of ['seed', 'epoch', 'index'] as const) {
    const v = key[name];
    if (!Number.isInteger(v) || v < 0 || v > 0xffffffff) throw new RangeError(`augment key ${name} must be a uint32, got ${v}`);
  }
}

export class Augmenter {
  private readonly jitterRanges: ColorJitterRanges | null;

  constructor(readonly config: AugmentConfig) {
    const cj = config.color_jitter;
    if (cj) {
      const ranges: ColorJitterRanges = {
        brightness: jitterRange(cj.brightness, 'brightness'),
        contrast: jitterRange(cj.contrast, 'contrast'),
        saturation: jitterRange(cj.saturation, 'saturation'),
        hue: jitterRange(cj.hue, 'hue'),
      };
      this.jitterRanges = Object.values(ranges).some((r) => r !== null) ? ranges : null;
    } else this.jitterRanges = null;
  }

  /** Validates a plain `augment:` object (defaults applied); `where` names its origin in the error. */
  static fromInput(input: AugmentInput | unknown, where = 'augment'): Augmenter {
    const parsed = augmentSchema.safeParse(input ?? {});
    if (!parsed.success) {
      const lines = parsed.error.issues.map((i) => `${where}${i.path.length ? '.' + i.path.join('.') : ''}: ${i.message}`);
      throw new UsageError(lines.join('\n'));
    }
    return new Augmenter(parsed.data);
  }

  /** False when no stage can change a sample, so a trainer can skip the work. */
  get active(): boolean {
    const c = this.config;
    return c.flip > 0 || (c.crop?.p ?? 0) > 0 || (this.jitterRanges !== null && (c.color_jitter?.p ?? 0) > 0) || (c.cutmix?.p ?? 0) > 0;
  }

  augment(source: AugmentSource, key: AugmentKey): AugmentedSample {
    checkKey(key);
    if (!Number.isInteger(source.width) || !Number.isInteger(source.height) || source.width < 1 || source.height < 1) {
      throw new RangeError(`augment source size must be positive integers, got ${source.width}x${source.height}`);
    }
    const rng = streamFor(key);
    const own = this.perSample(source, key.index, rng);
    let pixels = own.pixels;
    let caption = own.caption;
    let captionWeight = 1;
    let cutmix: CutMixRecord | null = null;

    const cm = this.config.cutmix;
    const cmRng = rng.fork('cutmix');
    if (cm && cmRng.uniform() < cm.p) {
      const partnerIndex = source.length > 1 ? (key.index + 1 + cmRng.int(source.length - 1)) % source.length : key.index;
      const draw = sampleCutMix(cmRng, source.width, source.height, cm.alpha);
      const partner = this.perSample(source, partnerIndex, streamFor({ ...key, index: partnerIndex }));
      pixels = pasteBox(pixels, partner.pixels, draw.box);
      const ownDominates = draw.lambda >= 0.5;
      if (cm.caption === 'both') {
        caption = ownDominates ? `${own.caption} and ${partner.caption}` : `${partner.caption} and ${own.caption}`;
        captionWeight = 1;
      } else {
        caption = ownDominates ? own.caption : partner.caption;
        captionWeight = ownDominates ? draw.lambda : 1 - draw.lambda;
      }
      cutmix = {
        partnerIndex,
        partnerCaption: partner.caption,
        lambda: draw.lambda,
        sampledLambda: draw.sampledLambda,
        box: draw.box,
        partner: { crop: partner.crop, flipped: partner.flipped, jitter: partner.jitter },
      };
    }
    return {
      image: floatToRgb8(pixels),
      pixels,
      caption,
      captionWeight,
      record: { crop: own.crop, flipped: own.flipped, jitter: own.jitter, cutmix },
    };
  }

  /** Crop, flip and jitter of one dataset sample, from its own key's stream. */
  private perSample(source: AugmentSource, index: number, rng: Rng): Omit<AugmentRecord, 'cutmix'> & { pixels: FloatImage; caption: string } {
    const { width, height } = source;
    const sample = source.get(index);
    if (sample.image.length !== width * height * 3) {
      throw new RangeError(`sample ${index} has ${sample.image.length} values, expected ${width}x${height}x3 = ${width * height * 3}`);
    }
    let pixels = rgb8ToFloat(sample.image, width, height);
    let caption = sample.caption;

    let crop: CropBox | null = null;
    const cc = this.config.crop;
    const cropRng = rng.fork('crop');
    if (cc && cropRng.uniform() < cc.p) {
      crop = sampleResizedCropBox(cropRng, width, height, { scale: cc.scale, ratio: cc.ratio });
      pixels = resizedCrop(pixels, crop, width, height, { antialias: cc.antialias });
    }

    const flipped = rng.fork('flip').uniform() < this.config.flip;
    if (flipped) {
      pixels = flipHorizontal(pixels);
      if (source.mirrorCaption) caption = source.mirrorCaption(caption);
    }

    let jitter: ColorJitterParams | null = null;
    const jitterRng = rng.fork('jitter');
    if (this.jitterRanges && jitterRng.uniform() < this.config.color_jitter!.p) {
      jitter = sampleColorJitter(jitterRng, this.jitterRanges);
      pixels = applyColorJitter(pixels, jitter);
    }
    return { pixels, caption, crop, flipped, jitter };
  }
}

function streamFor(key: AugmentKey): Rng {
  return new Rng(key.seed).fork(`aug:${key.epoch}:${key.index}`);
}
