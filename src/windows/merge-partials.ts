/**
 * Merging hot shards' partials into a partition's minute: exact sums (the shards of an ad
 * count disjoint event ids, and the partition aggregator holds no count of the ad in the
 * minutes its epoch was routed). Pure.
 */
import type { Dimension } from "../model.js";
import { type AdCount, type AdDimCount, compareIds } from "./minute-state.js";

/** A shard's counts of its ad in one minute. */
export interface PartialCounts {
  eventCount: number;
  /** `[adId, count]` (the shard's one ad; empty when it counted none). */
  ads: AdCount[];
  /** Per configured dimension: `[adId, value, count]`. */
  dims: Partial<Record<Dimension, AdDimCount[]>>;
}

export interface MergedCounts {
  adCounts: AdCount[];
  dimCounts: Partial<Record<Dimension, AdDimCount[]>>;
  /** Events the partials add. */
  events: number;
}

const byAd = (a: AdCount, b: AdCount) => compareIds(a[0], b[0]);
const byAdValue = (a: AdDimCount, b: AdDimCount) =>
  compareIds(a[0], b[0]) || compareIds(a[1], b[1]);

/**
 * `adCounts` / `dimCounts` (sorted: by ad, then value) plus every partial, in the same order
 * and shape. The inputs are not modified.
 */
export function mergePartials(
  adCounts: readonly AdCount[],
  dimCounts: Partial<Record<Dimension, AdDimCount[]>>,
  parts: Iterable<PartialCounts>,
  dimensions: readonly Dimension[],
): MergedCounts {
  const adSums = new Map<string, number>();
  const dimSums = new Map<Dimension, Map<string, AdDimCount>>();
  let events = 0;
  for (const p of parts) {
    events += p.eventCount;
    for (const [ad, n] of p.ads) adSums.set(ad, (adSums.get(ad) ?? 0) + n);
    for (const d of dimensions) {
      let sums = dimSums.get(d);
      if (sums === undefined) {
        sums = new Map();
        dimSums.set(d, sums);
      }
      for (const [ad, value, n] of p.dims[d] ?? []) {
        const key = `${ad}\u0000${value}`;
        const row = sums.get(key);
        if (row) row[2] += n;
        else sums.set(key, [ad, value, n]);
      }
    }
  }
  const ads: AdCount[] = adCounts.map(([ad, n]) => {
    const extra = adSums.get(ad);
    if (extra === undefined) return [ad, n];
    adSums.delete(ad);
    return [ad, n + extra];
  });
  for (const [ad, n] of adSums) ads.push([ad, n]);
  ads.sort(byAd);
  const dims: Partial<Record<Dimension, AdDimCount[]>> = {};
  for (const d of dimensions) {
    const sums = dimSums.get(d) ?? new Map<string, AdDimCount>();
    const rows: AdDimCount[] = (dimCounts[d] ?? []).map(([ad, value, n]) => {
      const key = `${ad}\u0000${value}`;
      const extra = sums.get(key);
      if (extra === undefined) return [ad, value, n];
      sums.delete(key);
      return [ad, value, n + extra[2]];
    });
    for (const row of sums.values()) rows.push([row[0], row[1], row[2]]);
    rows.sort(byAdValue);
    dims[d] = rows;
  }
  return { adCounts: ads, dimCounts: dims, events };
}
