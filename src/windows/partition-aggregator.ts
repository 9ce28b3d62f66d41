/**
 * The aggregation operator of one partition, as pure logic: tumbling one-minute event-time
 * windows, a watermark with allowed lateness and idle advancement, per-event dedupe,
 * per-ad and per-ad × dimension counts, a per-minute top k, and late-event handling.
 *
 * No I/O, no clock, no timers: processing time is the `nowMs` argument. The step functions
 * mutate the state they are given (for speed) and return what must be emitted; the runtime
 * (an actor) publishes the outputs, snapshots the state and schedules calls.
 *
 * Semantics:
 * - A minute `[start, start + 60 000)` is **closed** once the watermark reaches its end
 *   (see `watermark.ts`). An event of a closed minute is **late**.
 * - {@link ingest} counts on-time events into their minute. Late events: with policy
 *   `"drop"` they are returned in `late`, never counted. With policy `"correct"` they are
 *   counted into their minute while it is within `retainClosedMinutes` minutes of closing
 *   (`watermark < end + retainClosedMinutes·60 000`), later ones are returned in `late` as
 *   under `"drop"`. A minute already emitted is re-emitted by `ingest` in `corrections`
 *   (absolute counts, `version` + 1, once per batch); a minute not yet emitted just carries
 *   the late events in its first emission.
 * - {@link advance} emits, in ascending order, every minute the watermark has closed that
 *   was not emitted yet (version 1), and purges state past its use.
 * - Dedupe applies to every counted event, late ones included: an id is counted at most
 *   once per minute for as long as the minute's state lives (open, then retained).
 *   Under `"drop"` a minute's ids are forgotten when it is emitted; a later copy of a
 *   counted event is then reported as late (still never counted twice).
 * - Classification depends only on the order of events and on the `nowMs` of the calls
 *   (idle advancement is applied at the start of both `ingest` and `advance`), never on how
 *   often `advance` is called; only `version` numbering depends on that.
 */
import { AdclickError, ConfigError } from "../errors.js";
import type { ClickEvent, Dimension } from "../model.js";
import { type IdSet, WindowDedupe } from "./dedupe.js";
import {
  type AdCount,
  type AdDimCount,
  type MinuteCountsSnapshot,
  MinuteState,
} from "./minute-state.js";
import { type TopEntry, topK } from "./topk.js";
import {
  applyIdle,
  createWatermark,
  idleDeadlineMs,
  markArrival,
  observeEventTime,
  restoreWatermark,
  snapshotWatermark,
  type WatermarkSnapshot,
  type WatermarkState,
} from "./watermark.js";
import { WINDOW_SIZE_MS, windowStartOf } from "./window.js";

export type LatePolicy = "drop" | "correct";

export const DEFAULT_DIMENSIONS: readonly Dimension[] = ["country"];
export const DEFAULT_RETAIN_CLOSED_MINUTES = 60;
const ALL_DIMENSIONS: readonly Dimension[] = ["country", "ip", "userId"];

export interface AggregatorOptions {
  /** Partition number this operator aggregates (copied into every output). */
  partition: number;
  /** Event-time lateness accepted before a minute closes. Required: no hidden default. */
  allowedLatenessMs: number;
  /** Processing time without any event after which every minute holding data closes. */
  idleTimeoutMs: number;
  /** Star-schema dimensions counted per ad; default `["country"]`. */
  dimensions?: readonly Dimension[];
  /** Entries of the per-minute top list. */
  topK: number;
  latePolicy: LatePolicy;
  /** Policy "correct": minutes after closing during which late events still correct a minute. */
  retainClosedMinutes?: number;
}

/** Options after defaults and validation; plain data (part of the snapshot). */
export interface ResolvedAggregatorOptions {
  readonly partition: number;
  readonly allowedLatenessMs: number;
  readonly idleTimeoutMs: number;
  readonly dimensions: readonly Dimension[];
  readonly topK: number;
  readonly latePolicy: LatePolicy;
  readonly retainClosedMinutes: number;
}

