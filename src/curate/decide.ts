import { applyFilters, type FilterRejection } from './filters.js';
import type { Analysis, Decision, ImageAnalysis } from './manifest.js';
import type { CurateConfig } from './schema.js';
import { findDuplicates } from './duplicates.js';
import type { CaptionSource } from './captions.js';

/**
 * The decisions of a run, taken over all analysed files at once: decode failures, missing captions and quality
 * filters reject images on their own; duplicates are searched only among the images that passed, so a duplicate
 * group never keeps an image the filters would then throw away.
 *
 * Groups and the keep policy come from findDuplicates (duplicates.ts): transitive groups over exact pixel matches
 * and perceptual-hash neighbours; keep the most pixels, then the highest Laplacian variance (sharpest), then the
 * first source id in byte order. That policy is a total order and groups are connected components, so the
 * winner of a group is the winner of its parts: sharded runs that dedup locally and are merged keep exactly what
 * one run over everything keeps.
 */

export interface DecideInput {
  source: string;
  analysis: Analysis;
  captionSource: CaptionSource;
  captionError?: string | undefined;
}

export interface DuplicateGroup {
  /** 'exact' when every removed member has the kept one's pixels, else 'near' (a group can mix both). */
  kind: 'exact' | 'near';
  kept: string;
  /** All members, the kept one first, then in source order. */
  members: string[];
}

export interface Decisions {
  bySource: Map<string, Decision>;
  groups: DuplicateGroup[];
}

/** `extraRejections`: filter failures measured over the whole run (the CLIP filter), by source id. */
export function decide(items: readonly DecideInput[], cfg: CurateConfig, extraRejections?: ReadonlyMap<string, FilterRejection[]>): Decisions {
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
    const failed = [...applyFilters(a.quality, a.width, a.height, cfg.filters), ...(extraRejections?.get(it.source) ?? [])];
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

  const found = findDuplicates(
    passing.map((p) => ({
      id: p.source,
      path: p.source,
      width: p.analysis.width,
      height: p.analysis.height,
      sharpness: p.analysis.quality.blurVariance,
      hash: p.analysis.perceptualHash,
      exact: p.analysis.pixelHash,
    })),
    { exact: cfg.dedup.exact, near: cfg.dedup.near, threshold: cfg.dedup.threshold, keep: ['resolution', 'sharpness', 'path'] },
  );
  for (const g of found.groups) {
    const index = groups.length;
    const allExact = g.removed.every((r) => r.reason === 'exact');
    groups.push({ kind: allExact ? 'exact' : 'near', kept: g.keptId, members: [g.keptId, ...g.memberIds.filter((m) => m !== g.keptId)] });
    for (const r of g.removed) {
      const exact = r.reason === 'exact';
      bySource.set(r.id, {
        status: 'rejected',
        stage: exact ? 'exact_duplicate' : 'near_duplicate',
        reasons: [exact ? `same pixels as ${g.keptId}` : `near duplicate of ${g.keptId} (Hamming distance ${r.distance ?? '?'})`],
        group: index,
        duplicateOf: g.keptId,
      });
    }
  }
  groups.forEach((g, index) => {
    const d = bySource.get(g.kept);
    if (!d) bySource.set(g.kept, { status: 'kept', group: index });
  });
  for (const p of passing) if (!bySource.has(p.source)) bySource.set(p.source, { status: 'kept' });
  return { bySource, groups };
}
