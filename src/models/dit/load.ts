import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../../backend/tf.js';
import { openSafetensors, type TensorSource } from '../../io/safetensors.js';
import type { HostTensor } from '../../nn/module.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { type DitConfig, ditConfigs, validateDitConfig } from './config.js';
import { DiT } from './model.js';

/**
 * DiT checkpoints as users have them:
 *  - the official facebookresearch/DiT state dict (`pos_embed`, `x_embedder.proj.*`, `blocks.{i}.attn.qkv.*`, …)
 *    as .safetensors — the names this model uses;
 *  - the diffusers `DiTTransformer2DModel` / `Transformer2DModel` folder (config.json +
 *    diffusion_pytorch_model.safetensors, e.g. facebook/DiT-XL-2-256), renamed as diffusers'
 *    scripts/convert_dit_to_diffusers.py renames, in reverse:
 *      x_embedder.proj.*                 ← pos_embed.proj.*
 *      t_embedder.mlp.0.* / mlp.2.*      ← transformer_blocks.0.norm1.emb.timestep_embedder.linear_1.* / linear_2.*
 *      y_embedder.embedding_table.weight ← transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight
 *      blocks.{i}.adaLN_modulation.1.*   ← transformer_blocks.{i}.norm1.linear.*
 *      blocks.{i}.attn.qkv.*             ← cat(transformer_blocks.{i}.attn1.to_q.*, to_k.*, to_v.*) along rows
 *      blocks.{i}.attn.proj.*            ← transformer_blocks.{i}.attn1.to_out.0.*
 *      blocks.{i}.mlp.fc1.* / fc2.*      ← transformer_blocks.{i}.ff.net.0.proj.* / ff.net.2.*
 *      final_layer.adaLN_modulation.1.*  ← proj_out_1.*
 *      final_layer.linear.*              ← proj_out_2.*
 *    diffusers keeps a copy of the timestep/class embedders in every block (all equal after
 *    conversion) and `pos_embed` as a non-persistent buffer, so it is recomputed here.
 * Both load into the same module and give identical outputs. (diffusers itself computes the
 * timestep features with a 1/(half − 1) frequency step and a 1e-5 MLP pre-norm eps; this model
 * follows the official code, 1/half and 1e-6, whichever file the weights come from.)
 */

export type DitLayout = 'official' | 'diffusers';

export interface LoadedDitWeights {
  layout: DitLayout;
  /** The weights file that was read. */
  file: string;
  /** Parameters copied into the model. */
  loaded: number;
}

const DIFFUSERS_WEIGHTS = 'diffusion_pytorch_model.safetensors';

/** The weights file and (for diffusers folders) config.json of a location. */
export function resolveDitLocation(location: string): { weights: string; configJson: string | null } {
  const p = path.resolve(location);
  if (!fs.existsSync(p)) throw new UsageError(`DiT checkpoint ${location} does not exist`);
  if (fs.statSync(p).isDirectory()) {
    for (const dir of [p, path.join(p, 'transformer')]) {
      const w = path.join(dir, DIFFUSERS_WEIGHTS);
      if (fs.existsSync(w)) return { weights: w, configJson: fs.existsSync(path.join(dir, 'config.json')) ? path.join(dir, 'config.json') : null };
    }
    throw new UsageError(`${location}: a DiT folder needs ${DIFFUSERS_WEIGHTS} (and config.json), here or under transformer/`);
  }
  if (p.endsWith('.pt') || p.endsWith('.pth') || p.endsWith('.bin')) {
    throw new UsageError(`${location}: PyTorch pickles are not read here; convert it once with safetensors.torch.save_file(torch.load(f), 'dit.safetensors')`);
  }
  const sibling = path.join(path.dirname(p), 'config.json');
  return { weights: p, configJson: path.basename(p) === DIFFUSERS_WEIGHTS && fs.existsSync(sibling) ? sibling : null };
}

function detectLayout(names: readonly string[]): DitLayout | null {
  if (names.some((n) => n.startsWith('transformer_blocks.'))) return 'diffusers';
  if (names.some((n) => n.startsWith('blocks.')) && names.includes('x_embedder.proj.weight')) return 'official';
  return null;
}

