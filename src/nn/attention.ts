import { tf } from '../backend/tf.js';
import { Rng } from '../util/rng.js';
import { Module, ModuleList } from './module.js';
import { Linear } from './linear.js';
import { Rope2d, applyRope } from './rope.js';
import { FUSED_KERNELS, hasFusedKernel } from '../backend/fused.js';

/** Added to the score of a masked key: finite, so a row with every key masked gives a uniform row, not NaN. */
const MASKED_SCORE = -1e30;

export interface AttentionMasks {
  /** Additive mask on the scores, broadcast to [B, H, Nq, Nk]: [Nq, Nk], [B, 1, Nq, Nk] or [B, H, Nq, Nk]. */
  mask?: tf.Tensor;
  /** Key-padding mask [B, Nk]: 1 for a real token, 0 for padding (the HF `attention_mask` convention). */
  keyMask?: tf.Tensor;
  /** Query i may only attend to keys j ≤ i. */
  causal?: boolean;
}

export interface SdpaOptions extends AttentionMasks {
  /** Multiplies q·k; defaults to 1/√d. */
  scale?: number;
}

/**
 * softmax(q·kᵀ·scale + masks)·v with grouped key/value heads.
 * q [B, H, Nq, d]; k, v [B, Hkv, Nk, d] with H a multiple of Hkv. Query head h reads key/value head
 * ⌊h / (H/Hkv)⌋ — the head order of `repeat_interleave` in HF/LLaMA-style GQA — but without copying
 * K/V: the query heads of one group are stacked along the row axis and share one batched matmul.
 * Scores and softmax are float32. Returns [B, H, Nq, d].
 */
export function scaledDotProductAttention(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: SdpaOptions = {}): tf.Tensor4D {
  const [b, h, nq, d] = q.shape;
  const [bk, hkv, nk, dk] = k.shape;
  if (bk !== b || dk !== d || !sameShape(k.shape, v.shape))
    throw new Error(`attention: q [${q.shape}] does not fit k [${k.shape}] / v [${v.shape}]`);
  if (h % hkv !== 0) throw new Error(`attention: ${h} query heads are not a multiple of ${hkv} key/value heads`);
  const groups = h / hkv;
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  return tf.tidy(() => {
    const qg = q.cast('float32').mul(scale).reshape([b, hkv, groups * nq, d]);
    let scores = tf.matMul(qg, k.cast('float32'), false, true).reshape([b, h, nq, nk]);
    if (opts.mask) scores = scores.add(opts.mask.cast('float32'));
    if (opts.keyMask) {
      if (!sameShape(opts.keyMask.shape, [b, nk])) throw new Error(`attention: key mask must be [${b}, ${nk}], got [${opts.keyMask.shape}]`);
      const padded = tf.scalar(1).sub(opts.keyMask.cast('float32')).mul(MASKED_SCORE);
      scores = scores.add(padded.reshape([b, 1, 1, nk]));
    }
    if (opts.causal) scores = scores.add(causalBias(nq, nk));
    const probs = tf.softmax(scores, -1).reshape([b, hkv, groups * nq, nk]);
    return tf.matMul(probs, v.cast('float32')).reshape([b, h, nq, d]) as tf.Tensor4D;
  });
}

/**
 * scaledDotProductAttention on the token-major layout the projections produce: q [B, Nq, H, d],
 * k, v [B, Nk, Hkv, d] → [B, Nq, H, d], so merging the heads back is a free reshape. Where the
 * backend has the fused kernel (native) and no additive/key mask is given, one kernel forward and
 * one backward (tf.customGrad); otherwise the head transposes and the tfjs composite above.
 */
export function attentionTokens(q: tf.Tensor4D, k: tf.Tensor4D, v: tf.Tensor4D, opts: SdpaOptions = {}): tf.Tensor4D {
  const [b, nq, h, d] = q.shape;
  const [bk, nk, hkv, dk] = k.shape;
  if (bk !== b || dk !== d || !sameShape(k.shape, v.shape)) throw new Error(`attention: q [${q.shape}] does not fit k [${k.shape}] / v [${v.shape}]`);
  if (h % hkv !== 0) throw new Error(`attention: ${h} query heads are not a multiple of ${hkv} key/value heads`);
  const scale = opts.scale ?? 1 / Math.sqrt(d);
  const causal = opts.causal ?? false;
  const fusable = !opts.mask && !opts.keyMask && [q, k, v].every((t) => t.dtype === 'float32') && nq > 0 && nk > 0;
  if (fusable && hasFusedKernel(FUSED_KERNELS.attention)) {
    const attrs = { scale, causal };
    const run = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
      const [qi, ki, vi, save] = args as [tf.Tensor, tf.Tensor, tf.Tensor, tf.GradSaveFunc];
      const [o, probs] = tf.engine().runKernel(FUSED_KERNELS.attention, { q: qi, k: ki, v: vi }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
      save([qi, ki, vi, probs!]);
      return {
        value: o!,
        gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
          const [qs, ks, vs, ps] = saved as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor];
          return tf.engine().runKernel(FUSED_KERNELS.attentionGrad, { dy, q: qs, k: ks, v: vs, probs: ps }, attrs as unknown as tf.NamedAttrMap) as tf.Tensor[];
        },
      };
    });
    return run(q, k, v) as tf.Tensor4D;
  }
  return tf.tidy(() => {
    const heads = (t: tf.Tensor4D) => t.transpose([0, 2, 1, 3]) as tf.Tensor4D;
    return heads(scaledDotProductAttention(heads(q), heads(k), heads(v), opts));
  });
}

