import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { tf } from '../src/backend/tf.js';
import { castTo, roundToBf16, roundToFp16 } from '../src/train/precision.js';
import { DynamicLossScaler } from '../src/train/loss_scaler.js';

// uint32 bit patterns of float32 inputs and of torch's x.bfloat16().float() / x.half().float()
const ref = JSON.parse(readFileSync(new URL('./fixtures/optim/rounding.json', import.meta.url), 'utf8')) as { x: number[]; bf16: number[]; fp16: number[] };
const fromBits = (bits: number[]) => new Float32Array(Uint32Array.from(bits).buffer);
const toBits = (f: Float32Array) => Array.from(new Uint32Array(f.buffer, f.byteOffset, f.length));
const hex = (b: number) => `0x${b.toString(16).padStart(8, '0')}`;

function mismatches(actual: Float32Array, expectedBits: number[]): string[] {
  const got = toBits(actual);
  const xs = fromBits(ref.x);
  const bad: string[] = [];
  for (let i = 0; i < expectedBits.length; i++) {
    const e = fromBits([expectedBits[i]!])[0]!;
    const same = Number.isNaN(e) ? Number.isNaN(actual[i]!) : got[i] === expectedBits[i];
    if (!same) bad.push(`x=${xs[i]} (${hex(ref.x[i]!)}): got ${actual[i]} (${hex(got[i]!)}), torch ${e} (${hex(expectedBits[i]!)})`);
  }
  return bad;
}

describe('exact rounding to bf16 / fp16 (vs torch conversions)', () => {
  it(`roundToBf16 matches x.bfloat16().float() bit for bit on ${ref.x.length} values`, () => {
    const x = tf.tensor1d(fromBits(ref.x));
    const y = roundToBf16(x);
    expect(mismatches(y.dataSync() as Float32Array, ref.bf16)).toEqual([]);
    tf.dispose([x, y]);
  });

  it(`roundToFp16 matches x.half().float() bit for bit on ${ref.x.length} values`, () => {
    const x = tf.tensor1d(fromBits(ref.x));
    const y = roundToFp16(x);
    expect(mismatches(y.dataSync() as Float32Array, ref.fp16)).toEqual([]);
    tf.dispose([x, y]);
  });

  it('hand-worked ties and boundaries', () => {
    const r = (f: (t: tf.Tensor) => tf.Tensor, v: number[]) => tf.tidy(() => Array.from(f(tf.tensor1d(v)).dataSync()));
    // bf16 spacing at 1 is 2^-7: 1 + 2^-8 is a tie → even (1); 1 + 3·2^-8 is a tie → 1 + 2^-6
    expect(r(roundToBf16, [1 + 2 ** -8, 1 + 3 * 2 ** -8])).toEqual([1, 1 + 2 ** -6]);
    // fp16: 65519 → 65504, 65520 (tie with 65536) → even → overflow to inf; 2^-25 ties to 0, 3·2^-25 to 2^-23
    expect(r(roundToFp16, [65519, 65520, -65520, 2 ** -25, 3 * 2 ** -25])).toEqual([65504, Infinity, -Infinity, 0, 2 ** -23]);
    expect(Object.is(r(roundToFp16, [-0])[0], -0)).toBe(true);
    expect(Object.is(r(roundToBf16, [-(2 ** -140)])[0], -0)).toBe(true);
  });

  it('passes gradients straight through and does not leak', () => {
    const before = tf.memory().numTensors;
    const x = tf.tensor1d([0.1, 70000, -3e-9, 1 + 2 ** -9]);
    for (const p of ['bf16', 'fp16'] as const) {
      const g = tf.grad((t: tf.Tensor) => castTo(p, t).mul(tf.tensor1d([1, 2, 3, 4])).sum())(x);
      expect(Array.from(g.dataSync())).toEqual([1, 2, 3, 4]);
      g.dispose();
    }
    expect(castTo('fp32', x)).toBe(x);
    x.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('DynamicLossScaler (GradScaler rules)', () => {
  it('follows a scripted sequence of finite / non-finite steps', () => {
    const s = new DynamicLossScaler({ growthInterval: 3 });
    const script = [true, true, true, false, true, true, false, true, true, true, true, false, false];
    // worked by hand: grow ×2 on every 3rd consecutive finite step, halve (and skip) on each overflow
    const expectedScales = [65536, 65536, 131072, 65536, 65536, 65536, 32768, 32768, 32768, 65536, 65536, 32768, 16384];
    const expectedSkips = script.map((finite) => !finite);
    const scales: number[] = [];
    const skips: boolean[] = [];
    for (const finite of script) {
      skips.push(s.update(finite));
      scales.push(s.scale);
    }
    expect(scales).toEqual(expectedScales);
    expect(skips).toEqual(expectedSkips);
    expect(s.stateDict()).toEqual({ scale: 16384, growth_factor: 2, backoff_factor: 0.5, growth_interval: 3, _growth_tracker: 0 });
  });

  it('defaults to torch: 2^16, growth after 2000 clean steps; state dict resumes the tracker', () => {
    const a = new DynamicLossScaler();
    expect(a.scale).toBe(65536);
    for (let i = 0; i < 1999; i++) a.update(true);
    expect(a.scale).toBe(65536);
    const b = new DynamicLossScaler();
    b.loadStateDict(a.stateDict());
    b.update(true);
    expect(b.scale).toBe(131072);
    expect(b.growthTrackerValue).toBe(0);
  });

  it('scaling rescues fp16 gradients that would flush to zero, and unscale restores them', () => {
    const s = new DynamicLossScaler();
    const tiny = tf.tensor1d([3e-9, -1e-8]);
    const unscaledHalf = roundToFp16(tiny);
    expect(Array.from(unscaledHalf.dataSync())).toEqual([0, -0]);
    const scaledHalf = roundToFp16(s.scaleLoss(tiny));
    const { grads, finite } = s.unscale(new Map([['g', scaledHalf]]));
    expect(finite).toBe(true);
    const back = grads.get('g')!.dataSync();
    expect(back[0]).toBeCloseTo(3e-9, 11);
    expect(back[1]).toBeCloseTo(-1e-8, 11);
    const overflow = s.unscale(new Map([['g', roundToFp16(s.scaleLoss(tf.tensor1d([2])))]]));
    expect(overflow.finite).toBe(false); // 2 · 65536 > 65504 → inf in half
    expect(s.update(overflow.finite)).toBe(true);
    expect(s.scale).toBe(32768);
  });

  it('disabled scaler keeps scale 1 and still flags non-finite steps', () => {
    const s = new DynamicLossScaler({ enabled: false });
    expect(s.scale).toBe(1);
    expect(s.update(false)).toBe(true);
    expect(s.scale).toBe(1);
  });
});
