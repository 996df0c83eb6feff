import type { CommandModule } from 'yargs';
import { envCommand } from './env.js';
import { trainCommand } from './train.js';
import { sampleCommand } from './sample.js';
import { inspectCommand } from './inspect.js';
import { curateCommand } from './curate.js';
import { loraCommand } from './lora.js';
import { weightsCommand } from './weights.js';
import { evaluateCommand } from './evaluate.js';

/**
 * Every `scaleforge` sub-command, one module each. A new command is one file plus one line here.
 * Handlers set `process.exitCode` (or throw: UsageError → 2, anything else → 1).
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export const commands: CommandModule<any, any>[] = [trainCommand, sampleCommand, envCommand, inspectCommand, curateCommand, loraCommand, weightsCommand, evaluateCommand];