/** One emitted minute of one partition: absolute values, safe to upsert idempotently. */
export interface ClosedMinute {
  partition: number;
  minuteStartMs: number;
  /** 1 for the first emission; +1 for every correction of the minute. */
  version: number;
  /** `[adId, count]`, sorted by adId. */
  adCounts: AdCount[];
  /** Per configured dimension: `[adId, value, count]`, sorted by adId then value. */
  dimCounts: Partial<Record<Dimension, AdDimCount[]>>;
  /** The minute's top `topK` ads: count desc, adId asc. */
  topK: TopEntry[];
  /** Events counted in the minute. */
  eventCount: number;
}

/** A minute not emitted yet, as a query sees it. */
export interface LiveMinute extends Omit<ClosedMinute, "version"> {
  /** The watermark has passed the minute: its counts are final, its emission pending. */
  closed: boolean;
}

export interface IngestResult {
  /** Events counted on time. */
  accepted: number;
  /** Late events counted into their (closed) minute under policy "correct". */
  corrected: number;
  /** Events not counted because their id was already counted in their minute. */
  duplicates: number;
  /** Late events not counted (policy "drop", or past retention under "correct"), in order. */
  late: ClickEvent[];
  /** Re-emissions of already emitted minutes changed by this batch, ascending by minute. */
  corrections: ClosedMinute[];
}

/** Counts and ids of one minute, plus its emission bookkeeping. */
interface Slot {
  readonly counts: MinuteState;
  readonly ids: IdSet;
  /** Emissions so far: 0 = never emitted. */
  version: number;
  /** Changed since its last emission (only meaningful while version > 0). */
  dirty: boolean;
  /**
   * The live view last built for queries, and the event count it reflects: queries between
   * two batches reuse it instead of sorting the minute's ads again (a pending minute's
   * counts only grow, so an unchanged event count means unchanged counts).
   */
  live?: { eventCount: number; view: Omit<LiveMinute, "closed"> };
}

/** Mutable operator state. Treat as opaque; read it through the exported functions. */
export interface AggregatorState {
  readonly options: ResolvedAggregatorOptions;
  readonly watermark: WatermarkState;
  /** Minutes not emitted yet, by start. */
  readonly pending: Map<number, Slot>;
  /** Emitted minutes kept for corrections (policy "correct"), by start. */
  readonly retained: Map<number, Slot>;
  readonly dedupe: WindowDedupe;
}

function intSetting(setting: string, v: unknown, min: number): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    throw new ConfigError(setting, `must be an integer >= ${min}, got ${String(v)}`);
  }
  return v;
}

function resolveOptions(opts: AggregatorOptions): ResolvedAggregatorOptions {
  const dimensions = [...(opts.dimensions ?? DEFAULT_DIMENSIONS)];
  for (const d of dimensions) {
    if (!ALL_DIMENSIONS.includes(d)) {
      throw new ConfigError("dimensions", `"${d}" is not one of ${ALL_DIMENSIONS.join(", ")}`);
    }
  }
  if (new Set(dimensions).size !== dimensions.length) {
    throw new ConfigError("dimensions", `lists a dimension twice: ${dimensions.join(", ")}`);
  }
  if (opts.latePolicy !== "drop" && opts.latePolicy !== "correct") {
    throw new ConfigError("latePolicy", `"${String(opts.latePolicy)}" is not one of drop, correct`);
  }
  return {
    partition: intSetting("partition", opts.partition, 0),
    allowedLatenessMs: intSetting("allowedLatenessMs", opts.allowedLatenessMs, 0),
    idleTimeoutMs: intSetting("idleTimeoutMs", opts.idleTimeoutMs, 1),
    dimensions,
    topK: intSetting("topK", opts.topK, 1),
    latePolicy: opts.latePolicy,
    retainClosedMinutes: intSetting(
      "retainClosedMinutes",
      opts.retainClosedMinutes ?? DEFAULT_RETAIN_CLOSED_MINUTES,
      0,
    ),
  };
}

