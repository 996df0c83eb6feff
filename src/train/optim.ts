import { tf } from '../backend/tf.js';
import type { HostTensor } from '../nn/module.js';
import { FUSED_KERNELS, hasFusedKernel, type AdamKernelAttrs } from '../backend/fused.js';

/**
 * Optimizers over named parameters, reproducing torch.optim (1.13–2.x single-tensor path) step by step:
 * same operation order, so trajectories agree with PyTorch to float32 rounding.
 *
 * Ownership: `step` never takes ownership of the gradients; optimizer state lives in kept tensors
 * that are replaced (and the old ones disposed) on every step.
 */

export type ParamFilter = (name: string, param: tf.Variable) => boolean;

/** Options that may differ between parameter groups. */
export interface GroupOptions {
  weightDecay?: number;
  /** Multiplies the lr passed to `step` for this group (e.g. a slower LR for an embedding table). */
  lrScale?: number;
}

export interface ParamGroupRule extends GroupOptions {
  match: ParamFilter;
}

export interface OptimizerBaseOptions extends GroupOptions {
  /** First matching rule wins; parameters matching none use the top-level options. */
  groups?: ParamGroupRule[];
}

/**
 * The usual "no weight decay" set: biases and norm scales (rank ≤ 1) and embedding tables, as in
 * minGPT/timm. Use as `groups: [{ match: isNoDecayParam, weightDecay: 0 }]`.
 */
export const isNoDecayParam: ParamFilter = (name, param) =>
  param.rank <= 1 || /(^|\.)(bias|pos_embed|cls_token)$/.test(name) || /(^|\.)[^.]*(embed|embedding|norm|ln)[^.]*\.weight$/i.test(name);

interface ResolvedGroup {
  weightDecay: number;
  lrScale: number;
}

export type OptimizerState = Map<string, HostTensor>;

export abstract class Optimizer {
  protected readonly params: Map<string, tf.Variable>;
  protected readonly groupOf = new Map<string, ResolvedGroup>();
  /** Per-parameter step counts: torch skips (and does not count) parameters that got no gradient. */
  protected readonly steps = new Map<string, number>();
  /** slot name → parameter name → tensor, e.g. exp_avg → blocks.0.weight → m. */
  protected readonly slots = new Map<string, Map<string, tf.Tensor>>();

  constructor(params: Map<string, tf.Variable>, opts: OptimizerBaseOptions, defaultWeightDecay: number) {
    this.params = new Map(params);
    for (const [name, p] of this.params) {
      const rule = opts.groups?.find((g) => g.match(name, p));
      this.groupOf.set(name, {
        weightDecay: rule?.weightDecay ?? opts.weightDecay ?? defaultWeightDecay,
        lrScale: rule?.lrScale ?? opts.lrScale ?? 1,
      });
    }
  }

  /** Slot names this optimizer keeps per parameter, in state-dict order. */
  protected abstract readonly slotNames: readonly string[];

  /** Update one parameter; returns the new slot tensors (inside a tidy: keep nothing else). */
  protected abstract update(
    name: string,
    param: tf.Variable,
    grad: tf.Tensor,
    lr: number,
    group: ResolvedGroup,
    step: number,
    slots: Map<string, tf.Tensor>,
  ): { param: tf.Tensor; slots: Map<string, tf.Tensor> };

  /**
   * Apply one update with learning rate `lr` to every parameter that has a gradient in `grads`.
   * A gradient for a name the optimizer does not own is a programming error.
   */
  step(grads: Map<string, tf.Tensor>, lr: number): void {
    for (const name of grads.keys()) {
      if (!this.params.has(name)) throw new Error(`optimizer got a gradient for unknown parameter '${name}'`);
    }
    for (const [name, param] of this.params) {
      const grad = grads.get(name);
      if (!grad) continue;
      if (!sameShape(grad.shape, param.shape)) {
        throw new Error(`gradient for '${name}' has shape [${grad.shape}], parameter has [${param.shape}]`);
      }
      const step = (this.steps.get(name) ?? 0) + 1;
      this.steps.set(name, step);
      const group = this.groupOf.get(name)!;
      const old = new Map<string, tf.Tensor>();
      for (const s of this.slotNames) {
        const t = this.slots.get(s)?.get(name);
        if (t) old.set(s, t);
      }
      const fresh = tf.tidy(() => {
        const out = this.update(name, param, grad, lr * group.lrScale, group, step, old);
        param.assign(out.param);
        return [...out.slots.entries()].map(([k, v]) => [k, v] as const);
      });
      for (const [slot, t] of fresh) {
        let bySlot = this.slots.get(slot);
        if (!bySlot) this.slots.set(slot, (bySlot = new Map()));
        bySlot.set(name, t);
      }
      for (const [slot, t] of old) if (this.slots.get(slot)?.get(name) !== t) t.dispose();
    }
  }

