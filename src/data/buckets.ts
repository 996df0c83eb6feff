import { UsageError } from '../util/errors.js';
import { Rng } from '../util/rng.js';

/**
 * Aspect-ratio buckets as kohya's sd-scripts make them (library/model_util.make_bucket_resolutions,
 * train_util.BucketManager.select_bucket): resolutions in multiples of `step` up to `maxArea` pixels
 * with sides in [minSide, maxSide]; each image goes to the bucket of nearest aspect ratio (scaled to
 * cover it, then centre-cropped), or with `noUpscale` to a bucket no larger than the image itself.
 * Nothing is dropped silently: every image is in the report, with its bucket or the reason it was skipped.
 */
export interface BucketOptions {
  /** Resolution step (kohya bucket_reso_steps), default 64. */
  step?: number;
  /** Largest bucket area in pixels (kohya: resolution²), e.g. 512·512. */
  maxArea: number;
  /** Smallest and largest bucket side (kohya min_bucket_reso / max_bucket_reso), default 256 / 1024. */
  minSide?: number;
  maxSide?: number;
  /** Never enlarge an image: buckets come from the image's own size (kohya bucket_no_upscale). */
  noUpscale?: boolean;
}

export interface Bucket {
  width: number;
  height: number;
}

export interface BucketAssignment {
  /** Index of the image in the input list. */
  index: number;
  id: string;
  width: number;
  height: number;
  bucket: Bucket;
  /** Size the image is resized to before the centre crop to the bucket. */
  resized: Bucket;
  /** Bucket aspect ratio minus the image's (kohya's ar_error). */
  aspectError: number;
}

export interface BucketSkip {
  index: number;
  id: string;
  width: number;
  height: number;
  reason: string;
}

export interface BucketReport {
  assigned: BucketAssignment[];
  skipped: BucketSkip[];
  /** Image count per bucket `WxH`, largest first. */
  counts: { bucket: string; images: number }[];
}

function resolved(o: BucketOptions): Required<BucketOptions> {
  const r = { step: o.step ?? 64, maxArea: o.maxArea, minSide: o.minSide ?? 256, maxSide: o.maxSide ?? 1024, noUpscale: o.noUpscale ?? false };
  if (!Number.isInteger(r.step) || r.step < 1) throw new UsageError(`buckets.step must be a positive integer, got ${r.step}`);
  if (!(r.maxArea >= r.step * r.step)) throw new UsageError(`buckets.max_area ${r.maxArea} is smaller than one step² (${r.step * r.step})`);
  if (!(r.minSide > 0 && r.minSide <= r.maxSide)) throw new UsageError(`buckets: min_side ${r.minSide} must be positive and ≤ max_side ${r.maxSide}`);
  if (r.minSide % r.step !== 0 || r.maxSide % r.step !== 0) throw new UsageError(`buckets: min_side ${r.minSide} and max_side ${r.maxSide} must be multiples of step ${r.step}`);
  return r;
}

/** kohya's make_bucket_resolutions: the square of the max area, then every width from min to max side with the largest height that fits. */
export function bucketResolutions(opts: BucketOptions): Bucket[] {
  const o = resolved(opts);
  const set = new Map<string, Bucket>();
  const add = (width: number, height: number) => set.set(`${width}x${height}`, { width, height });
  const square = Math.floor(Math.sqrt(o.maxArea) / o.step) * o.step;
  add(square, square);
  for (let width = o.minSide; width <= o.maxSide; width += o.step) {
    const height = Math.min(o.maxSide, Math.floor(Math.floor(o.maxArea / width) / o.step) * o.step);
    if (height >= o.minSide) {
      add(width, height);
      add(height, width);
    }
  }
  return [...set.values()].sort((a, b) => a.width - b.width || a.height - b.height);
}

function roundToSteps(x: number, step: number): number {
  const v = Math.floor(x + 0.5);
  return v - (v % step);
}

/** One image's bucket, kohya's select_bucket; null bucket with a reason when it cannot be placed. */
export function selectBucket(width: number, height: number, opts: BucketOptions, predefined = bucketResolutions(opts)): { bucket: Bucket; resized: Bucket; aspectError: number } | { reason: string } {
  const o = resolved(opts);
  if (!(width > 0 && height > 0)) return { reason: `image has no size (${width}x${height})` };
  const aspect = width / height;
  let bucket: Bucket;
  let resized: Bucket;
  if (!o.noUpscale) {
    const exact = predefined.find((b) => b.width === width && b.height === height);
    if (exact) bucket = exact;
    else {
      let best = predefined[0]!;
      for (const b of predefined) if (Math.abs(b.width / b.height - aspect) < Math.abs(best.width / best.height - aspect)) best = b;
      bucket = best;
    }
    const scale = aspect > bucket.width / bucket.height ? bucket.height / height : bucket.width / width;
    resized = { width: Math.floor(width * scale + 0.5), height: Math.floor(height * scale + 0.5) };
  } else {
    if (width * height > o.maxArea) {
      const rw = Math.sqrt(o.maxArea * aspect);
      const rh = o.maxArea / rw;
      const bw = roundToSteps(rw, o.step);
      const bhInW = roundToSteps(bw / aspect, o.step);
      const arW = bw / bhInW;
      const bh = roundToSteps(rh, o.step);
      const bwInH = roundToSteps(bh * aspect, o.step);
      const arH = bwInH / bh;
      resized = Math.abs(arW - aspect) < Math.abs(arH - aspect) ? { width: bw, height: Math.floor(bw / aspect + 0.5) } : { width: Math.floor(bh * aspect + 0.5), height: bh };
    } else resized = { width, height };
    bucket = { width: resized.width - (resized.width % o.step), height: resized.height - (resized.height % o.step) };
    if (bucket.width < o.minSide || bucket.height < o.minSide) {
      return { reason: `${width}x${height} is below the smallest bucket: without upscaling it gives ${bucket.width}x${bucket.height}, under min_side ${o.minSide}` };
    }
  }
  return { bucket, resized, aspectError: bucket.width / bucket.height - aspect };
}

