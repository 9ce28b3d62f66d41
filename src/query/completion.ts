/**
 * How complete an answer is: the minute lifecycle and a reply's completion, from what the
 * store says of each partition (pure).
 *
 * A minute of a partition is
 *  - **open** until the partition's watermark passes its end;
 *  - **closed** once it has (its counts no longer grow on time; a late click amends it);
 *  - **final** once it is closed and stored, and every active source of the partition has
 *    passed it (no lagging source is behind it);
 *  - **amended** when it is final and its stored revision is above 1 (late clicks, or a
 *    repair from the raw store, changed it after its first emission).
 */
import { ONE_MINUTE_MS } from "../model.js";
import type { StoredCompleteness } from "../storage/aggregate-store.js";
import { isoMinute } from "./request.js";

export type MinuteLifecycle = "open" | "closed" | "final" | "amended";

/** What the store says of one partition. */
export interface PartitionProgress {
  /** Every minute ending at or before this is closed and stored (-Infinity: none). */
  storedThroughMs: number;
  /** ... and has every active source past it (≤ storedThroughMs; -Infinity: none). */
  completeThroughMs: number;
  /** The lagging sources (progress to the minute; null: none yet). */
  behind: { source: string; progressMs: number | null }[];
}

/**
 * A partition's progress from its stored closed_through and completeness. A partition with
 * no completeness row (written by an older build) counts as complete as far as it is closed.
 */
export function partitionProgressOf(
  closedThroughMs: number | undefined,
  completeness: StoredCompleteness | undefined,
): PartitionProgress {
  const stored = closedThroughMs ?? Number.NEGATIVE_INFINITY;
  if (completeness === undefined)
    return { storedThroughMs: stored, completeThroughMs: stored, behind: [] };
  const complete =
    completeness.completeThroughMs === null
      ? Number.NEGATIVE_INFINITY
      : Math.min(completeness.completeThroughMs, stored);
  return { storedThroughMs: stored, completeThroughMs: complete, behind: completeness.behind };
}

/**
 * The lifecycle of a minute of partition `p`: from the store when it is stored, else from the
 * live aggregator (`liveClosed`: its watermark has passed the minute).
 */
export function minuteLifecycle(
  minuteMs: number,
  p: PartitionProgress,
  revision: number | null,
  liveClosed: boolean,
): MinuteLifecycle {
  const end = minuteMs + ONE_MINUTE_MS;
  if (end <= p.storedThroughMs) {
    if (end > p.completeThroughMs) return "closed";
    return revision !== null && revision > 1 ? "amended" : "final";
  }
  return liveClosed ? "closed" : "open";
}

/** A source still behind, as a reply shows it. */
export interface SourceBehindReply {
  source: string;
  /** How far its clicks have reached (ISO minute), null when nothing yet. */
  progress: string | null;
}

/** What every reply says of how complete it is. */
export interface Completion {
  /** Every minute of the range is final: closed, stored, and no active source is behind it. */
  final: boolean;
  /** The newest revision among the range's stored minutes (null: none stored). */
  revision: number | null;
  /** Every minute ending at or before this instant is final, for the partitions asked. */
  complete_through: string | null;
  /** The sources still behind, slowest first (empty when final). */
  sources_behind: SourceBehindReply[];
}

/** A reply's completion over the partitions it read, for the range ending at `toMs`. */
export function completionOf(
  partitions: readonly PartitionProgress[],
  toMs: number,
  revisions: Iterable<number>,
): Completion {
  let complete = Number.POSITIVE_INFINITY;
  for (const p of partitions) complete = Math.min(complete, p.completeThroughMs);
  if (partitions.length === 0) complete = Number.NEGATIVE_INFINITY;
  let revision: number | null = null;
  for (const r of revisions) if (revision === null || r > revision) revision = r;
  const final = complete >= toMs;
  const behind = new Map<string, number | null>();
  if (!final) {
    for (const p of partitions) {
      for (const b of p.behind) {
        if (!behind.has(b.source)) {
          behind.set(b.source, b.progressMs);
          continue;
        }
        const have = behind.get(b.source) as number | null;
        if (have !== null && (b.progressMs === null || b.progressMs < have))
          behind.set(b.source, b.progressMs);
      }
    }
  }
  return {
    final,
    revision,
    complete_through: Number.isFinite(complete)
      ? isoMinute(Math.floor(complete / ONE_MINUTE_MS) * ONE_MINUTE_MS)
      : null,
    sources_behind: [...behind]
      .sort(
        ([a, pa], [b, pb]) =>
          (pa ?? Number.NEGATIVE_INFINITY) - (pb ?? Number.NEGATIVE_INFINITY) || (a < b ? -1 : 1),
      )
      .map(([source, p]) => ({ source, progress: p === null ? null : isoMinute(p) })),
  };
}
