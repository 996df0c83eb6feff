import fs from 'node:fs';
import path from 'node:path';
import { tf } from '../../backend/tf.js';
import { openSafetensors, saveModule, type TensorSource } from '../../io/safetensors.js';
import { writeFileAtomic } from '../../io/atomic.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { AutoencoderKL } from './autoencoder_kl.js';
import { type VaeConfig, vaeConfig, vaeConfigFromDiffusers, vaeConfigToDiffusers, vaeConfigs } from './config.js';

/** Weight files a diffusers AutoencoderKL folder may hold, in the order diffusers prefers them. */
const WEIGHT_FILES = [
  'diffusion_pytorch_model.safetensors',
  'diffusion_pytorch_model.safetensors.index.json',
  'diffusion_pytorch_model.fp16.safetensors',
  'diffusion_pytorch_model.fp16.safetensors.index.json',
];

/** Prefix of the VAE inside a full Stable Diffusion single-file checkpoint. */
const LDM_VAE_PREFIX = 'first_stage_model.';

export interface LoadVaeOptions {
  /**
   * A preset name ('sdxl', 'sdxl-fp16-fix', 'tiny'), a path to a diffusers config.json, or a config.
   * Default: the config.json in the folder (or beside the weights file).
   */
  config?: string | VaeConfig;
}

export interface LoadedVae {
  model: AutoencoderKL;
  config: VaeConfig;
  weightsPath: string;
  /** Tensors in the file that belong to no VAE part (e.g. an LDM checkpoint's `loss.*`): not loaded. */
  ignored: string[];
}

/**
 * Builds an AutoencoderKL from a diffusers VAE folder (config.json + diffusion_pytorch_model
 * weights; a pipeline folder with a `vae/` subfolder also works) or from one .safetensors file plus
 * a config. Diffusers names, SD1.x-era attention names and original LDM single-file names are all
 * accepted; F16/BF16 weights are widened to float32.
 */
export function loadVae(location: string, opts: LoadVaeOptions = {}): LoadedVae {
  const { weightsPath, configDir } = resolveWeights(location);
  const config = resolveConfig(opts.config, configDir, weightsPath);
  const model = new AutoencoderKL(config, { rng: new Rng(0) });
  try {
    const ignored = loadVaeWeights(model, weightsPath);
    return { model, config, weightsPath, ignored };
  } catch (e) {
    model.dispose();
    throw e;
  }
}

/** Writes a diffusers-loadable folder: config.json + diffusion_pytorch_model.safetensors (F32). */
export async function saveVae(dir: string, model: AutoencoderKL): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  await saveModule(path.join(dir, 'diffusion_pytorch_model.safetensors'), model, { metadata: { format: 'pt' } });
  await writeFileAtomic(path.join(dir, 'config.json'), `${JSON.stringify(vaeConfigToDiffusers(model.config), null, 2)}\n`);
}

/**
 * Copies every parameter of `model` from the file at `weightsPath`, renaming as needed. Throws a
 * UsageError for missing tensors, shape mismatches (before any data is read) and for VAE tensors
 * the config has no place for; returns the names of non-VAE tensors it skipped.
 */
