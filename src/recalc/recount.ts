/**
 * The batch recount of recalculation and reconciliation, as pure logic: no I/O, no clock.
 *
 * A recount feeds the unique events the raw store holds for a partition through a dedicated
 * instance of the SAME operator the live aggregators run (src/windows/partition-aggregator.ts)
 * — windows, dedupe, per-ad and per-ad × dimension counts, top-k — and closes every minute at
 * once. Nothing in a recount is late: the raw store has every event, so each unique event is
 * counted in its own minute (allowed lateness "infinite", no bound on open minutes, then one
 * idle advancement that closes every minute holding data).
 *
 * The diff compares a recount with the stored real-time aggregates cell by cell — (ad,
 * minute) and (ad, minute, dimension value) — and names the likely cause of each difference.
 */
import type { ClickEvent, Dimension } from "../model.js";
import { ONE_MINUTE_MS } from "../model.js";
import type { StoredPartitionMinute } from "../storage/aggregate-store.js";
import { compareIds } from "../windows/minute-state.js";
import {
  advance,
  type ClosedMinute,
  createAggregatorState,
  ingest,
} from "../windows/partition-aggregator.js";
import { mergeTopK, type TopEntry } from "../windows/topk.js";

export interface RecountOptions {
  /** Star-schema dimensions counted per ad (the live configuration's). */
  dimensions: readonly Dimension[];
  /** Entries of each partition's per-minute top list (the live `topK`). */
  topK: number;
}

/**
 * Recounts one partition: `chunks` are its unique events, in any order and split in any way
 * (typically one chunk per minute, as `RawStore.readRange` yields them). Returns one closed
 * minute per minute holding events, ascending, with `version` 1 (callers set their own).
 */
export function recountPartition(
  partition: number,
  chunks: Iterable<readonly ClickEvent[]>,
  o: RecountOptions,
): ClosedMinute[] {
  const state = createAggregatorState({
    partition,
    // No event of a recount is late: the watermark never closes a minute by event time...
    allowedLatenessMs: Number.MAX_SAFE_INTEGER,
    idleTimeoutMs: 1,
    maxHoldMs: Number.MAX_SAFE_INTEGER,
    maxOpenMinutes: Number.MAX_SAFE_INTEGER,
    dimensions: o.dimensions,
    topK: o.topK,
    latePolicy: "amend",
    amendHorizonMs: 0,
  });
  // ...processing time stands still while feeding (no idle advancement in between)...
  for (const events of chunks) ingest(state, events, 0);
  // ...and one idle advancement at the end closes every minute holding data.
  return advance(state, Number.MAX_SAFE_INTEGER);
}

/** The recount of one partition's minute, or undefined when it has no events. */
export function recountMinute(
  partition: number,
  minuteMs: number,
  events: readonly ClickEvent[],
  o: RecountOptions,
): ClosedMinute | undefined {
  return recountPartition(partition, [events], o).find((m) => m.minuteStartMs === minuteMs);
}

/**
 * The global top N of a minute from its partitions' top-k lists (exact: partitions are
 * disjoint by ad), as the reducer computes it.
 */
export function globalTop(partitionMinutes: readonly ClosedMinute[], n: number): TopEntry[] {
  return mergeTopK(
    partitionMinutes.map((m) => m.topK),
    n,
  );
}

/** A whole range recounted: every partition-minute holding events, and each minute's top N. */
export interface RangeRecount {
  /** Ascending by minute, then partition. */
  minutes: ClosedMinute[];
  /** minute → global top N (minutes without events are absent). */
  tops: Map<number, TopEntry[]>;
}

/** Recounts the unique events of a range, given as `readRange` yields them. */
export function recountRange(
  chunks: Iterable<{ partition: number; events: readonly ClickEvent[] }>,
  o: RecountOptions & { topN: number },
): RangeRecount {
  const byPartition = new Map<number, (readonly ClickEvent[])[]>();
  for (const c of chunks) {
    const list = byPartition.get(c.partition);
    if (list) list.push(c.events);
    else byPartition.set(c.partition, [c.events]);
  }
  const minutes: ClosedMinute[] = [];
  for (const [p, list] of byPartition) minutes.push(...recountPartition(p, list, o));
  minutes.sort((a, b) => a.minuteStartMs - b.minuteStartMs || a.partition - b.partition);
  const perMinute = new Map<number, ClosedMinute[]>();
  for (const m of minutes) {
    const list = perMinute.get(m.minuteStartMs);
    if (list) list.push(m);
    else perMinute.set(m.minuteStartMs, [m]);
  }
  const tops = new Map<number, TopEntry[]>();
  for (const [minute, list] of perMinute) tops.set(minute, globalTop(list, o.topN));
  return { minutes, tops };
}