/** diffusers config.json (DiTTransformer2DModel / Transformer2DModel with ada_norm_zero) → DitConfig. */
export function ditConfigFromDiffusers(json: unknown, source: string, labelRows?: number): DitConfig {
  if (typeof json !== 'object' || json === null) throw new UsageError(`${source}: config.json is not a JSON object`);
  const j = json as Record<string, unknown>;
  const num = (key: string, fallback?: number): number => {
    const v = j[key] ?? fallback;
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new UsageError(`${source}: config.json key '${key}' must be a number, got ${JSON.stringify(j[key])}`);
    return v;
  };
  if (j.norm_type !== undefined && j.norm_type !== 'ada_norm_zero') throw new UsageError(`${source}: norm_type '${String(j.norm_type)}' is not a DiT (expected ada_norm_zero)`);
  const heads = num('num_attention_heads', 16);
  const inChannels = num('in_channels', 4);
  const outChannels = j.out_channels === null || j.out_channels === undefined ? inChannels : num('out_channels');
  if (outChannels !== inChannels && outChannels !== 2 * inChannels) throw new UsageError(`${source}: out_channels ${outChannels} is neither in_channels ${inChannels} nor twice it`);
  const numClasses = num('num_embeds_ada_norm', 1000);
  const config: DitConfig = {
    inputSize: num('sample_size', 32),
    patchSize: num('patch_size', 2),
    inChannels,
    hiddenSize: heads * num('attention_head_dim', 72),
    depth: num('num_layers', 28),
    numHeads: heads,
    mlpRatio: 4,
    // The null-class row exists iff the table has numClasses + 1 rows; the probability itself is not stored.
    classDropoutProb: labelRows === undefined || labelRows > numClasses ? 0.1 : 0,
    numClasses,
    learnSigma: outChannels === 2 * inChannels,
  };
  try {
    return validateDitConfig(config);
  } catch (e) {
    throw new UsageError(`${source}: ${(e as Error).message}`);
  }
}

/**
 * The config of an official-layout state dict, read off the tensor shapes. Heads are not in the
 * weights: the official trunk with that width gives them (S 6, B 12, L/XL 16) unless given.
 */
export function inferDitConfig(src: TensorSource, file: string, opts: { numHeads?: number; numClasses?: number } = {}): DitConfig {
  const numHeads = opts.numHeads;
  const shape = (n: string): number[] => {
    if (!src.names().includes(n)) throw new UsageError(`${file}: no tensor '${n}' — not an official DiT state dict`);
    return src.info(n).shape;
  };
  const [d, inChannels, p] = shape('x_embedder.proj.weight') as [number, number, number];
  const tokens = shape('pos_embed')[1]!;
  const grid = Math.round(Math.sqrt(tokens));
  const depth = new Set(src.names().filter((n) => n.startsWith('blocks.')).map((n) => n.split('.')[1])).size;
  const rows = shape('y_embedder.embedding_table.weight')[0]!;
  const out = shape('final_layer.linear.weight')[0]! / (p * p);
  const mlpHidden = shape('blocks.0.mlp.fc1.weight')[0]!;
  const trunk = Object.values(ditConfigs).find((c) => c.hiddenSize === d && c.depth === depth);
  const heads = numHeads ?? trunk?.numHeads;
  if (heads === undefined) throw new UsageError(`${file}: hidden size ${d} × depth ${depth} is no official DiT trunk, so the head count is unknown; pass it (numHeads)`);
  // The weights cannot tell a null-class row from a class: the official models (class_dropout_prob 0.1) have one.
  const numClasses = opts.numClasses ?? rows - 1;
  const config: DitConfig = {
    inputSize: grid * p,
    patchSize: p,
    inChannels,
    hiddenSize: d,
    depth,
    numHeads: heads,
    mlpRatio: mlpHidden / d,
    classDropoutProb: rows === numClasses ? 0 : 0.1,
    numClasses,
    learnSigma: out === 2 * inChannels,
  };
  return validateDitConfig(config);
}

/**
 * Official-layout tensors from a diffusers-layout file (see the table above); every block's
 * embedder copies must agree, since the official model has one.
 */
