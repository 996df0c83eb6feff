import { tf } from '../backend/tf.js';
import { Conv2d } from '../nn/conv.js';
import { Linear } from '../nn/linear.js';
import type { HostTensor, Module } from '../nn/module.js';
import { UsageError } from '../util/errors.js';

/**
 * A LoRA as data, independent of any file format or live model: per adapted module (named as in the
 * base model, e.g. `blocks.0.attn.qkv`) the down matrix A [r, in] (or [r, in, kh, kw] for a conv),
 * the up matrix B [out, r] (or [out, r, 1, 1]) and alpha in kohya's sense, so the update is
 * (alpha / r)·B·A. rsLoRA adapters are stored with alpha = alpha_peft·√r, the same update.
 */
export interface LoraModuleWeights {
  down: HostTensor;
  up: HostTensor;
  alpha: number;
  /** DoRA magnitude m [out]. */
  magnitude?: HostTensor;
}

export interface LoraWeights {
  modules: Map<string, LoraModuleWeights>;
  /** Header metadata read from or to be written to the file (format-specific keys included). */
  metadata: Record<string, string>;
  /**
   * Base parameters trained along with the adapters, as differences from the base (trained − base),
   * by parameter name (`blocks.0.adaLN_modulation.1.bias`): ComfyUI's `.diff` / `.diff_b`.
   */
  diffs?: Map<string, HostTensor>;
}

export function loraRank(m: LoraModuleWeights): number {
  return m.down.shape[0]!;
}

export function loraScale(m: LoraModuleWeights): number {
  return m.alpha / loraRank(m);
}

/** in-features of the update: in·kh·kw for a conv. */
function inFlat(m: LoraModuleWeights): number {
  return m.down.shape.slice(1).reduce((a, b) => a * b, 1);
}

/** The base weight shape an adapter fits: [out, in] or [out, in, kh, kw]. */
export function fittingWeightShape(m: LoraModuleWeights): number[] {
  return [m.up.shape[0]!, ...m.down.shape.slice(1)];
}

/** scale·B·A in float64, row-major [out, in·kh·kw]. */
export function loraDelta(m: LoraModuleWeights, strength = 1): Float64Array {
  const r = loraRank(m);
  const out = m.up.shape[0]!;
  const n = inFlat(m);
  const s = loraScale(m) * strength;
  const up = m.up.data;
  const down = m.down.data;
  const delta = new Float64Array(out * n);
  for (let o = 0; o < out; o++) {
    const row = o * n;
    for (let k = 0; k < r; k++) {
      const b = up[o * r + k]! * s;
      if (b === 0) continue;
      const dk = k * n;
      for (let i = 0; i < n; i++) delta[row + i]! += b * down[dk + i]!;
    }
  }
  return delta;
}

/**
 * The new weight W' for a module: W + strength·s·B·A, or for DoRA W + strength·((m/‖W+sBA‖)⊙(W+sBA) − W)
 * (row norms over the input axis, PEFT's). Float64 arithmetic, float32 result.
 */
export function mergedWeight(base: HostTensor, m: LoraModuleWeights, strength = 1): Float32Array {
  const delta = loraDelta(m);
  const w = base.data;
  const out = new Float32Array(w.length);
  if (!m.magnitude) {
    for (let i = 0; i < w.length; i++) out[i] = w[i]! + strength * delta[i]!;
    return out;
  }
  const rows = m.up.shape[0]!;
  const n = w.length / rows;
  const mag = m.magnitude.data;
  for (let o = 0; o < rows; o++) {
    let sq = 0;
    for (let i = 0; i < n; i++) sq += (w[o * n + i]! + delta[o * n + i]!) ** 2;
    const ratio = mag[o]! / Math.sqrt(sq);
    for (let i = 0; i < n; i++) {
      const j = o * n + i;
      const v = w[j]! + delta[j]!;
      out[j] = w[j]! + strength * (ratio * v - w[j]!);
    }
  }
  return out;
}

export interface FitProblem {
  module: string;
  problem: string;
}

/**
 * Every way `lora` does not fit a base whose weights have the given shapes (`<module>.weight` keys):
 * a module that does not exist, or a shape that does not fit (naming both shapes). Empty when it fits.
 */
export function loraFitProblems(lora: LoraWeights, weightShapes: ReadonlyMap<string, readonly number[]>): FitProblem[] {
  const problems: FitProblem[] = [];
  for (const [name, m] of lora.modules) {
    const shape = weightShapes.get(`${name}.weight`);
    const wanted = fittingWeightShape(m);
    if (!shape) {
      problems.push({ module: name, problem: `no such module in the base (no '${name}.weight')` });
      continue;
    }
    const same = shape.length === wanted.length && shape.every((d, i) => d === wanted[i]);
    if (!same) {
      problems.push({
        module: name,
        problem: `base weight is [${shape.join(', ')}] but the LoRA (down [${m.down.shape.join(', ')}], up [${m.up.shape.join(', ')}]) needs [${wanted.join(', ')}]`,
      });
    }
    if (m.up.shape[1] !== loraRank(m)) problems.push({ module: name, problem: `up [${m.up.shape.join(', ')}] and down [${m.down.shape.join(', ')}] disagree on the rank` });
    if (m.magnitude && m.magnitude.data.length !== m.up.shape[0]) {
      problems.push({ module: name, problem: `DoRA magnitude has ${m.magnitude.data.length} entries for ${m.up.shape[0]} output rows` });
    }
  }
  for (const [param, d] of lora.diffs ?? []) {
    const shape = weightShapes.get(param);
    if (!shape) problems.push({ module: param, problem: `no such parameter in the base for a trained difference` });
    else if (shape.join() !== d.shape.join()) problems.push({ module: param, problem: `base parameter is [${shape.join(', ')}] but the difference is [${d.shape.join(', ')}]` });
  }
  return problems;
}