/**
 * A fresh operator for one partition.
 *
 * @throws ConfigError naming the first invalid option.
 */
export function createAggregatorState(opts: AggregatorOptions): AggregatorState {
  const options = resolveOptions(opts);
  return newState(options, createWatermark(watermarkOptions(options)));
}

function watermarkOptions(o: ResolvedAggregatorOptions) {
  return {
    allowedLatenessMs: o.allowedLatenessMs,
    idleTimeoutMs: o.idleTimeoutMs,
    windowSizeMs: WINDOW_SIZE_MS,
  };
}

function newState(options: ResolvedAggregatorOptions, watermark: WatermarkState): AggregatorState {
  return {
    options,
    watermark,
    pending: new Map(),
    retained: new Map(),
    dedupe: new WindowDedupe(),
  };
}

function newPendingSlot(state: AggregatorState, startMs: number): Slot {
  const slot: Slot = {
    counts: new MinuteState(startMs, WINDOW_SIZE_MS, state.options.dimensions),
    ids: state.dedupe.idsFor(startMs),
    version: 0,
    dirty: false,
  };
  state.pending.set(startMs, slot);
  return slot;
}

function toClosedMinute(state: AggregatorState, slot: Slot): ClosedMinute {
  const sorted = slot.counts.sortedAdIds();
  const adCounts = slot.counts.adCounts(sorted);
  return {
    partition: state.options.partition,
    minuteStartMs: slot.counts.startMs,
    version: slot.version,
    adCounts,
    dimCounts: slot.counts.dimCounts(sorted),
    topK: topK(adCounts, state.options.topK),
    eventCount: slot.counts.eventCount,
  };
}

function byStart(a: Slot, b: Slot): number {
  return a.counts.startMs - b.counts.startMs;
}

/**
 * Feeds a batch of events (in arrival order) that arrived at processing time `nowMs`.
 * Applies idle advancement first, then per event: advance the watermark, classify, dedupe,
 * count. Events must have a finite `timestampMs` (the parser guarantees it); any other is
 * returned in `late` and does not move the watermark.
 *
 * Invariant: `accepted + corrected + duplicates + late.length === events.length`.
 */
export function ingest(
  state: AggregatorState,
  events: readonly ClickEvent[],
  nowMs: number,
): IngestResult {
  const w = state.watermark;
  applyIdle(w, nowMs);
  const late: ClickEvent[] = [];
  const n = events.length;
  if (n === 0) return { accepted: 0, corrected: 0, duplicates: 0, late, corrections: [] };
  markArrival(w, nowMs);

  const correct = state.options.latePolicy === "correct";
  const retainMs = state.options.retainClosedMinutes * WINDOW_SIZE_MS;
  const pending = state.pending;
  const retained = state.retained;
  let accepted = 0;
  let corrected = 0;
  let duplicates = 0;
  let dirty: Slot[] | null = null;
  // Cache of the current event's minute: consecutive events mostly share one.
  let curStart = Number.NaN;
  let curEnd = Number.NaN;
  let cur: Slot | undefined;

  for (let i = 0; i < n; i++) {
    const e = events[i] as ClickEvent;
    const t = e.timestampMs;
    if (!(t >= curStart && t < curEnd)) {
      if (!Number.isFinite(t)) {
        late.push(e);
        continue;
      }
      curStart = windowStartOf(t, WINDOW_SIZE_MS);
      curEnd = curStart + WINDOW_SIZE_MS;
      cur = pending.get(curStart) ?? retained.get(curStart);
    }
    observeEventTime(w, t);
    const wm = w.watermarkMs;
    if (curEnd > wm) {
      // Open minute: never emitted, so it is pending or not created yet.
      if (cur === undefined) cur = newPendingSlot(state, curStart);
      if (cur.ids.add(e.eventId)) {
        cur.counts.add(e);
        accepted++;
      } else {
        duplicates++;
      }
    } else if (correct && curEnd + retainMs > wm) {
      // Closed, within retention: correct the minute (or a minute never seen before).
      if (cur === undefined) cur = newPendingSlot(state, curStart);
      if (cur.ids.add(e.eventId)) {
        cur.counts.add(e);
        corrected++;
        if (cur.version > 0 && !cur.dirty) {
          cur.dirty = true;
          if (dirty === null) dirty = [];
          dirty.push(cur);
        }
      } else {
        duplicates++;
      }
    } else {
      late.push(e);
    }
  }

  const corrections: ClosedMinute[] = [];
  if (dirty !== null) {
    dirty.sort(byStart);
    for (const slot of dirty) {
      slot.dirty = false;
      slot.version++;
      corrections.push(toClosedMinute(state, slot));
    }
  }
  return { accepted, corrected, duplicates, late, corrections };
}

