import { Gauge } from "prom-client";
import { registry } from "../metrics/registry.js";
import type { SourceView } from "../windows/partition-aggregator.js";
import type { SourceStanding } from "../windows/watermark.js";

/**
 * The sources as a whole process sees them, over the partitions it aggregates, and their
 * metrics. Source names are unbounded (one per shipped file), so the per-source lag gauge
 * carries at most {@link MAX_SOURCE_SERIES} series — the sources furthest behind — and every
 * source is counted, by standing, in `adclick_sources`.
 */
export const MAX_SOURCE_SERIES = 20;

const sourceLag = new Gauge({
  name: "adclick_source_lag_seconds",
  help: `Event time a source is behind the most advanced source of a partition (its worst partition here); only the ${MAX_SOURCE_SERIES} sources furthest behind have a series`,
  labelNames: ["source"] as const,
  registers: [registry],
});
const sourcesByStanding = new Gauge({
  name: "adclick_sources",
  help: "Sources known to this process's aggregators, by standing (active, lagging, caught-up, idle, ended)",
  labelNames: ["standing"] as const,
  registers: [registry],
});

/** One source over several partitions. */
export interface SourceSummary {
  source: string;
  /** Its slowest progress over the partitions (null: none yet in some partition). */
  progressMs: number | null;
  /** Its worst standing: lagging, then active, caught-up, idle, ended. */
  standing: SourceStanding;
  /** How far its slowest progress is behind the most advanced source of that partition. */
  lagMs: number;
  /** Newest stream time it was heard from. */
  lastSeenMs: number;
}

const RANK: Record<SourceStanding, number> = {
  lagging: 0,
  active: 1,
  "caught-up": 2,
  idle: 3,
  ended: 4,
};

/** Merges the partitions' views of their sources (pure), slowest first. */
export function summarizeSources(
  partitions: readonly { sources: readonly SourceView[]; maxProgressMs: number }[],
): SourceSummary[] {
  const out = new Map<string, SourceSummary>();
  for (const p of partitions) {
    for (const s of p.sources) {
      const progress = s.progressMs ?? Number.NEGATIVE_INFINITY;
      const lag =
        Number.isFinite(p.maxProgressMs) && Number.isFinite(progress)
          ? Math.max(0, p.maxProgressMs - progress)
          : 0;
      const have = out.get(s.source);
      if (!have) {
        out.set(s.source, {
          source: s.source,
          progressMs: s.progressMs,
          standing: s.standing,
          lagMs: lag,
          lastSeenMs: s.lastSeenMs,
        });
        continue;
      }
      if (have.progressMs !== null && (s.progressMs === null || s.progressMs < have.progressMs))
        have.progressMs = s.progressMs;
      if (RANK[s.standing] < RANK[have.standing]) have.standing = s.standing;
      if (lag > have.lagMs) have.lagMs = lag;
      if (s.lastSeenMs > have.lastSeenMs) have.lastSeenMs = s.lastSeenMs;
    }
  }
  return [...out.values()].sort(
    (a, b) =>
      (a.progressMs ?? Number.NEGATIVE_INFINITY) - (b.progressMs ?? Number.NEGATIVE_INFINITY) ||
      (a.source < b.source ? -1 : 1),
  );
}

/** Merges several processes' summaries of their sources (pure), slowest first. */
export function mergeSourceSummaries(
  lists: readonly (readonly SourceSummary[])[],
): SourceSummary[] {
  return summarizeSources(
    lists.map((list) => ({
      // Each summary as one partition whose most advanced source is `lag` ahead of it.
      sources: list.map((s) => ({
        source: s.source,
        progressMs: s.progressMs,
        standing: s.standing,
        lastSeenMs: s.lastSeenMs,
      })),
      maxProgressMs: Number.NaN,
    })),
  ).map((merged) => {
    let lag = 0;
    for (const list of lists)
      for (const s of list) if (s.source === merged.source && s.lagMs > lag) lag = s.lagMs;
    return { ...merged, lagMs: lag };
  });
}

const board = new Map<number, { sources: readonly SourceView[]; maxProgressMs: number }>();
let timer: NodeJS.Timeout | undefined;

/** Sets the gauges from the board: the most lagging sources, and counts by standing. */
function publish(): void {
  const all = summarizeSources([...board.values()]);
  sourceLag.reset();
  for (const s of [...all].sort((a, b) => b.lagMs - a.lagMs).slice(0, MAX_SOURCE_SERIES)) {
    if (s.lagMs > 0) sourceLag.set({ source: s.source }, s.lagMs / 1000);
  }
  sourcesByStanding.reset();
  for (const standing of Object.keys(RANK) as SourceStanding[]) {
    sourcesByStanding.set({ standing }, all.filter((s) => s.standing === standing).length);
  }
}

/**
 * A partition's aggregator reports its sources (undefined: it stopped here). The gauges are
 * refreshed every few seconds, not per message.
 */
export function reportSources(
  partition: number,
  view: { sources: readonly SourceView[]; maxProgressMs: number } | undefined,
): void {
  if (view) board.set(partition, view);
  else board.delete(partition);
  if (!timer) {
    timer = setInterval(publish, 5000);
    timer.unref();
  }
}