// ---------------------------------------------------------------------------------------
// Diff

/** Why a stored cell differs from the recount — the likely cause, from the evidence at hand. */
export type MismatchCause =
  | "late_dropped"
  | "not_closed"
  | "missing_minute"
  | "missing_in_aggregates"
  | "undercount"
  | "overcount"
  | "no_raw_data";

export const MISMATCH_CAUSES: readonly MismatchCause[] = [
  "late_dropped",
  "not_closed",
  "missing_minute",
  "missing_in_aggregates",
  "undercount",
  "overcount",
  "no_raw_data",
];

/** Human text of each cause (reports, tables). */
export const CAUSE_TEXT: Record<MismatchCause, string> = {
  late_dropped:
    "late clicks not counted live (policy drop, or past the amendment horizon and not repaired yet; see CLICKS_LATE)",
  not_closed: "minute not closed by the live pipeline yet (still open, or not stored yet)",
  missing_minute: "minute missing in aggregates (never emitted, or lost before the store)",
  missing_in_aggregates: "missing in aggregates (ad absent from the stored minute)",
  undercount: "aggregate below raw data (events lost, or aggregate corrupted)",
  overcount: "aggregate exceeds raw data (raw data missing or aggregate corrupted)",
  no_raw_data:
    "aggregate without any raw data for the minute (raw data missing or expired, or aggregate corrupted)",
};

/** One differing cell: (ad, minute) or, with `dim`/`value`, (ad, minute, dimension value). */
export interface Mismatch {
  partition: number;
  minuteMs: number;
  adId: string;
  dim?: Dimension;
  value?: string;
  /** The stored count; null when the store has no such cell. */
  stored: number | null;
  /** The recount; null when the raw store has no such event. */
  recount: number | null;
  cause: MismatchCause;
  likelyCause: string;
}

/**
 * Late events as evidence: how many unique late events (from CLICKS_LATE) each cell has.
 * Built by {@link indexLateEvents}; opaque.
 */
export interface LateIndex {
  readonly cells: Map<string, number>;
}

const SEP = "\u0000";
const adKey = (minuteMs: number, adId: string) => `${minuteMs}${SEP}${adId}`;
const dimKey = (minuteMs: number, adId: string, dim: Dimension, value: string) =>
  `${minuteMs}${SEP}${adId}${SEP}${dim}${SEP}${value}`;

function dimValueOf(e: ClickEvent, dim: Dimension): string {
  return dim === "country" ? e.country : dim === "ip" ? e.ip : e.userId;
}

/** Indexes late events (deduplicated by event id) by the cells they belong to. */
export function indexLateEvents(
  events: Iterable<ClickEvent>,
  dimensions: readonly Dimension[],
): LateIndex {
  const seen = new Set<string>();
  const cells = new Map<string, number>();
  const bump = (k: string) => cells.set(k, (cells.get(k) ?? 0) + 1);
  for (const e of events) {
    if (!Number.isFinite(e.timestampMs) || seen.has(e.eventId)) continue;
    seen.add(e.eventId);
    const minute = Math.floor(e.timestampMs / ONE_MINUTE_MS) * ONE_MINUTE_MS;
    bump(adKey(minute, e.adId));
    for (const d of dimensions) bump(dimKey(minute, e.adId, d, dimValueOf(e, d)));
  }
  return { cells };
}

export interface DiffContext {
  dimensions: readonly Dimension[];
  /** Late-event evidence (from CLICKS_LATE), when available. */
  late?: LateIndex;
  /**
   * Per partition, every minute ending at or before this is closed and stored by the live
   * pipeline (`AggregateStore.progress`). A partition absent here has closed nothing.
   * Omit to treat every minute as closed.
   */
  closedThrough?: ReadonlyMap<number, number>;
}

