import { JobError, UsageError } from '../../util/errors.js';
import type { TensorEntry } from '../../io/safetensors.js';
import type { HostTensor } from '../../nn/module.js';
import { type LoraModuleWeights, type LoraWeights, loraRank, loraScale } from '../weights.js';
import type { LoraSource, LoraWriteOptions } from './types.js';

export function entry(t: HostTensor, opts: LoraWriteOptions): TensorEntry {
  return { shape: [...t.shape], data: Float32Array.from(t.data), dtype: opts.dtype ?? 'F32' };
}

/** B·scale with alpha = r: the same update for loaders that apply no alpha (ComfyUI and diffusers without metadata read scale 1). */
export function foldScale(m: LoraModuleWeights): LoraModuleWeights {
  const s = loraScale(m);
  return { ...m, up: { shape: [...m.up.shape], data: Float32Array.from(m.up.data, (v) => v * s) }, alpha: loraRank(m) };
}

/** Group tensor names `<stem><suffix>` by stem for the given suffix → role table; other names are reported. */
export function groupBySuffix(
  names: readonly string[],
  suffixes: Readonly<Record<string, string>>,
  file: string,
): Map<string, Map<string, string>> {
  const groups = new Map<string, Map<string, string>>();
  const unknown: string[] = [];
  for (const n of names) {
    const hit = Object.entries(suffixes).find(([suffix]) => n.endsWith(suffix));
    if (!hit) {
      unknown.push(n);
      continue;
    }
    const stem = n.slice(0, n.length - hit[0].length);
    const g = groups.get(stem) ?? new Map<string, string>();
    g.set(hit[1], n);
    groups.set(stem, g);
  }
  if (unknown.length) throw new JobError(`${file}: tensors that are not part of a LoRA: ${unknown.slice(0, 5).join(', ')}${unknown.length > 5 ? ', …' : ''}`);
  return groups;
}

/** down/up (and optional alpha/magnitude) of one module; errors name the module and the missing part. */
export function readModule(src: LoraSource, stem: string, roles: Map<string, string>, defaultAlpha: (rank: number) => number): LoraModuleWeights {
  const downKey = roles.get('down');
  const upKey = roles.get('up');
  if (!downKey || !upKey) throw new JobError(`${src.path}: module '${stem}' has ${downKey ? 'no up/B' : 'no down/A'} matrix`);
  const down = src.read(downKey);
  const up = src.read(upKey);
  if (down.shape.length !== 2 && down.shape.length !== 4) throw new JobError(`${src.path}: ${downKey} is [${down.shape}], expected [r, in] or [r, in, kh, kw]`);
  const rank = down.shape[0]!;
  if (up.shape[1] !== rank) throw new JobError(`${src.path}: ${upKey} is [${up.shape}] but ${downKey} is [${down.shape}]: the ranks differ`);
  let alpha = defaultAlpha(rank);
  const alphaKey = roles.get('alpha');
  if (alphaKey) {
    const a = src.read(alphaKey);
    if (a.data.length !== 1) throw new JobError(`${src.path}: ${alphaKey} should hold one number, has shape [${a.shape}]`);
    alpha = a.data[0]!;
  }
  const magKey = roles.get('magnitude');
  const magnitude = magKey ? src.read(magKey) : undefined;
  // 1×1 conv B [out, r, 1, 1] is kept as is; a Linear's stays [out, r].
  return { down, up, alpha, ...(magnitude ? { magnitude: { shape: [magnitude.data.length], data: magnitude.data } } : {}) };
}

export function weights(modules: Map<string, LoraModuleWeights>, metadata: Record<string, string>): LoraWeights {
  return { modules, metadata: { ...metadata } };
}

/** The rank used by most modules (the "network dim" of a file with a per-module rank). */
export function commonRank(lora: LoraWeights): number {
  const counts = new Map<number, number>();
  for (const m of lora.modules.values()) counts.set(loraRank(m), (counts.get(loraRank(m)) ?? 0) + 1);
  return [...counts.entries()].sort((a, b) => b[1] - a[1] || b[0] - a[0])[0]?.[0] ?? 0;
}