/** [Nq, Nk] with 0 where key j ≤ query i and MASKED_SCORE above the diagonal. */
function causalBias(nq: number, nk: number): tf.Tensor2D {
  const data = new Float32Array(nq * nk);
  for (let i = 0; i < nq; i++) for (let j = i + 1; j < nk; j++) data[i * nk + j] = MASKED_SCORE;
  return tf.tensor2d(data, [nq, nk]);
}

export interface AttentionOptions {
  numHeads: number;
  /** Key/value heads; fewer than numHeads gives grouped-query attention, 1 gives multi-query. */
  numKvHeads?: number;
  /** Defaults to dim / numHeads. */
  headDim?: number;
  qkvBias?: boolean;
  outBias?: boolean;
  /** One `qkv` projection (timm/DiT) or separate q_proj/k_proj/v_proj (HF CLIP). */
  fused?: boolean;
  /** Name of the output projection: default `proj` when fused (timm), `out_proj` when not (CLIP); e.g. `o_proj`. */
  outName?: string;
  causal?: boolean;
  /** '2d': axial rotary embedding of q and k over the token grid (see rope.ts). */
  rope?: '2d' | null;
  ropeBase?: number;
  rng?: Rng;
}

export interface AttentionCall extends AttentionMasks {
  /** Token grid [h, w] for 2-D RoPE; a square grid is assumed when omitted. */
  grid?: [number, number];
}

/**
 * Multi-head self-attention with optional grouped / multi-query key-value heads.
 * Fused layout: `qkv.weight` [(H + 2·Hkv)·d, dim] with rows q | k | v, each head-major — for Hkv = H
 * exactly timm's `Attention` as used by DiT. Unfused: `q_proj` [H·d, dim], `k_proj`/`v_proj` [Hkv·d, dim].
 */
export class Attention extends Module {
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly causal: boolean;
  readonly fused: boolean;
  readonly qkv: Linear | null;
  readonly qProj: Linear | null;
  readonly kProj: Linear | null;
  readonly vProj: Linear | null;
  readonly outProj: Linear;
  private readonly rope: Rope2d | null;

  constructor(readonly dim: number, opts: AttentionOptions) {
    super();
    const rng = opts.rng ?? new Rng(0);
    this.numHeads = opts.numHeads;
    this.numKvHeads = opts.numKvHeads ?? opts.numHeads;
    this.headDim = opts.headDim ?? dim / this.numHeads;
    if (!Number.isInteger(this.headDim)) throw new Error(`Attention: dim ${dim} is not divisible by ${this.numHeads} heads`);
    if (this.numHeads % this.numKvHeads !== 0)
      throw new Error(`Attention: ${this.numHeads} heads are not a multiple of ${this.numKvHeads} key/value heads`);
    this.causal = opts.causal ?? false;
    this.fused = opts.fused ?? true;
    const bias = opts.qkvBias ?? true;
    const qDim = this.numHeads * this.headDim;
    const kvDim = this.numKvHeads * this.headDim;
    if (this.fused) {
      this.qkv = this.module('qkv', new Linear(dim, qDim + 2 * kvDim, { bias, rng }));
      this.qProj = this.kProj = this.vProj = null;
    } else {
      this.qkv = null;
      this.qProj = this.module('q_proj', new Linear(dim, qDim, { bias, rng }));
      this.kProj = this.module('k_proj', new Linear(dim, kvDim, { bias, rng }));
      this.vProj = this.module('v_proj', new Linear(dim, kvDim, { bias, rng }));
    }
    const outName = opts.outName ?? (this.fused ? 'proj' : 'out_proj');
    this.outProj = this.module(outName, new Linear(qDim, dim, { bias: opts.outBias ?? true, rng }));
    this.rope = opts.rope === '2d' ? new Rope2d(this.headDim, opts.ropeBase) : null;
  }

