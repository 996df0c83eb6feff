import path from 'node:path';
import { tf } from '../../backend/tf.js';
import { BatchSampler, SamplerPosition } from '../../data/batch.js';
import { Dataset, RgbImage } from '../../data/dataset.js';
import { saveGridPng, tensorToRgb8 } from '../../io/image.js';
import { MetricsLog } from '../../io/metrics_log.js';
import { SummaryWriter } from '../../io/tensorboard.js';
import { AutoencoderKL, saveVae, vaeConfig, vaeLoss, type VaeConfig } from '../../models/vae/index.js';
import { CheckpointManager, LoadedCheckpoint } from '../../train/checkpoint.js';
import { EMA } from '../../train/ema.js';
import { clipByGlobalNorm, disposeGrads, globalNorm, gradsByParamName } from '../../train/grad.js';
import { RunDir } from '../../train/run_dir.js';
import { makeOptimizer, phaseSchedule } from '../../train/recipe_parts.js';
import { Progress } from '../../util/progress.js';
import { Rng, RngState } from '../../util/rng.js';
import { psnr } from './psnr.js';
import { VaeRecipe } from './schema.js';

/** The JSON part of a VAE checkpoint: where training stands and the random streams' states. */
export interface VaeTrainState {
  kind: 'vae';
  step: number;
  sampler: SamplerPosition;
  /** Posterior samples and crop offsets. */
  rng: RngState;
  config: VaeConfig;
}

/** Fixed images in [-1, 1] (NHWC, host memory) for reconstruction grids and the final PSNR. */
export interface EvalImages {
  data: Float32Array;
  count: number;
  size: number;
}

export interface VaeTrainOptions {
  recipe: VaeRecipe;
  model: AutoencoderKL;
  dataset: Dataset;
  evalImages: EvalImages;
  run: RunDir;
  resumeFrom?: LoadedCheckpoint | null;
  /** Stop (with a checkpoint) after this many steps; tests simulate a crash with it. */
  stopAfterStep?: number;
  progressStream?: NodeJS.WritableStream & { isTTY?: boolean; columns?: number };
  log?: (line: string) => void;
}

export interface VaeTrainResult {
  step: number;
  finalLoss: number | null;
  /** Reconstruction PSNR (dB, images in [0, 1]) of the posterior mean over the eval images; null when stopped early. */
  psnr: number | null;
  /** The diffusers-layout folder written at the end; null when stopped early. */
  vaeDir: string | null;
  stoppedEarly: boolean;
}

/** The recipe's preset with its explicit overrides; `scaling_factor: auto` is settled after training. */
export function vaeConfigFromRecipe(r: VaeRecipe): VaeConfig {
  const m = r.model;
  const c = vaeConfig(m.preset);
  if (m.block_out_channels) c.blockOutChannels = [...m.block_out_channels];
  if (m.layers_per_block !== undefined) c.layersPerBlock = m.layers_per_block;
  if (m.latent_channels !== undefined) c.latentChannels = m.latent_channels;
  if (m.norm_num_groups !== undefined) c.normNumGroups = m.norm_num_groups;
  if (m.mid_block_add_attention !== undefined) c.midBlockAddAttention = m.mid_block_add_attention;
  c.scalingFactor = m.scaling_factor === 'auto' ? 1 : m.scaling_factor;
  c.sampleSize = r.data.source === 'procedural' ? r.data.procedural.size : r.data.size;
  return c;
}

/** The first `count` images of a dataset as one host array in [-1, 1]. */
export function datasetImages(dataset: Dataset, count: number): EvalImages {
  const n = Math.min(count, dataset.length);
  const size = dataset.width;
  const per = size * size * 3;
  const data = new Float32Array(n * per);
  for (let i = 0; i < n; i++) {
    const img = dataset.get(i).image;
    for (let j = 0; j < per; j++) data[i * per + j] = img[j]! / 127.5 - 1;
  }
  return { data, count: n, size };
}

/** One random square crop per image (offsets drawn from `rng`), or the batch itself when crop is 0 or the full size. */
function randomCrops(x: tf.Tensor4D, crop: number, rng: Rng): tf.Tensor4D {
  const [n, h, w] = x.shape;
  if (crop === 0 || (crop === h && crop === w)) return x;
  const parts: tf.Tensor4D[] = [];
  for (let i = 0; i < n; i++) {
    const oy = rng.int(h - crop + 1);
    const ox = rng.int(w - crop + 1);
    parts.push(x.slice([i, oy, ox, 0], [1, crop, crop, x.shape[3]]));
  }
  const out = tf.concat(parts, 0);
  tf.dispose(parts);
  x.dispose();
  return out;
}

