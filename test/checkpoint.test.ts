import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { writeFileAtomic } from '../src/io/atomic.js';
import { readSafetensorsHeader, saveSafetensors } from '../src/io/safetensors.js';
import { Linear } from '../src/nn/linear.js';
import { Rng, type RngState } from '../src/util/rng.js';
import { CheckpointManager, defaultCheckpointIO, STATE_METADATA_KEY, type CheckpointIO } from '../src/train/checkpoint.js';
import { EMA } from '../src/train/ema.js';
import { AdamW } from '../src/train/optim.js';
import { DynamicLossScaler, type LossScalerState } from '../src/train/loss_scaler.js';
import { roundToBf16 } from '../src/train/precision.js';

let dir: string;
beforeEach(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-ckpt-'));
});
afterEach(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

const values = (t: tf.Tensor) => Array.from(t.dataSync());

/** One AdamW step on a mean-squared-error linear regression batch drawn from `rng`. */
function trainStep(model: Linear, opt: AdamW, ema: EMA, rng: Rng, lr: number): void {
  const x = tf.tensor2d(rng.fillNormal(new Float32Array(8 * 3)), [8, 3]);
  const y = tf.tidy(() => x.matMul(tf.tensor2d([[1.5], [-2], [0.5]])).add(0.25));
  const params = model.trainableParameters();
  const names = [...params.keys()];
  const { grads, value } = tf.variableGrads(() => tf.losses.meanSquaredError(y, model.forward(x)) as tf.Scalar, [...params.values()]);
  const byName = new Map(names.map((n) => [n, grads[params.get(n)!.name]!]));
  opt.step(byName, lr);
  ema.update();
  tf.dispose([x, y, value, ...Object.values(grads)]);
}

describe('CheckpointManager', () => {
  it('round-trips model, EMA, optimizer state and extra JSON; namespaces tensors; latest pointer', async () => {
    const model = new Linear(3, 1, { rng: new Rng(1) });
    const opt = new AdamW(model.trainableParameters());
    const ema = new EMA(model, { decay: 0.9 });
    const rng = new Rng(7);
    for (let i = 0; i < 2; i++) trainStep(model, opt, ema, rng, 1e-2);
    const extra = { stage: 1, epoch: 0, position: 16, rng: rng.getState(), configHash: 'abc123', nested: { a: [1, 2] } };
    const mgr = new CheckpointManager(dir);
    const file = await mgr.save(2, { model, ema, optimizer: opt, extra });
    expect(path.basename(file)).toBe('step-000002.safetensors');
    expect(fs.readFileSync(path.join(dir, 'latest'), 'utf8').trim()).toBe('step-000002.safetensors');
    const header = readSafetensorsHeader(file);
    expect(Object.keys(header.tensors).sort()).toEqual([
      'ema.bias', 'ema.weight',
      'model.bias', 'model.weight',
      'optim.exp_avg.bias', 'optim.exp_avg.weight', 'optim.exp_avg_sq.bias', 'optim.exp_avg_sq.weight', 'optim.step.bias', 'optim.step.weight',
    ]);
    expect(JSON.parse(header.metadata[STATE_METADATA_KEY]!).extra).toEqual(extra);

    const loaded = mgr.loadLatest()!;
    expect(loaded.step).toBe(2);
    expect(loaded.extra).toEqual(extra);
    expect(loaded.emaNumUpdates).toBe(2);
    expect(Array.from(loaded.model.get('weight')!.data)).toEqual(values(model.weight));
    for (const [k, v] of ema.stateDict()) expect(Array.from(loaded.ema!.get(k)!.data)).toEqual(Array.from(v.data));
    for (const [k, v] of opt.stateDict()) expect(Array.from(loaded.optimizer!.get(k)!.data)).toEqual(Array.from(v.data));
    [model, ema, opt].forEach((o) => o.dispose());
  });

  it('keeps the last N checkpoints and never prunes the one just written', async () => {
    const mgr = new CheckpointManager(dir, { keepLast: 2 });
    const weights = new Map([['w', { shape: [2], data: Float32Array.of(1, 2) }]]);
    for (const step of [10, 20, 30, 40]) await mgr.save(step, { model: weights });
    expect(mgr.list().map((c) => c.step)).toEqual([30, 40]);
    // resuming from an earlier step writes a checkpoint older than the kept ones: it stays, and is latest
    await mgr.save(5, { model: weights });
    expect(mgr.list().map((c) => c.step)).toEqual([5, 30, 40]);
    expect(path.basename(mgr.latestPath()!)).toBe('step-000005.safetensors');
    expect(mgr.loadLatest()!.step).toBe(5);
  });

  it('a write that fails midway (ENOSPC) leaves the previous checkpoint and latest valid', async () => {
    const weights = (v: number) => new Map([['w', { shape: [3], data: Float32Array.of(v, v, v) }]]);
    const good = new CheckpointManager(dir, { keepLast: 1 });
    await good.save(1, { model: weights(1), extra: { ok: true } });
    const diskFull: CheckpointIO = {
      ...defaultCheckpointIO,
      // a real atomic write that runs out of space after writing part of the data
      writeTensors: (file) =>
        writeFileAtomic(file, (fd) => {
          fs.writeSync(fd, new Uint8Array(64));
          throw Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' });
        }),
    };
    const failing = new CheckpointManager(dir, { keepLast: 1, io: diskFull });
    await expect(failing.save(2, { model: weights(2) })).rejects.toThrow(/ENOSPC/);
    expect(fs.readdirSync(dir).sort()).toEqual(['latest', 'step-000001.safetensors']);
    const loaded = good.loadLatest()!;
    expect(loaded.step).toBe(1);
    expect(Array.from(loaded.model.get('w')!.data)).toEqual([1, 1, 1]);

    const pointerFails: CheckpointIO = { ...defaultCheckpointIO, writeText: () => Promise.reject(new Error('EIO: pointer')) };
    await expect(new CheckpointManager(dir, { keepLast: 1, io: pointerFails }).save(3, { model: weights(3) })).rejects.toThrow(/EIO/);
    // the new file is complete but unnamed; latest still names step 1, which was not pruned
    expect(good.loadLatest()!.step).toBe(1);
    expect(good.list().map((c) => c.step)).toEqual([1, 3]);
  });

  it('falls back to an older checkpoint when the one latest names is corrupt', async () => {
    const mgr = new CheckpointManager(dir, { keepLast: 3 });
    const w = new Map([['w', { shape: [1], data: Float32Array.of(4) }]]);
    await mgr.save(1, { model: w });
    await mgr.save(2, { model: w });
    fs.truncateSync(path.join(dir, 'step-000002.safetensors'), 20);
    const loaded = mgr.loadLatest()!;
    expect(loaded.step).toBe(1);
    expect(loaded.fellBackFrom).toMatch(/step-000002\.safetensors$/);
    expect(() => mgr.load(path.join(dir, 'step-000002.safetensors'))).toThrow(/step-000002/);
    await saveSafetensors(path.join(dir, 'step-000009.safetensors'), { x: { shape: [1], data: Float32Array.of(0) } });
    expect(() => mgr.load(path.join(dir, 'step-000009.safetensors'))).toThrow(/not a scaleforge checkpoint/);
    expect(new CheckpointManager(path.join(dir, 'none')).loadLatest()).toBeNull();
  });

  it('stores model weights as BF16 when asked: they load as the bf16 rounding of the originals', async () => {
    const model = new Linear(4, 3, { rng: new Rng(3) });
    const mgr = new CheckpointManager(dir);
    const file = await mgr.save(0, { model }, { dtype: 'BF16' });
    expect(readSafetensorsHeader(file).tensors['model.weight']!.dtype).toBe('BF16');
    const rounded = tf.tidy(() => values(roundToBf16(model.weight)));
    expect(Array.from(mgr.load(file).model.get('weight')!.data)).toEqual(rounded);
    expect(rounded).not.toEqual(values(model.weight));
    model.dispose();
  });

  it('resuming at step 5 reproduces the uninterrupted run bit-for-bit at step 10', async () => {
    const lr = (s: number) => 1e-2 * (1 + (s % 3));
    const fresh = (seed: number) => {
      const model = new Linear(3, 1, { rng: new Rng(seed) });
      return { model, opt: new AdamW(model.trainableParameters(), { weightDecay: 0.05 }), ema: new EMA(model, { decay: 0.8, warmup: 'num_updates' }) };
    };
    const a = fresh(11);
    const rngA = new Rng(99);
    for (let s = 0; s < 10; s++) trainStep(a.model, a.opt, a.ema, rngA, lr(s));

    const mgr = new CheckpointManager(dir);
    const b = fresh(11);
    const rngB = new Rng(99);
    const scaler = new DynamicLossScaler();
    for (let s = 0; s < 5; s++) {
      trainStep(b.model, b.opt, b.ema, rngB, lr(s));
      scaler.update(true);
    }
    await mgr.save(5, { model: b.model, ema: b.ema, optimizer: b.opt, extra: { rng: rngB.getState(), scaler: scaler.stateDict() } });
    [b.model, b.opt, b.ema].forEach((o) => o.dispose());

    const c = fresh(12345); // different init: everything must come from the checkpoint
    const ckpt = mgr.loadLatest()!;
    mgr.restore(ckpt, { model: c.model, ema: c.ema, optimizer: c.opt });
    const rngC = new Rng(0);
    rngC.setState(ckpt.extra.rng as RngState);
    const scalerC = new DynamicLossScaler();
    scalerC.loadStateDict(ckpt.extra.scaler as LossScalerState);
    expect(scalerC.growthTrackerValue).toBe(5);
    for (let s = ckpt.step; s < 10; s++) trainStep(c.model, c.opt, c.ema, rngC, lr(s));

    expect(values(c.model.weight)).toEqual(values(a.model.weight));
    expect(values(c.model.bias!)).toEqual(values(a.model.bias!));
    for (const [k, v] of a.ema.stateDict()) expect(Array.from(c.ema.stateDict().get(k)!.data)).toEqual(Array.from(v.data));
    expect(c.opt.stepCount('weight')).toBe(10);
    [a.model, a.opt, a.ema, c.model, c.opt, c.ema].forEach((o) => o.dispose());
  });
});
