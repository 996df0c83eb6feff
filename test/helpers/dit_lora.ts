import path from 'node:path';
import { tf } from '../../src/backend/tf.js';
import { saveModule } from '../../src/io/safetensors.js';
import { buildDitPipeline, ditModelMetadata } from '../../src/jobs/dit/model.js';
import { ditRecipeSchema } from '../../src/jobs/dit/schema.js';
import { fidelityPrompts } from '../../src/jobs/nsp/sampling.js';

/**
 * A tiny random text-conditioned DiT saved as a dit model file: the base the adapters go on. With
 * `latent`, it generates the latent grid of the VAE saved at `latent.vaeDir` (`latent.size` per side, 4 channels).
 */
export async function tinyBase(dir: string, latent?: { vaeDir: string; size: number }): Promise<string> {
  const r = ditRecipeSchema.parse({
    seed: 3,
    model: { patch_size: 4, hidden_size: 16, depth: 1, num_heads: 2 },
    text_encoder: { builtin: { dim: 16, layers: 1, heads: 2, context: 12 } },
  });
  const pipeline = latent
    ? buildDitPipeline(r, latent.size, 4, fidelityPrompts(64), { vae: { path: latent.vaeDir } })
    : buildDitPipeline(r, 16, 3, fidelityPrompts(64));
  // DiT zero-initialises adaLN gates and the final layer; a trained base has neither, and with them
  // every block (and so every adapter) would have no effect on the output.
  let seed = 1;
  for (const [, v] of pipeline.namedParameters()) if (v.dtype === 'float32') v.assign(tf.randomNormal(v.shape, 0, 0.2, 'float32', seed++));
  const file = path.join(dir, 'model.safetensors');
  await saveModule(file, pipeline, { metadata: ditModelMetadata(pipeline.architecture) });
  pipeline.dispose();
  return file;
}

