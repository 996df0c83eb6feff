import { join } from 'node:path';
import sharp from 'sharp';
import { writeFileAtomic } from '../io/atomic.js';
import { captionStats, type CaptionStats } from './captions.js';
import type { DuplicateGroup } from './decide.js';
import type { ManifestRow } from './manifest.js';
import type { RunCounts } from './pipeline.js';

/**
 * report.json (numbers for scripts) and report.html (one self-contained page for a person: counts per stage,
 * reasons, duplicate groups and rejections with embedded thumbnails, size and aspect histograms as inline SVG).
 */

export interface Histogram {
  label: string;
  /** Bin edges: bin i holds values in [edges[i], edges[i+1]), the last bin is closed. */
  edges: number[];
  counts: number[];
}

export interface CurateReport {
  counts: RunCounts;
  /** stage → reason class → count (decode: error code; filter: filter name; others: the stage). */
  reasons: Record<string, Record<string, number>>;
  duplicateGroups: DuplicateGroup[];
  rejected: { source: string; stage: string; reasons: string[] }[];
  captions: CaptionStats;
  histograms: Histogram[];
}

export function histogram(label: string, values: readonly number[], edges: readonly number[]): Histogram {
  const counts = new Array<number>(edges.length - 1).fill(0);
  for (const v of values) {
    if (v < edges[0]! || v > edges[edges.length - 1]!) continue;
    let i = edges.findIndex((e, k) => k > 0 && v < e) - 1;
    if (i < 0) i = counts.length - 1;
    counts[i]!++;
  }
  return { label, edges: [...edges], counts };
}

/** Edges that cover every value: fixed steps from 0 to past the maximum. */
function sizeEdges(values: readonly number[]): number[] {
  const max = Math.max(1, ...values);
  const steps = [16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192];
  const step = steps.find((s) => max / s <= 12) ?? Math.ceil(max / 12);
  const edges: number[] = [];
  for (let e = 0; e <= max; e += step) edges.push(e);
  edges.push(edges[edges.length - 1]! + step);
  return edges;
}

export function buildReport(input: { rows: readonly ManifestRow[]; groups: readonly DuplicateGroup[]; counts: RunCounts }): CurateReport {
  const reasons: Record<string, Record<string, number>> = {};
  const rejected: CurateReport['rejected'] = [];
  const bump = (stage: string, cls: string) => {
    reasons[stage] ??= {};
    reasons[stage][cls] = (reasons[stage][cls] ?? 0) + 1;
  };
  const widths: number[] = [];
  const heights: number[] = [];
  const aspects: number[] = [];
  for (const r of input.rows) {
    if (r.analysis.ok) {
      widths.push(r.analysis.width);
      heights.push(r.analysis.height);
      aspects.push(r.analysis.width / r.analysis.height);
    }
    const d = r.decision;
    if (d.status !== 'rejected' || !d.stage) continue;
    if (d.stage === 'decode' && !r.analysis.ok) bump('decode', r.analysis.code);
    else if (d.stage === 'filter') for (const f of d.filters ?? []) bump('filter', f);
    else bump(d.stage, d.stage);
    if (d.stage !== 'exact_duplicate' && d.stage !== 'near_duplicate') rejected.push({ source: r.source, stage: d.stage, reasons: d.reasons ?? [] });
  }
  const kept = input.rows.filter((r) => r.decision.status === 'kept');
  return {
    counts: input.counts,
    reasons,
    duplicateGroups: [...input.groups],
    rejected,
    captions: captionStats(kept.map((r) => ({ text: r.caption, source: r.captionSource }))),
    histograms: [
      histogram('source width (px)', widths, sizeEdges(widths)),
      histogram('source height (px)', heights, sizeEdges(heights)),
      histogram('aspect ratio (width / height)', aspects, [0, 0.25, 0.5, 0.67, 0.8, 0.95, 1.05, 1.25, 1.5, 2, 4, Infinity]),
    ],
  };
}

const escapeHtml = (s: string) => s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

function svgHistogram(h: Histogram): string {
  const w = 360;
  const hgt = 140;
  const max = Math.max(1, ...h.counts);
  const bw = w / h.counts.length;
  const bars = h.counts
    .map((c, i) => {
      const bh = (c / max) * (hgt - 30);
      const hi = h.edges[i + 1]!;
      const title = `${h.edges[i]}–${Number.isFinite(hi) ? hi : '∞'}: ${c}`;
      return `<rect x="${(i * bw + 1).toFixed(1)}" y="${(hgt - 18 - bh).toFixed(1)}" width="${(bw - 2).toFixed(1)}" height="${bh.toFixed(1)}" fill="#4a7bd0"><title>${escapeHtml(title)}</title></rect>` +
        (c > 0 ? `<text x="${(i * bw + bw / 2).toFixed(1)}" y="${(hgt - 21 - bh).toFixed(1)}" font-size="9" text-anchor="middle">${c}</text>` : '');
    })
    .join('');
  const labels = h.edges
    .filter((_, i) => i % 2 === 0)
    .map((e, k) => `<text x="${(2 * k * bw).toFixed(1)}" y="${hgt - 4}" font-size="9">${Number.isFinite(e) ? +e.toFixed(2) : '∞'}</text>`)
    .join('');
  return `<figure><svg width="${w}" height="${hgt}" viewBox="0 0 ${w} ${hgt}" xmlns="http://www.w3.org/2000/svg">${bars}${labels}</svg><figcaption>${escapeHtml(h.label)}</figcaption></figure>`;
}

