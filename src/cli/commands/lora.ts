import fs from 'node:fs';
import type { Argv, CommandModule } from 'yargs';
import { formatBytes } from './inspect.js';
import {
  LORA_FORMAT_NAMES,
  assertLoraFits,
  extractLora,
  guessDitBase,
  loadLoraSpecs,
  loraFitProblems,
  loraTargets,
  mergeLorasIntoState,
  readBaseCheckpoint,
  readLoraFile,
  resizeLora,
  summarizeModules,
  writeCheckpoint,
  writeLoraFile,
  type LoraFormatName,
} from '../../lora/index.js';
import { UsageError } from '../../util/errors.js';

const out = (line = '') => process.stdout.write(`${line}\n`);

function moduleNamesOf(state: ReadonlyMap<string, unknown>): Set<string> {
  return new Set([...state.keys()].filter((k) => k.endsWith('.weight')).map((k) => k.slice(0, -'.weight'.length)));
}

function shapesOf(state: ReadonlyMap<string, { shape: number[] }>): Map<string, number[]> {
  return new Map([...state].map(([k, v]) => [k, v.shape]));
}

function refuseOverwrite(outFile: string, inputs: string[]): void {
  if (inputs.some((f) => fs.existsSync(f) && fs.existsSync(outFile) && fs.realpathSync(f) === fs.realpathSync(outFile))) {
    throw new UsageError(`${outFile}: the output would overwrite an input; choose another --out`);
  }
}

interface InspectArgs {
  file: string;
  base?: string;
  json: boolean;
}

const inspect: CommandModule<object, InspectArgs> = {
  command: 'inspect <file>',
  describe: 'Format, base model it fits, rank/alpha per module, targets, metadata and size of a LoRA file',
  builder: (y) =>
    y
      .positional('file', { type: 'string', demandOption: true })
      .option('base', { type: 'string', describe: 'check the LoRA against this base checkpoint (.safetensors)' })
      .option('json', { type: 'boolean', default: false }) as unknown as Argv<InspectArgs>,
  handler: (args) => {
    const base = args.base ? readBaseCheckpoint(args.base) : undefined;
    const { lora, format, fileBytes } = readLoraFile(args.file, { moduleNames: base ? moduleNamesOf(base.state) : undefined });
    const modules = summarizeModules(lora);
    const params = [...lora.modules.values()].reduce((s, m) => s + m.down.data.length + m.up.data.length + (m.magnitude?.data.length ?? 0), 0);
    const fits = base ? loraFitProblems(lora, shapesOf(base.state)) : undefined;
    const report = { file: args.file, format: format.name, fileBytes, fitsGuess: guessDitBase(lora), targets: loraTargets(lora), modules, params, metadata: lora.metadata, baseCheck: fits };
    if (args.json) {
      out(JSON.stringify(report, null, 2));
      return;
    }
    out(`${args.file}: ${format.name} LoRA (${format.description}), ${formatBytes(fileBytes)}, ${modules.length} modules, ${params.toLocaleString('en-US')} parameters`);
    out(`fits: ${report.fitsGuess}`);
    if (base) out(fits!.length ? `against ${args.base}: ${fits!.length} problem(s)\n${fits!.map((p) => `  ${p.module}: ${p.problem}`).join('\n')}` : `against ${args.base}: fits every module`);
    out(`targets: ${report.targets.join(', ')}`);
    const w = Math.max(6, ...modules.map((m) => m.module.length));
    out(`  ${'module'.padEnd(w)}  rank  alpha     scale    down / up`);
    for (const m of modules) {
      out(`  ${m.module.padEnd(w)}  ${String(m.rank).padStart(4)}  ${m.alpha.toPrecision(4).padStart(7)}  ${m.scale.toPrecision(4).padStart(8)}  [${m.down.join(', ')}] / [${m.up.join(', ')}]${m.dora ? '  DoRA' : ''}`);
    }
    const keys = Object.keys(lora.metadata).sort();
    out(keys.length ? 'metadata:' : 'metadata: (none)');
    for (const k of keys) {
      const v = lora.metadata[k]!;
      out(`  ${k}: ${v.length > 160 ? `${v.slice(0, 160).replace(/\n/g, ' ')}… (${v.length} chars)` : v.replace(/\n/g, ' ')}`);
    }
  },
};

