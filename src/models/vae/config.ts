import { UsageError } from '../../util/errors.js';

/**
 * AutoencoderKL hyper-parameters, one field per diffusers `config.json` key (camelCased), restricted
 * to the layout this toolkit implements: DownEncoderBlock2D / UpDecoderBlock2D with GroupNorm + SiLU.
 */
export interface VaeConfig {
  inChannels: number;
  outChannels: number;
  latentChannels: number;
  /** Channels of each resolution level, finest first; the image is downsampled len−1 times. */
  blockOutChannels: number[];
  /** Resnets per encoder block; decoder blocks hold one more. */
  layersPerBlock: number;
  normNumGroups: number;
  /** Latents for the generative model are (z − shiftFactor) · scalingFactor. */
  scalingFactor: number;
  shiftFactor: number;
  sampleSize: number;
  /** diffusers runs this VAE in fp32 even in half-precision pipelines (SDXL's overflows in fp16). */
  forceUpcast: boolean;
  useQuantConv: boolean;
  usePostQuantConv: boolean;
  midBlockAddAttention: boolean;
}

const sdxl: VaeConfig = {
  inChannels: 3,
  outChannels: 3,
  latentChannels: 4,
  blockOutChannels: [128, 256, 512, 512],
  layersPerBlock: 2,
  normNumGroups: 32,
  scalingFactor: 0.13025,
  shiftFactor: 0,
  sampleSize: 1024,
  forceUpcast: true,
  useQuantConv: true,
  usePostQuantConv: true,
  midBlockAddAttention: true,
};

/** madebyollin/sdxl-vae-fp16-fix: same architecture, rescaled internal activations, no forced upcast. */
const sdxlFp16Fix: VaeConfig = { ...sdxl, sampleSize: 512, forceUpcast: false };

/**
 * The SDXL layout shrunk for tests and smoke runs: one downsampling (factor 2), mid-block attention
 * over 32×32 tokens for a 64×64 image. Width 16/32 because tfjs's cpu-backend convolutions are plain
 * JS loops: [32, 64] took ~4× as long per forward, and its backward is an order of magnitude slower still.
 */
const tiny: VaeConfig = {
  ...sdxl,
  blockOutChannels: [16, 32],
  layersPerBlock: 1,
  normNumGroups: 8,
  sampleSize: 64,
  scalingFactor: 1,
  forceUpcast: false,
};

export const vaeConfigs: Readonly<Record<string, Readonly<VaeConfig>>> = {
  sdxl,
  'sdxl-fp16-fix': sdxlFp16Fix,
  tiny,
};

export function vaeConfig(name: string): VaeConfig {
  const c = vaeConfigs[name];
  if (!c) throw new UsageError(`unknown VAE preset '${name}'; known presets: ${Object.keys(vaeConfigs).join(', ')}`);
  return { ...c, blockOutChannels: [...c.blockOutChannels] };
}

/** Spatial downsampling factor between image and latent (8 for SDXL). */
export function vaeDownsampleFactor(config: VaeConfig): number {
  return 2 ** (config.blockOutChannels.length - 1);
}

/**
 * Parses a diffusers AutoencoderKL `config.json` object. `source` names the file in error messages.
 * Block types and activation are checked because a different value means a different network that
 * this implementation would silently mis-build.
 */
export function vaeConfigFromDiffusers(json: unknown, source: string): VaeConfig {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new UsageError(`${source}: expected a JSON object with AutoencoderKL fields`);
  }
  const o = json as Record<string, unknown>;
  const cls = o['_class_name'];
  if (cls !== undefined && cls !== 'AutoencoderKL') {
    throw new UsageError(`${source}: _class_name is '${String(cls)}', expected 'AutoencoderKL'`);
  }
  const int = (key: string, fallback?: number): number => {
    const v = o[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0) {
      throw new UsageError(`${source}: '${key}' must be a positive integer, got ${JSON.stringify(o[key])}`);
    }
    return v;
  };
  const num = (key: string, fallback: number): number => {
    const v = o[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) {
      throw new UsageError(`${source}: '${key}' must be a number, got ${JSON.stringify(o[key])}`);
    }
    return v;
  };
  const bool = (key: string, fallback: boolean): boolean => {
    const v = o[key] ?? fallback;
    if (typeof v !== 'boolean') throw new UsageError(`${source}: '${key}' must be true or false, got ${JSON.stringify(o[key])}`);
    return v;
  };
  const blocks = o['block_out_channels'] ?? [64];
  if (!Array.isArray(blocks) || blocks.length === 0 || !blocks.every((b) => Number.isInteger(b) && b > 0)) {
    throw new UsageError(`${source}: 'block_out_channels' must be a non-empty list of positive integers, got ${JSON.stringify(blocks)}`);
  }
  const checkTypes = (key: string, expected: string): void => {
    const v = o[key];
    if (v === undefined) return;
    if (!Array.isArray(v) || v.length !== blocks.length || v.some((t) => t !== expected)) {
      throw new UsageError(`${source}: '${key}' must list '${expected}' once per block_out_channels entry (${blocks.length}), got ${JSON.stringify(v)}`);
    }
  };
  checkTypes('down_block_types', 'DownEncoderBlock2D');
  checkTypes('up_block_types', 'UpDecoderBlock2D');
  const act = o['act_fn'] ?? 'silu';
  if (act !== 'silu' && act !== 'swish') throw new UsageError(`${source}: 'act_fn' must be 'silu', got ${JSON.stringify(act)}`);
  const latentsMean = o['latents_mean'];
  const latentsStd = o['latents_std'];
  if ((latentsMean !== undefined && latentsMean !== null) || (latentsStd !== undefined && latentsStd !== null)) {
    throw new UsageError(`${source}: per-channel 'latents_mean'/'latents_std' are not supported; only scaling_factor/shift_factor`);
  }
  const config: VaeConfig = {
    inChannels: int('in_channels', 3),
    outChannels: int('out_channels', 3),
    latentChannels: int('latent_channels', 4),
    blockOutChannels: blocks as number[],
    layersPerBlock: int('layers_per_block', 1),
    normNumGroups: int('norm_num_groups', 32),
    scalingFactor: num('scaling_factor', 0.18215),
    shiftFactor: o['shift_factor'] === null ? 0 : num('shift_factor', 0),
    sampleSize: int('sample_size', 32),
    forceUpcast: bool('force_upcast', true),
    useQuantConv: bool('use_quant_conv', true),
    usePostQuantConv: bool('use_post_quant_conv', true),
    midBlockAddAttention: bool('mid_block_add_attention', true),
  };
  validateVaeConfig(config, source);
  return config;
}

