/**
 * numpy's legacy `np.random.RandomState(seed)` (MT19937 seeded by init_genrand) for the two draws the
 * reference metrics make: `permutation(n)` (torch-fidelity shuffles Inception-Score samples with
 * RandomState(2020).permutation(N)) and `choice(n, m, replace=False)` (= permutation(n)[:m]; torch-fidelity
 * draws every KID subset this way from one RandomState(2020)). Reproducing the generator bit for bit makes
 * our subsets and splits the reference's own, so the numbers agree to float rounding, not just in
 * distribution.
 */
export class NumpyRandomState {
  private readonly mt = new Uint32Array(624);
  private index = 624;

  constructor(seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed > 0xffffffff) throw new Error(`RandomState: seed must be an integer in [0, 2^32), got ${seed}`);
    this.mt[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const prev = this.mt[i - 1]! ^ (this.mt[i - 1]! >>> 30);
      this.mt[i] = (Math.imul(1812433253, prev) + i) >>> 0;
    }
  }

  /** The next 32-bit output of MT19937 (genrand_int32). */
  nextUint32(): number {
    const mt = this.mt;
    if (this.index >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (mt[k]! & 0x80000000) | (mt[(k + 1) % 624]! & 0x7fffffff);
        mt[k] = mt[(k + 397) % 624]! ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = mt[this.index++]!;
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }

  /** Uniform integer in [0, max] by masked rejection (numpy's random_interval, 32-bit branch). */
  interval(max: number): number {
    if (max === 0) return 0;
    if (max > 0xffffffff) throw new Error('RandomState.interval: ranges above 2^32 are not supported');
    let mask = max;
    mask |= mask >>> 1;
    mask |= mask >>> 2;
    mask |= mask >>> 4;
    mask |= mask >>> 8;
    mask |= mask >>> 16;
    mask >>>= 0;
    let v: number;
    do v = (this.nextUint32() & mask) >>> 0;
    while (v > max);
    return v;
  }

  /** np.random.RandomState.permutation(n): a Fisher–Yates shuffle of 0..n−1 from the last element down. */
  permutation(n: number): Int32Array {
    const out = Int32Array.from({ length: n }, (_, i) => i);
    for (let i = n - 1; i >= 1; i--) {
      const j = this.interval(i);
      const t = out[i]!;
      out[i] = out[j]!;
      out[j] = t;
    }
    return out;
  }

  /** np.random.RandomState.choice(n, m, replace=False). */
  choiceWithoutReplacement(n: number, m: number): Int32Array {
    if (m > n) throw new Error(`RandomState.choice: cannot take ${m} samples from ${n} without replacement`);
    return this.permutation(n).slice(0, m);
  }
}
