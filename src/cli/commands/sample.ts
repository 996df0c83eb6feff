import fs from 'node:fs';
import path from 'node:path';
import type { CommandModule } from 'yargs';
import { initBackend } from '../../backend/select.js';
import { parseProceduralCaption } from '../../data/procedural.js';
import { scoreCaptionFidelity } from '../../data/caption_fidelity.js';
import { savePng, tensorToRgb8 } from '../../io/image.js';
import { loadNspForSampling } from '../../jobs/nsp/load.js';
import { generate } from '../../jobs/nsp/sampling.js';
import { UsageError } from '../../util/errors.js';

interface SampleArgs {
  checkpoint: string;
  prompt: string[];
  seed: number;
  n: number;
  out: string;
  'save-intermediates': boolean;
  ema: boolean;
  backend?: string;
}

function slug(s: string): string {
  return s.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-|-$/g, '').slice(0, 60) || 'prompt';
}

export const sampleCommand: CommandModule<object, SampleArgs> = {
  command: 'sample',
  describe: 'Generate PNGs from a trained NSP run folder or checkpoint',
  builder: (y) =>
    y
      .option('checkpoint', { type: 'string', demandOption: true, describe: 'run folder, model.safetensors, or checkpoints/step-*.safetensors' })
      .option('prompt', { type: 'string', array: true, demandOption: true, describe: 'text prompt (repeatable)' })
      .option('seed', { type: 'number', default: 0, describe: 'sample i of a prompt uses noise seed + i' })
      .option('n', { type: 'number', default: 1, describe: 'samples per prompt' })
      .option('out', { type: 'string', default: 'samples', describe: 'folder for the PNGs' })
      .option('save-intermediates', { type: 'boolean', default: false, describe: 'also write every coarser scale' })
      .option('ema', { type: 'boolean', default: true, describe: 'use EMA weights of a training checkpoint (--no-ema for raw)' })
      .option('backend', { type: 'string', describe: 'tfjs backend (default auto)' })
      .example('$0 sample --checkpoint checkpoints/nsp-progressive-20261124-101500 --prompt "a red circle in the center on a white background" --n 4', ''),
  handler: async (args) => {
    if (!Number.isInteger(args.n) || args.n < 1) throw new UsageError(`--n: expected a positive integer, got ${args.n}`);
    if (!Number.isInteger(args.seed) || args.seed < 0) throw new UsageError(`--seed: expected a non-negative integer, got ${args.seed}`);
    await initBackend(args.backend ?? process.env.SCALEFORGE_BACKEND);
    const loaded = loadNspForSampling(args.checkpoint, { ema: args.ema });
    const { pipeline, lastStage } = loaded;
    const sizes = pipeline.generator.config.sizes;
    fs.mkdirSync(args.out, { recursive: true });
    const prompts = args.prompt.flatMap((p) => Array.from({ length: args.n }, () => p));
    // Sample j of prompt i gets seed + j, independent of the other prompts.
    const written: string[] = [];
    for (let i = 0; i < args.prompt.length; i++) {
      const group = prompts.slice(i * args.n, (i + 1) * args.n);
      const scales = generate(pipeline, group, { seed: args.seed, lastStage });
      for (let k = 0; k < scales.length; k++) {
        if (k < scales.length - 1 && !args['save-intermediates']) continue;
        // Latent runs generate VAE latents: only the decoder turns them into pixels.
        const rgb = loaded.decode ? loaded.decode(scales[k]!) : scales[k]!;
        const images = await tensorToRgb8(rgb, { range: 'signed' });
        if (rgb !== scales[k]) rgb.dispose();
        for (let j = 0; j < images.length; j++) {
          const suffix = k === scales.length - 1 ? '' : `-${images[j]!.width}px`;
          const file = path.join(args.out, `${slug(args.prompt[i]!)}-seed${args.seed + j}${suffix}.png`);
          await savePng(file, images[j]!.rgb, images[j]!.width, images[j]!.height);
          written.push(file);
          if (k === scales.length - 1 && parseProceduralCaption(args.prompt[i]!)) {
            const f = scoreCaptionFidelity(images[j]!, args.prompt[i]!);
            process.stdout.write(`${file}  fidelity ${(f.score * 100).toFixed(0)}% (colour ${f.color ? 'ok' : 'no'}, shape ${f.shape ? 'ok' : 'no'}, position ${f.position ? 'ok' : 'no'}, background ${f.background ? 'ok' : 'no'})\n`);
          } else if (k === scales.length - 1) process.stdout.write(`${file}\n`);
        }
      }
      scales.forEach((s) => s.dispose());
    }
    const side = loaded.vae ? sizes[lastStage]! * 2 ** (loaded.vae.config.blockOutChannels.length - 1) : sizes[lastStage]!;
    process.stdout.write(
      `${written.length} PNG(s) from ${loaded.source}${loaded.usedEma ? ' (EMA weights)' : ''}, ${side}×${side}` +
        `${loaded.vae ? ` (decoded from ${sizes[lastStage]}×${sizes[lastStage]} latents by ${loaded.architecture.vae!.path})` : ''}, in ${args.out}/\n`,
    );
    pipeline.dispose();
    loaded.vae?.dispose();
  },
};
