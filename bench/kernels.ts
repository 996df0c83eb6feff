/**
 * Kernel and training-step throughput per available tfjs backend: matmul, attention-shaped batch
 * matmuls, 3×3 convolutions (forward, dx, dW) at the NSP shapes, memory-bound elementwise maps, one
 * NSP training step per stage of the default model (configs/nsp-pixel-tiny.yaml), and one DiT-S/2
 * LoRA step (bench/dit_lora.ts), and one DiT pretraining step of the default recipe's trunk (bench/dit_pretrain.ts). bench/torch_ref.py prints the same rows for PyTorch.
 * Run: `npx tsx bench/kernels.ts [--json] [--backends native,wasm,cpu] [--repeats N]`.
 */
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { NextScaleGenerator } from '../src/models/nsp/model.js';
import type { NspModelConfig } from '../src/models/nsp/config.js';
import { loadRecipe, parseRecipe } from '../src/config/recipe.js';
import '../src/jobs/index.js';
import { modelConfigFromRecipe } from '../src/jobs/nsp/model.js';
import { nspRecipeSchema } from '../src/jobs/nsp/schema.js';
import { AdamW } from '../src/train/optim.js';
import { Rng } from '../src/util/rng.js';
import { ditLoraStepRow } from './dit_lora.js';
import { ditPretrainStepRow } from './dit_pretrain.js';
import { loadNativeAddon } from '../src/backend/native/addon.js';
import { bf16Hardware, setNativeBf16 } from '../src/backend/native/bf16.js';

export interface BenchRow {
  name: string;
  value: number;
  unit: string;
  note?: string;
}

export interface KernelBenchOptions {
  /** Backends to measure (unavailable ones are skipped with a note); default: native, wasm, cpu. */
  backends?: string[];
  /** Timed runs per measurement; the best is reported (the machine is shared and noisy). */
  repeats?: number;
  /** Also run the NSP training steps (slow on cpu). */
  trainingSteps?: boolean;
  log?: (line: string) => void;
}

/**
 * The default recipe's generator (recipes/nsp-progressive.yaml, read and validated like `train` does,
 * so the bench cannot drift from what users run) with the builtin 64-d text encoder's pooled width.
 */
export const NSP_BENCH_CONFIG: NspModelConfig = (() => {
  const r = parseRecipe(nspRecipeSchema, loadRecipe('nsp-progressive'));
  return modelConfigFromRecipe(r, 3, r.text_encoder.builtin.dim);
})();
export const NSP_BENCH_BATCH = 16;

/**
 * NSP_BENCH_CONFIG in bench/torch_ref.py's CFG keys (its --nsp-config), so PyTorch times the model
 * we time. torch_ref.py's ScalePredictor has one block count and one setting for every stage.
 */
export function torchNspConfig(cfg: NspModelConfig = NSP_BENCH_CONFIG): Record<string, unknown> {
  const blocks = new Set(cfg.blocksPerStage);
  if (blocks.size !== 1) throw new Error(`bench/torch_ref.py builds one block count for every stage; the bench config has [${cfg.blocksPerStage}]`);
  if (cfg.textTokenDim !== cfg.textDim) throw new Error(`bench/torch_ref.py has one text width; the bench config has ${cfg.textDim} pooled and ${cfg.textTokenDim} per token`);
  return {
    sizes: cfg.sizes,
    channels: cfg.sizes.map((_, k) => cfg.channels[Math.min(k, cfg.channels.length - 1)]),
    cross_attention: cfg.crossAttention,
    blocks: cfg.blocksPerStage[0],
    dense_layers: cfg.denseLayers,
    growth: cfg.growthChannels,
    beta: cfg.residualScale,
    attn_max: cfg.attentionMaxSize,
    heads: cfg.attentionHeads,
    kv_heads: cfg.attentionKvHeads,
    token_size: cfg.attentionTokenSize,
    cond_dim: cfg.condDim,
    text_dim: cfg.textDim,
    groups: cfg.groupNormGroups,
    image_channels: cfg.imageChannels,
    coord: cfg.coordChannels,
    pos_embed: cfg.basePositionEmbedding ?? false,
  };
}

