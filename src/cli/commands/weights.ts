import type { Argv, CommandModule } from 'yargs';
import { WEIGHT_SETS, fetchWeights, listWeights, weightsCacheDir } from '../../eval/weights.js';
import { formatBytes } from './inspect.js';

interface FetchArgs {
  id: string;
  from?: string;
  mirror?: string;
  'cache-dir'?: string;
}

interface ListArgs {
  json: boolean;
  'cache-dir'?: string;
}

/** `--mirror http://host/prefix` puts that origin in place of the official one (same paths). */
export function mirrorUrl(mirror: string | undefined): ((url: string) => string) | undefined {
  if (!mirror) return undefined;
  return (url) => `${mirror.replace(/\/+$/, '')}${new URL(url).pathname}`;
}

const fetchCommand: CommandModule<object, FetchArgs> = {
  command: 'fetch <id>',
  describe: 'Download evaluation weights from their official location, verify sha256, convert to safetensors',
  builder: (y) =>
    y
      .positional('id', { type: 'string', demandOption: true, choices: [...WEIGHT_SETS.keys()] })
      .option('from', { type: 'string', describe: 'use a file (or folder of files) downloaded by hand instead of the network' })
      .option('mirror', { type: 'string', describe: 'download from this origin instead (same paths), e.g. an internal mirror' })
      .option('cache-dir', { type: 'string', describe: `weights folder (default ${weightsCacheDir()}; SCALEFORGE_CACHE moves it)` }) as Argv<FetchArgs>,
  handler: async (args) => {
    const p = await fetchWeights(args.id, {
      from: args.from,
      cacheDir: args['cache-dir'],
      urlOverride: mirrorUrl(args.mirror ?? process.env.SCALEFORGE_WEIGHTS_MIRROR),
      log: (l) => process.stderr.write(`${l}\n`),
    });
    process.stdout.write(`${args.id}: ready at ${p}\n`);
  },
};

const listCommand: CommandModule<object, ListArgs> = {
  command: 'list',
  describe: 'Show which evaluation weights are in the cache',
  builder: (y) =>
    y
      .option('json', { type: 'boolean', default: false })
      .option('cache-dir', { type: 'string', describe: 'weights folder' }) as Argv<ListArgs>,
  handler: (args) => {
    const all = listWeights(args['cache-dir']);
    if (args.json) {
      process.stdout.write(`${JSON.stringify(all, null, 2)}\n`);
      return;
    }
    const lines = [`weights cache: ${args['cache-dir'] ?? weightsCacheDir()}`];
    for (const w of all) {
      lines.push(`${w.present ? '✓' : '✗'} ${w.id.padEnd(14)} ${w.describe}${w.present ? '' : '  (scaleforge weights fetch ' + w.id + ')'}`);
      for (const f of w.files) lines.push(`    ${f.present ? 'present' : 'missing'}  ${f.name}${f.bytes !== undefined ? `  ${formatBytes(f.bytes)}` : ''}${f.sha256 ? `  sha256 ${f.sha256.slice(0, 16)}…` : ''}`);
    }
    process.stdout.write(`${lines.join('\n')}\n`);
  },
};

export const weightsCommand: CommandModule = {
  command: 'weights <command>',
  describe: 'Fetch and list the pretrained networks evaluation uses (FID Inception, CLIP)',
  builder: (y) => y.command(fetchCommand).command(listCommand).demandCommand(1),
  handler: () => undefined,
};