export interface PartitionMinuteDiff {
  /** Cells compared: the union of the recount's and the store's cells. */
  cellsCompared: number;
  mismatches: Mismatch[];
}

function causeOf(
  stored: number | null,
  recount: number | null,
  lateCount: number,
  minute: { stored: boolean; hasRaw: boolean; closed: boolean },
): MismatchCause {
  const s = stored ?? 0;
  const r = recount ?? 0;
  if (s > r) return minute.hasRaw ? "overcount" : "no_raw_data";
  // stored < recount from here on.
  if (lateCount > 0 && lateCount >= r - s) return "late_dropped";
  if (!minute.closed) return "not_closed";
  if (!minute.stored) return "missing_minute";
  return stored === null ? "missing_in_aggregates" : "undercount";
}

/** Report order: minute, partition, ad, dimension, value. */
export function compareMismatch(a: Mismatch, b: Mismatch): number {
  return (
    a.minuteMs - b.minuteMs ||
    a.partition - b.partition ||
    compareIds(a.adId, b.adId) ||
    compareIds(a.dim ?? "", b.dim ?? "") ||
    compareIds(a.value ?? "", b.value ?? "")
  );
}

/**
 * Compares one partition-minute's recount with what the store holds for it. Either side may
 * be absent (no events / no stored row). Counts are compared exactly; a stored 0 equals an
 * absent recount. Only the configured dimensions are compared.
 */
export function diffPartitionMinute(
  partition: number,
  minuteMs: number,
  recount: ClosedMinute | undefined,
  stored: StoredPartitionMinute | undefined,
  ctx: DiffContext,
): PartitionMinuteDiff {
  const closedThrough = ctx.closedThrough?.get(partition);
  const minute = {
    stored: stored !== undefined,
    hasRaw: recount !== undefined && recount.eventCount > 0,
    closed:
      ctx.closedThrough === undefined ||
      (closedThrough !== undefined && minuteMs + ONE_MINUTE_MS <= closedThrough),
  };
  const late = ctx.late?.cells;
  const mismatches: Mismatch[] = [];
  let cellsCompared = 0;

  const compare = (
    recounted: Iterable<readonly [string, number]>,
    storedCells: Iterable<readonly [string, number]>,
    adIdOf: (key: string) => string,
    extra: (key: string) => { dim?: Dimension; value?: string },
    lateKey: (key: string) => string,
  ) => {
    const r = new Map(recounted);
    const s = new Map(storedCells);
    const keys = new Set([...r.keys(), ...s.keys()]);
    for (const k of keys) {
      cellsCompared++;
      const rv = r.get(k) ?? null;
      const sv = s.get(k) ?? null;
      if ((rv ?? 0) === (sv ?? 0)) continue;
      const cause = causeOf(sv, rv, late?.get(lateKey(k)) ?? 0, minute);
      mismatches.push({
        partition,
        minuteMs,
        adId: adIdOf(k),
        ...extra(k),
        stored: sv,
        recount: rv,
        cause,
        likelyCause: CAUSE_TEXT[cause],
      });
    }
  };

  compare(
    recount?.adCounts ?? [],
    stored?.adCounts ?? [],
    (k) => k,
    () => ({}),
    (k) => adKey(minuteMs, k),
  );
  for (const dim of ctx.dimensions) {
    const split = (k: string) => {
      const i = k.indexOf(SEP);
      return [k.slice(0, i), k.slice(i + 1)] as const;
    };
    const cells = (list: readonly (readonly [string, string, number])[] | undefined) =>
      (list ?? []).map(([adId, value, n]) => [`${adId}${SEP}${value}`, n] as const);
    compare(
      cells(recount?.dimCounts[dim]),
      cells(stored?.dimCounts[dim]),
      (k) => split(k)[0],
      (k) => ({ dim, value: split(k)[1] }),
      (k) => {
        const [adId, value] = split(k);
        return dimKey(minuteMs, adId, dim, value);
      },
    );
  }
  mismatches.sort(compareMismatch);
  return { cellsCompared, mismatches };
}

/** The result of comparing a range. */
export interface RangeDiff {
  cellsCompared: number;
  /** Sorted by minute, partition, ad, dimension, value. */
  mismatches: Mismatch[];
  byCause: Record<MismatchCause, number>;
}

