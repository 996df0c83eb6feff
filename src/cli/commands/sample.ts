import type { CommandModule } from 'yargs';
import { initBackend } from '../../backend/select.js';
import { jobForModel } from '../../jobs/index.js';
import { UsageError } from '../../util/errors.js';
import { withLoraOption } from './lora.js';

interface SampleArgs {
  checkpoint: string;
  prompt?: string[];
  seed: number;
  n: number;
  out: string;
  'save-intermediates': boolean;
  ema: boolean;
  backend?: string;
  class?: number[];
  sampler?: string;
  steps?: number;
  cfg?: number;
  eta?: number;
  lora: string[] | undefined;
}

export const sampleCommand: CommandModule<object, SampleArgs> = {
  command: 'sample',
  describe: 'Generate PNGs from a trained run folder, final model or checkpoint (any kind: NSP, VAE, …)',
  builder: (y) =>
    withLoraOption(y)
      .option('checkpoint', { type: 'string', demandOption: true, describe: 'run folder, model.safetensors, vae/ folder, or checkpoints/step-*.safetensors' })
      .option('prompt', { type: 'string', array: true, describe: 'text prompt (repeatable; for text-conditioned kinds)' })
      .option('seed', { type: 'number', default: 0, describe: 'sample i of a prompt uses noise seed + i' })
      .option('n', { type: 'number', default: 1, describe: 'samples per prompt (images, for a VAE)' })
      .option('out', { type: 'string', default: 'samples', describe: 'folder for the PNGs' })
      .option('save-intermediates', { type: 'boolean', default: false, describe: 'also write every coarser scale' })
      .option('ema', { type: 'boolean', default: true, describe: 'use EMA weights of a training checkpoint (--no-ema for raw)' })
      .option('backend', { type: 'string', describe: 'tfjs backend (default auto)' })
      .option('class', { type: 'number', array: true, describe: 'class label (repeatable; for class-conditioned kinds such as a DiT)' })
      .option('sampler', { type: 'string', describe: 'diffusion kinds: ddpm, ddim or euler (default: the run\'s)' })
      .option('steps', { type: 'number', describe: 'diffusion kinds: sampling steps (default: the run\'s)' })
      .option('cfg', { type: 'number', describe: 'diffusion kinds: classifier-free guidance scale, 1 = none (default: the run\'s)' })
      .option('eta', { type: 'number', describe: 'DDIM: stochasticity η (0 = deterministic)' })
      .example('$0 sample --checkpoint checkpoints/nsp-progressive-20261124-101500 --prompt "a red circle in the center on a white background" --n 4', '')
      .example('$0 sample --checkpoint checkpoints/vae-tiny-20261124-101500 --n 8', 'reconstructions of 8 held-out images')
      .example('$0 sample --checkpoint checkpoints/dit-pretrain-20261206-031500 --prompt "a blue cross in the top right on a yellow background" --steps 30 --cfg 4', '')
      .example('$0 sample --checkpoint checkpoints/dit-pretrain-20261206-031500 --lora brand.safetensors:0.8 --prompt "sfbrand, a red circle in the center on a white background"', 'with a LoRA at strength 0.8'),
  handler: async (args) => {
    if (!Number.isInteger(args.n) || args.n < 1) throw new UsageError(`--n: expected a positive integer, got ${args.n}`);
    if (!Number.isInteger(args.seed) || args.seed < 0) throw new UsageError(`--seed: expected a non-negative integer, got ${args.seed}`);
    // The kind decides what sampling means; detect it before the backend spins up.
    const job = jobForModel(args.checkpoint);
    // LoRA files hold DiT module names; other kinds would ignore them silently.
    if (args.lora?.length && job.kind !== 'dit' && job.kind !== 'dit-lora') throw new UsageError(`--lora: ${args.checkpoint} is a ${job.kind} model; LoRA files apply to DiT models (kinds dit, dit-lora)`);
    await initBackend(args.backend ?? process.env.SCALEFORGE_BACKEND);
    await job.sample(args.checkpoint, {
      prompts: args.prompt ?? [],
      n: args.n,
      seed: args.seed,
      out: args.out,
      saveIntermediates: args['save-intermediates'],
      ema: args.ema,
      log: (l) => process.stdout.write(`${l}\n`),
      ...(args.class ? { classes: args.class } : {}),
      ...(args.sampler !== undefined ? { sampler: args.sampler } : {}),
      ...(args.steps !== undefined ? { steps: args.steps } : {}),
      ...(args.cfg !== undefined ? { cfg: args.cfg } : {}),
      ...(args.eta !== undefined ? { eta: args.eta } : {}),
      ...(args.lora?.length ? { loras: args.lora } : {}),
    });
  },
};
