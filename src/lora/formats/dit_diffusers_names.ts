import { JobError, UsageError } from '../../util/errors.js';
import type { HostTensor } from '../../nn/module.js';
import { type LoraModuleWeights, type LoraWeights, loraRank } from '../weights.js';
import { foldScale } from './common.js';
import type { ModuleNaming } from './peft.js';

/**
 * The official DiT's adaptable modules in diffusers' DiTTransformer2DModel names (the module-path
 * half of diffusers' scripts/convert_dit_to_diffusers.py). The fused attention input projection
 * `attn.qkv` ([3D, D], rows q|k|v) is three modules there: `attn1.to_q`, `to_k`, `to_v`.
 */
const BLOCK_RULES: [RegExp, (i: string) => string][] = [
  [/^blocks\.(\d+)\.attn\.proj$/, (i) => `transformer_blocks.${i}.attn1.to_out.0`],
  [/^blocks\.(\d+)\.mlp\.fc1$/, (i) => `transformer_blocks.${i}.ff.net.0.proj`],
  [/^blocks\.(\d+)\.mlp\.fc2$/, (i) => `transformer_blocks.${i}.ff.net.2`],
  [/^blocks\.(\d+)\.adaLN_modulation\.1$/, (i) => `transformer_blocks.${i}.norm1.linear`],
  // PixArt-α-style cross-attention of text-conditioned DiTs: diffusers' attn2.
  [/^blocks\.(\d+)\.cross_attn\.to_q$/, (i) => `transformer_blocks.${i}.attn2.to_q`],
  [/^blocks\.(\d+)\.cross_attn\.to_k$/, (i) => `transformer_blocks.${i}.attn2.to_k`],
  [/^blocks\.(\d+)\.cross_attn\.to_v$/, (i) => `transformer_blocks.${i}.attn2.to_v`],
  [/^blocks\.(\d+)\.cross_attn\.to_out\.0$/, (i) => `transformer_blocks.${i}.attn2.to_out.0`],
];
const FIXED: Record<string, string> = {
  'final_layer.adaLN_modulation.1': 'proj_out_1',
  'final_layer.linear': 'proj_out_2',
  'x_embedder.proj': 'pos_embed.proj',
};
const QKV = /^blocks\.(\d+)\.attn\.qkv$/;
const QKV_PARTS = ['to_q', 'to_k', 'to_v'] as const;

export function officialToDiffusers(name: string): string | string[] {
  const qkv = QKV.exec(name);
  if (qkv) return QKV_PARTS.map((p) => `transformer_blocks.${qkv[1]}.attn1.${p}`);
  for (const [re, to] of BLOCK_RULES) {
    const m = re.exec(name);
    if (m) return to(m[1]!);
  }
  const fixed = FIXED[name];
  if (fixed) return fixed;
  throw new UsageError(
    `LoRA module '${name}' has no single module in diffusers' DiTTransformer2DModel (the timestep embedder is copied into every block there); write it as peft, kohya or comfy instead`,
  );
}

const REVERSE_BLOCK: [RegExp, (i: string, part?: string) => string][] = [
  [/^transformer_blocks\.(\d+)\.attn1\.to_out\.0$/, (i) => `blocks.${i}.attn.proj`],
  [/^transformer_blocks\.(\d+)\.ff\.net\.0\.proj$/, (i) => `blocks.${i}.mlp.fc1`],
  [/^transformer_blocks\.(\d+)\.ff\.net\.2$/, (i) => `blocks.${i}.mlp.fc2`],
  [/^transformer_blocks\.(\d+)\.norm1\.linear$/, (i) => `blocks.${i}.adaLN_modulation.1`],
  [/^transformer_blocks\.(\d+)\.attn2\.(to_q|to_k|to_v|to_out\.0)$/, (i, part) => `blocks.${i}.cross_attn.${part}`],
];
const REVERSE_FIXED = Object.fromEntries(Object.entries(FIXED).map(([a, b]) => [b, a]));
const QKV_PART = /^transformer_blocks\.(\d+)\.attn1\.(to_q|to_k|to_v)$/;

function rows(t: HostTensor, start: number, count: number): HostTensor {
  const width = t.data.length / t.shape[0]!;
  return { shape: [count, ...t.shape.slice(1)], data: Float32Array.from(t.data.subarray(start * width, (start + count) * width)) };
}

function concatRows(parts: HostTensor[]): HostTensor {
  const total = parts.reduce((s, p) => s + p.shape[0]!, 0);
  const data = new Float32Array(parts.reduce((s, p) => s + p.data.length, 0));
  let off = 0;
  for (const p of parts) {
    data.set(p.data, off);
    off += p.data.length;
  }
  return { shape: [total, ...parts[0]!.shape.slice(1)], data };
}

