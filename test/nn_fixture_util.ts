import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { expect } from 'vitest';
import { tf } from '../src/backend/tf.js';
import type { HostTensor } from '../src/nn/module.js';

/** One tensor as scripts/fixtures/nn_layers.py writes it. */
export interface FixtureTensor {
  shape: number[];
  dtype: 'float32' | 'int32';
  data: number[];
}

/** One layer case: PyTorch state dict, inputs, output, R and the gradients of sum(output·R). */
export interface LayerCase {
  name: string;
  state: Record<string, FixtureTensor>;
  inputs: Record<string, FixtureTensor>;
  output: FixtureTensor;
  r: FixtureTensor;
  inputGrads: Record<string, FixtureTensor>;
  paramGrads: Record<string, FixtureTensor>;
  grid?: [number, number];
}

export function loadCase(name: string): LayerCase {
  const path = fileURLToPath(new URL(`./fixtures/nn/${name}.json`, import.meta.url));
  return JSON.parse(readFileSync(path, 'utf8')) as LayerCase;
}

export function toHost(t: FixtureTensor): HostTensor {
  return { shape: t.shape, data: t.dtype === 'int32' ? Int32Array.from(t.data) : Float32Array.from(t.data) };
}

export function toTensor(t: FixtureTensor): tf.Tensor {
  return tf.tensor(t.dtype === 'int32' ? Int32Array.from(t.data) : Float32Array.from(t.data), t.shape, t.dtype);
}

/** Elementwise |a − e| ≤ atol + rtol·|e|; on failure reports the worst element. */
export function expectClose(actual: tf.Tensor, expected: { shape: number[]; data: ArrayLike<number> }, what: string, atol = 1e-5, rtol = 1e-4): void {
  expect(actual.shape, `${what}: shape`).toEqual(expected.shape);
  const a = actual.dataSync();
  let worst = -1;
  let worstExcess = 0;
  for (let i = 0; i < a.length; i++) {
    const e = expected.data[i]!;
    const excess = Math.abs(a[i]! - e) - (atol + rtol * Math.abs(e));
    if (!(excess <= worstExcess)) {
      worstExcess = Number.isNaN(excess) ? Infinity : excess;
      worst = i;
    }
  }
  if (worst >= 0) expect.fail(`${what}: element ${worst} is ${a[worst]}, expected ${expected.data[worst]} (atol ${atol}, rtol ${rtol})`);
}
