import path from 'node:path';
import { pathToFileURL } from 'node:url';
import yargs from 'yargs';
import { commands } from './commands/index.js';
import { Interrupted, UsageError } from '../util/errors.js';

/** Parses argv, runs one command, and maps failures to exit codes: 0 ok, 1 failure, 2 usage/config. */
export async function main(argv: string[]): Promise<number> {
  let usageFailure: string | undefined;
  const parser = yargs(argv)
    .scriptName('scaleforge')
    .usage('$0 <command> [options]\n\nTrain and fine-tune image generators on TensorFlow.js.')
    .strictCommands()
    .strictOptions()
    .demandCommand(1, 'Name a command; see the list above.')
    .recommendCommands()
    .help()
    .alias('h', 'help')
    .version()
    .wrap(Math.min(110, process.stdout.columns || 100))
    .fail((msg, err) => {
      if (err) throw err;
      usageFailure = msg;
    });
  for (const c of commands) parser.command(c);
  try {
    await parser.parseAsync();
  } catch (e) {
    return reportError(e);
  }
  if (usageFailure !== undefined) {
    parser.showHelp('error');
    process.stderr.write(`\nerror: ${usageFailure}\n`);
    return 2;
  }
  return typeof process.exitCode === 'number' ? process.exitCode : 0;
}

function reportError(e: unknown): number {
  if (e instanceof UsageError) {
    process.stderr.write(`error: ${e.message}\n`);
    return 2;
  }
  if (e instanceof Interrupted) {
    process.stderr.write(`${e.message}\n`);
    return e.exitCode;
  }
  const err = e instanceof Error ? e : new Error(String(e));
  process.stderr.write(`error: ${err.message}\n`);
  if (process.env.SCALEFORGE_DEBUG) process.stderr.write(`${err.stack}\n`);
  else process.stderr.write('(set SCALEFORGE_DEBUG=1 for the stack trace)\n');
  return 1;
}

// `npx tsx src/cli/main.ts …` runs the CLI directly (bin/scaleforge.js imports main() instead).
if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  process.exitCode = await main(process.argv.slice(2));
}
