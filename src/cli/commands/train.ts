import type { CommandModule } from 'yargs';
import { loadRecipe } from '../../config/recipe.js';
import { getJob, listJobs } from '../../jobs/index.js';
import { UsageError } from '../../util/errors.js';

interface TrainArgs {
  recipe: string;
  set?: string[];
  resume?: string | boolean;
  out?: string;
  backend?: string;
}

export const trainCommand: CommandModule<object, TrainArgs> = {
  command: 'train',
  describe: 'Run a training recipe (nsp-progressive, vae, …) into a run folder',
  builder: (y) =>
    y
      .option('recipe', {
        type: 'string',
        demandOption: true,
        describe: 'recipe file, or a name looked up in recipes/ (e.g. nsp-progressive)',
      })
      .option('set', { type: 'string', array: true, describe: 'override a value: --set train.optimizer.lr=1e-3 (repeatable)' })
      .option('resume', {
        describe: 'continue the latest run of this recipe, or the run folder / checkpoint file given',
        coerce: (v: unknown) => (v === '' || v === true || v === 'true' ? true : v === false || v === undefined ? undefined : String(v)),
      })
      .option('out', { type: 'string', describe: 'run folder to create (default checkpoints/<recipe>-<time>/)' })
      .option('backend', { type: 'string', describe: 'tfjs backend: auto, tensorflow, native, wasm, cpu (or SCALEFORGE_BACKEND)' })
      .example('$0 train --recipe nsp-progressive', 'the default NSP job on built-in procedural data')
      .example('$0 train --recipe nsp-progressive --set train.steps_per_scale=[50]', 'a quick smoke run')
      .example('$0 train --recipe nsp-progressive --resume', 'continue the latest nsp-progressive run'),
  handler: async (args) => {
    const loaded = loadRecipe(args.recipe, { sets: args.set ?? [] });
    const job = getJob(loaded.kind);
    if (!job) throw new UsageError(`recipe kind '${loaded.kind}' has no trainer; trainable kinds: ${listJobs().map((j) => j.kind).join(', ')}`);
    if (args.resume && args.out) throw new UsageError('--resume continues an existing run folder; do not combine it with --out');
    const resume = args.resume === true ? true : typeof args.resume === 'string' ? args.resume : undefined;
    process.exitCode = await job.run({
      loaded,
      recipeArg: args.recipe,
      ...(args.out ? { out: args.out } : {}),
      ...(resume !== undefined ? { resume } : {}),
      ...(args.backend ?? process.env.SCALEFORGE_BACKEND ? { backend: args.backend ?? process.env.SCALEFORGE_BACKEND } : {}),
      log: (l) => process.stdout.write(`${l}\n`),
    });
  },
};