/** Posterior-mean reconstructions, clamped to [-1, 1], of every eval image (host array, same layout). */
export function reconstructImages(model: AutoencoderKL, images: EvalImages, batchSize = 8): Float32Array {
  const per = images.size * images.size * 3;
  const out = new Float32Array(images.count * per);
  for (let start = 0; start < images.count; start += batchSize) {
    const n = Math.min(batchSize, images.count - start);
    const rec = tf.tidy(() => {
      const x = tf.tensor4d(images.data.subarray(start * per, (start + n) * per), [n, images.size, images.size, 3]);
      const { reconstruction, posterior } = model.forward(x);
      posterior.dispose();
      return reconstruction.clipByValue(-1, 1);
    });
    out.set(rec.dataSync(), start * per);
    rec.dispose();
  }
  return out;
}

/** PSNR in dB of posterior-mean reconstructions, both sides mapped from [-1, 1] to [0, 1]. */
export function reconstructionPsnr(model: AutoencoderKL, images: EvalImages): number {
  const rec = reconstructImages(model, images);
  const toUnit = (a: Float32Array): Float32Array => a.map((v) => (v + 1) / 2);
  return psnr(toUnit(images.data), toUnit(rec));
}

/**
 * 1 / std of the unscaled latent means over `images`: the factor that gives a generative model
 * roughly unit-variance latents (how LDM arrived at 0.18215 for SD's VAE).
 */
export function latentScalingFactor(model: AutoencoderKL, images: EvalImages, batchSize = 8): number {
  const per = images.size * images.size * 3;
  let sum = 0;
  let sumSq = 0;
  let n = 0;
  for (let start = 0; start < images.count; start += batchSize) {
    const b = Math.min(batchSize, images.count - start);
    const x = tf.tensor4d(images.data.subarray(start * per, (start + b) * per), [b, images.size, images.size, 3]);
    const posterior = model.encode(x);
    x.dispose();
    const mean = posterior.mean.dataSync();
    posterior.dispose();
    for (const v of mean) {
      sum += v;
      sumSq += v * v;
    }
    n += mean.length;
  }
  const std = Math.sqrt(Math.max(0, sumSq / n - (sum / n) ** 2));
  if (!(std > 0) || !Number.isFinite(std)) throw new Error(`latent means have std ${std}; cannot derive a scaling factor`);
  return Number((1 / std).toPrecision(5));
}

/** Originals on the first row, reconstructions under them. */
async function saveReconstructionGrid(file: string, model: AutoencoderKL, images: EvalImages, count: number): Promise<RgbImage> {
  const shown: EvalImages = { ...images, count: Math.min(count, images.count) };
  const per = images.size * images.size * 3;
  const rec = reconstructImages(model, shown);
  const toRgb = async (data: Float32Array): Promise<RgbImage[]> => {
    const t = tf.tensor4d(data.subarray(0, shown.count * per), [shown.count, images.size, images.size, 3]);
    const out = await tensorToRgb8(t, { range: 'signed' });
    t.dispose();
    return out;
  };
  const cells = [...(await toRgb(images.data)), ...(await toRgb(rec))];
  const scale = Math.max(1, Math.round(64 / images.size));
  return saveGridPng(file, cells, { cols: shown.count, scale });
}

/**
 * Trains the autoencoder on reconstruction (L1/MSE) + β·KL. Everything that decides the next step —
 * weights, optimizer and EMA state, sampler position, RNG state — is in each checkpoint, so a resumed
 * run continues exactly as the uninterrupted one would have.
 */