type Conv = { name: string; x: [number, number, number, number]; w: [number, number, number, number] };
/** The 3×3 convolutions of one NSP dense block (in = 32 + i·16 → 16) at the 64² and 16² stages. */
const CONVS: Conv[] = [
  { name: '64x64 32->16', x: [16, 64, 64, 32], w: [3, 3, 32, 16] },
  { name: '64x64 64->16', x: [16, 64, 64, 64], w: [3, 3, 64, 16] },
  { name: '16x16 48->16', x: [16, 16, 16, 48], w: [3, 3, 48, 16] },
];
/** Attention with 4 query heads sharing one KV head, head dim 8, at 8² pooled tokens (the default) and 16². */
const ATTENTION: { name: string; a: number[]; b: number[]; transB: boolean }[] = [
  { name: 'attn QK^T [16,1,256,8]x[16,1,64,8]^T', a: [16, 1, 256, 8], b: [16, 1, 64, 8], transB: true },
  { name: 'attn PV [16,1,256,64]x[16,1,64,8]', a: [16, 1, 256, 64], b: [16, 1, 64, 8], transB: false },
  { name: 'attn QK^T [16,1,1024,8]x[16,1,256,8]^T', a: [16, 1, 1024, 8], b: [16, 1, 256, 8], transB: true },
  { name: 'attn PV [16,1,1024,256]x[16,1,256,8]', a: [16, 1, 1024, 256], b: [16, 1, 256, 8], transB: false },
];

/** The dense blocks' input at the 64² stage (batch 16, 32 channels), for the elementwise rows. */
const ACTIVATION_SHAPE = [16, 64, 64, 32];

/** Best wall time of `repeats` runs of `fn` after one warm-up, in ms. */
function bestMs(fn: () => void, repeats: number): number {
  fn();
  let best = Infinity;
  for (let i = 0; i < repeats; i++) {
    const t = performance.now();
    fn();
    best = Math.min(best, performance.now() - t);
  }
  return best;
}

const gflops = (flop: number, ms: number) => flop / ms / 1e6;

function randomTensor(shape: number[], rng: Rng): tf.Tensor {
  return tf.tensor(rng.fillNormal(new Float32Array(shape.reduce((a, b) => a * b, 1))), shape);
}

/**
 * Runs a kernel producing one tensor. Every backend measured here computes synchronously, so the
 * values exist when the op returns; reading them out (dataSync) would hand the output array to the
 * caller, keep the native backend from recycling it, and time a fresh allocation instead of the kernel.
 */
function timeOp(op: () => tf.Tensor, repeats: number): number {
  return bestMs(() => {
    op().dispose();
  }, repeats);
}

function kernelRows(backend: string, repeats: number, rng: Rng): BenchRow[] {
  const rows: BenchRow[] = [];
  const slow = backend === 'cpu';
  for (const n of [256, 512, 1024, 2048]) {
    if (slow && n > 256) continue;
    const [a, b] = [randomTensor([n, n], rng), randomTensor([n, n], rng)];
    const ms = timeOp(() => tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D), n >= 1024 ? Math.max(2, repeats >> 1) : repeats);
    rows.push({ name: `${backend} matmul ${n}`, value: gflops(2 * n ** 3, ms), unit: 'GFLOP/s' });
    tf.dispose([a, b]);
  }
  for (const at of ATTENTION) {
    if (slow) continue;
    const [a, b] = [randomTensor(at.a, rng), randomTensor(at.b, rng)];
    const m = at.a[2]!;
    const k = at.a[3]!;
    const n = at.transB ? at.b[2]! : at.b[3]!;
    const ms = timeOp(() => tf.matMul(a, b, false, at.transB), repeats);
    rows.push({ name: `${backend} ${at.name}`, value: gflops(2 * at.a[0]! * m * n * k, ms), unit: 'GFLOP/s' });
    tf.dispose([a, b]);
  }
  rows.push(...convRows(backend, repeats, rng));
  // Memory-bound elementwise work at a 64² activation map: a map (GB/s of input read plus output
  // written) and the leakyRelu gradient as tfjs computes it (greater, multiply, select).
  const act = randomTensor(ACTIVATION_SHAPE, rng);
  const actDy = randomTensor(ACTIVATION_SHAPE, rng);
  const actBytes = 8 * act.size;
  const shapeName = `[${ACTIVATION_SHAPE.join(',')}]`;
  rows.push({ name: `${backend} sigmoid ${shapeName}`, value: actBytes / timeOp(() => tf.sigmoid(act), repeats) / 1e6, unit: 'GB/s' });
  // Reductions (GB/s of input read plus output written): over channels (a LayerNorm's statistics)
  // and over every position (a bias gradient).
  const channels = ACTIVATION_SHAPE[ACTIVATION_SHAPE.length - 1]!;
  rows.push({ name: `${backend} sum over channels ${shapeName}`, value: (4 * act.size + (4 * act.size) / channels) / timeOp(() => tf.sum(act, -1), repeats) / 1e6, unit: 'GB/s' });
  rows.push({ name: `${backend} sum over positions ${shapeName}`, value: (4 * act.size + 4 * channels) / timeOp(() => tf.sum(act, [0, 1, 2]), repeats) / 1e6, unit: 'GB/s' });
  const leakyBackward = () => tf.where(tf.greater(act, 0), actDy, actDy.mul(0.2));
  rows.push({ name: `${backend} leakyRelu backward ${shapeName}`, value: timeOp(() => tf.tidy(leakyBackward), repeats), unit: 'ms' });
  tf.dispose([act, actDy]);
  return rows;
}