  /** x [B, N, dim] → [B, N, dim]. */
  forward(x: tf.Tensor3D, call: AttentionCall = {}): tf.Tensor3D {
    return tf.tidy(() => {
      const [b, n] = x.shape;
      const qDim = this.numHeads * this.headDim;
      const kvDim = this.numKvHeads * this.headDim;
      let q: tf.Tensor, k: tf.Tensor, v: tf.Tensor;
      if (this.qkv) [q, k, v] = tf.split(this.qkv.forward(x), [qDim, kvDim, kvDim], -1) as [tf.Tensor, tf.Tensor, tf.Tensor];
      else [q, k, v] = [this.qProj!.forward(x), this.kProj!.forward(x), this.vProj!.forward(x)];
      let qh = tokenHeads(q, b, n, this.numHeads, this.headDim);
      let kh = tokenHeads(k, b, n, this.numKvHeads, this.headDim);
      const vh = tokenHeads(v, b, n, this.numKvHeads, this.headDim);
      if (this.rope) {
        const [gh, gw] = call.grid ?? squareGrid(n);
        if (gh * gw !== n) throw new Error(`Attention: RoPE grid ${gh}×${gw} does not hold ${n} tokens`);
        const tables = this.rope.tables(gh, gw);
        // Tables are [N, d]; on the token-major layout they broadcast over the head axis.
        const perToken = { cos: tables.cos.reshape([n, 1, this.headDim]), sin: tables.sin.reshape([n, 1, this.headDim]) };
        qh = applyRope(qh, perToken) as tf.Tensor4D;
        kh = applyRope(kh, perToken) as tf.Tensor4D;
      }
      const o = attentionTokens(qh, kh, vh, { ...call, causal: this.causal || call.causal });
      return this.outProj.forward(o.reshape([b, n, this.numHeads * this.headDim])) as tf.Tensor3D;
    });
  }

  override dispose(): void {
    this.rope?.dispose();
    super.dispose();
  }
}

export interface CrossAttentionOptions {
  numHeads: number;
  numKvHeads?: number;
  headDim?: number;
  /** diffusers' `Attention` has no q/k/v bias by default. */
  qkvBias?: boolean;
  outBias?: boolean;
  rng?: Rng;
}

/**
 * Attention from x [B, N, dim] to a context [B, M, contextDim] (text tokens, a coarser scale …),
 * named as diffusers: `to_q`, `to_k`, `to_v`, `to_out.0`.
 */
export class CrossAttention extends Module {
  readonly numHeads: number;
  readonly numKvHeads: number;
  readonly headDim: number;
  readonly toQ: Linear;
  readonly toK: Linear;
  readonly toV: Linear;
  readonly toOut: ModuleList<Linear>;

  constructor(readonly dim: number, readonly contextDim: number, opts: CrossAttentionOptions) {
    super();
    const rng = opts.rng ?? new Rng(0);
    this.numHeads = opts.numHeads;
    this.numKvHeads = opts.numKvHeads ?? opts.numHeads;
    this.headDim = opts.headDim ?? dim / this.numHeads;
    if (!Number.isInteger(this.headDim)) throw new Error(`CrossAttention: dim ${dim} is not divisible by ${this.numHeads} heads`);
    if (this.numHeads % this.numKvHeads !== 0)
      throw new Error(`CrossAttention: ${this.numHeads} heads are not a multiple of ${this.numKvHeads} key/value heads`);
    const bias = opts.qkvBias ?? false;
    const qDim = this.numHeads * this.headDim;
    const kvDim = this.numKvHeads * this.headDim;
    this.toQ = this.module('to_q', new Linear(dim, qDim, { bias, rng }));
    this.toK = this.module('to_k', new Linear(contextDim, kvDim, { bias, rng }));
    this.toV = this.module('to_v', new Linear(contextDim, kvDim, { bias, rng }));
    this.toOut = this.module('to_out', new ModuleList([new Linear(qDim, dim, { bias: opts.outBias ?? true, rng })]));
  }

  /** x [B, N, dim], context [B, M, contextDim] → [B, N, dim]; masks index the context tokens. */
  forward(x: tf.Tensor3D, context: tf.Tensor3D, masks: AttentionMasks = {}): tf.Tensor3D {
    return tf.tidy(() => {
      const [b, n] = x.shape;
      const m = context.shape[1];
      const q = tokenHeads(this.toQ.forward(x), b, n, this.numHeads, this.headDim);
      const k = tokenHeads(this.toK.forward(context), b, m, this.numKvHeads, this.headDim);
      const v = tokenHeads(this.toV.forward(context), b, m, this.numKvHeads, this.headDim);
      const o = attentionTokens(q, k, v, masks);
      return this.toOut.at(0).forward(o.reshape([b, n, this.numHeads * this.headDim])) as tf.Tensor3D;
    });
  }
}

/** [B, N, heads·d] → [B, N, heads, d]: a reshape, no data movement. */
function tokenHeads(t: tf.Tensor, b: number, n: number, heads: number, d: number): tf.Tensor4D {
  return t.reshape([b, n, heads, d]) as tf.Tensor4D;
}

function squareGrid(n: number): [number, number] {
  const s = Math.round(Math.sqrt(n));
  if (s * s !== n) throw new Error(`Attention: ${n} tokens are not a square grid; pass grid: [h, w] for 2-D RoPE`);
  return [s, s];
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}