function sameData(a: HostTensor, b: HostTensor): boolean {
  return a.data.length === b.data.length && a.data.every((v, i) => v === b.data[i]);
}

/** Split a fused qkv adapter exactly: A shared by q, k and v, B (and a DoRA magnitude) split by rows. */
function splitQkv(m0: LoraModuleWeights): LoraModuleWeights[] {
  const m = foldScale(m0);
  const out = m.up.shape[0]!;
  if (out % 3 !== 0) throw new UsageError(`attn.qkv LoRA has ${out} output rows, not a multiple of 3`);
  const d = out / 3;
  return [0, 1, 2].map((k) => ({
    down: m.down,
    up: rows(m.up, k * d, d),
    alpha: m.alpha,
    ...(m.magnitude ? { magnitude: rows(m.magnitude, k * d, d) } : {}),
  }));
}

/**
 * Fuse to_q/to_k/to_v adapters into one on attn.qkv, exactly: with one shared A the B's are stacked;
 * otherwise A's are stacked (rank r_q + r_k + r_v) and B is block-diagonal. Scales are folded into B first.
 */
function fuseQkv(parts: (LoraModuleWeights | undefined)[], where: string): LoraModuleWeights {
  const present = parts.filter((p): p is LoraModuleWeights => p !== undefined).map(foldScale);
  const first = present[0]!;
  const d = first.up.shape[0]!;
  const withMag = present.filter((p) => p.magnitude).length;
  if (withMag !== 0 && withMag !== 3) throw new JobError(`${where}: DoRA magnitudes on only some of to_q/to_k/to_v`);
  const folded = parts.map((p) => (p ? foldScale(p) : undefined));
  if (folded.every((p) => p && sameData(p.down, first.down))) {
    const all = folded as LoraModuleWeights[];
    const r = loraRank(first);
    return {
      down: first.down,
      up: concatRows(all.map((p) => p.up)),
      alpha: r,
      ...(withMag ? { magnitude: concatRows(all.map((p) => p.magnitude!)) } : {}),
    };
  }
  if (withMag) throw new JobError(`${where}: DoRA adapters on to_q/to_k/to_v with different A matrices cannot be fused`);
  const ranks = folded.map((p) => (p ? loraRank(p) : 0));
  const rank = ranks.reduce((a, b) => a + b, 0);
  const down = concatRows(folded.filter((p): p is LoraModuleWeights => p !== undefined).map((p) => p.down));
  const up = new Float32Array(3 * d * rank);
  let col = 0;
  folded.forEach((p, k) => {
    if (!p) return;
    const r = ranks[k]!;
    for (let o = 0; o < d; o++) for (let j = 0; j < r; j++) up[(k * d + o) * rank + col + j] = p.up.data[o * r + j]!;
    col += r;
  });
  return { down, up: { shape: [3 * d, rank], data: up }, alpha: rank };
}

export const ditDiffusersNaming: ModuleNaming = {
  toFile(lora: LoraWeights) {
    const out = new Map<string, LoraModuleWeights>();
    for (const [name, m] of lora.modules) {
      const target = officialToDiffusers(name);
      if (Array.isArray(target)) splitQkv(m).forEach((part, k) => out.set(target[k]!, part));
      else out.set(target, m);
    }
    return out;
  },
  fromFile(modules, file) {
    const out = new Map<string, LoraModuleWeights>();
    const qkv = new Map<string, (LoraModuleWeights | undefined)[]>();
    for (const [name, m] of modules) {
      const part = QKV_PART.exec(name);
      if (part) {
        const slot = qkv.get(part[1]!) ?? [undefined, undefined, undefined];
        slot[QKV_PARTS.indexOf(part[2] as (typeof QKV_PARTS)[number])] = m;
        qkv.set(part[1]!, slot);
        continue;
      }
      const fixed = REVERSE_FIXED[name];
      const rule = REVERSE_BLOCK.map(([re, to]) => {
        const hit = re.exec(name);
        return hit ? to(hit[1]!, hit[2]) : undefined;
      }).find((v) => v !== undefined);
      const official = fixed ?? rule;
      if (!official) throw new JobError(`${file}: diffusers module '${name}' has no counterpart in the official DiT`);
      out.set(official, m);
    }
    for (const [block, parts] of qkv) out.set(`blocks.${block}.attn.qkv`, fuseQkv(parts, `${file}: transformer_blocks.${block}.attn1`));
    return out;
  },
};