/**
 * kohya/ComfyUI layouts carry DoRA as LyCORIS `dora_scale`, which ComfyUI divides by the norm of the
 * *base* weight (comfy weight_decompose, output axis), not of W + ΔW as PEFT trains it: the same
 * magnitude would apply at a different strength, so DoRA adapters are written as peft/diffusers only.
 */
export function refuseDora(lora: LoraWeights, format: string): void {
  const dora = [...lora.modules].filter(([, m]) => m.magnitude).map(([n]) => n);
  if (dora.length) throw new UsageError(`${format} layout cannot hold PEFT DoRA adapters (${dora.slice(0, 3).join(', ')}${dora.length > 3 ? ', …' : ''}): ComfyUI normalises dora_scale by the base weight, not W + ΔW; write peft or diffusers`);
}

export function refuseDoraScale(src: LoraSource): void {
  const hit = src.names().find((n) => n.endsWith('.dora_scale'));
  if (hit) throw new JobError(`${src.path}: '${hit}' is a LyCORIS DoRA scale (normalised against the base weight); only PEFT DoRA (lora_magnitude_vector) is supported`);
}

/** Descriptive keys worth keeping across a conversion (kohya training record, SAI model spec); stale hashes are not. */
export function carriedMetadata(lora: LoraWeights): Record<string, string> {
  return Object.fromEntries(Object.entries(lora.metadata).filter(([k]) => k.startsWith('ss_') || k.startsWith('modelspec.')));
}

/** ComfyUI's whole-parameter differences: `<stem>.diff` (weight) and `<stem>.diff_b` (bias). */
export const DIFF_SUFFIXES = { '.diff': 'diff', '.diff_b': 'diff_b' } as const;

/** Modules (down/up pairs) and parameter differences of grouped stems; `moduleOf` turns a stem into a module name. */
export function readGroups(
  src: LoraSource,
  groups: Map<string, Map<string, string>>,
  moduleOf: (stem: string) => string,
  defaultAlpha: (rank: number) => number,
): LoraWeights {
  const modules = new Map<string, LoraModuleWeights>();
  const diffs = new Map<string, HostTensor>();
  for (const [stem, roles] of groups) {
    const name = moduleOf(stem);
    if (roles.has('down') || roles.has('up')) modules.set(name, readModule(src, stem, roles, defaultAlpha));
    else if (roles.has('alpha')) throw new JobError(`${src.path}: '${stem}' has an alpha but no down/up matrices`);
    if (roles.has('diff')) diffs.set(`${name}.weight`, src.read(roles.get('diff')!));
    if (roles.has('diff_b')) diffs.set(`${name}.bias`, src.read(roles.get('diff_b')!));
  }
  return { modules, metadata: { ...src.metadata }, ...(diffs.size ? { diffs } : {}) };
}

/** Write the parameter differences under `<stem of module>.diff` / `.diff_b`. */
export function writeDiffs(lora: LoraWeights, stemOf: (module: string) => string, tensors: Map<string, TensorEntry>, opts: LoraWriteOptions): void {
  for (const [param, d] of lora.diffs ?? []) {
    const m = /^(.*)\.(weight|bias)$/.exec(param);
    if (!m) throw new UsageError(`trained parameter '${param}' is neither a weight nor a bias; ComfyUI's .diff/.diff_b cannot carry it`);
    tensors.set(`${stemOf(m[1]!)}.${m[2] === 'weight' ? 'diff' : 'diff_b'}`, entry(d, opts));
  }
}

/** PEFT layouts have no key for trained base parameters. */
export function refuseDiffs(lora: LoraWeights, format: string): void {
  const names = [...(lora.diffs?.keys() ?? [])];
  if (names.length) throw new UsageError(`${format} layout has no place for trained base parameters (${names.slice(0, 3).join(', ')}${names.length > 3 ? ', …' : ''}); write kohya or comfy (ComfyUI .diff/.diff_b)`);
}
