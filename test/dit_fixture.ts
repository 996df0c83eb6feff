import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { tf } from '../src/backend/tf.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { type DitConfig, validateDitConfig } from '../src/models/dit/config.js';
import { DiT } from '../src/models/dit/model.js';
import type { HostTensor } from '../src/nn/module.js';
import { expectClose } from './nn_fixture_util.js';

// Written by scripts/fixtures/dit_reference.py: an independent plain-torch DiT (official names and
// init, then perturbed), reference forward/backward in float64.
export const DIT_FIXTURE_DIR = fileURLToPath(new URL('./fixtures/dit/', import.meta.url));

export interface DitFixtureMeta {
  config: {
    input_size: number;
    patch_size: number;
    in_channels: number;
    hidden_size: number;
    depth: number;
    num_heads: number;
    mlp_ratio: number;
    class_dropout_prob: number;
    num_classes: number;
    learn_sigma: boolean;
  };
  lora: { r: number; alpha: number; targets: string[] };
  cfg_scale: number;
  cfg_guided_channels: number;
  grad_params: string[];
  parameter_count: number;
  variant_parameter_counts: Record<string, number>;
  zero_at_init: string[];
}

export const ditMeta = JSON.parse(readFileSync(`${DIT_FIXTURE_DIR}config.json`, 'utf8')) as DitFixtureMeta;

/** The official constructor arguments as a DitConfig. */
export const fixtureDitConfig: DitConfig = validateDitConfig({
  inputSize: ditMeta.config.input_size,
  patchSize: ditMeta.config.patch_size,
  inChannels: ditMeta.config.in_channels,
  hiddenSize: ditMeta.config.hidden_size,
  depth: ditMeta.config.depth,
  numHeads: ditMeta.config.num_heads,
  mlpRatio: ditMeta.config.mlp_ratio,
  classDropoutProb: ditMeta.config.class_dropout_prob,
  numClasses: ditMeta.config.num_classes,
  learnSigma: ditMeta.config.learn_sigma,
});

export const ditState = loadSafetensors(`${DIT_FIXTURE_DIR}tiny.safetensors`);
export const ditLoraState = loadSafetensors(`${DIT_FIXTURE_DIR}tiny_lora.safetensors`);
export const ditRef = loadSafetensors(`${DIT_FIXTURE_DIR}reference.safetensors`);

export function refTensor(name: string): tf.Tensor {
  const h = ditRef.get(name);
  if (!h) throw new Error(`reference.safetensors has no '${name}'`);
  return tf.tensor(h.data, h.shape, h.data instanceof Int32Array ? 'int32' : 'float32');
}

/** The fixture's tiny DiT with the reference weights, in eval mode. */
export function loadFixtureDit(): DiT {
  const model = new DiT(fixtureDitConfig);
  model.loadStateDict(ditState);
  return model.eval();
}

/** expectClose against a reference that may be missing from the fixture. */
export function expectCloseTo(got: tf.Tensor, want: HostTensor | undefined, what: string, atol = 1e-5, rtol = 1e-4): void {
  if (!want) throw new Error(`${what}: no reference`);
  expectClose(got, want, what, atol, rtol);
}
