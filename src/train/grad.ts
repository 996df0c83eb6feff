import { tf } from '../backend/tf.js';

/** Gradients by parameter name, as produced by tf.variableGrads / the trainers. */
export type Grads = Map<string, tf.Tensor>;

export function disposeGrads(grads: Grads): void {
  for (const g of grads.values()) g.dispose();
}

/** Euclidean norm over all gradients taken together, read back to the host. */
export function globalNorm(grads: Grads): number {
  if (grads.size === 0) return 0;
  const t = tf.tidy(() => tf.addN([...grads.values()].map((g) => g.square().sum())).sqrt());
  const n = t.dataSync()[0]!;
  t.dispose();
  return n;
}

/**
 * torch.nn.utils.clip_grad_norm_ semantics: total = ‖all grads‖₂, coef = maxNorm / (total + 1e-6),
 * and grads are multiplied by min(coef, 1). A non-finite total yields non-finite grads, as in torch
 * with error_if_nonfinite=False; a loss scaler skips such steps anyway.
 * Returns new tensors (the inputs are left alone; the caller disposes both) and the pre-clip norm.
 */
export function clipByGlobalNorm(grads: Grads, maxNorm: number): { grads: Grads; norm: number } {
  if (!(maxNorm > 0)) throw new RangeError(`maxNorm must be > 0, got ${maxNorm}`);
  const norm = globalNorm(grads);
  const coef = Math.min(Math.fround(maxNorm / (norm + 1e-6)), 1);
  const out: Grads = new Map();
  for (const [k, g] of grads) out.set(k, coef === 1 ? g.clone() : tf.tidy(() => g.mul(coef)));
  return { grads: out, norm };
}

/** True when every element of every gradient is finite (one host read for the whole map). */
export function gradsAreFinite(grads: Grads): boolean {
  if (grads.size === 0) return true;
  const t = tf.tidy(() => {
    const perTensor = [...grads.values()].map((g) => tf.isFinite(g).logicalNot().any());
    return tf.stack(perTensor).any();
  });
  const anyBad = t.dataSync()[0]!;
  t.dispose();
  return anyBad === 0;
}

/**
 * Sums gradients over k micro-batches and hands back their mean, so k micro-batches of size b give
 * the same update as one batch of k·b with a mean-reduced loss.
 */
export class GradAccumulator {
  private sums: Grads = new Map();
  private n = 0;

  /** Add one micro-batch's gradients (not taken over: the caller still disposes them). */
  add(grads: Grads): void {
    for (const [k, g] of grads) {
      const prev = this.sums.get(k);
      if (prev && !sameShape(prev.shape, g.shape)) {
        throw new Error(`accumulated gradient '${k}' has shape [${prev.shape}], new one has [${g.shape}]`);
      }
      this.sums.set(k, prev ? tf.tidy(() => prev.add(g)) : g.clone());
      prev?.dispose();
    }
    this.n++;
  }

  get count(): number {
    return this.n;
  }

  /** The mean over the micro-batches added since the last reset; resets. The caller owns the result. */
  takeMean(): Grads {
    if (this.n === 0) throw new Error('GradAccumulator.takeMean called before any add');
    const out: Grads = new Map();
    for (const [k, s] of this.sums) out.set(k, tf.tidy(() => s.div(this.n)));
    this.reset();
    return out;
  }

  reset(): void {
    disposeGrads(this.sums);
    this.sums = new Map();
    this.n = 0;
  }

  dispose(): void {
    this.reset();
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * tf.variableGrads keys gradients by tfjs's internal variable names; trainers work with parameter
 * names (`stage.blocks.0.rdb.convs.1.weight`). `byVarName` maps the former to the latter.
 */
export function gradsByParamName(grads: tf.NamedTensorMap, byVarName: Map<string, string>): Grads {
  const out: Grads = new Map();
  for (const [varName, g] of Object.entries(grads)) {
    const name = byVarName.get(varName);
    if (!name) throw new Error(`gradient for an untracked variable ${varName}`);
    out.set(name, g);
  }
  return out;
}