export async function trainVae(opts: VaeTrainOptions): Promise<VaeTrainResult> {
  const { recipe: r, model, dataset, run, evalImages } = opts;
  const say = opts.log ?? ((l: string) => process.stdout.write(`${l}\n`));
  const total = r.train.steps;
  const root = new Rng(r.seed);
  const sampler = new BatchSampler(dataset, { seed: root.fork('data').nextU32(), shuffle: true, flip: r.data.flip });
  const rng = root.fork('vae');
  const ckpts = new CheckpointManager(run.checkpoints, { keepLast: r.log.keep_last });
  const tb = new SummaryWriter(run.tb);
  const resume = opts.resumeFrom ?? null;
  const metrics = MetricsLog.open(run.metricsFile, resume ? { resumeStep: resume.step } : {});

  const params = model.trainableParameters();
  const byVarName = new Map([...params].map(([name, v]) => [v.name, name]));
  const varList = [...params.values()];
  let step = 0;
  if (resume) {
    const state = resume.extra as unknown as VaeTrainState;
    if (state.kind !== 'vae') throw new Error(`${resume.file}: not a vae checkpoint`);
    model.loadStateDict(resume.model, { strict: true });
    sampler.seek(state.sampler);
    rng.setState(state.rng);
    step = state.step;
  }
  const optimizer = makeOptimizer(r.train.optimizer, params);
  const ema = r.train.ema.enabled ? new EMA(model, { decay: r.train.ema.decay }) : null;
  if (resume) {
    if (resume.optimizer) optimizer.loadStateDict(resume.optimizer);
    if (ema && resume.ema) ema.loadStateDict(resume.ema, resume.emaNumUpdates ?? 0);
    say(`resuming from ${resume.file} at step ${step}/${total}`);
  } else {
    tb.text('recipe', '```\n' + JSON.stringify(r, null, 2) + '\n```', 0);
  }
  const schedule = phaseSchedule(r.train.schedule, r.train.optimizer.lr, total);
  const weights = r.train.loss;
  const state = (): VaeTrainState => ({ kind: 'vae', step, sampler: sampler.position, rng: rng.getState(), config: model.config });
  const saveCheckpoint = async (): Promise<void> => {
    await ckpts.save(step, { model, optimizer, ...(ema ? { ema } : {}), extra: { ...state() } });
  };
  const writeGrid = async (): Promise<void> => {
    const file = path.join(run.samples, `step-${String(step).padStart(6, '0')}-reconstructions.png`);
    const grid = await saveReconstructionGrid(file, model, evalImages, r.eval.grid);
    await tb.image('reconstructions', { rgb: grid.rgb, width: grid.width, height: grid.height, channels: 3 }, step);
  };
  const withEma = async (f: () => Promise<void>): Promise<void> => {
    if (!ema) return f();
    ema.swap();
    try {
      await f();
    } finally {
      ema.swap();
    }
  };

  const progress = new Progress({ total, label: 'vae', startStep: step, ...(opts.progressStream ? { stream: opts.progressStream } : {}) });
  let lastLoss: number | null = null;
  let stoppedEarly = false;
  while (step < total) {
    if (opts.stopAfterStep !== undefined && step >= opts.stopAfterStep) {
      stoppedEarly = true;
      break;
    }
    const lr = schedule(step);
    const x = randomCrops(sampler.nextBatch(r.data.batch_size).images, r.data.crop, rng);
    const parts: tf.Scalar[] = [];
    const { value, grads } = tf.variableGrads(() => {
      const { reconstruction, posterior } = model.forward(x, r.train.sample_posterior ? rng : undefined);
      const l = vaeLoss(x, reconstruction, posterior, weights);
      posterior.dispose();
      parts.push(tf.keep(l.l1), tf.keep(l.mse), tf.keep(l.kl));
      return l.total;
    }, varList);
    x.dispose();
    const loss = (await value.data())[0]!;
    const [l1, mse, kl] = await Promise.all(parts.map(async (p) => (await p.data())[0]!));
    tf.dispose([value, ...parts]);
    let named = gradsByParamName(grads, byVarName);
    let gradNorm: number;
    if (r.train.grad_clip !== undefined) {
      const clipped = clipByGlobalNorm(named, r.train.grad_clip);
      disposeGrads(named);
      named = clipped.grads;
      gradNorm = clipped.norm;
    } else gradNorm = globalNorm(named);
    optimizer.step(named, lr);
    disposeGrads(named);
    ema?.update();
    step++;
    lastLoss = loss;

    progress.update(step, { loss: loss.toFixed(4), lr: lr.toExponential(2) });
    if (step % r.log.every === 0 || step === total) {
      metrics.write(step, { loss, l1: l1!, mse: mse!, kl: kl!, lr, grad_norm: gradNorm });
      tb.scalar('loss/total', loss, step);
      tb.scalar('loss/l1', l1!, step);
      tb.scalar('loss/mse', mse!, step);
      tb.scalar('loss/kl', kl!, step);
      tb.scalar('lr', lr, step);
      tb.scalar('grad_norm', gradNorm, step);
    }
    if (step % r.log.sample_every === 0 && step < total) await withEma(writeGrid);
    if (step % r.log.checkpoint_every === 0 && step < total) await saveCheckpoint();
  }
  progress.finish();

  let psnrDb: number | null = null;
  let vaeDir: string | null = null;
  if (stoppedEarly) await saveCheckpoint();
  else {
    // The averaged weights are the result; the checkpoint keeps the raw ones with the EMA beside them.
    await saveCheckpoint();
    ema?.copyTo();
    await writeGrid();
    psnrDb = reconstructionPsnr(model, evalImages);
    if (r.model.scaling_factor === 'auto') {
      // The config object is the model's own copy; the factor only affects encodeToLatents/decodeLatents.
      model.config.scalingFactor = latentScalingFactor(model, evalImages);
      say(`latent scaling factor: ${model.config.scalingFactor} (1 / std of the latent means over ${evalImages.count} images)`);
    }
    metrics.write(step, { psnr: psnrDb, scaling_factor: model.config.scalingFactor });
    tb.scalar('eval/psnr', psnrDb, step);
    vaeDir = path.join(run.dir, 'vae');
    await saveVae(vaeDir, model);
  }
  optimizer.dispose();
  ema?.dispose();
  metrics.close();
  tb.close();
  return { step, finalLoss: lastLoss, psnr: psnrDb, vaeDir, stoppedEarly };
}