/**
 * Applies idle advancement at processing time `nowMs`, then emits every minute the
 * watermark has closed and that was not emitted yet, ascending by minute, and purges state
 * no longer needed (under "drop" at once, under "correct" after retention).
 */
export function advance(state: AggregatorState, nowMs: number): ClosedMinute[] {
  const w = state.watermark;
  applyIdle(w, nowMs);
  const wm = w.watermarkMs;
  const retainMs = state.options.retainClosedMinutes * WINDOW_SIZE_MS;
  const correct = state.options.latePolicy === "correct";

  const closing: Slot[] = [];
  for (const slot of state.pending.values()) {
    if (slot.counts.endMs <= wm) closing.push(slot);
  }
  closing.sort(byStart);
  const out: ClosedMinute[] = [];
  for (const slot of closing) {
    const start = slot.counts.startMs;
    state.pending.delete(start);
    slot.version = 1;
    out.push(toClosedMinute(state, slot));
    if (correct && slot.counts.endMs + retainMs > wm) {
      state.retained.set(start, slot);
    } else {
      state.dedupe.forget(start);
    }
  }
  for (const [start, slot] of state.retained) {
    if (slot.counts.endMs + retainMs <= wm) {
      state.retained.delete(start);
      state.dedupe.forget(start);
    }
  }
  return out;
}

/**
 * Minutes not emitted yet (open, or closed with emission pending), ascending. The arrays
 * are shared between calls while a minute's counts do not change: treat them as read-only.
 */
export function openMinutes(state: AggregatorState): LiveMinute[] {
  const slots = [...state.pending.values()].sort(byStart);
  const wm = state.watermark.watermarkMs;
  return slots.map((slot) => {
    if (slot.live?.eventCount !== slot.counts.eventCount) {
      const sorted = slot.counts.sortedAdIds();
      const adCounts = slot.counts.adCounts(sorted);
      slot.live = {
        eventCount: slot.counts.eventCount,
        view: {
          partition: state.options.partition,
          minuteStartMs: slot.counts.startMs,
          adCounts,
          dimCounts: slot.counts.dimCounts(sorted),
          topK: topK(adCounts, state.options.topK),
          eventCount: slot.counts.eventCount,
        },
      };
    }
    return { ...slot.live.view, closed: slot.counts.endMs <= wm };
  });
}

/** Live count of one ad in one not-yet-emitted minute (0 when absent). O(1). */
export function liveAdCount(state: AggregatorState, minuteStartMs: number, adId: string): number {
  return state.pending.get(minuteStartMs)?.counts.adCount(adId) ?? 0;
}

/** The current watermark (-Infinity before the first event). */
export function watermarkOf(state: AggregatorState): number {
  return state.watermark.watermarkMs;
}

/**
 * Processing time at which idle advancement would close minutes, or null if it would not;
 * a runtime calls {@link advance} then (one timer, no polling).
 */
export function nextIdleDeadlineMs(state: AggregatorState): number | null {
  return idleDeadlineMs(state.watermark);
}

// ---------------------------------------------------------------------------------------
// Snapshot / restore

