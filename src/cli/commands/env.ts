import type { CommandModule } from 'yargs';
import { collectEnvironment, formatEnvironment } from '../../backend/environment.js';

interface EnvArgs {
  json: boolean;
}

export const envCommand: CommandModule<object, EnvArgs> = {
  command: 'env',
  describe: 'Show Node/tfjs versions, which tfjs backends can run here (and why not), CPU and memory',
  builder: (y) => y.option('json', { type: 'boolean', default: false, describe: 'Print one JSON object instead of text' }),
  handler: async (args) => {
    const report = await collectEnvironment();
    process.stdout.write(args.json ? `${JSON.stringify(report, null, 2)}\n` : `${formatEnvironment(report)}\n`);
  },
};