export function loadVaeWeights(model: AutoencoderKL, weightsPath: string): string[] {
  const src = openSourceOrThrow(weightsPath);
  try {
    const levels = model.config.blockOutChannels.length;
    const fileNames = src.names();
    const hasLdmPrefix = fileNames.some((n) => n.startsWith(LDM_VAE_PREFIX));
    const byTarget = new Map<string, string>();
    const ignored: string[] = [];
    const stray: string[] = [];
    const params = new Map(model.namedParameters());
    for (const fileName of fileNames) {
      if (hasLdmPrefix && !fileName.startsWith(LDM_VAE_PREFIX)) {
        ignored.push(fileName);
        continue;
      }
      const target = toDiffusersVaeName(hasLdmPrefix ? fileName.slice(LDM_VAE_PREFIX.length) : fileName, levels);
      if (params.has(target)) {
        const earlier = byTarget.get(target);
        if (earlier !== undefined) {
          throw new UsageError(`${weightsPath}: tensors '${earlier}' and '${fileName}' both map to VAE parameter '${target}'`);
        }
        byTarget.set(target, fileName);
      } else if (isVaeName(target)) stray.push(fileName);
      else ignored.push(fileName);
    }
    const hint = `; the config (block_out_channels [${model.config.blockOutChannels}], layers_per_block ${model.config.layersPerBlock}, latent_channels ${model.config.latentChannels}) may not match these weights`;
    const missing = [...params.keys()].filter((k) => !byTarget.has(k));
    if (missing.length > 0) {
      throw new UsageError(`${weightsPath}: missing ${missing.length} VAE tensor(s): ${listPreview(missing)}${hint}`);
    }
    if (stray.length > 0) {
      throw new UsageError(`${weightsPath}: ${stray.length} tensor(s) have no place in this VAE: ${listPreview(stray)}${hint}`);
    }
    const mismatched: string[] = [];
    for (const [target, fileName] of byTarget) {
      const expected = params.get(target)!.shape;
      const got = src.info(fileName).shape;
      if (!shapeFits(got, expected, target)) {
        const alias = fileName === target ? '' : ` (loaded as '${target}')`;
        mismatched.push(`'${fileName}'${alias}: file has [${got}], model expects [${expected}]`);
      }
    }
    if (mismatched.length > 0) {
      throw new UsageError(`${weightsPath}: tensor shape mismatch:\n  ${mismatched.join('\n  ')}\n${hint.slice(2)}`);
    }
    for (const [target, fileName] of byTarget) {
      const p = params.get(target)!;
      const host = src.read(fileName);
      if (!(host.data instanceof Float32Array)) {
        throw new UsageError(`${weightsPath}: tensor '${fileName}' has integer dtype ${src.info(fileName).dtype}; VAE weights must be floating point`);
      }
      const value = tf.tensor(host.data, p.shape, 'float32');
      p.assign(value);
      value.dispose();
    }
    return ignored;
  } finally {
    src.close();
  }
}

/**
 * Maps one VAE tensor name in any accepted spelling to its diffusers name. `levels` is
 * len(block_out_channels), needed because LDM numbers decoder levels coarse-last
 * (LDM `decoder.up.{levels−1}` is diffusers `decoder.up_blocks.0`). Unknown names pass through.
 */
export function toDiffusersVaeName(name: string, levels: number): string {
  let m = /^(encoder|decoder)\.mid_block\.attentions\.0\.(query|key|value|proj_attn)\.(weight|bias)$/.exec(name);
  if (m) return `${m[1]}.mid_block.attentions.0.${OLD_ATTENTION[m[2]!]}.${m[3]}`;
  m = /^(encoder|decoder)\.mid\.attn_1\.(norm|q|k|v|proj_out)\.(weight|bias)$/.exec(name);
  if (m) return `${m[1]}.mid_block.attentions.0.${LDM_ATTENTION[m[2]!]}.${m[3]}`;
  m = /^(encoder|decoder)\.mid\.block_([12])\.(.+)$/.exec(name);
  if (m) return `${m[1]}.mid_block.resnets.${Number(m[2]) - 1}.${ldmResnetTail(m[3]!)}`;
  m = /^(encoder|decoder)\.norm_out\.(weight|bias)$/.exec(name);
  if (m) return `${m[1]}.conv_norm_out.${m[2]}`;
  m = /^encoder\.down\.(\d+)\.block\.(\d+)\.(.+)$/.exec(name);
  if (m) return `encoder.down_blocks.${m[1]}.resnets.${m[2]}.${ldmResnetTail(m[3]!)}`;
  m = /^encoder\.down\.(\d+)\.downsample\.conv\.(weight|bias)$/.exec(name);
  if (m) return `encoder.down_blocks.${m[1]}.downsamplers.0.conv.${m[2]}`;
  m = /^decoder\.up\.(\d+)\.block\.(\d+)\.(.+)$/.exec(name);
  if (m) return `decoder.up_blocks.${levels - 1 - Number(m[1])}.resnets.${m[2]}.${ldmResnetTail(m[3]!)}`;
  m = /^decoder\.up\.(\d+)\.upsample\.conv\.(weight|bias)$/.exec(name);
  if (m) return `decoder.up_blocks.${levels - 1 - Number(m[1])}.upsamplers.0.conv.${m[2]}`;
  return name;
}