/** The inverse of vaeConfigFromDiffusers, for writing a diffusers-loadable folder. */
export function vaeConfigToDiffusers(c: VaeConfig): Record<string, unknown> {
  const n = c.blockOutChannels.length;
  return {
    _class_name: 'AutoencoderKL',
    act_fn: 'silu',
    block_out_channels: [...c.blockOutChannels],
    down_block_types: Array(n).fill('DownEncoderBlock2D'),
    up_block_types: Array(n).fill('UpDecoderBlock2D'),
    in_channels: c.inChannels,
    out_channels: c.outChannels,
    latent_channels: c.latentChannels,
    layers_per_block: c.layersPerBlock,
    norm_num_groups: c.normNumGroups,
    sample_size: c.sampleSize,
    scaling_factor: c.scalingFactor,
    shift_factor: c.shiftFactor === 0 ? null : c.shiftFactor,
    latents_mean: null,
    latents_std: null,
    force_upcast: c.forceUpcast,
    use_quant_conv: c.useQuantConv,
    use_post_quant_conv: c.usePostQuantConv,
    mid_block_add_attention: c.midBlockAddAttention,
  };
}

export function validateVaeConfig(c: VaeConfig, source = 'VAE config'): void {
  for (const ch of c.blockOutChannels) {
    if (ch % c.normNumGroups !== 0) {
      throw new UsageError(`${source}: block_out_channels entry ${ch} is not divisible by norm_num_groups ${c.normNumGroups}`);
    }
  }
}

/**
 * Parameter count from the config alone, so that the 83.6 M-parameter SDXL VAE can be sized (and
 * the formula checked against an instantiated small model) without allocating it.
 */
export function vaeParameterCount(c: VaeConfig): number {
  const conv = (cin: number, cout: number, k: number): number => cout * cin * k * k + cout;
  const norm = (ch: number): number => 2 * ch;
  const resnet = (cin: number, cout: number): number =>
    norm(cin) + conv(cin, cout, 3) + norm(cout) + conv(cout, cout, 3) + (cin !== cout ? conv(cin, cout, 1) : 0);
  const attention = (ch: number): number => norm(ch) + 4 * (ch * ch + ch);
  const mid = (ch: number): number => 2 * resnet(ch, ch) + (c.midBlockAddAttention ? attention(ch) : 0);
  const blocks = c.blockOutChannels;
  const last = blocks[blocks.length - 1]!;
  const lat = c.latentChannels;

  let encoder = conv(c.inChannels, blocks[0]!, 3);
  let prev = blocks[0]!;
  blocks.forEach((ch, i) => {
    for (let j = 0; j < c.layersPerBlock; j++) encoder += resnet(j === 0 ? prev : ch, ch);
    if (i < blocks.length - 1) encoder += conv(ch, ch, 3);
    prev = ch;
  });
  encoder += mid(last) + norm(last) + conv(last, 2 * lat, 3);

  let decoder = conv(lat, last, 3) + mid(last);
  const reversed = [...blocks].reverse();
  prev = reversed[0]!;
  reversed.forEach((ch, i) => {
    for (let j = 0; j <= c.layersPerBlock; j++) decoder += resnet(j === 0 ? prev : ch, ch);
    if (i < reversed.length - 1) decoder += conv(ch, ch, 3);
    prev = ch;
  });
  decoder += norm(blocks[0]!) + conv(blocks[0]!, c.outChannels, 3);

  const quant = c.useQuantConv ? conv(2 * lat, 2 * lat, 1) : 0;
  const postQuant = c.usePostQuantConv ? conv(lat, lat, 1) : 0;
  return encoder + decoder + quant + postQuant;
}
