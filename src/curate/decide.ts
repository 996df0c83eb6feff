import { applyFilters } from './filters.js';
import type { Analysis, Decision, ImageAnalysis } from './manifest.js';
import type { CurateConfig } from './schema.js';
import { findNearDuplicateGroups } from './near_duplicates.js';
import type { CaptionSource } from './captions.js';

/**
 * The decisions of a run, taken over all analysed files at once: decode failures, missing captions and quality
 * filters reject images on their own; duplicates are searched only among the images that passed, so a duplicate
 * group never keeps an image the filters would then throw away.
 *
 * Keep policy inside a duplicate group: the most pixels, then the highest Laplacian variance (sharpest), then the
 * first source id in byte order. The policy is a total order, so the winner of a group is the winner of any of
 * its parts: sharded runs that dedup locally and then globally keep exactly what one run over everything keeps.
 */

export interface DecideInput {
  source: string;
  analysis: Analysis;
  captionSource: CaptionSource;
  captionError?: string | undefined;
}

export interface DuplicateGroup {
  kind: 'exact' | 'near';
  kept: string;
  /** All members, the kept one first, then in keep-policy order. */
  members: string[];
}

export interface Decisions {
  bySource: Map<string, Decision>;
  groups: DuplicateGroup[];
}

/** Negative when `a` is the better image to keep. */
export function keepOrder(a: { source: string; analysis: ImageAnalysis }, b: { source: string; analysis: ImageAnalysis }): number {
  const pa = a.analysis.width * a.analysis.height;
  const pb = b.analysis.width * b.analysis.height;
  if (pa !== pb) return pb - pa;
  const sa = a.analysis.quality.blurVariance;
  const sb = b.analysis.quality.blurVariance;
  if (sa !== sb) return sb - sa;
  return a.source < b.source ? -1 : a.source > b.source ? 1 : 0;
}

export function decide(items: readonly DecideInput[], cfg: CurateConfig): Decisions {
  const bySource = new Map<string, Decision>();
  const groups: DuplicateGroup[] = [];
  const passing: { source: string; analysis: ImageAnalysis }[] = [];
  for (const it of items) {
    const a = it.analysis;
    if (!a.ok) {
      bySource.set(it.source, { status: 'rejected', stage: 'decode', reasons: [a.reason] });
      continue;
    }
    if (it.captionError || (cfg.captions.missing === 'reject' && it.captionSource === 'none')) {
      bySource.set(it.source, { status: 'rejected', stage: 'caption', reasons: [it.captionError ?? 'no caption found'] });
      continue;
    }
    const failed = applyFilters(a.quality, a.width, a.height, cfg.filters);
    if (failed.length > 0) {
      bySource.set(it.source, {
        status: 'rejected',
        stage: 'filter',
        reasons: failed.map((f) => f.reason),
        filters: failed.map((f) => f.filter),
      });
      continue;
    }
    passing.push({ source: it.source, analysis: a });
  }

  const markGroup = (kind: DuplicateGroup['kind'], members: { source: string; analysis: ImageAnalysis }[]) => {
    const sorted = [...members].sort(keepOrder);
    const index = groups.length;
    groups.push({ kind, kept: sorted[0]!.source, members: sorted.map((m) => m.source) });
    for (const m of sorted.slice(1)) {
      bySource.set(m.source, {
        status: 'rejected',
        stage: kind === 'exact' ? 'exact_duplicate' : 'near_duplicate',
        reasons: [kind === 'exact' ? `same pixels as ${sorted[0]!.source}` : `near duplicate of ${sorted[0]!.source}`],
        group: index,
        duplicateOf: sorted[0]!.source,
      });
    }
    return sorted[0]!;
  };

  let survivors = passing;
  if (cfg.dedup.exact) {
    const byPixels = new Map<string, { source: string; analysis: ImageAnalysis }[]>();
    for (const p of passing) {
      const list = byPixels.get(p.analysis.pixelHash);
      if (list) list.push(p);
      else byPixels.set(p.analysis.pixelHash, [p]);
    }
    survivors = [];
    for (const list of byPixels.values()) survivors.push(list.length > 1 ? markGroup('exact', list) : list[0]!);
  }
  if (cfg.dedup.near && survivors.length > 1) {
    const found = findNearDuplicateGroups(
      survivors.map((s) => ({ id: s.source, hash: s.analysis.perceptualHash })),
      cfg.dedup.threshold,
    );
    const byId = new Map(survivors.map((s) => [s.source, s]));
    const losers = new Set<string>();
    for (const ids of found) {
      const kept = markGroup('near', ids.map((id) => byId.get(id)!));
      for (const id of ids) if (id !== kept.source) losers.add(id);
    }
    survivors = survivors.filter((s) => !losers.has(s.source));
  }
  groups.forEach((g, index) => {
    const d = bySource.get(g.kept);
    if (!d) bySource.set(g.kept, { status: 'kept', group: index });
  });
  for (const s of survivors) if (!bySource.has(s.source)) bySource.set(s.source, { status: 'kept' });
  return { bySource, groups };
}
