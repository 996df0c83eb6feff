import { beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { installKernelPatches } from '../src/backend/kernel_patches.js';
import {
  AdaLayerNorm,
  Attention,
  Conv2d,
  CrossAttention,
  Embedding,
  FiLM,
  GroupNorm,
  LayerNorm,
  Linear,
  MLP,
  Module,
  RMSNorm,
  activation,
} from '../src/nn/index.js';
import { expectClose, loadCase, toHost, toTensor, type LayerCase } from './nn_fixture_util.js';

// Every layer against PyTorch (scripts/fixtures/nn_layers.py): the torch state dict must load by
// name, strictly; forward and the gradients of sum(out·R) w.r.t. inputs and parameters must agree.
// Run on the reference cpu backend and on wasm (the backend training uses without tfjs-node).

type Inputs = Record<string, tf.Tensor>;
interface Built {
  module: Module;
  run: (inputs: Inputs) => tf.Tensor;
}

class Stateless extends Module {}

const x = (m: { forward(t: tf.Tensor): tf.Tensor }) => (i: Inputs) => m.forward(i.x!);
const act = (name: string): Built => ({ module: new Stateless(), run: (i) => activation(name)(i.x!) });

const builders: Record<string, (c: LayerCase) => Built> = {
  linear: () => {
    const m = new Linear(6, 5);
    return { module: m, run: x(m) };
  },
  linear_nobias: () => {
    const m = new Linear(6, 5, { bias: false });
    return { module: m, run: x(m) };
  },
  conv2d_k3_s1_p1: () => conv(new Conv2d(3, 4, 3, { padding: 1 })),
  conv2d_k3_s2_p1: () => conv(new Conv2d(3, 4, 3, { stride: 2, padding: 1 })),
  conv2d_k4_s2_p1: () => conv(new Conv2d(2, 3, 4, { stride: 2, padding: 1, bias: false })),
  conv2d_k1: () => conv(new Conv2d(4, 3, 1)),
  embedding: () => {
    const m = new Embedding(10, 4);
    return { module: m, run: (i) => m.forward(i.ids!) };
  },
  layernorm_affine: () => {
    const m = new LayerNorm(8);
    return { module: m, run: x(m) };
  },
  layernorm_noaffine: () => {
    const m = new LayerNorm(8, 1e-6, false);
    return { module: m, run: x(m) };
  },
  groupnorm_32x64: () => {
    const m = new GroupNorm(32, 64);
    return { module: m, run: x(m) };
  },
  groupnorm_4x8: () => {
    const m = new GroupNorm(4, 8);
    return { module: m, run: x(m) };
  },
  rmsnorm: () => {
    const m = new RMSNorm(8);
    return { module: m, run: x(m) };
  },
  act_silu: () => act('silu'),
  act_gelu_tanh: () => act('gelu_tanh'),
  act_gelu_erf: () => act('gelu'),
  act_quick_gelu: () => act('quick_gelu'),
  mlp: () => {
    const m = new MLP(6, 12, 5, { act: 'gelu_tanh' });
    return { module: m, run: x(m) };
  },
  attn_mha_fused: () => selfAttn(new Attention(16, { numHeads: 4 })),
  attn_gqa_fused: () => selfAttn(new Attention(16, { numHeads: 4, numKvHeads: 2 })),
  attn_mqa_unfused: () => selfAttn(new Attention(16, { numHeads: 4, numKvHeads: 1, fused: false })),
  attn_gqa_causal: () =>
    selfAttn(new Attention(16, { numHeads: 4, numKvHeads: 2, fused: false, outName: 'o_proj', qkvBias: false, causal: true })),
  attn_gqa_masks: () => selfAttn(new Attention(16, { numHeads: 4, numKvHeads: 2 })),
  attn_mask4d: () => selfAttn(new Attention(16, { numHeads: 2 })),
  attn_rope2d: (c) => {
    const m = new Attention(16, { numHeads: 2, numKvHeads: 1, rope: '2d' });
    return { module: m, run: (i) => m.forward(i.x as tf.Tensor3D, { grid: c.grid }) };
  },
  cross_attn_gqa: () => {
    const m = new CrossAttention(16, 12, { numHeads: 4, numKvHeads: 2 });
    return { module: m, run: (i) => m.forward(i.x as tf.Tensor3D, i.context as tf.Tensor3D, { keyMask: i.key_mask }) };
  },
  film_nhwc: () => {
    const m = new FiLM(6, 8);
    return { module: m, run: (i) => m.forward(i.x!, i.cond!) };
  },
  film_dit_order: () => {
    const m = new FiLM(6, 8, { order: 'shift_scale', condAct: 'silu' });
    return { module: m, run: (i) => m.forward(i.x!, i.cond!) };
  },
  adaln: () => {
    const m = new AdaLayerNorm(8, 6);
    return { module: m, run: (i) => m.forward(i.x!, i.cond!) };
  },
  adaln_affine: () => {
    const m = new AdaLayerNorm(8, 6, { affine: true, eps: 1e-5 });
    return { module: m, run: (i) => m.forward(i.x!, i.cond!) };
  },
};

function conv(m: Conv2d): Built {
  return { module: m, run: (i) => m.forward(i.x as tf.Tensor4D) };
}

function selfAttn(m: Attention): Built {
  return { module: m, run: (i) => m.forward(i.x as tf.Tensor3D, { mask: i.mask, keyMask: i.key_mask }) };
}

for (const backend of ['cpu', 'wasm'] as const) {
  describe(`nn layers match PyTorch on ${backend}`, () => {
    beforeAll(async () => {
      if (backend === 'wasm') await initBackend('wasm');
      else await tf.setBackend('cpu');
      installKernelPatches(backend);
      expect(tf.getBackend()).toBe(backend);
    });
    for (const [name, build] of Object.entries(builders)) it(name, () => checkCase(name, build));
  });
}

function checkCase(name: string, build: (c: LayerCase) => Built): void {
  const c = loadCase(name);
  const { module, run } = build(c);
  module.loadStateDict(Object.fromEntries(Object.entries(c.state).map(([k, v]) => [k, toHost(v)])), { strict: true });
  const inputs: Inputs = Object.fromEntries(Object.entries(c.inputs).map(([k, v]) => [k, toTensor(v)]));
  const r = toTensor(c.r);

  const out = run(inputs);
  expectClose(out, c.output, `${name} output`);

  const gradInputNames = Object.keys(c.inputGrads);
  const params = [...module.namedParameters()];
  expect(params.map(([k]) => k).sort()).toEqual(Object.keys(c.paramGrads).sort());
  const loss = (...ts: tf.Tensor[]) => {
    const replaced = { ...inputs };
    gradInputNames.forEach((k, j) => (replaced[k] = ts[j]!));
    return run(replaced).mul(r).sum();
  };
  const grads = tf.grads(loss)([...gradInputNames.map((k) => inputs[k]!), ...params.map(([, p]) => p)]);
  gradInputNames.forEach((k, j) => expectClose(grads[j]!, c.inputGrads[k]!, `${name} d/d${k}`));
  params.forEach(([k], j) => expectClose(grads[gradInputNames.length + j]!, c.paramGrads[k]!, `${name} d/d${k}`));

  tf.dispose([out, r, ...grads, ...Object.values(inputs)]);
  module.dispose();
}
