import type { HostTensor } from '../nn/module.js';
import { UsageError } from '../util/errors.js';
import { type Svd, svdOfProduct, truncatedSvd } from './linalg.js';
import { matchesLoraTarget, type LoraTarget } from './inject.js';
import { type LoraModuleWeights, type LoraWeights, loraRank, loraScale } from './weights.js';

export interface ModuleResizeReport {
  module: string;
  fromRank: number;
  toRank: number;
  /** Σ_{i<r} σᵢ² / Σ σᵢ²: the share of the update's squared Frobenius norm kept. */
  energyKept: number;
}

function energy(s: Float64Array, r: number): number {
  let kept = 0;
  let total = 0;
  for (let i = 0; i < s.length; i++) {
    total += s[i]! ** 2;
    if (i < r) kept += s[i]! ** 2;
  }
  return total > 0 ? kept / total : 1;
}

/**
 * kohya's resize_lora layout: up = U_r·diag(σ_r), down = V_rᵀ, alpha = scale·r (the update's scale kept).
 * Conv kernels keep their [r, in, kh, kw] / [out, r, 1, 1] shapes.
 */
function fromSvd(d: Svd, r: number, scale: number, downShape: readonly number[], upShape: readonly number[]): LoraModuleWeights {
  const up = new Float32Array(d.m * r);
  const down = new Float32Array(r * d.n);
  for (let i = 0; i < d.m; i++) for (let j = 0; j < r; j++) up[i * r + j] = d.u[i * d.k + j]! * d.s[j]!;
  for (let j = 0; j < r; j++) for (let i = 0; i < d.n; i++) down[j * d.n + i] = d.v[i * d.k + j]!;
  return {
    down: { shape: [r, ...downShape.slice(1)], data: down },
    up: { shape: [upShape[0]!, r, ...upShape.slice(2)], data: up },
    alpha: scale * r,
  };
}

/** Every module to rank `rank` (or its current rank if lower) by an exact SVD of B·A. DoRA files are refused. */
export function resizeLora(lora: LoraWeights, rank: number): { lora: LoraWeights; report: ModuleResizeReport[] } {
  if (!Number.isInteger(rank) || rank < 1) throw new UsageError(`--rank: expected a positive integer, got ${rank}`);
  const modules = new Map<string, LoraModuleWeights>();
  const report: ModuleResizeReport[] = [];
  for (const [name, m] of lora.modules) {
    if (m.magnitude) throw new UsageError(`${name}: resizing a DoRA adapter would change its magnitude normalisation; convert it to plain LoRA first`);
    const r0 = loraRank(m);
    const out = m.up.shape[0]!;
    const inFlat = m.down.data.length / r0;
    const d = svdOfProduct(Float64Array.from(m.up.data), Float64Array.from(m.down.data), out, r0, inFlat);
    const r = Math.min(rank, r0);
    modules.set(name, fromSvd(d, r, loraScale(m), m.down.shape, m.up.shape));
    report.push({ module: name, fromRank: r0, toRank: r, energyKept: energy(d.s, r) });
  }
  return { lora: { modules, metadata: { ...lora.metadata } }, report };
}

/** torch.quantile's default (linear interpolation between order statistics). */
export function quantile(values: Float64Array, q: number): number {
  const sorted = Float64Array.from(values).sort();
  const pos = q * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(lo + 1, sorted.length - 1);
  return sorted[lo]! + (sorted[hi]! - sorted[lo]!) * (pos - lo);
}

export interface ExtractOptions {
  rank: number;
  /** Modules considered (default: every 2-D/4-D `.weight` that differs). */
  targets?: readonly LoraTarget[];
  /** kohya's --clamp_quantile: clamp U·S and Vᵀ to ±quantile(all their values, q); 1 disables. Default 0.99. */
  clampQuantile?: number;
  /** Modules whose largest |ΔW| is at most this are left out (reported). Default 0: only identical ones. */
  minDiff?: number;
}

export interface ExtractReport extends ModuleResizeReport {
  maxAbsDiff: number;
}

/**
 * A LoRA from the difference of two checkpoints, as kohya's extract_lora_from_models: per module
 * ΔW = W_tuned − W_base (conv kernels flattened to [out, in·kh·kw]), its best rank-r approximation
 * by SVD, up = U_r·diag(σ_r), down = V_rᵀ, both clamped at the given quantile; alpha = r (scale 1).
 */
export function extractLora(
  base: ReadonlyMap<string, HostTensor>,
  tuned: ReadonlyMap<string, HostTensor>,
  opts: ExtractOptions,
): { lora: LoraWeights; report: ExtractReport[]; unchanged: string[] } {
  if (!Number.isInteger(opts.rank) || opts.rank < 1) throw new UsageError(`--rank: expected a positive integer, got ${opts.rank}`);
  const q = opts.clampQuantile ?? 0.99;
  if (!(q > 0 && q <= 1)) throw new UsageError(`--clamp-quantile: expected a number in (0, 1], got ${q}`);
  const modules = new Map<string, LoraModuleWeights>();
  const report: ExtractReport[] = [];
  const unchanged: string[] = [];
  for (const [key, w0] of base) {
    if (!key.endsWith('.weight') || (w0.shape.length !== 2 && w0.shape.length !== 4)) continue;
    const name = key.slice(0, -'.weight'.length);
    if (opts.targets && !matchesLoraTarget(name, opts.targets)) continue;
    const w1 = tuned.get(key);
    if (!w1) throw new UsageError(`the tuned checkpoint has no '${key}' (the base has it, shape [${w0.shape.join(', ')}])`);
    if (w1.shape.join() !== w0.shape.join()) throw new UsageError(`'${key}': base is [${w0.shape.join(', ')}] but tuned is [${w1.shape.join(', ')}]`);
    const out = w0.shape[0]!;
    const inFlat = w0.data.length / out;
    const diff = new Float64Array(w0.data.length);
    let maxAbs = 0;
    for (let i = 0; i < diff.length; i++) {
      diff[i] = w1.data[i]! - w0.data[i]!;
      maxAbs = Math.max(maxAbs, Math.abs(diff[i]!));
    }
    if (maxAbs <= (opts.minDiff ?? 0)) {
      unchanged.push(name);
      continue;
    }
    const r = Math.min(opts.rank, out, inFlat);
    const d = truncatedSvd(diff, out, inFlat, r);
    const m = fromSvd(d, r, 1, [r, ...w0.shape.slice(1)], [out, r, ...(w0.shape.length === 4 ? [1, 1] : [])]);
    if (q < 1) {
      const all = new Float64Array(m.up.data.length + m.down.data.length);
      all.set(m.up.data);
      all.set(m.down.data, m.up.data.length);
      const hi = quantile(all, q);
      for (const t of [m.up.data, m.down.data]) for (let i = 0; i < t.length; i++) t[i] = Math.min(hi, Math.max(-hi, t[i]!));
    }
    modules.set(name, m);
    // ‖ΔW‖_F² = Σ all σᵢ², so the kept share needs no full decomposition.
    const total = diff.reduce((acc, v) => acc + v * v, 0);
    const kept = d.s.reduce((acc, v) => acc + v * v, 0);
    report.push({ module: name, fromRank: Math.min(out, inFlat), toRank: r, energyKept: total > 0 ? kept / total : 1, maxAbsDiff: maxAbs });
  }
  if (modules.size === 0) throw new UsageError(`the two checkpoints do not differ in any${opts.targets ? ' targeted' : ''} Linear/Conv2d weight`);
  return { lora: { modules, metadata: {} }, report, unchanged };
}
