/**
 * Do bf16 and fp32 training agree? Trains the default NSP recipe short, in fp32 and in bf16, for a
 * few seeds each (the seed changes initialisation, data order and noise), then writes the loss
 * curves as an HTML page with inline SVG and the numbers as JSON. Run-to-run noise is the spread
 * between fp32 seeds; the bf16 effect is bf16 minus fp32 at the same seed.
 * Run: `npx tsx scripts/bf16_loss_curves.ts [--steps 300,150,50] [--seeds 0,1,2] [--parallel 2]
 *       [--runs-dir /tmp/bf16-curves] [--out docs/bf16] [--plot-only]`.
 * Each training run uses SCALEFORGE_THREADS=1 so --parallel runs share 2 cores evenly; timings are
 * not the point here (bench/steps.ts measures speed).
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

type Precision = 'fp32' | 'bf16';
interface Run {
  precision: Precision;
  seed: number;
  dir: string;
}
interface Curve extends Run {
  steps: number[];
  loss: number[];
  stage: number[];
  fidelity: string | null;
  computeLine: string | null;
}

const args = process.argv.slice(2);
const opt = (flag: string, fallback: string) => {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1]! : fallback;
};
const steps = opt('--steps', '300,150,50');
const seeds = opt('--seeds', '0,1,2').split(',').map(Number);
const parallel = Number(opt('--parallel', '2'));
const runsDir = opt('--runs-dir', '/tmp/bf16-curves');
const outDir = opt('--out', 'docs/bf16');
const root = fileURLToPath(new URL('..', import.meta.url));

const runs: Run[] = seeds.flatMap((seed) => (['fp32', 'bf16'] as const).map((precision) => ({ precision, seed, dir: path.join(runsDir, `${precision}-seed${seed}`) })));

function train(run: Run): Promise<string> {
  const argv = [
    path.join(root, 'bin/train.js'),
    '--recipe',
    'nsp-progressive',
    '--backend',
    'native',
    '--out',
    run.dir,
    '--set',
    `train.steps_per_scale=[${steps}]`,
    '--set',
    `train.precision=${run.precision}`,
    '--set',
    `seed=${run.seed}`,
    '--set',
    'log.every=1',
    '--set',
    'log.sample_every=100000',
    '--set',
    'log.checkpoint_every=100000',
  ];
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, argv, { cwd: root, env: { ...process.env, SCALEFORGE_THREADS: '1' } });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${run.dir}: train exited ${code}\n${out.slice(-2000)}`))));
  });
}

async function trainAll(): Promise<void> {
  const queue = runs.filter((r) => !existsSync(path.join(r.dir, 'model.safetensors')));
  const worker = async () => {
    for (let r = queue.shift(); r; r = queue.shift()) {
      const t0 = Date.now();
      const out = await train(r);
      writeFileSync(path.join(r.dir, 'train.log'), out);
      console.error(`${r.precision} seed ${r.seed}: ${((Date.now() - t0) / 60000).toFixed(1)} min`);
    }
  };
  await Promise.all(Array.from({ length: parallel }, worker));
}

function readCurve(run: Run): Curve {
  const lines = readFileSync(path.join(run.dir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean);
  const recs = lines.map((l) => JSON.parse(l) as { step?: number; loss?: number; stage?: number }).filter((r) => typeof r.loss === 'number' && typeof r.step === 'number');
  const log = existsSync(path.join(run.dir, 'train.log')) ? readFileSync(path.join(run.dir, 'train.log'), 'utf8') : '';
  return {
    ...run,
    steps: recs.map((r) => r.step!),
    loss: recs.map((r) => r.loss!),
    stage: recs.map((r) => r.stage ?? 0),
    fidelity: /caption fidelity: ([\d.]+)%/.exec(log)?.[1] ?? null,
    computeLine: /^precision .*$/m.exec(log)?.[0] ?? null,
  };
}

const mean = (v: number[]) => v.reduce((a, x) => a + x, 0) / v.length;
const sd = (v: number[]) => Math.sqrt(v.reduce((a, x) => a + (x - mean(v)) ** 2, 0) / Math.max(1, v.length - 1));

/** Mean loss of each stage's last `tail` logged steps, with its standard error (step-to-step noise within the run). */
function stageTails(c: Curve, tail: number): { mean: number; se: number }[] {
  const stages = [...new Set(c.stage)];
  return stages.map((s) => {
    const ls = c.loss.filter((_, i) => c.stage[i] === s).slice(-tail);
    return { mean: mean(ls), se: sd(ls) / Math.sqrt(ls.length) };
  });
}