export function emptyByCause(): Record<MismatchCause, number> {
  return Object.fromEntries(MISMATCH_CAUSES.map((c) => [c, 0])) as Record<MismatchCause, number>;
}

/**
 * Compares recounted partition-minutes with stored ones (`AggregateStore.partitionMinutes`)
 * over the same range and partitions: every cell present on either side is compared.
 */
export function diffAggregates(
  recount: readonly ClosedMinute[],
  stored: readonly StoredPartitionMinute[],
  ctx: DiffContext,
): RangeDiff {
  const key = (p: number, m: number) => `${m}${SEP}${p}`;
  const units = new Map<
    string,
    { partition: number; minuteMs: number; r?: ClosedMinute; s?: StoredPartitionMinute }
  >();
  const unit = (p: number, m: number) => {
    let u = units.get(key(p, m));
    if (!u) {
      u = { partition: p, minuteMs: m };
      units.set(key(p, m), u);
    }
    return u;
  };
  for (const r of recount) unit(r.partition, r.minuteStartMs).r = r;
  for (const s of stored) unit(s.partition, s.minuteStartMs).s = s;
  const out: RangeDiff = { cellsCompared: 0, mismatches: [], byCause: emptyByCause() };
  for (const u of units.values()) {
    const d = diffPartitionMinute(u.partition, u.minuteMs, u.r, u.s, ctx);
    out.cellsCompared += d.cellsCompared;
    for (const m of d.mismatches) {
      out.mismatches.push(m);
      out.byCause[m.cause]++;
    }
  }
  out.mismatches.sort(compareMismatch);
  return out;
}

/** A minute whose stored global top N differs from the recount's. */
export interface TopMismatch {
  minuteMs: number;
  /** null when no top N is stored for the minute. */
  stored: TopEntry[] | null;
  /** null when the raw store has no event in the minute. */
  recount: TopEntry[] | null;
}

function sameTop(a: readonly TopEntry[], b: readonly TopEntry[]): boolean {
  return (
    a.length === b.length &&
    a.every((e, i) => e.adId === (b[i] as TopEntry).adId && e.count === (b[i] as TopEntry).count)
  );
}

/** Compares stored global top N per minute with the recount's, minute by minute. */
export function diffTops(
  recount: ReadonlyMap<number, readonly TopEntry[]>,
  stored: ReadonlyMap<number, { ads: readonly TopEntry[] }>,
): TopMismatch[] {
  const minutes = [...new Set([...recount.keys(), ...stored.keys()])].sort((a, b) => a - b);
  const out: TopMismatch[] = [];
  for (const m of minutes) {
    const r = recount.get(m);
    const s = stored.get(m)?.ads;
    if (r && s && sameTop(r, s)) continue;
    if (!r && s && s.length === 0) continue;
    out.push({ minuteMs: m, stored: s ? [...s] : null, recount: r ? [...r] : null });
  }
  return out;
}

/**
 * What an overwrite of a partition-minute must remove besides writing the recount: stored
 * cells the recount does not have (they would otherwise survive the overwrite), and the
 * partition-minute row itself when the recount is empty. Dimensions that are not configured
 * are left alone (the recount knows nothing about them).
 */
export interface StaleCells {
  ads: string[];
  dims: { dim: Dimension; adId: string; value: string }[];
  partitionRow: boolean;
}

export function staleCells(
  recount: ClosedMinute | undefined,
  stored: StoredPartitionMinute | undefined,
  dimensions: readonly Dimension[],
): StaleCells {
  const out: StaleCells = { ads: [], dims: [], partitionRow: false };
  if (!stored) return out;
  const ads = new Set((recount?.adCounts ?? []).map(([adId]) => adId));
  for (const [adId] of stored.adCounts) if (!ads.has(adId)) out.ads.push(adId);
  for (const dim of dimensions) {
    const have = new Set(
      (recount?.dimCounts[dim] ?? []).map(([adId, value]) => `${adId}${SEP}${value}`),
    );
    for (const [adId, value] of stored.dimCounts[dim] ?? []) {
      if (!have.has(`${adId}${SEP}${value}`)) out.dims.push({ dim, adId, value });
    }
  }
  out.partitionRow = recount === undefined;
  return out;
}
