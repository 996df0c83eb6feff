import fs from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';

/**
 * `report.html`: one self-contained page per evaluation. A table per checkpoint, a metric-vs-step
 * chart per metric (uPlot, inlined from node_modules so the page works offline), sample grids with
 * their prompts and per-image scores, and the exact settings. Every string from outside (captions,
 * file names, settings) is HTML-escaped; the chart data travels as JSON inside a script tag with
 * `<` escaped, so a caption can never close the tag.
 */

export interface ReportSample {
  /** Path relative to the report's folder. */
  image: string;
  prompt?: string;
  clipScore?: number;
  fidelity?: number;
}

export interface ReportCheckpoint {
  label: string;
  step?: number;
  metrics: Record<string, number | undefined>;
  samples: ReportSample[];
  skippedImages?: number;
  notes?: string[];
}

export interface ReportData {
  title: string;
  createdAt: string;
  settings: Record<string, string | number | boolean>;
  checkpoints: ReportCheckpoint[];
  skippedMetrics: { metric: string; reason: string }[];
  warnings: string[];
  skippedImages: { file: string; reason: string }[];
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

/** JSON that is safe inside <script>: no `<`, and no U+2028/9 line separators. */
export function scriptJson(v: unknown): string {
  return JSON.stringify(v).replace(/</g, '\\u003c').replace(/\u2028/g, '\\u2028').replace(/\u2029/g, '\\u2029');
}

/** Display names of the metric keys (torch-fidelity's names stay the keys). */
export const METRIC_LABELS: Record<string, string> = {
  frechet_inception_distance: 'FID',
  kernel_inception_distance_mean: 'KID',
  inception_score_mean: 'Inception Score',
  clip_score: 'CLIP-score',
  caption_fidelity: 'Caption fidelity',
};

function uplotAssets(): { js: string; css: string } {
  const require = createRequire(import.meta.url);
  const dir = path.dirname(require.resolve('uplot/package.json'));
  return { js: fs.readFileSync(path.join(dir, 'dist', 'uPlot.iife.min.js'), 'utf8'), css: fs.readFileSync(path.join(dir, 'dist', 'uPlot.min.css'), 'utf8') };
}

const fmt = (v: number | undefined, digits = 4) => (v === undefined || !Number.isFinite(v) ? '—' : Number(v.toPrecision(digits + 2)).toString());

/** Metrics that have a value at two or more checkpoints with a step get a chart. */
export function chartSeries(data: ReportData): { metric: string; label: string; steps: number[]; values: number[] }[] {
  const keys = new Set<string>();
  for (const c of data.checkpoints) for (const [k, v] of Object.entries(c.metrics)) if (v !== undefined && Number.isFinite(v)) keys.add(k);
  const out: { metric: string; label: string; steps: number[]; values: number[] }[] = [];
  for (const metric of keys) {
    if (metric.endsWith('_std') || metric === 'clip_score_hessel') continue;
    const pts = data.checkpoints
      .filter((c) => c.step !== undefined && c.metrics[metric] !== undefined && Number.isFinite(c.metrics[metric]!))
      .map((c) => [c.step!, c.metrics[metric]!] as const)
      .sort((a, b) => a[0] - b[0]);
    if (pts.length >= 2) out.push({ metric, label: METRIC_LABELS[metric] ?? metric, steps: pts.map((p) => p[0]), values: pts.map((p) => p[1]) });
  }
  return out;
}

export function renderReport(data: ReportData): string {
  const { js, css } = uplotAssets();
  const series = chartSeries(data);
  const metricKeys = [...new Set(data.checkpoints.flatMap((c) => Object.keys(c.metrics)))];
  const e = escapeHtml;
  const parts: string[] = [];
  parts.push(`<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${e(data.title)}</title>`);
  parts.push(`<style>${css}
body{font:14px/1.45 system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222;padding:0 16px}
table{border-collapse:collapse;margin:8px 0 20px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:left}
th{background:#f4f4f4}td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:flex;flex-wrap:wrap;gap:10px}.cell{width:150px;font-size:12px}.cell img{width:150px;image-rendering:pixelated;border:1px solid #ddd}
.warn{background:#fff6e0;border-left:4px solid #e0a000;padding:6px 10px;margin:6px 0}.skip{background:#f3f3f3;border-left:4px solid #888;padding:6px 10px;margin:6px 0}
.chart{display:inline-block;margin:0 16px 16px 0}code{background:#f4f4f4;padding:0 3px}</style></head><body>`);
  parts.push(`<h1>${e(data.title)}</h1><p>Created ${e(data.createdAt)}.</p>`);
  for (const w of data.warnings) parts.push(`<div class="warn">${e(w)}</div>`);
  if (data.skippedMetrics.length) {
    parts.push('<h2>Skipped metrics</h2>');
    for (const s of data.skippedMetrics) parts.push(`<div class="skip"><b>${e(s.metric)}</b>: ${e(s.reason)}</div>`);
  }
  parts.push('<h2>Results</h2><table><tr><th>checkpoint</th><th>step</th>');
  for (const k of metricKeys) parts.push(`<th>${e(METRIC_LABELS[k] ?? k)}</th>`);
  parts.push('<th>images skipped</th></tr>');
  for (const c of data.checkpoints) {
    parts.push(`<tr><td>${e(c.label)}</td><td class="num">${c.step ?? '—'}</td>`);
    for (const k of metricKeys) parts.push(`<td class="num">${fmt(c.metrics[k])}</td>`);
    parts.push(`<td class="num">${c.skippedImages ?? 0}</td></tr>`);
  }
  parts.push('</table>');
  if (series.length) {
    parts.push('<h2>Metrics by step</h2><div id="charts"></div>');
  }
  for (const c of data.checkpoints) {
    if (!c.samples.length) continue;
    parts.push(`<h2>Samples: ${e(c.label)}</h2>`);
    for (const n of c.notes ?? []) parts.push(`<p>${e(n)}</p>`);
    parts.push('<div class="grid">');
    for (const s of c.samples) {
      const scores = [s.clipScore !== undefined ? `CLIP ${s.clipScore.toFixed(2)}` : '', s.fidelity !== undefined ? `fidelity ${(s.fidelity * 100).toFixed(0)}%` : ''].filter(Boolean).join(' · ');
      parts.push(`<figure class="cell"><img src="${e(s.image)}" alt="${e(s.prompt ?? s.image)}"><figcaption>${e(s.prompt ?? '')}${scores ? `<br><b>${e(scores)}</b>` : ''}</figcaption></figure>`);
    }
    parts.push('</div>');
  }
  if (data.skippedImages.length) {
    parts.push(`<h2>Images skipped (${data.skippedImages.length})</h2><table><tr><th>file</th><th>reason</th></tr>`);
    for (const s of data.skippedImages.slice(0, 500)) parts.push(`<tr><td>${e(s.file)}</td><td>${e(s.reason)}</td></tr>`);
    parts.push('</table>');
  }
  parts.push('<h2>Settings</h2><table>');
  for (const [k, v] of Object.entries(data.settings)) parts.push(`<tr><th>${e(k)}</th><td><code>${e(String(v))}</code></td></tr>`);
  parts.push('</table>');
  parts.push(`<script id="sf-series" type="application/json">${scriptJson(series)}</script>`);
  parts.push(`<script>${js.replace(/<\/script/gi, '<\\/script')}</script>`);
  parts.push(`<script>
(function(){
  var series = JSON.parse(document.getElementById('sf-series').textContent);
  var host = document.getElementById('charts');
  window.__sfCharts = [];
  series.forEach(function(s){
    var div = document.createElement('div'); div.className = 'chart'; host.appendChild(div);
    var plot = new uPlot({ title: s.label + ' vs step', width: 480, height: 260,
      scales: { x: { time: false } },
      series: [{ label: 'step' }, { label: s.label, stroke: '#1f6feb', width: 2, points: { size: 6 } }] },
      [s.steps, s.values], div);
    window.__sfCharts.push({ metric: s.metric, plot: plot });
  });
})();
</script></body></html>`);
  return parts.join('\n');
}

export async function writeReport(file: string, data: ReportData): Promise<void> {
  fs.mkdirSync(path.dirname(path.resolve(file)), { recursive: true });
  await writeFileAtomic(file, renderReport(data));
}