  /**
   * Host copies of the state: `<slot>.<param>` float tensors and `step.<param>` int32 scalars.
   * Loading it into a fresh optimizer over the same parameters resumes bit-exactly.
   */
  stateDict(): OptimizerState {
    const out: OptimizerState = new Map();
    for (const name of this.params.keys()) {
      const step = this.steps.get(name);
      if (step === undefined) continue;
      out.set(`step.${name}`, { shape: [], data: Int32Array.of(step) });
      for (const s of this.slotNames) {
        const t = this.slots.get(s)?.get(name);
        if (t) out.set(`${s}.${name}`, { shape: [...t.shape], data: (t.dataSync() as Float32Array).slice() });
      }
    }
    return out;
  }

  loadStateDict(state: Map<string, HostTensor | tf.Tensor>): void {
    const known = new Set<string>();
    const incoming = new Map<string, Map<string, tf.Tensor>>();
    const steps = new Map<string, number>();
    try {
      for (const [key, value] of state) {
        const dot = key.indexOf('.');
        const slot = key.slice(0, dot);
        const name = key.slice(dot + 1);
        const param = this.params.get(name);
        if (dot < 0 || !param || (slot !== 'step' && !this.slotNames.includes(slot))) {
          throw new Error(`optimizer state has unexpected key '${key}'`);
        }
        known.add(name);
        if (slot === 'step') {
          const v = value instanceof tf.Tensor ? value.dataSync()[0]! : value.data[0]!;
          if (!Number.isInteger(v) || v < 0) throw new Error(`optimizer state '${key}' must be a non-negative integer, got ${v}`);
          steps.set(name, v);
          continue;
        }
        if (!sameShape(value.shape, param.shape)) {
          throw new Error(`optimizer state '${key}' has shape [${value.shape}], parameter has [${param.shape}]`);
        }
        const t = value instanceof tf.Tensor ? value.clone() : tf.tensor(Float32Array.from(value.data), value.shape, 'float32');
        let bySlot = incoming.get(slot);
        if (!bySlot) incoming.set(slot, (bySlot = new Map()));
        bySlot.set(name, t);
      }
      for (const name of known) if (!steps.has(name)) throw new Error(`optimizer state for '${name}' has no 'step.${name}'`);
    } catch (e) {
      for (const m of incoming.values()) for (const t of m.values()) t.dispose();
      throw e;
    }
    this.disposeSlots();
    this.steps.clear();
    for (const [k, v] of steps) this.steps.set(k, v);
    for (const [k, v] of incoming) this.slots.set(k, v);
  }

  /** Number of updates applied to `name` (0 if it never had a gradient). */
  stepCount(name: string): number {
    return this.steps.get(name) ?? 0;
  }

  dispose(): void {
    this.disposeSlots();
    this.steps.clear();
  }

  private disposeSlots(): void {
    for (const m of this.slots.values()) for (const t of m.values()) t.dispose();
    this.slots.clear();
  }
}

export interface AdamOptions extends OptimizerBaseOptions {
  betas?: [number, number];
  eps?: number;
}

function adamMoments(grad: tf.Tensor, slots: Map<string, tf.Tensor>, beta1: number, beta2: number) {
  const m0 = slots.get('exp_avg') ?? tf.zerosLike(grad);
  const v0 = slots.get('exp_avg_sq') ?? tf.zerosLike(grad);
  const m = m0.mul(beta1).add(grad.mul(1 - beta1));
  const v = v0.mul(beta2).add(grad.mul(grad).mul(1 - beta2));
  return { m, v };
}

/** p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps), eps outside the sqrt as in torch. */
function adamApply(p: tf.Tensor, m: tf.Tensor, v: tf.Tensor, lr: number, step: number, beta1: number, beta2: number, eps: number) {
  const bc1 = 1 - beta1 ** step;
  const bc2 = 1 - beta2 ** step;
  const denom = v.sqrt().div(Math.sqrt(bc2)).add(eps);
  return p.sub(m.div(denom).mul(lr / bc1));
}

