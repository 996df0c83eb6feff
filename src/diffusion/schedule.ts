/**
 * Discrete-time Gaussian diffusion (Ho et al.; Nichol & Dhariwal's improved-diffusion, which DiT
 * trains with): β schedule, ᾱ, the posterior q(x_{t−1} | x_t, x_0) and respacing. Every table is
 * float64 as numpy computes it; tensors are built from them per call.
 */

/** DiT's `get_named_beta_schedule('linear', T)`: β from 1e-4·s to 0.02·s evenly, s = 1000/T. */
export function linearBetas(numTimesteps = 1000, betaStart = 1e-4, betaEnd = 0.02): Float64Array {
  const scale = 1000 / numTimesteps;
  return linspace(scale * betaStart, scale * betaEnd, numTimesteps);
}

/** numpy.linspace(start, stop, n) in float64 (same formula: start + i·step, last point exact). */
export function linspace(start: number, stop: number, n: number): Float64Array {
  const out = new Float64Array(n);
  if (n === 1) {
    out[0] = start;
    return out;
  }
  const step = (stop - start) / (n - 1);
  for (let i = 0; i < n; i++) out[i] = start + i * step;
  out[n - 1] = stop;
  return out;
}

/** The per-timestep tables of a discrete diffusion (improved-diffusion's GaussianDiffusion.__init__). */
export class DiffusionSchedule {
  readonly numTimesteps: number;
  readonly alphasCumprod: Float64Array;
  readonly alphasCumprodPrev: Float64Array;
  readonly posteriorVariance: Float64Array;
  /** log of the posterior variance with the t = 0 entry (0) replaced by the t = 1 one. */
  readonly posteriorLogVarianceClipped: Float64Array;
  readonly posteriorMeanCoef1: Float64Array;
  readonly posteriorMeanCoef2: Float64Array;
  /**
   * Model timestep for index i: identity for a full schedule, the original step for a respaced one
   * (the network always sees the 0…999 step it was trained on).
   */
  readonly timestepMap: Int32Array;

  constructor(readonly betas: Float64Array, timestepMap?: Int32Array) {
    const n = betas.length;
    for (const b of betas) if (!(b > 0 && b <= 1)) throw new Error(`diffusion: betas must lie in (0, 1], got ${b}`);
    this.numTimesteps = n;
    this.alphasCumprod = new Float64Array(n);
    let acc = 1;
    for (let i = 0; i < n; i++) this.alphasCumprod[i] = acc *= 1 - betas[i]!;
    this.alphasCumprodPrev = new Float64Array(n);
    this.alphasCumprodPrev[0] = 1;
    for (let i = 1; i < n; i++) this.alphasCumprodPrev[i] = this.alphasCumprod[i - 1]!;
    this.posteriorVariance = new Float64Array(n);
    this.posteriorMeanCoef1 = new Float64Array(n);
    this.posteriorMeanCoef2 = new Float64Array(n);
    for (let i = 0; i < n; i++) {
      const ab = this.alphasCumprod[i]!;
      const abPrev = this.alphasCumprodPrev[i]!;
      this.posteriorVariance[i] = (betas[i]! * (1 - abPrev)) / (1 - ab);
      this.posteriorMeanCoef1[i] = (betas[i]! * Math.sqrt(abPrev)) / (1 - ab);
      this.posteriorMeanCoef2[i] = ((1 - abPrev) * Math.sqrt(1 - betas[i]!)) / (1 - ab);
    }
    this.posteriorLogVarianceClipped = new Float64Array(n);
    for (let i = 0; i < n; i++) this.posteriorLogVarianceClipped[i] = Math.log(i === 0 ? (this.posteriorVariance[1] ?? this.posteriorVariance[0]!) : this.posteriorVariance[i]!);
    this.timestepMap = timestepMap ?? Int32Array.from({ length: n }, (_, i) => i);
  }

  /** DiT's default: 1000 linear steps. */
  static linear(numTimesteps = 1000): DiffusionSchedule {
    return new DiffusionSchedule(linearBetas(numTimesteps));
  }

  /** Signal-to-noise ratio ᾱ_t / (1 − ᾱ_t). */
  snr(t: number): number {
    const ab = this.alphasCumprod[t]!;
    return ab / (1 - ab);
  }

  /**
   * The schedule on a subset of timesteps (improved-diffusion's SpacedDiffusion): new betas
   * 1 − ᾱ_i/ᾱ_prev so that ᾱ at the kept steps is unchanged.
   */
  respace(useTimesteps: readonly number[]): DiffusionSchedule {
    const keep = [...new Set(useTimesteps)].sort((a, b) => a - b);
    for (const t of keep) if (!(Number.isInteger(t) && t >= 0 && t < this.numTimesteps)) throw new Error(`respace: timestep ${t} outside 0…${this.numTimesteps - 1}`);
    const betas = new Float64Array(keep.length);
    let last = 1;
    keep.forEach((t, i) => {
      const ab = this.alphasCumprod[t]!;
      betas[i] = 1 - ab / last;
      last = ab;
    });
    return new DiffusionSchedule(betas, Int32Array.from(keep, (t) => this.timestepMap[t]!));
  }
}

/**
 * improved-diffusion's `space_timesteps(T, [n])` for one section: n steps spread evenly over
 * 0…T−1 by rounding multiples of (T−1)/(n−1); both ends are kept.
 */
export function spacedTimesteps(numTimesteps: number, count: number): number[] {
  if (!(Number.isInteger(count) && count >= 1 && count <= numTimesteps)) throw new Error(`sampling steps must be an integer in 1…${numTimesteps}, got ${count}`);
  if (count === 1) return [0];
  const stride = (numTimesteps - 1) / (count - 1);
  const out: number[] = [];
  let cur = 0;
  for (let i = 0; i < count; i++) {
    out.push(pythonRound(cur));
    cur += stride;
  }
  return out;
}

/** Python 3's round(): halves go to the even neighbour. */
export function pythonRound(x: number): number {
  const f = Math.floor(x);
  const diff = x - f;
  if (diff > 0.5) return f + 1;
  if (diff < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * Rectified-flow time shift (SD3, eq. 23): t' = s·t / (1 + (s − 1)·t). s > 1 moves time toward the
 * noise end, which larger images need; s = 1 is the identity.
 */
export function shiftFlowTime(t: number, shift: number): number {
  return (shift * t) / (1 + (shift - 1) * t);
}
