import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { soakResume } from '../scripts/soak-resume.js';
import { tinyBase } from './helpers/dit_lora.js';

// Kill-and-resume for every trainer: the run is SIGKILLed twice (once inside a checkpoint write,
// once at a random moment), resumed each time, and must end bit-identical to an uninterrupted run.
// A new trainer adds one line below: a tiny recipe of its kind that checkpoints every step.
const TRAINERS: { kind: string; recipe: string; /** Files the recipe needs, made first; BASE in the recipe becomes the returned path. */ setup?: (dir: string) => Promise<string> }[] = [
  {
    kind: 'nsp-progressive',
    recipe: `kind: nsp-progressive
seed: 3
backend: cpu
data: { source: procedural, procedural: { count: 8, size: 16, seed: 1 }, batch_size: 2 }
model: { sizes: [8, 16], channels: [8], blocks_per_stage: [1], dense_layers: 1, growth_channels: 4, attention: { max_size: 0 }, cond_dim: 8, group_norm_groups: 4 }
text_encoder: { builtin: { dim: 8, layers: 1, heads: 2, context: 12 } }
train: { steps_per_scale: [3, 3], schedule: { warmup_steps: 0 }, generated_inputs: 0.5 }
log: { every: 1, sample_every: 100, checkpoint_every: 1, keep_last: 2 }
sample: { prompts: ['a red circle in the top left on a blue background'], fidelity_samples: 1 }
`,
  },
  {
    kind: 'vae',
    recipe: `kind: vae
seed: 5
backend: cpu
model: { preset: tiny, block_out_channels: [4, 8], norm_num_groups: 4, scaling_factor: auto }
data: { source: procedural, procedural: { count: 4, size: 8, seed: 2 }, crop: 4, flip: true, batch_size: 2 }
train: { steps: 5, schedule: { warmup_steps: 1 }, ema: { enabled: true, decay: 0.5 } }
log: { every: 1, sample_every: 100, checkpoint_every: 1, keep_last: 2 }
eval: { count: 1, grid: 1 }
`,
  },
  {
    kind: 'dit',
    recipe: `kind: dit
seed: 5
backend: cpu
data: { source: procedural, procedural: { count: 8, size: 16, seed: 1 }, batch_size: 2 }
model: { patch_size: 4, hidden_size: 16, depth: 1, num_heads: 2 }
text_encoder: { builtin: { dim: 16, layers: 1, heads: 2, context: 12 } }
train: { steps: 5, schedule: { warmup_steps: 1 }, ema: { decay: 0.9 } }
log: { every: 1, sample_every: 100, checkpoint_every: 1, keep_last: 2 }
sample: { prompts: ['a red circle in the top left on a blue background'], steps: 2, fidelity_samples: 1 }
`,
  },
  {
    kind: 'dit-lora',
    setup: tinyBase,
    recipe: `kind: dit-lora
seed: 1
backend: cpu
base: { path: BASE }
lora: { r: 2, alpha: 4 }
data: { source: brand, brand: { count: 8, seed: 2 }, batch_size: 2, caption_dropout: 0.25 }
train: { steps: 5, schedule: { warmup_steps: 1 }, ema: { enabled: true, decay: 0.9 } }
log: { every: 1, sample_every: 100, checkpoint_every: 1, keep_last: 2 }
sample: { steps: 2, strengths: [1], eval_samples: 1, prompts: ['a red circle in the center on a white background'] }
`,
  },
];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sf-soak-test-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('kill -9 and resume', () => {
  for (const t of TRAINERS) {
    it(`${t.kind}: two SIGKILLs, resumed each time, end bit-identical to an uninterrupted run`, async () => {
      const recipe = path.join(tmp, `${t.kind}.yaml`);
      const base = t.setup ? await t.setup(fs.mkdtempSync(path.join(tmp, `${t.kind}-setup-`))) : null;
      fs.writeFileSync(recipe, base ? t.recipe.replace('BASE', JSON.stringify(base)) : t.recipe);
      const lines: string[] = [];
      const r = await soakResume({ recipe, kills: 2, seed: 11, work: path.join(tmp, t.kind), log: (l) => lines.push(l) });
      expect(r.differences, lines.join('\n')).toEqual([]);
      expect(r.identical).toBe(true);
      expect(r.killsLanded).toBe(2);
      expect(r.killsInCheckpointWrite).toBeGreaterThanOrEqual(1);
    }, 600_000);
  }
});
