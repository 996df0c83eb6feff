import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadRecipe, parseRecipe, PROJECT_ROOT } from '../src/config/recipe.js';
import { fidelityPrompts } from '../src/jobs/nsp/sampling.js';
import '../src/jobs/index.js';
import { getJob } from '../src/jobs/index.js';
import { buildPipeline } from '../src/jobs/nsp/model.js';
import { nspRecipeSchema } from '../src/jobs/nsp/schema.js';
import { stagePlan } from '../src/jobs/nsp/train.js';
import { vaeConfigFromRecipe } from '../src/jobs/vae/model.js';
import { vaeRecipeSchema } from '../src/jobs/vae/schema.js';
import { AutoencoderKL, vaeConfig } from '../src/models/vae/index.js';
import { buildDitPipeline } from '../src/jobs/dit/model.js';
import { ditRecipeSchema } from '../src/jobs/dit/schema.js';
import { injectAdapters } from '../src/jobs/dit-lora/model.js';
import { ditLoraRecipeSchema } from '../src/jobs/dit-lora/schema.js';
import { Rng } from '../src/util/rng.js';
import '../src/curate/schema.js';
import '../src/jobs/evaluate/index.js';

/** How each trainable kind's model is built from a recipe, as its job does (weights random). */
const builders: Record<string, (loaded: ReturnType<typeof loadRecipe>) => { params: number; dispose(): void }> = {
  'nsp-progressive': (loaded) => {
    const r = parseRecipe(nspRecipeSchema, loaded);
    // Latent recipes generate in the tiny VAE's 4-channel latent space.
    const channels = r.space === 'latent' ? vaeConfig('tiny').latentChannels : 3;
    const { pipeline } = buildPipeline(r, channels, fidelityPrompts(16));
    expect(stagePlan(r, r.data.procedural.count).stages.length).toBeGreaterThan(0);
    return { params: pipeline.numParameters(), dispose: () => pipeline.dispose() };
  },
  dit: (loaded) => {
    const r = parseRecipe(ditRecipeSchema, loaded);
    const latent = r.space === 'latent';
    const size = r.model.input_size ?? (latent ? r.data.procedural.size / 8 : r.data.procedural.size);
    const pipeline = buildDitPipeline(r, size, latent ? vaeConfig('tiny').latentChannels : 3, fidelityPrompts(16));
    return { params: pipeline.numParameters(), dispose: () => pipeline.dispose() };
  },
  // The adapters of a dit-lora recipe on the model its base recipe builds; params = what trains.
  'dit-lora': (loaded) => {
    const r = parseRecipe(ditLoraRecipeSchema, loaded);
    const baseRecipe = parseRecipe(ditRecipeSchema, loadRecipe(r.base.recipe));
    const pipeline = buildDitPipeline(baseRecipe, baseRecipe.model.input_size ?? baseRecipe.data.procedural.size, 3, fidelityPrompts(16));
    pipeline.freeze();
    const lora = injectAdapters(pipeline, r.lora, r.seed);
    const params = [...lora.trainableParameters().values()].reduce((n, v) => n + v.size, 0);
    expect(params).toBe(pipeline.numParameters(true));
    return { params, dispose: () => pipeline.dispose() };
  },
  vae: (loaded) => {
    const model = new AutoencoderKL(vaeConfigFromRecipe(parseRecipe(vaeRecipeSchema, loaded)), { rng: new Rng(0) });
    return { params: model.numParameters(), dispose: () => model.dispose() };
  },
};

describe('shipped recipes', () => {
  const files = fs.readdirSync(path.join(PROJECT_ROOT, 'recipes')).filter((f) => /\.ya?ml$/.test(f));
  it('there are recipes to check', () => expect(files.length).toBeGreaterThanOrEqual(4));
  for (const f of files) {
    it(`${f} loads and, for a trainable kind, builds its model`, () => {
      const loaded = loadRecipe(path.join(PROJECT_ROOT, 'recipes', f));
      const build = builders[loaded.kind];
      if (!build) {
        // Kinds without a trainer here (curation, or a job whose builder is not listed yet) must still validate.
        expect(loaded.config).toBeTypeOf('object');
        return;
      }
      expect(getJob(loaded.kind)).toBeDefined();
      const m = build(loaded);
      expect(m.params).toBeGreaterThan(1000);
      m.dispose();
    });
  }
});
