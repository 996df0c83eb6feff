import { tf } from '../src/backend/tf.js';
import { initBackend } from '../src/backend/select.js';
import { NextScaleGenerator } from '../src/models/nsp/model.js';
import { Rng } from '../src/util/rng.js';
import { NSP_BENCH_CONFIG, nspStep } from './kernels.js';
import { ditLoraStep } from './dit_lora.js';
import { ditPretrainStep } from './dit_pretrain.js';
await initBackend('native');
const k = Number(process.argv[2] ?? 0) || 0;
const gen = new NextScaleGenerator(NSP_BENCH_CONFIG, 0);
const arg = process.argv[2] ?? '0';
const { step } = arg === 'lora' ? ditLoraStep() : arg === 'dit' ? ditPretrainStep() : nspStep(gen, k, new Rng(7));
step();
const engine = tf.engine() as unknown as { runKernel: (...a: unknown[]) => unknown };
const orig = engine.runKernel.bind(engine);
const counts = new Map<string, number>();
engine.runKernel = (name: unknown, ...rest: unknown[]) => {
  if (name === 'Reshape' || name === 'Identity' || name === 'Add' || name === 'Multiply') {
    const stack = (new Error().stack ?? '').split('\n').slice(2).filter((l) => l.includes('/src/') && !l.includes('node_modules')).slice(0, 3).map((l) => l.trim().replace(/^at /, '').replace(/\(.*\/src\//, '(')).join(' < ');
    const key = `${name} ${stack || '(tfjs internal: gradient)'}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  return orig(name, ...rest);
};
step();
for (const [key, n] of [...counts].sort((a, b) => b[1] - a[1]).slice(0, 40)) console.log(String(n).padStart(4), key);