interface ConvertArgs {
  in: string;
  out: string;
  to: string;
  dtype: string;
}

const convert: CommandModule<object, ConvertArgs> = {
  command: 'convert <in> <out>',
  describe: 'Rewrite a LoRA in another layout at the same strength (alpha folded into B where the layout has none)',
  builder: (y) =>
    y
      .positional('in', { type: 'string', demandOption: true })
      .positional('out', { type: 'string', demandOption: true })
      .option('to', { type: 'string', choices: [...LORA_FORMAT_NAMES], demandOption: true, describe: 'target layout' })
      .option('dtype', { type: 'string', choices: ['F32', 'F16', 'BF16'], default: 'F32' }) as unknown as Argv<ConvertArgs>,
  handler: async (args) => {
    refuseOverwrite(args.out, [args.in]);
    const { lora, format } = readLoraFile(args.in);
    await writeLoraFile(args.out, lora, args.to as LoraFormatName, { dtype: args.dtype as 'F32' });
    out(`${args.in} (${format.name}) → ${args.out} (${args.to}), ${lora.modules.size} modules`);
  },
};

interface MergeArgs {
  base: string;
  lora: string[];
  out: string;
}

const merge: CommandModule<object, MergeArgs> = {
  command: 'merge',
  describe: 'Fold one or more LoRAs (FILE[:strength]) into a base checkpoint and write the merged checkpoint',
  builder: (y) =>
    y
      .option('base', { type: 'string', demandOption: true, describe: 'base checkpoint (.safetensors, official names)' })
      .option('lora', { type: 'string', array: true, demandOption: true, describe: 'LoRA file, optionally :strength (repeatable)' })
      .option('out', { type: 'string', demandOption: true }) as unknown as Argv<MergeArgs>,
  handler: async (args) => {
    refuseOverwrite(args.out, [args.base]);
    const { state, dtypes } = readBaseCheckpoint(args.base);
    const specs = loadLoraSpecs(args.lora, moduleNamesOf(state));
    for (const s of specs) assertLoraFits(s.lora, shapesOf(state), s.label);
    const merged = mergeLorasIntoState(state, specs);
    await writeCheckpoint(args.out, merged, dtypes, { merged_loras: JSON.stringify(specs.map((s) => ({ file: s.label, strength: s.strength }))) });
    for (const s of specs) out(`merged ${s.label} at strength ${s.strength}: ${s.lora.modules.size} modules`);
    out(`wrote ${args.out}`);
  },
};

interface ResizeArgs {
  in: string;
  out: string;
  rank: number;
  to?: string;
}

const resize: CommandModule<object, ResizeArgs> = {
  command: 'resize <in> <out>',
  describe: 'Lower the rank of every module by SVD, printing the energy (squared Frobenius norm) kept per module',
  builder: (y) =>
    y
      .positional('in', { type: 'string', demandOption: true })
      .positional('out', { type: 'string', demandOption: true })
      .option('rank', { type: 'number', demandOption: true })
      .option('to', { type: 'string', choices: [...LORA_FORMAT_NAMES], describe: 'output layout (default: the input layout)' }) as unknown as Argv<ResizeArgs>,
  handler: async (args) => {
    refuseOverwrite(args.out, [args.in]);
    const { lora, format } = readLoraFile(args.in);
    const { lora: small, report } = resizeLora(lora, args.rank);
    const w = Math.max(6, ...report.map((r) => r.module.length));
    for (const r of report) out(`  ${r.module.padEnd(w)}  rank ${r.fromRank} → ${r.toRank}  energy kept ${(100 * r.energyKept).toFixed(3)}%`);
    const mean = report.reduce((s, r) => s + r.energyKept, 0) / report.length;
    await writeLoraFile(args.out, small, (args.to ?? format.name) as LoraFormatName);
    out(`wrote ${args.out}: ${report.length} modules at rank ≤ ${args.rank}, mean energy kept ${(100 * mean).toFixed(3)}%`);
  },
};