const OLD_ATTENTION: Record<string, string> = { query: 'to_q', key: 'to_k', value: 'to_v', proj_attn: 'to_out.0' };
const LDM_ATTENTION: Record<string, string> = { norm: 'group_norm', q: 'to_q', k: 'to_k', v: 'to_v', proj_out: 'to_out.0' };

function ldmResnetTail(tail: string): string {
  return tail.replace(/^nin_shortcut\./, 'conv_shortcut.');
}

function isVaeName(name: string): boolean {
  return /^(encoder|decoder|quant_conv|post_quant_conv)\./.test(name);
}

/** Equal shapes, or LDM's 1×1-conv attention projection [C,C,1,1] standing in for a Linear [C,C]. */
function shapeFits(got: readonly number[], expected: readonly number[], target: string): boolean {
  if (got.length === expected.length && got.every((d, i) => d === expected[i])) return true;
  return (
    /\.attentions\.0\.(to_q|to_k|to_v|to_out\.0)\.weight$/.test(target) &&
    expected.length === 2 &&
    got.length === 4 &&
    got[0] === expected[0] &&
    got[1] === expected[1] &&
    got[2] === 1 &&
    got[3] === 1
  );
}

function listPreview(names: string[]): string {
  const shown = names.slice(0, 12).join(', ');
  return names.length > 12 ? `${shown}, … (+${names.length - 12} more)` : shown;
}

function openSourceOrThrow(weightsPath: string): TensorSource {
  try {
    return openSafetensors(weightsPath);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') throw new UsageError(`VAE weights file not found: ${weightsPath}`);
    throw e;
  }
}

function resolveWeights(location: string): { weightsPath: string; configDir: string } {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(location);
  } catch {
    throw new UsageError(`VAE path not found: ${location} (expected a diffusers VAE folder or a .safetensors file)`);
  }
  if (stat.isFile()) {
    if (!location.endsWith('.safetensors') && !location.endsWith('.safetensors.index.json')) {
      throw new UsageError(`${location}: expected a .safetensors file (or .safetensors.index.json); pickled .bin/.ckpt weights are not supported`);
    }
    return { weightsPath: location, configDir: path.dirname(location) };
  }
  const dir = fs.existsSync(path.join(location, 'config.json')) || !fs.existsSync(path.join(location, 'vae')) ? location : path.join(location, 'vae');
  for (const f of WEIGHT_FILES) {
    const p = path.join(dir, f);
    if (fs.existsSync(p)) return { weightsPath: p, configDir: dir };
  }
  throw new UsageError(`${dir}: no VAE weights found; looked for ${WEIGHT_FILES.join(', ')}`);
}

function resolveConfig(spec: string | VaeConfig | undefined, configDir: string, weightsPath: string): VaeConfig {
  if (typeof spec === 'object') return { ...spec, blockOutChannels: [...spec.blockOutChannels] };
  if (typeof spec === 'string' && Object.hasOwn(vaeConfigs, spec)) return vaeConfig(spec);
  const file = spec ?? path.join(configDir, 'config.json');
  if (!fs.existsSync(file)) {
    if (spec === undefined) {
      throw new UsageError(
        `${weightsPath}: no config.json beside the weights; pass a VAE config: a preset (${Object.keys(vaeConfigs).join(', ')}) or a config.json path`,
      );
    }
    throw new UsageError(`VAE config '${spec}' is neither a preset (${Object.keys(vaeConfigs).join(', ')}) nor an existing config.json file`);
  }
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UsageError(`${file}: not valid JSON (${(e as Error).message})`);
  }
  return vaeConfigFromDiffusers(json, file);
}