export function assertLoraFits(lora: LoraWeights, weightShapes: ReadonlyMap<string, readonly number[]>, what: string): void {
  const problems = loraFitProblems(lora, weightShapes);
  if (problems.length === 0) return;
  const shown = problems.slice(0, 12).map((p) => `  ${p.module}: ${p.problem}`);
  if (problems.length > 12) shown.push(`  … and ${problems.length - 12} more`);
  throw new UsageError(`${what} does not fit the base model (${problems.length} problem${problems.length > 1 ? 's' : ''}):\n${shown.join('\n')}`);
}

export interface LoraSpec {
  lora: LoraWeights;
  strength: number;
  /** Shown in errors (usually the file). */
  label: string;
}

/** Parse `FILE[:strength]` (strength a number, default 1; a Windows drive colon is left alone). */
export function parseLoraSpec(spec: string): { file: string; strength: number } {
  const m = /^(.*):(-?(?:\d+\.?\d*|\.\d+)(?:e-?\d+)?)$/i.exec(spec);
  if (!m || m[1] === '') return { file: spec, strength: 1 };
  return { file: m[1]!, strength: Number(m[2]) };
}

/**
 * Fold several LoRAs at their strengths into a state dict of host tensors (W by `<module>.weight`),
 * in order; returns the new state (untouched tensors shared). Checks every LoRA first, so nothing
 * is half-merged when one does not fit.
 */
export function mergeLorasIntoState(state: ReadonlyMap<string, HostTensor>, specs: readonly LoraSpec[]): Map<string, HostTensor> {
  const shapes = new Map([...state].map(([k, v]) => [k, v.shape] as const));
  for (const s of specs) assertLoraFits(s.lora, shapes, s.label);
  const out = new Map(state);
  for (const s of specs) {
    for (const [name, m] of s.lora.modules) {
      const key = `${name}.weight`;
      const base = out.get(key)!;
      out.set(key, { shape: [...base.shape], data: mergedWeight(base, m, s.strength) });
    }
    for (const [param, d] of s.lora.diffs ?? []) {
      const base = out.get(param)!;
      out.set(param, { shape: [...base.shape], data: Float32Array.from(base.data, (v, i) => v + s.strength * d.data[i]!) });
    }
  }
  return out;
}

/** Weight shapes of every Linear/Conv2d of a live model, by `<module>.weight`. */
export function adaptableWeightShapes(model: Module): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const [name, m] of model.namedModules()) if (m instanceof Linear || m instanceof Conv2d) out.set(`${name}.weight`, [...m.weight.shape]);
  return out;
}

export interface AppliedLoras {
  /** Modules whose weights changed. */
  modules: string[];
  /** Put every changed weight back bit for bit. */
  remove(): void;
}

/**
 * Apply LoRAs at chosen strengths to a live model for sampling: each adapted weight becomes
 * W + Σ strength·ΔW (in order); `remove()` restores the saved originals exactly.
 */
export function applyLoras(model: Module, specs: readonly LoraSpec[]): AppliedLoras {
  const params = new Map(model.namedParameters());
  const shapes = new Map([...params].map(([k, v]) => [k, [...v.shape]] as const));
  for (const s of specs) assertLoraFits(s.lora, shapes, s.label);
  const saved = new Map<string, tf.Tensor>();
  const current = new Map<string, HostTensor>();
  const hostOf = (key: string) => current.get(key) ?? { shape: [...params.get(key)!.shape], data: params.get(key)!.dataSync() as Float32Array };
  const keep = (key: string) => {
    if (!saved.has(key)) saved.set(key, tf.keep(params.get(key)!.clone()));
  };
  for (const s of specs) {
    for (const [name, m] of s.lora.modules) {
      const key = `${name}.weight`;
      keep(key);
      const base = hostOf(key);
      current.set(key, { shape: base.shape, data: mergedWeight(base, m, s.strength) });
    }
    for (const [key, d] of s.lora.diffs ?? []) {
      keep(key);
      const base = hostOf(key);
      current.set(key, { shape: base.shape, data: Float32Array.from(base.data, (v, i) => v + s.strength * d.data[i]!) });
    }
  }
  for (const [key, w] of current) {
    const value = tf.tensor(w.data, w.shape);
    params.get(key)!.assign(value);
    value.dispose();
  }
  let removed = false;
  return {
    modules: [...current.keys()].map((k) => k.replace(/\.weight$/, '')),
    remove() {
      if (removed) return;
      removed = true;
      for (const [key, original] of saved) {
        params.get(key)!.assign(original);
        original.dispose();
      }
    },
  };
}
