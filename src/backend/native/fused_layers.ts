import { tf } from '../tf.js';
import { CONV_ACTIVATIONS, FUSED_KERNELS, NORM_MODULATE_ACTIVATIONS, type ConvListAttrs, type LinearGradAttrs, type LoraLinearGradAttrs, type NormModulateAttrs } from '../fused.js';
import type { NativeAddon } from './addon.js';
import { nativeGemmPolicy, nativeMatMul, type GemmPolicy } from './matmul.js';
import { requireFloat32, type CpuBackendStorage } from './storage.js';
import { nativeBuffers } from './buffer_pool.js';

// A residual dense block's conv as tfjs ops is concat → transpose(weight) → Conv2D → Add(bias) →
// LeakyRelu forward and ~10 kernels backward (SplitV, two conv passes, Sum, reshapes, the
// transpose back), each paying the engine's per-kernel cost; GroupNorm/LayerNorm + FiLM + SiLU is
// ~8 and ~15. These run each as one native call per direction.

/** The addon functions behind the kernels of this file (native/src/fused_conv.cc, fused_norm.cc). */
export interface FusedLayerAddon {
  /**
   * y = act(conv(concat(inputs, channels), weight [O, C, kh, kw]) + bias), NHWC; geom = [n, h, w, o,
   * kh, kw, oh, ow, sh, sw, pt, pl, pb, pr], activation 0 linear, 1 relu, 3 leaky relu. Returns the oneDNN implementation.
   */
  convList(geom: Int32Array, channels: Int32Array, inputs: Float32Array[], weight: Float32Array, bias: Float32Array | null, activation: number, alpha: number, y: Float32Array): string;
  /** Gradients of convList: each input's dx, dw [O, C, kh, kw] and db, each null when not wanted; y is read for the activation's derivative. */
  convListGrad(
    geom: Int32Array,
    channels: Int32Array,
    inputs: Float32Array[],
    weight: Float32Array,
    y: Float32Array | null,
    dy: Float32Array,
    activation: number,
    alpha: number,
    dxs: (Float32Array | null)[],
    dw: Float32Array | null,
    db: Float32Array | null,
  ): void;
  /** act(norm(x)·(1 + scale) + shift); dims = [n, t, p, c, groups, width, scaleOffset, shiftOffset, activation]; mean/rstd [n, t, groups]. */
  normModulate(x: Float32Array, dims: Int32Array, eps: number, mod: Float32Array, y: Float32Array, mean: Float32Array, rstd: Float32Array): void;
  /** dx and dmod [n, width] (scale and shift gradients at their columns, zeros elsewhere). */
  normModulateGrad(dy: Float32Array, x: Float32Array, dims: Int32Array, mod: Float32Array, mean: Float32Array, rstd: Float32Array, dx: Float32Array, dmod: Float32Array): void;
  /** out = x + branch·gate, gate = mod[b, offset : offset + c] per sample; dims = [n, s, c, width, offset]. */
  gatedResidual(x: Float32Array, branch: Float32Array, mod: Float32Array, dims: Int32Array, out: Float32Array): void;
  /** dbranch = dy·gate and dmod (Σ dy·branch at the gate's columns, zeros elsewhere). */
  gatedResidualGrad(dy: Float32Array, branch: Float32Array, mod: Float32Array, dims: Int32Array, dbranch: Float32Array, dmod: Float32Array): void;
}

function convGeometry(x: tf.TensorInfo, weight: tf.TensorInfo, attrs: ConvListAttrs, kernel: string): { geom: Int32Array; outShape: [number, number, number, number] } {
  if (x.shape.length !== 4 || weight.shape.length !== 4) throw new Error(`${kernel}: expected NHWC inputs and an [O, C, kh, kw] weight`);
  const [n, h, w] = x.shape as [number, number, number, number];
  const [o, , kh, kw] = weight.shape as [number, number, number, number];
  const [pt, pl, pb, pr] = attrs.pad;
  const oh = Math.floor((h + pt + pb - kh) / attrs.stride) + 1;
  const ow = Math.floor((w + pl + pr - kw) / attrs.stride) + 1;
  if (oh < 1 || ow < 1) throw new Error(`${kernel}: a ${kh}×${kw} kernel does not fit a ${h}×${w} input with padding [${attrs.pad}]`);
  return { geom: Int32Array.of(n, h, w, o, kh, kw, oh, ow, attrs.stride, attrs.stride, pt, pl, pb, pr), outShape: [n, oh, ow, o] };
}