export function officialFromDiffusers(src: TensorSource, file: string): Map<string, HostTensor> {
  const names = new Set(src.names());
  const read = (n: string): HostTensor => {
    if (!names.has(n)) throw new UsageError(`${file}: missing tensor '${n}' (diffusers DiT layout)`);
    return src.read(n);
  };
  const depth = new Set([...names].filter((n) => n.startsWith('transformer_blocks.')).map((n) => n.split('.')[1])).size;
  const out = new Map<string, HostTensor>();
  const put = (official: string, diffusers: string) => out.set(official, read(diffusers));
  put('x_embedder.proj.weight', 'pos_embed.proj.weight');
  put('x_embedder.proj.bias', 'pos_embed.proj.bias');
  const emb = 'norm1.emb';
  const shared: [string, string][] = [
    ['t_embedder.mlp.0.weight', `${emb}.timestep_embedder.linear_1.weight`],
    ['t_embedder.mlp.0.bias', `${emb}.timestep_embedder.linear_1.bias`],
    ['t_embedder.mlp.2.weight', `${emb}.timestep_embedder.linear_2.weight`],
    ['t_embedder.mlp.2.bias', `${emb}.timestep_embedder.linear_2.bias`],
    ['y_embedder.embedding_table.weight', `${emb}.class_embedder.embedding_table.weight`],
  ];
  for (const [official, suffix] of shared) {
    const first = read(`transformer_blocks.0.${suffix}`);
    for (let i = 1; i < depth; i++) {
      const name = `transformer_blocks.${i}.${suffix}`;
      if (!names.has(name)) continue;
      if (!sameTensor(first, src.read(name))) {
        throw new UsageError(`${file}: '${name}' differs from block 0's copy; the official DiT shares one ${official.split('.')[0]} across blocks and cannot represent per-block embedders`);
      }
    }
    out.set(official, first);
  }
  for (let i = 0; i < depth; i++) {
    const b = `transformer_blocks.${i}`;
    put(`blocks.${i}.adaLN_modulation.1.weight`, `${b}.norm1.linear.weight`);
    put(`blocks.${i}.adaLN_modulation.1.bias`, `${b}.norm1.linear.bias`);
    out.set(`blocks.${i}.attn.qkv.weight`, concatRows(['to_q', 'to_k', 'to_v'].map((p) => read(`${b}.attn1.${p}.weight`))));
    out.set(`blocks.${i}.attn.qkv.bias`, concatRows(['to_q', 'to_k', 'to_v'].map((p) => read(`${b}.attn1.${p}.bias`))));
    put(`blocks.${i}.attn.proj.weight`, `${b}.attn1.to_out.0.weight`);
    put(`blocks.${i}.attn.proj.bias`, `${b}.attn1.to_out.0.bias`);
    put(`blocks.${i}.mlp.fc1.weight`, `${b}.ff.net.0.proj.weight`);
    put(`blocks.${i}.mlp.fc1.bias`, `${b}.ff.net.0.proj.bias`);
    put(`blocks.${i}.mlp.fc2.weight`, `${b}.ff.net.2.weight`);
    put(`blocks.${i}.mlp.fc2.bias`, `${b}.ff.net.2.bias`);
  }
  put('final_layer.adaLN_modulation.1.weight', 'proj_out_1.weight');
  put('final_layer.adaLN_modulation.1.bias', 'proj_out_1.bias');
  put('final_layer.linear.weight', 'proj_out_2.weight');
  put('final_layer.linear.bias', 'proj_out_2.bias');
  const known = /^(pos_embed\.proj|proj_out_[12])\.|^transformer_blocks\.\d+\.(norm1\.(emb|linear)|attn1\.(to_[qkv]|to_out\.0)|ff\.net\.(0\.proj|2))\./;
  const stray = [...names].filter((n) => !known.test(n));
  if (stray.length) throw new UsageError(`${file}: ${stray.length} tensor(s) have no place in a DiT: ${stray.slice(0, 5).join(', ')}${stray.length > 5 ? ', …' : ''}`);
  return out;
}

function sameTensor(a: HostTensor, b: HostTensor): boolean {
  return a.shape.join() === b.shape.join() && a.data.length === b.data.length && a.data.every((v, i) => v === b.data[i]);
}

function concatRows(parts: HostTensor[]): HostTensor {
  const cols = parts[0]!.shape.slice(1);
  if (parts.some((p) => p.shape.slice(1).join() !== cols.join())) throw new UsageError(`q/k/v projections have different shapes: ${parts.map((p) => `[${p.shape}]`).join(', ')}`);
  const rows = parts.reduce((a, p) => a + p.shape[0]!, 0);
  const data = new Float32Array(parts.reduce((a, p) => a + p.data.length, 0));
  let off = 0;
  for (const p of parts) {
    data.set(p.data, off);
    off += p.data.length;
  }
  return { shape: [rows, ...cols], data };
}