function movingAverage(v: number[], w: number): number[] {
  return v.map((_, i) => {
    const from = Math.max(0, i - w + 1);
    const win = v.slice(from, i + 1);
    return win.reduce((a, b) => a + b, 0) / win.length;
  });
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;');

function svgChart(curves: Curve[], title: string, smooth: number): string {
  const W = 900, H = 420, L = 60, R = 20, T = 30, B = 40;
  const maxStep = Math.max(...curves.flatMap((c) => c.steps));
  const all = curves.flatMap((c) => movingAverage(c.loss, smooth)).filter((x) => x > 0);
  const lo = Math.log10(Math.min(...all)), hi = Math.log10(Math.max(...all));
  const x = (s: number) => L + ((W - L - R) * s) / maxStep;
  const y = (v: number) => T + ((H - T - B) * (hi - Math.log10(v))) / (hi - lo || 1);
  const colors: Record<Precision, string[]> = { fp32: ['#1f4e99', '#3f7fd9', '#8fb8f0'], bf16: ['#b3261e', '#e0663f', '#f2a679'] };
  const lines = curves.map((c) => {
    const ma = movingAverage(c.loss, smooth);
    const pts = c.steps.map((s, i) => `${x(s).toFixed(1)},${y(ma[i]!).toFixed(1)}`).join(' ');
    const color = colors[c.precision][seeds.indexOf(c.seed) % 3]!;
    return `<polyline fill="none" stroke="${color}" stroke-width="1.4" ${c.precision === 'bf16' ? 'stroke-dasharray="5,3"' : ''} points="${pts}"><title>${c.precision} seed ${c.seed}</title></polyline>`;
  });
  const ticks: string[] = [];
  for (let e = Math.floor(lo); e <= Math.ceil(hi); e++) {
    for (const m of [1, 2, 5]) {
      const v = m * 10 ** e;
      if (Math.log10(v) < lo || Math.log10(v) > hi) continue;
      ticks.push(`<line x1="${L}" x2="${W - R}" y1="${y(v)}" y2="${y(v)}" stroke="#ddd"/><text x="${L - 6}" y="${y(v) + 4}" text-anchor="end" font-size="11">${v}</text>`);
    }
  }
  const stepTick = 10 ** Math.floor(Math.log10(maxStep / 2));
  for (let t = 0; t <= maxStep; t += stepTick) {
    ticks.push(`<text x="${x(t)}" y="${H - B + 14}" text-anchor="middle" font-size="11">${t}</text>`);
  }
  // Stage boundaries from the first curve.
  const c0 = curves[0]!;
  const bounds = c0.stage.map((s, i) => (i > 0 && s !== c0.stage[i - 1] ? c0.steps[i]! : null)).filter((s): s is number => s !== null);
  const stageLines = bounds.map((s) => `<line x1="${x(s)}" x2="${x(s)}" y1="${T}" y2="${H - B}" stroke="#999" stroke-dasharray="2,2"/>`);
  const legend = curves.map((c, i) => {
    const color = colors[c.precision][seeds.indexOf(c.seed) % 3]!;
    return `<g transform="translate(${W - R - 150},${T + 10 + i * 16})"><line x1="0" x2="24" y1="0" y2="0" stroke="${color}" stroke-width="2" ${c.precision === 'bf16' ? 'stroke-dasharray="5,3"' : ''}/><text x="30" y="4" font-size="11">${c.precision} seed ${c.seed}</text></g>`;
  });
  return `<figure><svg width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" xmlns="http://www.w3.org/2000/svg" font-family="sans-serif">
<text x="${L}" y="18" font-size="13">${esc(title)}</text>${ticks.join('')}${stageLines.join('')}
<line x1="${L}" x2="${L}" y1="${T}" y2="${H - B}" stroke="#000"/><line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#000"/>
<text x="${(L + W - R) / 2}" y="${H - 8}" text-anchor="middle" font-size="12">step</text>${lines.join('')}${legend.join('')}</svg></figure>`;
}

/** The chart as a PNG beside the page, when Debian's chromium is there (playwright-core drives it). */
async function screenshot(page: string, png: string): Promise<void> {
  if (!existsSync('/usr/bin/chromium')) return;
  const { chromium } = await import('playwright-core');
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'] });
  try {
    const tab = await browser.newPage({ viewport: { width: 960, height: 900 } });
    await tab.goto(`file://${page}`);
    await tab.locator('svg').first().screenshot({ path: png });
  } finally {
    await browser.close();
  }
}

async function main(): Promise<void> {
  if (!args.includes('--plot-only')) await trainAll();
  const curves = runs.map(readCurve);
  const tail = 25;
  const summary = curves.map((c) => ({
    precision: c.precision,
    seed: c.seed,
    compute: c.computeLine,
    stageTails: stageTails(c, tail),
    captionFidelityPercent: c.fidelity === null ? null : Number(c.fidelity),
  }));
  const stagesN = summary[0]!.stageTails.length;
  const bySeed = (p: Precision) => seeds.map((s) => summary.find((r) => r.precision === p && r.seed === s)!);
  const fp32 = bySeed('fp32'), bf16 = bySeed('bf16');
  const comparison = Array.from({ length: stagesN }, (_, k) => {
    const f = fp32.map((r) => r.stageTails[k]!.mean), b = bf16.map((r) => r.stageTails[k]!.mean);
    return {
      stage: k,
      fp32Mean: mean(f),
      fp32SeedSd: sd(f),
      bf16Mean: mean(b),
      bf16SeedSd: sd(b),
      sameSeedRelDiff: f.map((x, i) => (b[i]! - x) / x),
      // bf16 − fp32 at the same seed in units of the two windows' combined standard error.
      sameSeedZ: f.map((x, i) => (b[i]! - x) / Math.hypot(fp32[i]!.stageTails[k]!.se, bf16[i]!.stageTails[k]!.se)),
    };
  });
  mkdirSync(outDir, { recursive: true });
  writeFileSync(path.join(outDir, 'loss-curves.json'), JSON.stringify({ steps_per_scale: steps, seeds, tailSteps: tail, runs: summary, comparison, curves: curves.map((c) => ({ precision: c.precision, seed: c.seed, steps: c.steps, loss: c.loss })) }, null, 1) + '\n');
  const rows = comparison
    .map(
      (c) =>
        `<tr><td>${c.stage}</td><td>${c.fp32Mean.toFixed(4)} ± ${c.fp32SeedSd.toFixed(4)}</td><td>${c.bf16Mean.toFixed(4)} ± ${c.bf16SeedSd.toFixed(4)}</td><td>${c.sameSeedRelDiff.map((d, i) => `${(d * 100).toFixed(1)}% (${c.sameSeedZ[i]!.toFixed(1)}σ)`).join(', ')}</td></tr>`,
    )
    .join('');
  const fid = summary
    .map(
      (r) =>
        `<tr><td>${r.precision}</td><td>${r.seed}</td><td>${r.stageTails.map((t) => `${t.mean.toFixed(4)} ± ${t.se.toFixed(4)}`).join('<br>')}</td><td>${r.captionFidelityPercent ?? '—'}</td><td>${esc(r.compute ?? 'precision fp32')}</td></tr>`,
    )
    .join('');
  const html = `<!doctype html><meta charset="utf-8"><title>bf16 vs fp32 loss curves (NSP)</title>
<body style="font-family:sans-serif;max-width:960px;margin:2em auto">
<h1>bf16 vs fp32: NSP default recipe, short</h1>
<p>recipes/nsp-progressive.yaml with steps_per_scale [${steps}], seeds ${seeds.join(', ')}; native backend. fp32 solid, bf16 dashed;
loss per step smoothed over ${10} steps, log scale; dotted verticals are stage changes. Generated by scripts/bf16_loss_curves.ts.</p>
${svgChart(curves, `training loss (moving average of 10 steps)`, 10)}
<h2>Mean loss over each stage's last ${tail} steps</h2>
<table border="1" cellpadding="4" style="border-collapse:collapse"><tr><th>stage</th><th>fp32 (mean ± sd over seeds)</th><th>bf16 (mean ± sd over seeds)</th><th>bf16 − fp32, same seed (relative; in σ of the windows' step-to-step noise)</th></tr>${rows}</table>
<h2>Runs</h2><table border="1" cellpadding="4" style="border-collapse:collapse"><tr><th>precision</th><th>seed</th><th>last-${tail}-step mean loss per stage ± s.e.</th><th>caption fidelity %</th><th>compute</th></tr>${fid}</table>
</body>`;
  writeFileSync(path.join(outDir, 'loss-curves.html'), html);
  await screenshot(path.resolve(outDir, 'loss-curves.html'), path.resolve(outDir, 'loss-curves.png'));
  console.log(JSON.stringify({ comparison, runs: summary }, null, 1));
}

await main();
