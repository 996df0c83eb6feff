import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { loadSafetensors } from '../src/io/safetensors.js';
import { DiT, type DitConfig, validateDitConfig } from '../src/models/dit/index.js';
import type { HostTensor } from '../src/nn/module.js';
import { expectClose } from './nn_fixture_util.js';

// Written by scripts/fixtures/dit_text_ref.py: a plain-torch text-conditioned DiT (pooled projection
// added to the timestep embedding, PixArt-α cross-attention with a padding mask), float64 reference.
const DIR = fileURLToPath(new URL('./fixtures/dit_text/', import.meta.url));
const meta = JSON.parse(readFileSync(`${DIR}config.json`, 'utf8')) as {
  config: { input_size: number; patch_size: number; in_channels: number; hidden_size: number; depth: number; num_heads: number; mlp_ratio: number; pooled_dim: number; token_dim: number; tokens: number; learn_sigma: boolean };
  grad_params: string[];
};
const ref = loadSafetensors(`${DIR}reference.safetensors`);
const get = (n: string): HostTensor => {
  const h = ref.get(n);
  if (!h) throw new Error(`fixture has no '${n}'`);
  return h;
};
const tensor = (n: string) => tf.tensor(Float32Array.from(get(n).data), get(n).shape);

const c = meta.config;
const textConfig: DitConfig = validateDitConfig({
  inputSize: c.input_size,
  patchSize: c.patch_size,
  inChannels: c.in_channels,
  hiddenSize: c.hidden_size,
  depth: c.depth,
  numHeads: c.num_heads,
  mlpRatio: c.mlp_ratio,
  classDropoutProb: 0,
  numClasses: 0,
  learnSigma: c.learn_sigma,
  conditioning: 'text',
  textPooledDim: c.pooled_dim,
  textTokenDim: c.token_dim,
  crossAttention: true,
});

function loaded(): DiT {
  const m = new DiT(textConfig);
  m.loadStateDict(loadSafetensors(`${DIR}tiny_text.safetensors`), { strict: true });
  return m.eval();
}

describe('text-conditioned DiT against torch', () => {
  it('has the parameters of the reference (names and shapes load strictly) and the fresh-model gates at zero', () => {
    const m = new DiT(textConfig);
    const names = [...m.namedParameters()].map(([n]) => n);
    expect(names).toContain('blocks.0.cross_attn.to_out.0.weight');
    expect(names).toContain('pooled_embedder.linear_2.bias');
    expect(names).toContain('caption_projection.linear_1.weight');
    expect(names.some((n) => n.startsWith('y_embedder'))).toBe(false);
    // PixArt-α zero-initialises the cross-attention output: a fresh block ignores the text tokens.
    expect(m.blocks.at(1).crossAttn!.toOut.at(0).weight.abs().max().dataSync()[0]).toBe(0);
    m.dispose();
  });

  it('forward output, and shapes [N, H, W, C]', () => {
    const m = loaded();
    const cond = { pooled: tensor('pooled') as tf.Tensor2D, tokens: tensor('tokens') as tf.Tensor3D, mask: tensor('mask') as tf.Tensor2D };
    const out = m.forward(tensor('x') as tf.Tensor4D, tensor('t'), cond);
    expect(out.shape).toEqual([3, c.input_size, c.input_size, c.in_channels]);
    expectClose(out, get('output'), 'output', 2e-5, 2e-4);
    // Padding tokens are masked: changing them changes nothing (the reference agrees).
    const out2 = m.forward(tensor('x') as tf.Tensor4D, tensor('t'), { ...cond, tokens: tensor('tokens_padding_changed') as tf.Tensor3D });
    expectClose(out2, get('output_padding_changed'), 'output with changed padding', 2e-5, 2e-4);
    expect(out2.sub(out).abs().max().dataSync()[0]).toBeLessThan(1e-6);
    m.dispose();
  });

  it('gradients w.r.t. input, text tokens, pooled vector and the cross-attention / projection weights', () => {
    const m = loaded();
    const x = tf.variable(tensor('x') as tf.Tensor4D);
    const tokens = tf.variable(tensor('tokens') as tf.Tensor3D);
    const pooled = tf.variable(tensor('pooled') as tf.Tensor2D);
    const params = new Map(m.namedParameters());
    const vars = [x, tokens, pooled, ...meta.grad_params.map((n) => params.get(n)!)];
    const r = tensor('r');
    const { grads } = tf.variableGrads(
      () => m.forward(x, tensor('t'), { pooled, tokens, mask: tensor('mask') as tf.Tensor2D }).mul(r).sum() as tf.Scalar,
      vars,
    );
    expectClose(grads[x.name]!, get('grad.x'), 'grad x', 5e-5, 5e-4);
    expectClose(grads[tokens.name]!, get('grad.tokens'), 'grad tokens', 5e-5, 5e-4);
    expectClose(grads[pooled.name]!, get('grad.pooled'), 'grad pooled', 5e-5, 5e-4);
    for (const n of meta.grad_params) expectClose(grads[params.get(n)!.name]!, get(`grad.${n}`), `grad ${n}`, 5e-5, 5e-4);
    // Masked tokens get no gradient.
    const padGrad = grads[tokens.name]!.slice([2, 2, 0], [1, 3, -1]);
    expect(padGrad.abs().max().dataSync()[0]).toBe(0);
    m.dispose();
  });

  it('rejects a condition of the wrong kind or width with a message saying what was expected', () => {
    const m = loaded();
    const x = tensor('x') as tf.Tensor4D;
    expect(() => m.forward(x, tensor('t'), tf.tensor1d([1, 2, 3], 'int32'))).toThrow(/text-conditioned; pass a text encoding/);
    const bad = { pooled: tf.zeros([3, c.pooled_dim + 1]) as tf.Tensor2D, tokens: tensor('tokens') as tf.Tensor3D, mask: tensor('mask') as tf.Tensor2D };
    expect(() => m.forward(x, tensor('t'), bad)).toThrow(/textPooledDim 12/);
    expect(() => validateDitConfig({ ...textConfig, textPooledDim: undefined })).toThrow(/textPooledDim/);
    m.dispose();
  });
});