/** Bucket every image; the report lists each image's bucket and each skip with its reason. */
export function assignBuckets(images: readonly { id: string; width: number; height: number }[], opts: BucketOptions): BucketReport {
  const predefined = bucketResolutions(opts);
  const assigned: BucketAssignment[] = [];
  const skipped: BucketSkip[] = [];
  images.forEach((img, index) => {
    const r = selectBucket(img.width, img.height, opts, predefined);
    if ('reason' in r) skipped.push({ index, id: img.id, width: img.width, height: img.height, reason: r.reason });
    else assigned.push({ index, id: img.id, width: img.width, height: img.height, ...r });
  });
  const counts = new Map<string, number>();
  for (const a of assigned) counts.set(`${a.bucket.width}x${a.bucket.height}`, (counts.get(`${a.bucket.width}x${a.bucket.height}`) ?? 0) + 1);
  return {
    assigned,
    skipped,
    counts: [...counts.entries()].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1)).map(([bucket, images]) => ({ bucket, images })),
  };
}

export function formatBucketReport(r: BucketReport): string {
  const lines = [`${r.assigned.length} image(s) in ${r.counts.length} bucket(s), ${r.skipped.length} skipped`];
  for (const c of r.counts) lines.push(`  ${c.bucket}: ${c.images}`);
  for (const a of r.assigned) {
    const how = a.resized.width === a.width && a.resized.height === a.height ? 'not resized' : `resized ${a.resized.width}x${a.resized.height}`;
    const crop = a.resized.width === a.bucket.width && a.resized.height === a.bucket.height ? '' : ', centre-cropped';
    lines.push(`  ${a.id} ${a.width}x${a.height} → ${a.bucket.width}x${a.bucket.height} (${how}${crop})`);
  }
  for (const s of r.skipped) lines.push(`  SKIPPED ${s.id} ${s.width}x${s.height}: ${s.reason}`);
  return lines.join('\n');
}

/** Where a bucket sampler stands: enough to resume on the exact next batch. */
export interface BucketSamplerState {
  epoch: number;
  /** Batches already handed out in this epoch. */
  position: number;
}

export interface BucketBatch {
  bucket: Bucket;
  /** Item indices (into the sampler's items, repeats already expanded by the caller's weights). */
  items: number[];
}

/**
 * Batches that never mix buckets. Each epoch: every item appears `repeats` times, each bucket's list
 * is shuffled and cut into batches (the last one of a bucket may be smaller — never dropped), then the
 * batch order is shuffled. Everything derives from (seed, epoch), so the state is two integers.
 */
export class BucketSampler {
  private epochBatches: BucketBatch[] | null = null;
  private state: BucketSamplerState = { epoch: 0, position: 0 };

  constructor(
    private readonly items: readonly { bucket: Bucket; repeats: number }[],
    readonly batchSize: number,
    private readonly seed: number,
  ) {
    if (!Number.isInteger(batchSize) || batchSize < 1) throw new UsageError(`batch size must be a positive integer, got ${batchSize}`);
    if (items.length === 0) throw new UsageError('bucket sampler: no items to sample');
    for (const [i, it] of items.entries()) if (!Number.isInteger(it.repeats) || it.repeats < 1) throw new UsageError(`item ${i}: repeats must be a positive integer, got ${it.repeats}`);
  }

  /** The batches of one epoch in order. */
  batchesOfEpoch(epoch: number): BucketBatch[] {
    const rng = new Rng(this.seed).fork(`buckets:epoch:${epoch}`);
    const byBucket = new Map<string, { bucket: Bucket; items: number[] }>();
    this.items.forEach((it, i) => {
      const key = `${it.bucket.width}x${it.bucket.height}`;
      const entry = byBucket.get(key) ?? { bucket: it.bucket, items: [] };
      for (let k = 0; k < it.repeats; k++) entry.items.push(i);
      byBucket.set(key, entry);
    });
    const batches: BucketBatch[] = [];
    for (const key of [...byBucket.keys()].sort()) {
      const { bucket, items } = byBucket.get(key)!;
      rng.shuffle(items);
      for (let s = 0; s < items.length; s += this.batchSize) batches.push({ bucket, items: items.slice(s, s + this.batchSize) });
    }
    return rng.shuffle(batches);
  }

  get batchesPerEpoch(): number {
    return this.batchesOfEpoch(0).length;
  }

  next(): BucketBatch & BucketSamplerState {
    if (!this.epochBatches) this.epochBatches = this.batchesOfEpoch(this.state.epoch);
    if (this.state.position >= this.epochBatches.length) {
      this.state = { epoch: this.state.epoch + 1, position: 0 };
      this.epochBatches = this.batchesOfEpoch(this.state.epoch);
    }
    const batch = this.epochBatches[this.state.position]!;
    const at = { ...this.state };
    this.state = { ...this.state, position: this.state.position + 1 };
    return { ...batch, ...at };
  }

  getState(): BucketSamplerState {
    return { ...this.state };
  }

  setState(s: BucketSamplerState): void {
    if (!Number.isInteger(s.epoch) || s.epoch < 0 || !Number.isInteger(s.position) || s.position < 0) throw new Error(`bucket sampler state must be non-negative integers, got ${JSON.stringify(s)}`);
    this.state = { ...s };
    this.epochBatches = null;
  }
}
