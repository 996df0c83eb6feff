import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { NspModelConfig } from '../src/models/nsp/config.js';
import { AttentionBlock } from '../src/models/nsp/blocks.js';
import { NextScaleGenerator, pyramid } from '../src/models/nsp/model.js';
import { Rng } from '../src/util/rng.js';

const cfg: NspModelConfig = {
  imageChannels: 3,
  sizes: [8, 16, 32],
  channels: [16],
  blocksPerStage: [2],
  denseLayers: 2,
  growthChannels: 8,
  residualScale: 0.2,
  attentionMaxSize: 8,
  attentionHeads: 4,
  attentionKvHeads: 2,
  attentionTokenSize: 0,
  condDim: 16,
  textDim: 12,
  textTokenDim: 12,
  crossAttention: false,
  groupNormGroups: 4,
  coordChannels: true,
  baseNoiseStd: 1,
};

function randn(shape: number[], seed: number): tf.Tensor {
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(new Rng(seed).fillNormal(new Float32Array(n)), shape);
}

/** Bilinear ×2 with half-pixel centres (PyTorch align_corners=False), written out independently. */
function bilinearUp(src: Float32Array, n: number, s: number, c: number, t: number): Float32Array {
  const out = new Float32Array(n * t * t * c);
  const scale = s / t;
  const coord = (o: number) => {
    const x = Math.max(0, (o + 0.5) * scale - 0.5);
    const x0 = Math.min(Math.floor(x), s - 1);
    const x1 = Math.min(x0 + 1, s - 1);
    return [x0, x1, x - x0] as const;
  };
  for (let b = 0; b < n; b++)
    for (let y = 0; y < t; y++) {
      const [y0, y1, wy] = coord(y);
      for (let x = 0; x < t; x++) {
        const [x0, x1, wx] = coord(x);
        for (let ch = 0; ch < c; ch++) {
          const v = (yy: number, xx: number) => src[((b * s + yy) * s + xx) * c + ch]!;
          const top = v(y0, x0) * (1 - wx) + v(y0, x1) * wx;
          const bot = v(y1, x0) * (1 - wx) + v(y1, x1) * wx;
          out[((b * t + y) * t + x) * c + ch] = top * (1 - wy) + bot * wy;
        }
      }
    }
  return out;
}