/** The list inputs x0 … x{k−1} in order, checked to share batch and spatial size and to add up to the weight's input channels. */
function listInputs(inputs: tf.NamedTensorInfoMap, count: number, weight: tf.TensorInfo, kernel: string): { xs: tf.TensorInfo[]; channels: Int32Array } {
  const xs = Array.from({ length: count }, (_, i) => inputs[`x${i}`]);
  if (xs.some((x) => x === undefined)) throw new Error(`${kernel}: expected inputs x0 … x${count - 1}`);
  const list = xs as tf.TensorInfo[];
  const [n, h, w] = list[0]!.shape;
  if (list.some((x) => x.shape.length !== 4 || x.shape[0] !== n || x.shape[1] !== h || x.shape[2] !== w)) {
    throw new Error(`${kernel}: inputs must be NHWC with one batch and spatial size, got ${list.map((x) => `[${x.shape}]`).join(', ')}`);
  }
  const channels = Int32Array.from(list, (x) => x.shape[3]!);
  const total = channels.reduce((a, b) => a + b, 0);
  if (total !== weight.shape[1]) throw new Error(`${kernel}: inputs have ${total} channels in all, the weight [${weight.shape}] expects ${weight.shape[1]}`);
  return { xs: list, channels };
}

function activationCode(attrs: ConvListAttrs, kernel: string): number {
  const code = CONV_ACTIVATIONS[attrs.activation];
  if (code === undefined) throw new Error(`${kernel}: unknown activation '${String(attrs.activation)}'`);
  return code;
}

function normDims(x: tf.TensorInfo, mod: tf.TensorInfo, attrs: NormModulateAttrs, kernel: string): Int32Array {
  if (x.shape.length < 2 || mod.shape.length !== 2 || mod.shape[0] !== x.shape[0]) throw new Error(`${kernel}: x [${x.shape}] needs mod [batch, width], got [${mod.shape}]`);
  const n = x.shape[0]!;
  const c = x.shape[x.shape.length - 1]!;
  const s = tf.util.sizeFromShape(x.shape) / (n * c);
  const act = NORM_MODULATE_ACTIVATIONS[attrs.activation];
  if (act === undefined) throw new Error(`${kernel}: unknown activation '${String(attrs.activation)}'`);
  const groups = attrs.perPosition ? 1 : attrs.groups;
  return Int32Array.of(n, attrs.perPosition ? s : 1, attrs.perPosition ? 1 : s, c, groups, mod.shape[1]!, attrs.scaleOffset, attrs.shiftOffset, act);
}

function linearRows(x: { shape: readonly number[] }, weight: tf.TensorInfo, kernel: string): { rows: number; inF: number; outF: number } {
  const [outF, inF] = weight.shape as [number, number];
  if (weight.shape.length !== 2 || x.shape.length < 1 || x.shape[x.shape.length - 1] !== inF) {
    throw new Error(`${kernel}: x [${x.shape}] does not fit a weight [${weight.shape}] ([out, in])`);
  }
  return { rows: tf.util.sizeFromShape([...x.shape]) / inF, inF, outF };
}

/** The wanted ones of dweight = dyᵀ·x [out, in] and dbias = Σ_rows dy [out] (SfLinearGrad and SfLoraLinearGrad). */
function weightAndBiasGrads(
  addon: NativeAddon,
  backend: CpuBackendStorage,
  dy: Float32Array,
  x: Float32Array | null,
  rows: number,
  inF: number,
  outF: number,
  want: LinearGradAttrs,
  policy: GemmPolicy,
): tf.TensorInfo[] {
  const out: tf.TensorInfo[] = [];
  if (want.dweight && x) out.push(backend.makeTensorInfo([outF, inF], 'float32', nativeMatMul(addon, dy, [rows, outF], x, [rows, inF], true, false, undefined, policy).values));
  if (want.dbias) {
    const db = nativeBuffers.take(outF);
    addon.reduce(0, dy, Int32Array.of(rows, outF), Int32Array.of(1, 0), db);
    out.push(backend.makeTensorInfo([outF], 'float32', db));
  }
  return out;
}

/** [batch, positions per sample, channels] of a gated residual, checked against mod [batch, width] and the gate's offset. */
function gateDims(x: tf.TensorInfo, mod: tf.TensorInfo, offset: number, kernel: string): [number, number, number, number] {
  const n = x.shape[0]!;
  const c = x.shape[x.shape.length - 1]!;
  const w = mod.shape[1]!;
  if (x.shape.length < 2 || mod.shape.length !== 2 || mod.shape[0] !== n || !(offset >= 0) || offset + c > w) {
    throw new Error(`${kernel}: x [${x.shape}] needs a gate of ${c} columns at ${offset} in mod [${mod.shape}]`);
  }
  return [n, tf.util.sizeFromShape(x.shape) / (n * c), c, w];
}