/**
 * 2: a minute's ids are mostly 16-byte keys (`idKeys`). An older build would not read them
 * and would restore an empty dedupe set, so a format-2 snapshot must be refused there; this
 * build still restores format 1 (ids as strings only).
 */
export const AGGREGATOR_SNAPSHOT_FORMAT_VERSION = 2;
const READABLE_SNAPSHOT_FORMATS: readonly number[] = [1, 2];

/** One minute in a snapshot: its counts, emission version and remembered ids. */
export interface MinuteSnapshot extends MinuteCountsSnapshot {
  /** 0 = not emitted yet (pending); ≥ 1 = emitted and retained for corrections. */
  version: number;
  /** Ids kept as strings: those without a 16-byte form (all of them in older snapshots). */
  ids: string[];
  /** The other ids, as the dedupe set's exact 16-byte keys in base64 (see dedupe.ts). */
  idKeys?: string;
}

/**
 * The whole operator state as plain data (JSON and msgpack safe: no Map, Set, Infinity or
 * undefined). The idle clock is processing time and is deliberately not included.
 */
export interface AggregatorSnapshot {
  /** {@link AGGREGATOR_SNAPSHOT_FORMAT_VERSION} when written; 1 in older snapshots. */
  formatVersion: number;
  options: {
    partition: number;
    allowedLatenessMs: number;
    idleTimeoutMs: number;
    dimensions: Dimension[];
    topK: number;
    latePolicy: LatePolicy;
    retainClosedMinutes: number;
  };
  watermark: WatermarkSnapshot;
  /** Pending and retained minutes, ascending by start. */
  minutes: MinuteSnapshot[];
}

/**
 * Captures the state between calls. The result shares nothing mutable with the state, so
 * it can be encoded asynchronously while the operator goes on.
 */
export function snapshotAggregator(state: AggregatorState): AggregatorSnapshot {
  const slots = [...state.pending.values(), ...state.retained.values()].sort(byStart);
  const o = state.options;
  return {
    formatVersion: AGGREGATOR_SNAPSHOT_FORMAT_VERSION,
    options: {
      partition: o.partition,
      allowedLatenessMs: o.allowedLatenessMs,
      idleTimeoutMs: o.idleTimeoutMs,
      dimensions: [...o.dimensions],
      topK: o.topK,
      latePolicy: o.latePolicy,
      retainClosedMinutes: o.retainClosedMinutes,
    },
    watermark: snapshotWatermark(state.watermark),
    minutes: slots.map((slot) => {
      const ids = slot.ids.toCompact();
      return {
        ...slot.counts.toSnapshot(),
        version: slot.version,
        ids: ids.long,
        ...(ids.keys ? { idKeys: ids.keys } : {}),
      };
    }),
  };
}

/**
 * Rebuilds an operator from a snapshot. The idle clock starts at the next call, so the
 * downtime before a restore never counts as idle input.
 *
 * @throws AdclickError (code INTERNAL) when the snapshot's format is not this version's.
 */
export function restoreAggregator(snap: AggregatorSnapshot): AggregatorState {
  if (!READABLE_SNAPSHOT_FORMATS.includes(snap?.formatVersion)) {
    throw new AdclickError(
      "INTERNAL",
      `aggregator snapshot formatVersion ${String(snap?.formatVersion)} is not supported (expected one of ${READABLE_SNAPSHOT_FORMATS.join(", ")})`,
    );
  }
  const options = resolveOptions(snap.options);
  const state = newState(options, restoreWatermark(watermarkOptions(options), snap.watermark));
  for (const m of snap.minutes) {
    const ids = state.dedupe.idsFor(m.startMs);
    if (m.idKeys) ids.addCompact({ keys: m.idKeys, long: [] });
    for (const id of m.ids) ids.add(id);
    const slot: Slot = {
      counts: MinuteState.fromSnapshot(m, WINDOW_SIZE_MS, state.options.dimensions),
      ids,
      version: m.version,
      dirty: false,
    };
    (m.version === 0 ? state.pending : state.retained).set(m.startMs, slot);
  }
  return state;
}