interface ExtractArgs {
  base: string;
  tuned: string;
  rank: number;
  out: string;
  to: string;
  'clamp-quantile': number;
  'min-diff': number;
  targets?: string[];
}

const extract: CommandModule<object, ExtractArgs> = {
  command: 'extract',
  describe: 'Make a LoRA from the difference of two checkpoints (SVD of ΔW per module, as kohya\'s extraction)',
  builder: (y) =>
    y
      .option('base', { type: 'string', demandOption: true })
      .option('tuned', { type: 'string', demandOption: true })
      .option('rank', { type: 'number', demandOption: true })
      .option('out', { type: 'string', demandOption: true })
      .option('to', { type: 'string', choices: [...LORA_FORMAT_NAMES], default: 'kohya' })
      .option('clamp-quantile', { type: 'number', default: 0.99, describe: 'clamp U·S and Vᵀ at this quantile (1 disables)' })
      .option('min-diff', { type: 'number', default: 0, describe: 'skip modules whose largest |ΔW| is at most this' })
      .option('targets', { type: 'string', array: true, describe: 'only modules matching these names (default: all Linear/Conv2d weights)' }) as unknown as Argv<ExtractArgs>,
  handler: async (args) => {
    refuseOverwrite(args.out, [args.base, args.tuned]);
    const base = readBaseCheckpoint(args.base).state;
    const tuned = readBaseCheckpoint(args.tuned).state;
    const { lora, report, unchanged } = extractLora(base, tuned, {
      rank: args.rank,
      clampQuantile: args['clamp-quantile'],
      minDiff: args['min-diff'],
      ...(args.targets ? { targets: args.targets } : {}),
    });
    const w = Math.max(6, ...report.map((r) => r.module.length));
    for (const r of report) out(`  ${r.module.padEnd(w)}  rank ${r.toRank}  energy kept ${(100 * r.energyKept).toFixed(3)}%  max|ΔW| ${r.maxAbsDiff.toPrecision(3)}`);
    if (unchanged.length) out(`unchanged (left out): ${unchanged.join(', ')}`);
    await writeLoraFile(args.out, lora, args.to as LoraFormatName, { trainingComment: `extracted from ${args.base} → ${args.tuned}` });
    out(`wrote ${args.out} (${args.to}): ${lora.modules.size} modules`);
  },
};

export const loraCommand: CommandModule<object, object> = {
  command: 'lora <command>',
  describe: 'LoRA files: inspect, convert between layouts, merge into a base, resize, extract',
  builder: (y) =>
    y
      .command(inspect)
      .command(convert)
      .command(merge)
      .command(resize)
      .command(extract)
      .demandCommand(1, 'Name a lora sub-command: inspect, convert, merge, resize, extract')
      .example('$0 lora inspect brand.safetensors', '')
      .example('$0 lora convert brand.safetensors brand-comfy.safetensors --to comfy', '')
      .example('$0 lora merge --base dit.safetensors --lora brand.safetensors:0.8 --out merged.safetensors', ''),
  handler: () => undefined,
};

/**
 * The `--lora FILE[:strength]` option (repeatable) for a sampling command; pair with
 * `applyLoraFiles(model, args.lora ?? [])` from src/lora once the model is loaded.
 */
export function withLoraOption<T>(y: Argv<T>): Argv<T & { lora: string[] | undefined }> {
  return y.option('lora', { type: 'string', array: true, describe: 'apply a LoRA FILE[:strength] before sampling (repeatable; any layout)' });
}
