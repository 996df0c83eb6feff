/**
 * `npm run fuzz [-- --runs N] [--seed S] [--only PREFIX] [--path P] [--timeout MS]`: the fuzz targets of the test
 * suite, run longer. The seed is printed first, so a failing run can be replayed exactly; `--path` (printed with a
 * failure) replays just the shrunk counterexample.
 */
import { parseArgs } from 'node:util';
import fc from 'fast-check';
import { describeFailure, makeContext, propertyOf, type FuzzTarget } from './harness.js';
import { FUZZ_TARGETS } from './targets/index.js';

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: process.env.FUZZ_RUNS ?? '2000' },
    seed: { type: 'string', default: process.env.FUZZ_SEED },
    only: { type: 'string', multiple: true },
    path: { type: 'string' },
    timeout: { type: 'string', default: '20000' },
  },
});
const seed = values.seed !== undefined ? Number(values.seed) : (Date.now() ^ (Math.random() * 2 ** 31)) >>> 0;
const runs = Number(values.runs);
if (!Number.isSafeInteger(seed) || !(runs > 0)) {
  process.stderr.write('usage: npm run fuzz -- [--runs N] [--seed S] [--only PREFIX] [--path P] [--timeout MS]\n');
  process.exit(2);
}
const chosen = FUZZ_TARGETS.filter((t) => !values.only || values.only.some((p) => t.name.startsWith(p)));
if (chosen.length === 0) {
  process.stderr.write(`no fuzz target matches ${values.only?.join(', ')}; targets: ${FUZZ_TARGETS.map((t) => t.name).join(', ')}\n`);
  process.exit(2);
}
process.stdout.write(`fuzz: seed ${seed}, ${runs} runs per target, ${chosen.length} targets\n`);

async function runOne(t: FuzzTarget): Promise<boolean> {
  const ctx = makeContext(t.name);
  const started = performance.now();
  try {
    const details = await fc.check(propertyOf(t, ctx), {
      seed,
      numRuns: Math.max(1, Math.ceil(runs / (t.cost ?? 1))),
      timeout: Number(values.timeout),
      ...(values.path ? { path: values.path } : {}),
    });
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    if (details.failed) {
      process.stdout.write(`FAIL ${t.name} (${secs} s)\n${describeFailure(t, details)}\n`);
      return false;
    }
    process.stdout.write(`ok   ${t.name}: ${details.numRuns} cases, ${secs} s\n`);
    return true;
  } finally {
    ctx.dispose();
  }
}

let failed = 0;
for (const t of chosen) if (!(await runOne(t))) failed++;
process.stdout.write(failed ? `fuzz: ${failed} of ${chosen.length} targets failed (seed ${seed})\n` : `fuzz: all ${chosen.length} targets passed (seed ${seed})\n`);
process.exit(failed ? 1 : 0);