async function thumbnail(path: string): Promise<string | undefined> {
  try {
    const buf = await sharp(path).resize(96, 96, { fit: 'inside' }).jpeg({ quality: 70 }).toBuffer();
    return `data:image/jpeg;base64,${buf.toString('base64')}`;
  } catch {
    return undefined;
  }
}

export async function renderReportHtml(
  report: CurateReport,
  rows: readonly ManifestRow[],
  maxThumbs: number,
  cachedPath: (row: ManifestRow) => string,
): Promise<string> {
  const bySource = new Map(rows.map((r) => [r.source, r]));
  const thumbOf = async (source: string) => {
    const r = bySource.get(source);
    const src = r?.analysis.ok ? await thumbnail(cachedPath(r)) : undefined;
    return src ? `<img src="${src}" alt="">` : '<div class="nothumb">no image</div>';
  };
  const c = report.counts;
  const countRows = [
    ['files found', c.scanned],
    ['in this shard', c.inShard],
    ['analysed now', c.analysed],
    ['reused from earlier runs', c.reused],
    ...Object.entries(c.rejected).map(([k, v]) => [`rejected: ${k}`, v] as const),
    ['kept', c.kept],
  ]
    .map(([k, v]) => `<tr><td>${escapeHtml(String(k))}</td><td>${v}</td></tr>`)
    .join('');
  const reasonRows = Object.entries(report.reasons)
    .flatMap(([stage, m]) => Object.entries(m).map(([cls, n]) => `<tr><td>${escapeHtml(stage)}</td><td>${escapeHtml(cls)}</td><td>${n}</td></tr>`))
    .join('');
  const groups: string[] = [];
  for (const g of report.duplicateGroups.slice(0, maxThumbs)) {
    const cells = await Promise.all(
      g.members.map(async (m) => `<div class="cell${m === g.kept ? ' kept' : ''}">${await thumbOf(m)}<div>${escapeHtml(m)}${m === g.kept ? ' (kept)' : ''}</div></div>`),
    );
    groups.push(`<div class="group"><div class="kind">${g.kind}</div>${cells.join('')}</div>`);
  }
  const rejected: string[] = [];
  for (const r of report.rejected.slice(0, maxThumbs)) {
    rejected.push(`<tr><td>${await thumbOf(r.source)}</td><td>${escapeHtml(r.source)}</td><td>${escapeHtml(r.stage)}</td><td>${r.reasons.map(escapeHtml).join('<br>')}</td></tr>`);
  }
  const cap = report.captions;
  const more = (n: number) => (n > maxThumbs ? `<p>… and ${n - maxThumbs} more (see report.json)</p>` : '');
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>scaleforge curate report</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}
.group{display:flex;gap:8px;align-items:flex-start;margin:8px 0;padding:6px;border:1px solid #ddd}.cell{font-size:11px;max-width:110px;word-break:break-all}
.kept img{outline:3px solid #2a2}.kind{font-weight:bold;width:40px}.nothumb{width:96px;height:40px;background:#eee;font-size:10px}figure{display:inline-block;margin:0 1em 1em 0}
</style></head><body>
<h1>Curation report</h1>
<h2>Counts</h2><table>${countRows}</table>
<h2>Reasons</h2><table><tr><th>stage</th><th>reason</th><th>count</th></tr>${reasonRows}</table>
<h2>Sizes</h2>${report.histograms.map(svgHistogram).join('')}
<h2>Captions (kept images)</h2><p>${cap.count} captions, ${cap.empty} empty; words per caption: mean ${cap.words.mean.toFixed(1)}, min ${cap.words.min}, max ${cap.words.max};
from sidecars ${cap.bySource.sidecar}, from the manifest ${cap.bySource.manifest}, none ${cap.bySource.none}.</p>
<p>Most frequent: ${cap.topTokens.map((t) => `${escapeHtml(t.token)} (${t.count})`).join(', ')}</p>
<h2>Duplicate groups (${report.duplicateGroups.length})</h2>${groups.join('')}${more(report.duplicateGroups.length)}
<h2>Rejected images (${report.rejected.length}, duplicates excluded)</h2><table><tr><th></th><th>source</th><th>stage</th><th>reasons</th></tr>${rejected.join('')}</table>${more(report.rejected.length)}
</body></html>
`;
}

export async function writeReport(
  outDir: string,
  report: CurateReport,
  rows: readonly ManifestRow[],
  maxThumbs: number,
  cachedPath: (row: ManifestRow) => string,
): Promise<void> {
  await writeFileAtomic(join(outDir, 'report.json'), JSON.stringify(report, (_k, v) => (v === Infinity ? 'Infinity' : v), 1));
  await writeFileAtomic(join(outDir, 'report.html'), await renderReportHtml(report, rows, maxThumbs, cachedPath));
}