interface Product {
  name: string;
  flop: number;
  op: () => tf.Tensor;
}

/** The 3×3 convolution passes of CONVS as products to time; `dispose` frees their operands. */
function convProducts(rng: Rng, small: boolean): { products: Product[]; dispose: () => void } {
  const products: Product[] = [];
  const tensors: tf.Tensor[] = [];
  for (const c of CONVS) {
    if (small && c.x[1] > 16) continue;
    const x = randomTensor(c.x, rng) as tf.Tensor4D;
    const w = randomTensor(c.w, rng) as tf.Tensor4D;
    const dy = randomTensor([...c.x.slice(0, 3), c.w[3]], rng) as tf.Tensor4D;
    tensors.push(x, w, dy);
    const flop = 2 * c.x[0] * c.x[1] * c.x[2] * c.w[3] * 9 * c.x[3];
    const attrs = { strides: 1, pad: 'same', dataFormat: 'NHWC' };
    products.push(
      { name: `conv3x3 ${c.name} fwd`, flop, op: () => tf.conv2d(x, w, 1, 'same') },
      {
        name: `conv3x3 ${c.name} dx`,
        flop,
        op: () => tf.engine().runKernel('Conv2DBackpropInput', { dy, filter: w }, { ...attrs, inputShape: c.x } as unknown as tf.NamedAttrMap) as tf.Tensor,
      },
      {
        name: `conv3x3 ${c.name} dW`,
        flop,
        op: () => tf.engine().runKernel('Conv2DBackpropFilter', { x, dy }, { ...attrs, filterShape: c.w } as unknown as tf.NamedAttrMap) as tf.Tensor,
      },
    );
  }
  return { products, dispose: () => tf.dispose(tensors) };
}

function convRows(backend: string, repeats: number, rng: Rng): BenchRow[] {
  const slow = backend === 'cpu';
  const { products, dispose } = convProducts(rng, slow);
  const rows = products.map((p) => ({ name: `${backend} ${p.name}`, value: gflops(p.flop, timeOp(p.op, slow ? 1 : repeats)), unit: 'GFLOP/s' }));
  dispose();
  return rows;
}

/**
 * The native backend's bf16 kernels (operands converted to bf16 inside each call, fp32 out) on the
 * matmul and conv products, timed interleaved with the fp32 kernels (one call each per round, so a
 * busy machine slows both alike): `native bf16 …` GFLOP/s (best round; torch_ref.py's `torch bf16 …`
 * rows are the same products under autocast) and `native bf16 ÷ fp32 …` (median per-round time
 * ratio). Only where the CPU has bf16 instructions.
 */
function bf16Rows(repeats: number, rng: Rng): BenchRow[] {
  const load = loadNativeAddon();
  if (!load.addon || !bf16Hardware(load.info.dnnlCpuIsa)) return [];
  const addon = load.addon;
  const mats = [512, 1024].map((n) => [randomTensor([n, n], rng), randomTensor([n, n], rng)] as const);
  const conv = convProducts(rng, false);
  const products: Product[] = [
    ...mats.map(([a, b]) => ({ name: `matmul ${a.shape[0]}`, flop: 2 * a.shape[0]! ** 3, op: () => tf.matMul(a as tf.Tensor2D, b as tf.Tensor2D) })),
    ...conv.products,
  ];
  const rows: BenchRow[] = [];
  const timeOnce = (p: Product, bf16: boolean) => {
    setNativeBf16(addon, bf16);
    try {
      const t = performance.now();
      p.op().dispose();
      return performance.now() - t;
    } finally {
      setNativeBf16(addon, false);
    }
  };
  for (const p of products) {
    timeOnce(p, false), timeOnce(p, true);
    const fp32: number[] = [];
    const bf16: number[] = [];
    for (let r = 0; r < Math.max(5, repeats); r++) fp32.push(timeOnce(p, false)), bf16.push(timeOnce(p, true));
    const ratios = bf16.map((t, i) => t / fp32[i]!).sort((x, y) => x - y);
    rows.push({ name: `native bf16 ${p.name}`, value: gflops(p.flop, Math.min(...bf16)), unit: 'GFLOP/s' });
    rows.push({ name: `native bf16 ÷ fp32 ${p.name}`, value: ratios[ratios.length >> 1]!, unit: '×', note: `time ratio, median of ${ratios.length} interleaved rounds (< 1: bf16 faster)` });
  }
  tf.dispose(mats.flat());
  conv.dispose();
  return rows;
}

