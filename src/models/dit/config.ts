/**
 * DiT hyper-parameters and the variant registry of facebookresearch/DiT (models.py `DiT_models`):
 * S/B/L/XL trunks × patch 2/4/8, plus a tiny variant for tests. Field meanings and defaults follow
 * the constructor of the official `DiT` class, so a config here describes exactly one official model.
 */
export interface DitConfig {
  /** Latent height = width (32 for 256 px images through an f/8 VAE). */
  inputSize: number;
  patchSize: number;
  inChannels: number;
  hiddenSize: number;
  depth: number;
  numHeads: number;
  mlpRatio: number;
  /** Probability of replacing a label by the null class in training (classifier-free guidance). */
  classDropoutProb: number;
  numClasses: number;
  /** Predict the variance too: the output has 2·inChannels channels, eps first. */
  learnSigma: boolean;
  /**
   * What the model is conditioned on besides t: class labels (the official models) or text — a
   * pooled text vector added to the timestep embedding, plus, with crossAttention, cross-attention
   * to the token states in every block (PixArt-α). Default 'class'.
   */
  conditioning?: 'class' | 'text';
  /** Width of the text encoder's pooled vector (text conditioning). */
  textPooledDim?: number;
  /** Width of the text encoder's token states (text conditioning with cross-attention). */
  textTokenDim?: number;
  crossAttention?: boolean;
}

export function ditConditioning(c: DitConfig): 'class' | 'text' {
  return c.conditioning ?? 'class';
}

/** Width of the sinusoidal timestep features fed to the timestep MLP (the official `frequency_embedding_size`). */
export const TIMESTEP_FREQUENCY_DIM = 256;

const DEFAULTS = { inputSize: 32, inChannels: 4, mlpRatio: 4, classDropoutProb: 0.1, numClasses: 1000, learnSigma: true };

const TRUNKS = {
  S: { depth: 12, hiddenSize: 384, numHeads: 6 },
  B: { depth: 12, hiddenSize: 768, numHeads: 12 },
  L: { depth: 24, hiddenSize: 1024, numHeads: 16 },
  XL: { depth: 28, hiddenSize: 1152, numHeads: 16 },
} as const;

function registry(): Record<string, DitConfig> {
  const out: Record<string, DitConfig> = {};
  for (const [size, trunk] of Object.entries(TRUNKS)) {
    for (const patchSize of [2, 4, 8]) out[`DiT-${size}/${patchSize}`] = { ...DEFAULTS, ...trunk, patchSize };
  }
  // Small enough for unit tests and the torch fixture (scripts/fixtures/dit_reference.py).
  out['DiT-tiny/2'] = { ...DEFAULTS, inputSize: 8, patchSize: 2, depth: 2, hiddenSize: 32, numHeads: 2, numClasses: 10 };
  return out;
}

/** Every named variant, e.g. `DiT-XL/2`, `DiT-S/2`, `DiT-tiny/2`. */
export const ditConfigs: Readonly<Record<string, Readonly<DitConfig>>> = registry();

/** A named variant with optional overrides (input size for 512 px, class count, …), validated. */
export function ditConfig(name: string, overrides: Partial<DitConfig> = {}): DitConfig {
  const base = ditConfigs[name];
  if (!base) throw new Error(`unknown DiT variant '${name}'; known: ${Object.keys(ditConfigs).join(', ')}`);
  return validateDitConfig({ ...base, ...overrides });
}

export function validateDitConfig(c: DitConfig): DitConfig {
  const problems: string[] = [];
  if (c.inputSize % c.patchSize !== 0) problems.push(`inputSize ${c.inputSize} is not a multiple of patchSize ${c.patchSize}`);
  if (c.hiddenSize % c.numHeads !== 0) problems.push(`hiddenSize ${c.hiddenSize} is not divisible by ${c.numHeads} heads`);
  // The 2-D sin-cos table gives each axis hiddenSize/2 channels, split again into sin | cos.
  if (c.hiddenSize % 4 !== 0) problems.push(`hiddenSize ${c.hiddenSize} is not a multiple of 4 (2-D sin-cos position table)`);
  if (!(c.classDropoutProb >= 0 && c.classDropoutProb < 1)) problems.push(`classDropoutProb ${c.classDropoutProb} is not in [0, 1)`);
  if (c.conditioning !== undefined && c.conditioning !== 'class' && c.conditioning !== 'text') problems.push(`conditioning '${String(c.conditioning)}' is not 'class' or 'text'`);
  if (ditConditioning(c) === 'text') {
    if (!(Number.isInteger(c.textPooledDim) && c.textPooledDim! > 0)) problems.push(`text conditioning needs textPooledDim (the text encoder's pooled width), got ${c.textPooledDim}`);
    if (c.crossAttention && !(Number.isInteger(c.textTokenDim) && c.textTokenDim! > 0)) problems.push(`cross-attention needs textTokenDim (the text encoder's token width), got ${c.textTokenDim}`);
  } else if (c.crossAttention) problems.push('crossAttention needs conditioning: text');
  if (problems.length) throw new Error(`invalid DiT config: ${problems.join('; ')}`);
  return c;
}

export function ditOutChannels(c: DitConfig): number {
  return c.learnSigma ? 2 * c.inChannels : c.inChannels;
}

/** Tokens T = (inputSize / patchSize)². */
export function ditNumPatches(c: DitConfig): number {
  return (c.inputSize / c.patchSize) ** 2;
}

export function ditMlpHidden(c: DitConfig): number {
  return Math.trunc(c.hiddenSize * c.mlpRatio);
}

/** Label-table rows: one extra (the null class) when class dropout is on, as the official LabelEmbedder. */
export function ditLabelRows(c: DitConfig): number {
  return c.numClasses + (c.classDropoutProb > 0 ? 1 : 0);
}

/** Parameter count including the fixed `pos_embed`, as `sum(p.numel() for p in model.parameters())` (class-conditioned models). */
export function ditParameterCount(c: DitConfig): number {
  const d = c.hiddenSize;
  const p = c.patchSize;
  const h = ditMlpHidden(c);
  const patch = c.inChannels * p * p * d + d;
  const timestep = TIMESTEP_FREQUENCY_DIM * d + d + d * d + d;
  const label = ditLabelRows(c) * d;
  const pos = ditNumPatches(c) * d;
  const block = 3 * d * d + 3 * d + d * d + d + d * h + h + h * d + d + 6 * d * d + 6 * d;
  const final = 2 * d * d + 2 * d + d * p * p * ditOutChannels(c) + p * p * ditOutChannels(c);
  return patch + timestep + label + pos + c.depth * block + final;
}
