/**
 * The contract every training data source meets: a fixed-length, randomly addressable list of
 * same-sized RGB images with captions. Random access (not an iterator) is what lets the batch
 * sampler shuffle per epoch and resume from an {epoch, index} position exactly.
 */

/** 8-bit sRGB pixels, row-major HWC with 3 channels (no alpha): the format PNGs decode to. */
export interface RgbImage {
  rgb: Uint8Array;
  width: number;
  height: number;
}

export interface Sample<Meta = unknown> {
  /** HWC RGB, 8 bits per channel; the batcher maps it to [-1, 1]. */
  image: Uint8Array;
  caption: string;
  meta: Meta;
}

export interface Dataset<Meta = unknown> {
  readonly length: number;
  /** Every image has exactly this size. */
  readonly width: number;
  readonly height: number;
  get(index: number): Sample<Meta>;
  /**
   * The caption that describes the horizontally mirrored image, for datasets whose captions name
   * sides ("top left"). Absent means captions are taken to be mirror-invariant.
   */
  mirrorCaption?(caption: string): string;
}

export function checkIndex(dataset: { length: number }, index: number): void {
  if (!Number.isInteger(index) || index < 0 || index >= dataset.length) {
    throw new RangeError(`dataset index ${index} out of range [0, ${dataset.length})`);
  }
}