/** Official-layout tensors of a file of either layout. */
export function readDitState(location: string): { state: Map<string, HostTensor>; layout: DitLayout; file: string; configJson: string | null } {
  const { weights, configJson } = resolveDitLocation(location);
  const src = openSafetensors(weights);
  try {
    const names = src.names();
    const layout = detectLayout(names);
    if (!layout) throw new UsageError(`${weights}: neither an official DiT state dict (blocks.*, x_embedder.*) nor a diffusers DiT (transformer_blocks.*); first tensors: ${names.slice(0, 4).join(', ')}`);
    const state = layout === 'diffusers' ? officialFromDiffusers(src, weights) : new Map(names.map((n) => [n, src.read(n)]));
    return { state, layout, file: weights, configJson };
  } finally {
    src.close();
  }
}

/**
 * Copies a checkpoint of either layout into `model.dit`-style parameters (the model's own names).
 * Every model tensor must be present with its exact shape: a checkpoint of another architecture
 * fails with the first mismatching tensor and both shapes. `pos_embed` is fixed by the config, so
 * a file without it (diffusers) keeps the computed table.
 */
export function loadDitWeights(location: string, model: DiT): LoadedDitWeights {
  const { state, layout, file } = readDitState(location);
  const params = new Map(model.namedParameters());
  const missing = [...params.keys()].filter((k) => !state.has(k) && k !== 'pos_embed');
  if (missing.length) throw new UsageError(`${file}: missing ${missing.length} tensor(s) this DiT needs: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''} (is it the same conditioning / architecture?)`);
  const unexpected = [...state.keys()].filter((k) => !params.has(k));
  if (unexpected.length) throw new UsageError(`${file}: ${unexpected.length} tensor(s) have no place in this DiT: ${unexpected.slice(0, 5).join(', ')}${unexpected.length > 5 ? ', …' : ''}`);
  for (const [name, p] of params) {
    const t = state.get(name);
    if (t && t.shape.join() !== p.shape.join()) {
      throw new UsageError(`${file}: tensor '${name}' has shape [${t.shape}] in the checkpoint but [${p.shape}] in this DiT (${describe(model.config)}); the checkpoint is of another architecture`);
    }
  }
  let loaded = 0;
  for (const [name, p] of params) {
    const t = state.get(name);
    if (!t) continue;
    const v = tf.tensor(Float32Array.from(t.data), p.shape, 'float32');
    p.assign(v);
    v.dispose();
    loaded++;
  }
  return { layout, file, loaded };
}

function describe(c: DitConfig): string {
  return `depth ${c.depth}, hidden ${c.hiddenSize}, patch ${c.patchSize}, ${c.inChannels}→${c.learnSigma ? 2 * c.inChannels : c.inChannels} channels, input ${c.inputSize}, ${c.numClasses} classes`;
}

export interface LoadDitOptions {
  /** Build exactly this architecture (e.g. ditConfig('DiT-XL/2')); default: read off config.json or the tensor shapes. */
  config?: DitConfig;
  /** Head count for an official-layout file whose width is no official trunk. */
  numHeads?: number;
  /** Class count of an official-layout file trained without a null class (the table then has no extra row). */
  numClasses?: number;
}

/** A class-conditioned DiT with the weights of an official or diffusers checkpoint, in eval mode. */
export function loadDit(location: string, opts: LoadDitOptions = {}): { model: DiT; layout: DitLayout; file: string } {
  const { weights, configJson } = resolveDitLocation(location);
  let config = opts.config;
  if (!config) {
    const src = openSafetensors(weights);
    try {
      const layout = detectLayout(src.names());
      if (layout === 'diffusers') {
        if (!configJson) throw new UsageError(`${weights}: a diffusers DiT needs its config.json next to the weights`);
        const rowsName = 'transformer_blocks.0.norm1.emb.class_embedder.embedding_table.weight';
        const rows = src.names().includes(rowsName) ? src.info(rowsName).shape[0] : undefined;
        config = ditConfigFromDiffusers(JSON.parse(fs.readFileSync(configJson, 'utf8')), configJson, rows);
      } else if (layout === 'official') config = inferDitConfig(src, weights, opts);
      else throw new UsageError(`${weights}: not a DiT checkpoint (no blocks.* or transformer_blocks.* tensors)`);
    } finally {
      src.close();
    }
  }
  const model = new DiT(config, { rng: new Rng(0) });
  try {
    const r = loadDitWeights(location, model);
    return { model: model.eval(), layout: r.layout, file: r.file };
  } catch (e) {
    model.dispose();
    throw e;
  }
}
