import { readFileSync } from 'node:fs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { Adam, AdamW, isNoDecayParam, SGD, type Optimizer } from '../src/train/optim.js';
import { NATIVE_BACKEND, registerNativeBackend } from '../src/backend/native/backend.js';
import { FUSED_KERNELS, hasFusedKernel } from '../src/backend/fused.js';

// cpu runs the tfjs-op composite; native (where its addon is built) runs the fused Adam kernel.
const backends = ['cpu', ...(registerNativeBackend() ? [NATIVE_BACKEND] : [])];

interface Case {
  options: { betas?: [number, number]; eps?: number; weightDecay: number; momentum?: number; dampening?: number; nesterov?: boolean; noDecayBias: boolean };
  params0: Record<string, { shape: number[]; data: number[] }>;
  grads: Record<string, number[]>[];
  skip: [number, string] | null;
  lrs: number[];
  trajectory: Record<string, number[]>[];
  state: Record<string, number | number[]>;
}
const fixture = JSON.parse(readFileSync(new URL('./fixtures/optim/optimizers.json', import.meta.url), 'utf8')) as { cases: Record<string, Case> };

function makeParams(c: Case): Map<string, tf.Variable> {
  return new Map(Object.entries(c.params0).map(([k, v]) => [k, ownedVariable(tf.tensor(v.data, v.shape))]));
}

function ownedVariable(init: tf.Tensor): tf.Variable {
  const v = tf.variable(init);
  init.dispose();
  return v;
}

function build(kind: string, c: Case, params: Map<string, tf.Variable>): Optimizer {
  const o = c.options;
  const groups = o.noDecayBias ? [{ match: (n: string) => n.endsWith('.bias'), weightDecay: 0 }] : undefined;
  if (kind === 'adamw') return new AdamW(params, { betas: o.betas, eps: o.eps, weightDecay: o.weightDecay, groups });
  if (kind === 'adam') return new Adam(params, { betas: o.betas, eps: o.eps, weightDecay: o.weightDecay, groups });
  return new SGD(params, { momentum: o.momentum, dampening: o.dampening, nesterov: o.nesterov, weightDecay: o.weightDecay, groups });
}

function gradsAt(c: Case, s: number, params: Map<string, tf.Variable>): Map<string, tf.Tensor> {
  const m = new Map<string, tf.Tensor>();
  for (const [k, data] of Object.entries(c.grads[s]!)) {
    if (c.skip && c.skip[0] === s && c.skip[1] === k) continue;
    m.set(k, tf.tensor(data, params.get(k)!.shape));
  }
  return m;
}

function expectClose(actual: ArrayLike<number>, expected: number[], atol: number, what: string) {
  expect(actual.length, what).toBe(expected.length);
  let worst = 0;
  for (let i = 0; i < expected.length; i++) worst = Math.max(worst, Math.abs(actual[i]! - expected[i]!));
  expect(worst, what).toBeLessThanOrEqual(atol);
}

/** Parameter values after every step of case `c`, on the active backend. */
function trajectory(kind: string, c: Case): Float32Array[][] {
  const params = makeParams(c);
  const opt = build(kind.startsWith('sgd') ? 'sgd' : kind, c, params);
  const out: Float32Array[][] = [];
  for (let s = 0; s < c.lrs.length; s++) {
    const grads = gradsAt(c, s, params);
    opt.step(grads, c.lrs[s]!);
    for (const g of grads.values()) g.dispose();
    out.push([...params.values()].map((p) => p.dataSync() as Float32Array));
  }
  opt.dispose();
  for (const p of params.values()) p.dispose();
  return out;
}