/** One Adam(W) step: the backend's fused kernel where it has one (same arithmetic, same bits), else tfjs ops. */
function adamStep(param: tf.Tensor, grad: tf.Tensor, slots: Map<string, tf.Tensor>, attrs: AdamKernelAttrs): { p: tf.Tensor; m: tf.Tensor; v: tf.Tensor } {
  const m0 = slots.get('exp_avg');
  const v0 = slots.get('exp_avg_sq');
  const fused = hasFusedKernel(FUSED_KERNELS.adam) && [param, grad, m0 ?? param, v0 ?? param].every((t) => t.dtype === 'float32');
  if (fused) {
    const inputs: tf.NamedTensorMap = m0 && v0 ? { param, grad, m: m0, v: v0 } : { param, grad };
    const [p, m, v] = tf.engine().runKernel(FUSED_KERNELS.adam, inputs, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
    return { p: p!, m: m!, v: v! };
  }
  const { lr, beta1, beta2, eps, weightDecay, step, decoupled } = attrs;
  const decayed = decoupled && weightDecay !== 0 ? param.mul(1 - lr * weightDecay) : param;
  const gEff = !decoupled && weightDecay !== 0 ? grad.add(param.mul(weightDecay)) : grad;
  const { m, v } = adamMoments(gEff, slots, beta1, beta2);
  return { p: adamApply(decayed, m, v, lr, step, beta1, beta2, eps), m, v };
}

/** torch.optim.AdamW: decoupled decay p ← p·(1 − lr·wd) before the Adam update. Default wd 0.01. */
export class AdamW extends Optimizer {
  protected readonly slotNames = ['exp_avg', 'exp_avg_sq'] as const;
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  constructor(params: Map<string, tf.Variable>, opts: AdamOptions = {}) {
    super(params, opts, 0.01);
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
  }
  protected update(_n: string, param: tf.Variable, grad: tf.Tensor, lr: number, g: ResolvedGroup, step: number, slots: Map<string, tf.Tensor>) {
    const hyper = { lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: g.weightDecay, step, decoupled: true };
    const { p, m, v } = adamStep(param, grad, slots, hyper);
    return { param: p, slots: new Map([['exp_avg', m], ['exp_avg_sq', v]]) };
  }
}

/** torch.optim.Adam: weight decay as L2, g ← g + wd·p, before the moments. Default wd 0. */
export class Adam extends Optimizer {
  protected readonly slotNames = ['exp_avg', 'exp_avg_sq'] as const;
  private readonly beta1: number;
  private readonly beta2: number;
  private readonly eps: number;
  constructor(params: Map<string, tf.Variable>, opts: AdamOptions = {}) {
    super(params, opts, 0);
    [this.beta1, this.beta2] = opts.betas ?? [0.9, 0.999];
    this.eps = opts.eps ?? 1e-8;
  }
  protected update(_n: string, param: tf.Variable, grad: tf.Tensor, lr: number, g: ResolvedGroup, step: number, slots: Map<string, tf.Tensor>) {
    const hyper = { lr, beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: g.weightDecay, step, decoupled: false };
    const { p, m, v } = adamStep(param, grad, slots, hyper);
    return { param: p, slots: new Map([['exp_avg', m], ['exp_avg_sq', v]]) };
  }
}

export interface SGDOptions extends OptimizerBaseOptions {
  momentum?: number;
  dampening?: number;
  nesterov?: boolean;
}

/**
 * torch.optim.SGD: d = g + wd·p; buf = d on the first step, else momentum·buf + (1 − dampening)·d;
 * nesterov uses d + momentum·buf, otherwise buf; p ← p − lr·d.
 */
export class SGD extends Optimizer {
  protected readonly slotNames = ['momentum_buffer'] as const;
  private readonly momentum: number;
  private readonly dampening: number;
  private readonly nesterov: boolean;
  constructor(params: Map<string, tf.Variable>, opts: SGDOptions = {}) {
    super(params, opts, 0);
    this.momentum = opts.momentum ?? 0;
    this.dampening = opts.dampening ?? 0;
    this.nesterov = opts.nesterov ?? false;
    if (this.nesterov && (this.momentum <= 0 || this.dampening !== 0)) {
      throw new Error('Nesterov momentum requires a momentum and zero dampening');
    }
  }
  protected update(_n: string, param: tf.Variable, grad: tf.Tensor, lr: number, g: ResolvedGroup, _step: number, slots: Map<string, tf.Tensor>) {
    let d = g.weightDecay !== 0 ? grad.add(param.mul(g.weightDecay)) : grad;
    const out = new Map<string, tf.Tensor>();
    if (this.momentum !== 0) {
      const prev = slots.get('momentum_buffer');
      const buf = prev ? prev.mul(this.momentum).add(d.mul(1 - this.dampening)) : d.clone();
      out.set('momentum_buffer', buf);
      d = this.nesterov ? d.add(buf.mul(this.momentum)) : buf;
    }
    return { param: param.sub(d.mul(lr)), slots: out };
  }
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
