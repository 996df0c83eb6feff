import { describe, expect, it } from 'vitest';
import { ratiosToTorch } from '../bench/run.js';

describe('bench ratios to PyTorch', () => {
  it('pairs rows by name after the backend word: ms as a ratio, throughput as a percentage', () => {
    const kernels = [
      { name: 'native nsp train step stage 0 (16x16, batch 16)', value: 90, unit: 'ms' },
      { name: 'wasm nsp train step stage 0 (16x16, batch 16)', value: 360, unit: 'ms' },
      { name: 'native matmul 1024', value: 150, unit: 'GFLOP/s' },
      { name: 'native conv3x3 only-in-tfjs fwd', value: 10, unit: 'GFLOP/s' },
      { name: 'cpu unavailable', value: NaN, unit: '' },
    ];
    const torch = [
      { name: 'torch nsp train step stage 0 (16x16, batch 16)', value: 120, unit: 'ms' },
      { name: 'torch matmul 1024', value: 125, unit: 'GFLOP/s' },
    ];
    const rows = ratiosToTorch(kernels, torch);
    expect(rows.map((r) => [r.name, r.unit])).toEqual([
      ['native nsp train step stage 0 (16x16, batch 16) ÷ torch', '×'],
      ['wasm nsp train step stage 0 (16x16, batch 16) ÷ torch', '×'],
      ['native matmul 1024 vs torch', '%'],
    ]);
    expect(rows[0]!.value).toBeCloseTo(0.75, 12);
    expect(rows[1]!.value).toBeCloseTo(3, 12);
    expect(rows[2]!.value).toBeCloseTo(120, 12);
  });
});