describe('NextScaleGenerator', () => {
  it('produces every scale of the cascade with the configured shapes', () => {
    const g = new NextScaleGenerator(cfg, 1);
    const outs = g.generate(randn([2, 8, 8, 3], 0) as tf.Tensor4D, randn([2, 12], 1) as tf.Tensor2D);
    expect(outs.map((o) => o.shape)).toEqual([
      [2, 8, 8, 3],
      [2, 16, 16, 3],
      [2, 32, 32, 3],
    ]);
    outs.forEach((o) => o.dispose());
    g.dispose();
  });

  it('names parameters like the checkpoint layout and puts attention only where configured', () => {
    const g = new NextScaleGenerator(cfg, 1);
    const names = [...g.namedParameters()].map(([n]) => n);
    expect(names).toContain('scale_embedding.weight');
    expect(names).toContain('stages.0.blocks.0.rdb.convs.1.weight');
    expect(names).toContain('stages.0.blocks.2.attn.qkv.weight');
    expect(names).toContain('stages.2.conv_out.bias');
    expect(g.stages.at(0).hasAttention).toBe(true);
    expect(g.stages.at(1).hasAttention).toBe(false);
    expect(g.stages.at(2).hasAttention).toBe(false);
    // Grouped-query attention: 4 query heads share 2 key/value heads of width 16/4 = 4.
    const qkv = [...g.namedParameters()].find(([n]) => n === 'stages.0.blocks.2.attn.qkv.weight')![1];
    expect(qkv.shape).toEqual([(4 + 2 * 2) * 4, 16]);
    // Dense connectivity: conv i sees the block input plus i growth maps.
    const conv1 = [...g.namedParameters()].find(([n]) => n === 'stages.1.blocks.0.rdb.convs.1.weight')![1];
    expect(conv1.shape).toEqual([8, 16 + 8, 3, 3]);
    g.dispose();
  });

  it('an untrained refinement stage is exactly bilinear upsampling (zero-initialised residual head)', () => {
    const g = new NextScaleGenerator(cfg, 3);
    const x = randn([2, 8, 8, 3], 5) as tf.Tensor4D;
    const y = g.predict(1, x, randn([2, 12], 6) as tf.Tensor2D);
    const expected = bilinearUp(x.dataSync() as Float32Array, 2, 8, 3, 16);
    const got = y.dataSync();
    let maxErr = 0;
    for (let i = 0; i < got.length; i++) maxErr = Math.max(maxErr, Math.abs(got[i]! - expected[i]!));
    expect(maxErr).toBeLessThan(1e-5);
    g.dispose();
  });

  it('conditions every block through FiLM: zero FiLM ignores the text, trained FiLM does not', () => {
    const g = new NextScaleGenerator(cfg, 4);
    const stage = g.stages.at(1);
    const head = stage.convOut;
    head.weight.assign(randn(head.weight.shape, 9).mul(0.1));
    const x = randn([1, 8, 8, 3], 10) as tf.Tensor4D;
    const t1 = randn([1, 12], 11) as tf.Tensor2D;
    const t2 = randn([1, 12], 12) as tf.Tensor2D;
    const diff = () => tf.tidy(() => g.predict(1, x, t1).sub(g.predict(1, x, t2)).abs().max().dataSync()[0]!);
    expect(diff()).toBe(0);
    for (const [name, p] of stage.namedParameters()) {
      if (name.includes('film.linear.weight')) p.assign(randn(p.shape, 13).mul(0.2));
    }
    expect(diff()).toBeGreaterThan(1e-3);
    g.dispose();
  });

  it('cross-attends to the text tokens in the attention stages when configured', () => {
    const g = new NextScaleGenerator({ ...cfg, crossAttention: true, textTokenDim: 10 }, 5);
    expect([...g.namedParameters()].map(([n]) => n)).toContain('stages.0.blocks.1.attn.to_k.weight');
    expect([...g.namedParameters()].some(([n]) => n.startsWith('stages.1.') && n.includes('to_k'))).toBe(false);
    const head = g.stages.at(0).convOut;
    head.weight.assign(randn(head.weight.shape, 21).mul(0.1));
    const x = randn([1, 8, 8, 3], 22) as tf.Tensor4D;
    const pooled = randn([1, 12], 23) as tf.Tensor2D;
    const mask = tf.ones([1, 5]) as tf.Tensor2D;
    const out = (seed: number) => g.predict(0, x, { pooled, tokens: randn([1, 5, 10], seed), mask });
    // Same pooled vector, different tokens: only the cross-attention can tell them apart.
    expect(tf.tidy(() => out(24).sub(out(25)).abs().max().dataSync()[0]!)).toBeGreaterThan(1e-4);
    expect(() => g.predict(0, x, pooled)).toThrow(/cross-attends/);
    g.dispose();
  });

  it('adds a learned per-position embedding to the base stage only, right after conv_in', () => {
    const plain = new NextScaleGenerator(cfg, 6);
    expect([...plain.namedParameters()].some(([n]) => n.includes('pos_embed'))).toBe(false);
    plain.dispose();
    const g = new NextScaleGenerator({ ...cfg, basePositionEmbedding: true }, 6);
    const posEmbeds = [...g.namedParameters()].filter(([n]) => n.includes('pos_embed'));
    expect(posEmbeds.map(([n, p]) => [n, p.shape])).toEqual([['stages.0.pos_embed', [1, 8, 8, 16]]]);
    const stage = g.stages.at(0);
    stage.convOut.weight.assign(randn(stage.convOut.weight.shape, 32).mul(0.1));
    const x = randn([1, 8, 8, 3], 30) as tf.Tensor4D;
    const text = randn([1, 12], 31) as tf.Tensor2D;
    const run = () => g.predict(0, x, text).dataSync();
    // An embedding equal at every position is the same as that vector added to conv_in's bias.
    const v = randn([16], 33).mul(0.5);
    stage.posEmbed!.assign(v.reshape([1, 1, 1, 16]).tile([1, 8, 8, 1]));
    const withEmbedding = run();
    stage.posEmbed!.assign(tf.zerosLike(stage.posEmbed!));
    stage.convIn.bias!.assign(stage.convIn.bias!.add(v));
    const withBias = run();
    let maxErr = 0;
    for (let i = 0; i < withBias.length; i++) maxErr = Math.max(maxErr, Math.abs(withBias[i]! - withEmbedding[i]!));
    expect(maxErr).toBeLessThan(1e-5);
    // It is trained: the loss has a gradient with respect to it.
    const { value, grads } = tf.variableGrads(() => g.predict(0, x, text).square().sum() as tf.Scalar, [stage.posEmbed!]);
    expect(tf.tidy(() => grads[stage.posEmbed!.name]!.abs().max().dataSync()[0]!)).toBeGreaterThan(0);
    tf.dispose([value, ...Object.values(grads)]);
    g.dispose();
  });

  it('self-attention mixes information across the whole token grid', () => {
    const block = new AttentionBlock(16, 8, 4, 1, new Rng(2));
    const cond = randn([1, 8], 3) as tf.Tensor2D;
    const a = randn([1, 8, 8, 16], 4) as tf.Tensor4D;
    const buf = a.dataSync().slice() as Float32Array;
    for (let ch = 0; ch < 16; ch++) buf[ch] += ch % 2 ? 2 : -1; // change token (0, 0) only
    const b = tf.tensor4d(buf, [1, 8, 8, 16]);
    const ya = block.forward(a, cond).dataSync();
    const yb = block.forward(b, cond).dataSync();
    const far = (7 * 8 + 7) * 16; // token (7, 7), farthest from the change
    let d = 0;
    for (let ch = 0; ch < 16; ch++) d += Math.abs(ya[far + ch]! - yb[far + ch]!);
    expect(d).toBeGreaterThan(1e-4);
  });

  it('builds the ground-truth pyramid by exact area averaging', () => {
    const img = randn([1, 32, 32, 3], 20) as tf.Tensor4D;
    const [p8] = pyramid(img, [8]);
    const src = img.dataSync();
    let s = 0;
    for (let y = 0; y < 4; y++) for (let x = 0; x < 4; x++) s += src[(y * 32 + x) * 3 + 1]!;
    expect(p8!.dataSync()[1]).toBeCloseTo(s / 16, 5);
  });
});
