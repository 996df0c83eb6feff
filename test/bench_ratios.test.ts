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

describe('bench: which Python runs torch_ref.py', () => {
  it('takes --torch-python, then SCALEFORGE_TORCH_PYTHON, then python3 on PATH, then Debian\'s', async () => {
    const { torchPythonCandidates } = await import('../bench/torch_python.js');
    expect(torchPythonCandidates(['--torch-python', '/opt/py/bin/python'], { SCALEFORGE_TORCH_PYTHON: '/x' })).toEqual([
      { python: '/opt/py/bin/python', source: '--torch-python' },
    ]);
    expect(torchPythonCandidates(['--torch-python=/a/python'], {})[0]!.python).toBe('/a/python');
    expect(torchPythonCandidates([], { SCALEFORGE_TORCH_PYTHON: '/x/python' })).toEqual([{ python: '/x/python', source: 'SCALEFORGE_TORCH_PYTHON' }]);
    expect(torchPythonCandidates([], {}).map((c) => c.python)).toEqual(['python3', '/usr/bin/python3']);
  });

  it('reports what it tried when an explicit choice cannot import torch', async () => {
    const { findTorchPython } = await import('../bench/torch_python.js');
    const r = findTorchPython(['--torch-python', '/nonexistent/python'], {});
    expect(r.found).toBeUndefined();
    expect(r.tried[0]).toContain('/nonexistent/python (--torch-python)');
  });
});
