import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { openSafetensors, type TensorSource } from '../../io/safetensors.js';
import type { HostTensor, Module } from '../../nn/module.js';
import { UsageError } from '../../util/errors.js';
import { Rng } from '../../util/rng.js';
import { parseClipTextConfig, type ClipTextConfig } from './clip_text_config.js';
import { ClipTextModel } from './clip_text_model.js';
import { ClipTokenizer } from './clip_tokenizer.js';

/**
 * A CLIP text encoder from a local Hugging Face folder: a transformers model folder
 * (config.json, model.safetensors or model.safetensors.index.json, vocab.json + merges.txt or
 * tokenizer.json), or a diffusers pipeline (text_encoder/ with a sibling tokenizer/).
 */

export interface HfClipTextFolder {
  modelDir: string;
  configPath: string;
  weightsPath: string;
  tokenizerDir: string;
}

export interface LoadedClipText {
  model: ClipTextModel;
  tokenizer: ClipTokenizer;
  config: ClipTextConfig;
  files: HfClipTextFolder;
}

/** Checkpoint keys the text tower does not consume: HF's position_ids buffer, and a full CLIPModel's vision side. */
function isTextWeight(name: string): boolean {
  if (name === 'text_model.embeddings.position_ids') return false;
  return name.startsWith('text_model.') || name === 'text_projection.weight';
}

export function resolveHfClipTextFolder(dir: string, textEncoderSubfolder = 'text_encoder'): HfClipTextFolder {
  if (!existsSync(dir)) throw new UsageError(`CLIP text encoder folder not found: ${dir}`);
  let modelDir = dir;
  if (!existsSync(join(dir, 'config.json'))) {
    if (existsSync(join(dir, textEncoderSubfolder, 'config.json'))) modelDir = join(dir, textEncoderSubfolder);
    else throw new UsageError(`${dir}: no config.json (nor ${textEncoderSubfolder}/config.json): not a Hugging Face CLIP text model folder`);
  }
  const single = join(modelDir, 'model.safetensors');
  const index = join(modelDir, 'model.safetensors.index.json');
  let weightsPath: string;
  if (existsSync(single)) weightsPath = single;
  else if (existsSync(index)) weightsPath = index;
  else {
    const torchOnly = ['pytorch_model.bin', 'pytorch_model.bin.index.json'].find((f) => existsSync(join(modelDir, f)));
    const hint = torchOnly ? ` (found ${torchOnly}: PyTorch pickles are not read; convert it to safetensors)` : '';
    throw new UsageError(`${modelDir}: missing model.safetensors or model.safetensors.index.json${hint}`);
  }
  const candidates = [modelDir, join(modelDir, 'tokenizer'), join(dirname(modelDir), 'tokenizer')];
  const tokenizerDir = candidates.find(
    (d) => (existsSync(join(d, 'vocab.json')) && existsSync(join(d, 'merges.txt'))) || existsSync(join(d, 'tokenizer.json')),
  );
  if (!tokenizerDir) {
    throw new UsageError(`no CLIP tokenizer files (vocab.json + merges.txt, or tokenizer.json) in ${candidates.join(', ')}`);
  }
  return { modelDir, configPath: join(modelDir, 'config.json'), weightsPath, tokenizerDir };
}

export function loadClipTextFromHfFolder(dir: string, opts: { textEncoderSubfolder?: string } = {}): LoadedClipText {
  const files = resolveHfClipTextFolder(dir, opts.textEncoderSubfolder);
  let rawConfig: unknown;
  try {
    rawConfig = JSON.parse(readFileSync(files.configPath, 'utf8'));
  } catch (e) {
    throw new UsageError(`${files.configPath}: not valid JSON (${(e as Error).message})`);
  }
  const source = openSafetensors(files.weightsPath);
  try {
    const names = source.names().filter(isTextWeight);
    const config = parseClipTextConfig(rawConfig, files.configPath, names.includes('text_projection.weight'));
    const model = new ClipTextModel(config, { rng: new Rng(0), initWeights: false });
    try {
      model.loadStateDict(readChecked(source, names, model), { strict: true });
    } catch (e) {
      model.dispose();
      throw e;
    }
    const tokenizer = ClipTokenizer.fromFolder(files.tokenizerDir)!;
    return { model, tokenizer, config, files };
  } finally {
    source.close();
  }
}

/** Compare names and shapes from the header before reading any data, so errors name the file and tensor. */
export function readChecked(source: TensorSource, names: string[], model: Module, what = 'CLIP text'): Map<string, HostTensor> {
  const expected = new Map([...model.stateDict()].map(([k, t]) => [k, t.shape]));
  const missing = [...expected.keys()].filter((k) => !names.includes(k));
  if (missing.length > 0) {
    const shown = missing.slice(0, 6).join(', ') + (missing.length > 6 ? `, … (${missing.length} in all)` : '');
    throw new UsageError(`${source.path}: missing tensors for the ${what} model: ${shown}`);
  }
  const unexpected = names.filter((k) => !expected.has(k));
  if (unexpected.length > 0) {
    throw new UsageError(`${source.path}: tensors the ${what} config does not account for: ${unexpected.slice(0, 6).join(', ')}`);
  }
  for (const name of names) {
    const got = source.info(name).shape;
    const want = expected.get(name)!;
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      throw new UsageError(`${source.path}: tensor ${name} has shape [${got}] but the config implies [${want}]`);
    }
  }
  return new Map(names.map((n) => [n, source.read(n)]));
}