/**
 * One optimizer step (forward, backward, AdamW) of NSP stage `k` of `gen` at batch 16 on random
 * data, as a closure; `dispose` frees its tensors and optimizer state. bench/profile.ts profiles it.
 */
export function nspStep(gen: NextScaleGenerator, k: number, rng: Rng): { step: () => void; dispose: () => void } {
  const sizes = NSP_BENCH_CONFIG.sizes;
  const b = NSP_BENCH_BATCH;
  const s = sizes[k]!;
  const params = new Map([...gen.stages.at(k).namedParameters()]);
  const opt = new AdamW(params, {});
  const varList = [...params.values()];
  const inSize = k === 0 ? s : sizes[k - 1]!;
  const input = randomTensor([b, inSize, inSize, 3], rng) as tf.Tensor4D;
  const target = randomTensor([b, s, s, 3], rng) as tf.Tensor4D;
  const pooled = randomTensor([b, NSP_BENCH_CONFIG.textDim], rng) as tf.Tensor2D;
  // 16 text tokens, the builtin encoder's context, for the stages that cross-attend.
  const tokens = randomTensor([b, 16, NSP_BENCH_CONFIG.textTokenDim], rng) as tf.Tensor3D;
  const text = { pooled, tokens };
  const step = () => {
    const { value, grads } = tf.variableGrads(() => {
      const diff = gen.predict(k, input, text).sub(target);
      return diff.abs().mean().add(diff.square().mean()) as tf.Scalar;
    }, varList);
    value.dataSync();
    const named = new Map<string, tf.Tensor>();
    for (const [name, v] of params) named.set(name, grads[v.name]!);
    opt.step(named, 1e-4);
    tf.dispose([value, ...Object.values(grads)]);
    varList[0]!.dataSync();
  };
  return {
    step,
    dispose: () => {
      tf.dispose([input, target, pooled, tokens]);
      opt.dispose();
    },
  };
}

/** ms for one optimizer step of each NSP stage at batch 16. */
function nspStepRows(backend: string, repeats: number): BenchRow[] {
  const rows: BenchRow[] = [];
  const gen = new NextScaleGenerator(NSP_BENCH_CONFIG, 0);
  const rng = new Rng(7);
  NSP_BENCH_CONFIG.sizes.forEach((s, k) => {
    const { step, dispose } = nspStep(gen, k, rng);
    const ms = bestMs(step, backend === 'cpu' ? 1 : repeats);
    rows.push({ name: `${backend} nsp train step stage ${k} (${s}x${s}, batch ${NSP_BENCH_BATCH})`, value: ms, unit: 'ms' });
    dispose();
  });
  gen.dispose?.();
  return rows;
}

export async function runKernelBench(opts: KernelBenchOptions = {}): Promise<BenchRow[]> {
  const backends = opts.backends ?? ['native', 'wasm', 'cpu'];
  const repeats = opts.repeats ?? 5;
  const log = opts.log ?? (() => {});
  const rows: BenchRow[] = [];
  for (const backend of backends) {
    try {
      await initBackend(backend);
    } catch (e) {
      rows.push({ name: `${backend} unavailable`, value: NaN, unit: '', note: e instanceof Error ? e.message : String(e) });
      continue;
    }
    const rng = new Rng(1);
    for (const row of kernelRows(backend, repeats, rng)) rows.push(row), log(formatRow(row));
    if (backend === 'native') for (const row of bf16Rows(repeats, rng)) rows.push(row), log(formatRow(row));
    if (opts.trainingSteps ?? true) for (const row of nspStepRows(backend, repeats)) rows.push(row), log(formatRow(row));
    if (opts.trainingSteps ?? true) {
      const row = ditLoraStepRow(backend, bestMs, repeats);
      rows.push(row), log(formatRow(row));
      const pre = ditPretrainStepRow(backend, bestMs, repeats);
      rows.push(pre), log(formatRow(pre));
    }
  }
  return rows;
}

export function formatRow(r: BenchRow): string {
  return `${r.name.padEnd(60)} ${Number.isNaN(r.value) ? '-'.padStart(9) : r.value.toFixed(r.unit === 'ms' ? 1 : 2).padStart(9)} ${r.unit}${r.note ? `  (${r.note})` : ''}`;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const args = process.argv.slice(2);
  const json = args.includes('--json');
  const pick = (flag: string) => {
    const i = args.indexOf(flag);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const rows = await runKernelBench({
    backends: pick('--backends')?.split(','),
    repeats: pick('--repeats') ? Number(pick('--repeats')) : undefined,
    trainingSteps: !args.includes('--no-steps'),
    log: json ? undefined : (line) => console.log(line),
  });
  if (json) console.log(JSON.stringify(rows, null, 2));
}