export function fusedLayerConfigs(addon: NativeAddon, backendName: string): tf.KernelConfig[] {
  const policy = nativeGemmPolicy(addon);
  return [
    {
      kernelName: FUSED_KERNELS.gatedResidual,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.gatedResidual;
        const { x, branch, mod } = args.inputs as Record<'x' | 'branch' | 'mod', tf.TensorInfo>;
        const offset = Number(args.attrs?.offset);
        const backend = args.backend as CpuBackendStorage;
        const [n, s, c, w] = gateDims(x, mod, offset, kernel);
        if (!tf.util.arraysEqual(x.shape, branch.shape)) throw new Error(`${kernel}: x [${x.shape}] and branch [${branch.shape}] differ`);
        const xv = requireFloat32(backend, x, kernel, 'x');
        const out = nativeBuffers.take(xv.length);
        addon.gatedResidual(xv, requireFloat32(backend, branch, kernel, 'branch'), requireFloat32(backend, mod, kernel, 'mod'), Int32Array.of(n, s, c, w, offset), out);
        return backend.makeTensorInfo([...x.shape], 'float32', out);
      },
    },
    {
      kernelName: FUSED_KERNELS.gatedResidualGrad,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.gatedResidualGrad;
        const { dy, branch, mod } = args.inputs as Record<'dy' | 'branch' | 'mod', tf.TensorInfo>;
        const offset = Number(args.attrs?.offset);
        const backend = args.backend as CpuBackendStorage;
        const [n, s, c, w] = gateDims(branch, mod, offset, kernel);
        const bv = requireFloat32(backend, branch, kernel, 'branch');
        const dbranch = nativeBuffers.take(bv.length);
        const dmod = nativeBuffers.take(n * w);
        addon.gatedResidualGrad(requireFloat32(backend, dy, kernel, 'dy'), bv, requireFloat32(backend, mod, kernel, 'mod'), Int32Array.of(n, s, c, w, offset), dbranch, dmod);
        return [backend.makeTensorInfo([...branch.shape], 'float32', dbranch), backend.makeTensorInfo([n, w], 'float32', dmod)];
      },
    },
    {
      kernelName: FUSED_KERNELS.linear,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.linear;
        const { x, weight, bias } = args.inputs as Record<string, tf.TensorInfo | undefined>;
        if (!x || !weight) throw new Error(`${kernel}: needs x and weight`);
        const backend = args.backend as CpuBackendStorage;
        const { rows, inF, outF } = linearRows(x, weight, kernel);
        if (bias && (bias.shape.length !== 1 || bias.shape[0] !== outF)) throw new Error(`${kernel}: bias [${bias.shape}] is not [${outF}]`);
        const xv = requireFloat32(backend, x, kernel, 'x');
        const wv = requireFloat32(backend, weight, kernel, 'weight');
        const epilogue = bias ? { bias: requireFloat32(backend, bias, kernel, 'bias'), activation: 0, alpha: 0 } : undefined;
        const { values } = nativeMatMul(addon, xv, [rows, inF], wv, [outF, inF], false, true, epilogue, policy);
        return backend.makeTensorInfo([...x.shape.slice(0, -1), outF], 'float32', values);
      },
    },
    {
      kernelName: FUSED_KERNELS.linearGrad,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.linearGrad;
        const { dy, x, weight } = args.inputs as Record<'dy' | 'weight', tf.TensorInfo> & { x?: tf.TensorInfo };
        const want = args.attrs as unknown as LinearGradAttrs;
        const backend = args.backend as CpuBackendStorage;
        const { rows, inF, outF } = linearRows({ shape: want.xShape }, weight, kernel);
        const dyv = requireFloat32(backend, dy, kernel, 'dy');
        if (dyv.length !== rows * outF) throw new Error(`${kernel}: dy [${dy.shape}] does not fit ${rows} rows of ${outF}`);
        const out: tf.TensorInfo[] = [];
        if (want.dx) {
          const { values } = nativeMatMul(addon, dyv, [rows, outF], requireFloat32(backend, weight, kernel, 'weight'), [outF, inF], false, false, undefined, policy);
          out.push(backend.makeTensorInfo([...want.xShape], 'float32', values));
        }
        if (want.dweight && !x) throw new Error(`${kernel}: the weight gradient needs x`);
        out.push(...weightAndBiasGrads(addon, backend, dyv, x ? requireFloat32(backend, x, kernel, 'x') : null, rows, inF, outF, want, policy));
        return out;
      },
    },
    {
      kernelName: FUSED_KERNELS.loraLinear,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.loraLinear;
        const { x, weight, bias, loraA, loraB } = args.inputs as Record<string, tf.TensorInfo | undefined>;
        if (!x || !weight || !loraA || !loraB) throw new Error(`${kernel}: needs x, weight, loraA and loraB`);
        const scale = Number(args.attrs?.scale);
        const backend = args.backend as CpuBackendStorage;
        const { rows, inF, outF } = linearRows(x, weight, kernel);
        const r = loraA.shape[0]!;
        if (loraA.shape.length !== 2 || loraA.shape[1] !== inF || loraB.shape.length !== 2 || loraB.shape[0] !== outF || loraB.shape[1] !== r) {
          throw new Error(`${kernel}: loraA [${loraA.shape}] and loraB [${loraB.shape}] do not fit a weight [${weight.shape}]`);
        }
        if (bias && (bias.shape.length !== 1 || bias.shape[0] !== outF)) throw new Error(`${kernel}: bias [${bias.shape}] is not [${outF}]`);
        const xv = requireFloat32(backend, x, kernel, 'x');
        const y = nativeMatMul(addon, xv, [rows, inF], requireFloat32(backend, weight, kernel, 'weight'), [outF, inF], false, true, bias ? { bias: requireFloat32(backend, bias, kernel, 'bias') } : undefined, policy).values;
        const h = nativeMatMul(addon, xv, [rows, inF], requireFloat32(backend, loraA, kernel, 'loraA'), [r, inF], false, true, { scale }, policy).values;
        nativeMatMul(addon, h, [rows, r], requireFloat32(backend, loraB, kernel, 'loraB'), [outF, r], false, true, { addTo: y }, policy);
        return [backend.makeTensorInfo([...x.shape.slice(0, -1), outF], 'float32', y), backend.makeTensorInfo([rows, r], 'float32', h)];
      },
    },
    {
      kernelName: FUSED_KERNELS.loraLinearGrad,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.loraLinearGrad;
        const { dy, x, h, weight, loraA, loraB } = args.inputs as Record<'dy' | 'x' | 'h' | 'weight' | 'loraA' | 'loraB', tf.TensorInfo>;
        const want = args.attrs as unknown as LoraLinearGradAttrs;
        const backend = args.backend as CpuBackendStorage;
        const { rows, inF, outF } = linearRows(x, weight, kernel);
        const r = loraA.shape[0]!;
        const dyv = requireFloat32(backend, dy, kernel, 'dy');
        if (dyv.length !== rows * outF) throw new Error(`${kernel}: dy [${dy.shape}] does not fit ${rows} rows of ${outF}`);
        const xv = requireFloat32(backend, x, kernel, 'x');
        const av = requireFloat32(backend, loraA, kernel, 'loraA');
        // g = scale·dy·B [rows, r]: the branch's gradient at h's input side.
        const g = nativeMatMul(addon, dyv, [rows, outF], requireFloat32(backend, loraB, kernel, 'loraB'), [outF, r], false, false, { scale: want.scale }, policy).values;
        const out: tf.TensorInfo[] = [];
        if (want.dx) {
          const dx = nativeMatMul(addon, dyv, [rows, outF], requireFloat32(backend, weight, kernel, 'weight'), [outF, inF], false, false, undefined, policy).values;
          nativeMatMul(addon, g, [rows, r], av, [r, inF], false, false, { addTo: dx }, policy);
          out.push(backend.makeTensorInfo([...want.xShape], 'float32', dx));
        }
        out.push(...weightAndBiasGrads(addon, backend, dyv, xv, rows, inF, outF, want, policy));
        out.push(backend.makeTensorInfo([r, inF], 'float32', nativeMatMul(addon, g, [rows, r], xv, [rows, inF], true, false, undefined, policy).values));
        out.push(backend.makeTensorInfo([outF, r], 'float32', nativeMatMul(addon, dyv, [rows, outF], requireFloat32(backend, h, kernel, 'h'), [rows, r], true, false, undefined, policy).values));
        return out;
      },
    },
    {
      kernelName: FUSED_KERNELS.convList,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.convList;
        const attrs = args.attrs as unknown as ConvListAttrs;
        const backend = args.backend as CpuBackendStorage;
        const { weight, bias } = args.inputs as Record<string, tf.TensorInfo | undefined>;
        if (!weight) throw new Error(`${kernel}: no weight`);
        const { xs, channels } = listInputs(args.inputs, attrs.inputs, weight, kernel);
        const { geom, outShape } = convGeometry(xs[0]!, weight, attrs, kernel);
        const y = nativeBuffers.take(tf.util.sizeFromShape(outShape));
        addon.convList(
          geom,
          channels,
          xs.map((x, i) => requireFloat32(backend, x, kernel, `x${i}`)),
          requireFloat32(backend, weight, kernel, 'weight'),
          bias ? requireFloat32(backend, bias, kernel, 'bias') : null,
          activationCode(attrs, kernel),
          attrs.alpha,
          y,
        );
        return backend.makeTensorInfo(outShape, 'float32', y);
      },
    },
    {
      kernelName: FUSED_KERNELS.convListGrad,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.convListGrad;
        const attrs = args.attrs as unknown as ConvListAttrs;
        const backend = args.backend as CpuBackendStorage;
        const { weight, dy, y } = args.inputs as Record<string, tf.TensorInfo | undefined>;
        if (!weight || !dy) throw new Error(`${kernel}: needs dy and weight`);
        const { xs, channels } = listInputs(args.inputs, attrs.inputs, weight, kernel);
        const { geom } = convGeometry(xs[0]!, weight, attrs, kernel);
        const code = activationCode(attrs, kernel);
        if (code !== 0 && !y) throw new Error(`${kernel}: the activation's derivative needs the forward output y`);
        const dxs = xs.map((x) => nativeBuffers.take(tf.util.sizeFromShape(x.shape)));
        const dw = attrs.dweight ? nativeBuffers.take(tf.util.sizeFromShape(weight.shape)) : null;
        const db = attrs.hasBias && attrs.dbias ? nativeBuffers.take(weight.shape[0]!) : null;
        addon.convListGrad(
          geom,
          channels,
          xs.map((x, i) => requireFloat32(backend, x, kernel, `x${i}`)),
          requireFloat32(backend, weight, kernel, 'weight'),
          y && code !== 0 ? requireFloat32(backend, y, kernel, 'y') : null,
          requireFloat32(backend, dy, kernel, 'dy'),
          code,
          attrs.alpha,
          dxs,
          dw,
          db,
        );
        const out = xs.map((x, i) => backend.makeTensorInfo([...x.shape], 'float32', dxs[i]!));
        if (dw) out.push(backend.makeTensorInfo([...weight.shape], 'float32', dw));
        if (db) out.push(backend.makeTensorInfo([weight.shape[0]!], 'float32', db));
        return out;
      },
    },
    {
      kernelName: FUSED_KERNELS.normModulate,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.normModulate;
        const { x, mod } = args.inputs as { x: tf.TensorInfo; mod: tf.TensorInfo };
        const attrs = args.attrs as unknown as NormModulateAttrs;
        const backend = args.backend as CpuBackendStorage;
        const d = normDims(x, mod, attrs, kernel);
        const stats = d[0]! * d[1]! * d[4]!;
        const y = nativeBuffers.take(tf.util.sizeFromShape(x.shape));
        const mean = nativeBuffers.take(stats);
        const rstd = nativeBuffers.take(stats);
        addon.normModulate(requireFloat32(backend, x, kernel, 'x'), d, attrs.eps, requireFloat32(backend, mod, kernel, 'mod'), y, mean, rstd);
        return [
          backend.makeTensorInfo([...x.shape], 'float32', y),
          backend.makeTensorInfo([d[0]!, d[1]! * d[4]!], 'float32', mean),
          backend.makeTensorInfo([d[0]!, d[1]! * d[4]!], 'float32', rstd),
        ];
      },
    },
    {
      kernelName: FUSED_KERNELS.normModulateGrad,
      backendName,
      kernelFunc: (args) => {
        const kernel = FUSED_KERNELS.normModulateGrad;
        const { dy, x, mod, mean, rstd } = args.inputs as Record<'dy' | 'x' | 'mod' | 'mean' | 'rstd', tf.TensorInfo>;
        const attrs = args.attrs as unknown as NormModulateAttrs;
        const backend = args.backend as CpuBackendStorage;
        const d = normDims(x, mod, attrs, kernel);
        const dx = nativeBuffers.take(tf.util.sizeFromShape(x.shape));
        const dmod = nativeBuffers.take(tf.util.sizeFromShape(mod.shape));
        const [dyv, xv, mv, mnv, rv] = ([[dy, 'dy'], [x, 'x'], [mod, 'mod'], [mean, 'mean'], [rstd, 'rstd']] as const).map(([t, what]) => requireFloat32(backend, t, kernel, what));
        addon.normModulateGrad(dyv!, xv!, d, mv!, mnv!, rv!, dx, dmod);
        return [backend.makeTensorInfo([...x.shape], 'float32', dx), backend.makeTensorInfo([...mod.shape], 'float32', dmod)];
      },
    },
  ];
}