describe.each(backends)('optimizers reproduce torch.optim trajectories on %s', (backend) => {
  beforeAll(async () => {
    await tf.setBackend(backend);
    expect(hasFusedKernel(FUSED_KERNELS.adam)).toBe(backend === NATIVE_BACKEND);
  });
  afterAll(async () => {
    await tf.setBackend('cpu');
  });
  if (backend !== 'cpu') {
    it('the fused Adam/AdamW kernel gives the same bits as the composite', async () => {
      for (const kind of Object.keys(fixture.cases).filter((k) => k.startsWith('adam'))) {
        const c = fixture.cases[kind]!;
        const fused = trajectory(kind, c);
        await tf.setBackend('cpu');
        const composite = trajectory(kind, c);
        await tf.setBackend(backend);
        expect(fused, kind).toEqual(composite);
      }
    });
  }
  for (const [kind, c] of Object.entries(fixture.cases)) {
    it(kind, () => {
      const before = tf.memory().numTensors;
      const params = makeParams(c);
      const opt = build(kind.startsWith('sgd') ? 'sgd' : kind, c, params);
      for (let s = 0; s < c.lrs.length; s++) {
        const grads = gradsAt(c, s, params);
        opt.step(grads, c.lrs[s]!);
        for (const g of grads.values()) g.dispose();
        for (const [k, p] of params) expectClose(p.dataSync(), c.trajectory[s]![k]!, 1e-6, `${kind} step ${s} ${k}`);
      }
      const state = opt.stateDict();
      for (const [key, ref] of Object.entries(c.state)) {
        const got = state.get(key);
        expect(got, key).toBeDefined();
        if (typeof ref === 'number') expect(got!.data[0]).toBe(ref);
        else expectClose(got!.data, ref, 1e-6, key);
      }
      opt.dispose();
      for (const p of params.values()) p.dispose();
      expect(tf.memory().numTensors).toBe(before);
    });
  }
});

describe('optimizer state', () => {
  it('resumes bit-exactly from stateDict into a fresh optimizer', () => {
    const c = fixture.cases.adamw!;
    const runA = makeParams(c);
    const a = build('adamw', c, runA);
    const runB = makeParams(c);
    let b = build('adamw', c, runB);
    for (let s = 0; s < c.lrs.length; s++) {
      if (s === 3) {
        const saved = b.stateDict();
        b.dispose();
        b = build('adamw', c, runB);
        b.loadStateDict(saved);
      }
      for (const [opt, params] of [[a, runA], [b, runB]] as const) {
        const g = gradsAt(c, s, params);
        opt.step(g, c.lrs[s]!);
        for (const t of g.values()) t.dispose();
      }
    }
    for (const [k, p] of runA) expect(Array.from(runB.get(k)!.dataSync())).toEqual(Array.from(p.dataSync()));
    expect(b.stepCount('layer.weight')).toBe(5);
    expect(b.stepCount('layer.bias')).toBe(4);
    a.dispose();
    b.dispose();
  });

  it('rejects state for unknown parameters or wrong shapes', () => {
    const params = new Map([['w', tf.variable(tf.zeros([2, 2]))]]);
    const opt = new AdamW(params);
    expect(() => opt.loadStateDict(new Map([['exp_avg.nope', { shape: [2, 2], data: new Float32Array(4) }]]))).toThrow(/unexpected key 'exp_avg.nope'/);
    expect(() =>
      opt.loadStateDict(new Map([['step.w', { shape: [], data: Int32Array.of(1) }], ['exp_avg.w', { shape: [4], data: new Float32Array(4) }]])),
    ).toThrow(/shape \[4\].*\[2,2\]/);
    expect(() => opt.step(new Map([['x', tf.zeros([1])]]), 0.1)).toThrow(/unknown parameter 'x'/);
    opt.dispose();
  });

  it('isNoDecayParam picks biases, norm scales and embeddings but not matrices', () => {
    const v = (shape: number[]) => ownedVariable(tf.zeros(shape));
    expect(isNoDecayParam('blocks.0.attn.qkv.bias', v([6]))).toBe(true);
    expect(isNoDecayParam('blocks.0.norm1.weight', v([6]))).toBe(true);
    expect(isNoDecayParam('tok_embed.weight', v([10, 6]))).toBe(true);
    expect(isNoDecayParam('pos_embed', v([1, 4, 6]))).toBe(true);
    expect(isNoDecayParam('blocks.0.attn.qkv.weight', v([18, 6]))).toBe(false);
    expect(isNoDecayParam('conv.weight', v([4, 3, 3, 3]))).toBe(false);
  });
});
