/**
 * The aggregation operator of one partition, as pure logic: tumbling one-minute event-time
 * windows, a source-aware watermark (see watermark.ts), per-event dedupe, per-ad and per-ad ×
 * dimension counts, a per-minute top k, and amendments of closed minutes.
 *
 * No I/O, no clock, no timers: processing time is the `nowMs` argument. The step functions
 * mutate the state they are given (for speed) and return what must be emitted; the runtime
 * (an actor) publishes the outputs, snapshots the state and schedules calls.
 *
 * Semantics:
 * - Input comes as messages: the clicks of one source (a shipped file, a producer) with that
 *   source's progress mark, or a mark alone (a heartbeat). {@link ingest} classifies a
 *   message's clicks against the watermark as it stands before the message, then records
 *   what the message says of its source; clicks of one message never make each other late.
 * - A minute `[start, start + 60 000)` is **closed** once the watermark reaches its end. A
 *   click of a closed minute is **late**. Policy `"amend"` (the default) counts it into its
 *   minute while the minute is within the amendment horizon (`watermark < end +
 *   amendHorizonMs`) and re-emits the minute as a new revision (`version` + 1, absolute
 *   counts, once per message and minute); later ones are returned in `late` (reason
 *   `"horizon"`: the reconciliation's late repair recounts their minute from the raw store).
 *   Policy `"drop"` returns every late click in `late` (reason `"drop"`), never counted.
 * - The watermark is also bounded by the number of open minutes holding data
 *   (`maxOpenMinutes`): past it, the oldest close (memory stays bounded whatever the sources
 *   do).
 * - {@link advance} emits, in ascending order, every minute the watermark has closed that
 *   was not emitted yet (version 1), and purges state past its use.
 * - Dedupe applies to every counted click, late ones included: an id is counted at most once
 *   per minute for as long as the minute's state lives (open, then within the horizon).
 *   Minutes purged are never re-created: a click of a minute at or before the newest purged
 *   one is late, whatever the policy or horizon was when it was purged.
 * - Classification depends only on the order of messages and on the `nowMs` of the calls,
 *   never on how often `advance` is called; only `version` numbering depends on that.
 */
import { AdclickError, ConfigError } from "../errors.js";
import {
  createHotEpochs,
  epochsRoutedIn,
  type HotEpochs,
  type HotEpochsSnapshot,
  ownerOf,
  purgeEpochMinutes,
  restoreHotEpochs,
  snapshotHotEpochs,
} from "../hot/epochs.js";
import type { ClickEvent, Dimension } from "../model.js";
import { type IdSet, WindowDedupe } from "./dedupe.js";
import { mergePartials, type PartialCounts } from "./merge-partials.js";
import {
  type AdCount,
  type AdDimCount,
  type MinuteCountsSnapshot,
  MinuteState,
} from "./minute-state.js";
import { type TopEntry, topK } from "./topk.js";
import {
  type Completeness,
  completenessOf,
  createWatermark,
  holderOf,
  idleDeadlineMs,
  observeSource,
  raiseWatermark,
  restoreWatermark,
  type SourceBehind,
  type SourceStanding,
  snapshotWatermark,
  standingOf,
  updateWatermark,
  type WatermarkSnapshot,
  type WatermarkState,
} from "./watermark.js";
import { WINDOW_SIZE_MS, windowStartOf } from "./window.js";

export type LatePolicy = "amend" | "drop";
export const LATE_POLICIES: readonly LatePolicy[] = ["amend", "drop"];

export const DEFAULT_DIMENSIONS: readonly Dimension[] = ["country"];
export const DEFAULT_AMEND_HORIZON_MS = 15 * 60_000;
export const DEFAULT_MAX_HOLD_MS = 10 * 60_000;
export const DEFAULT_MAX_OPEN_MINUTES = 20;
const ALL_DIMENSIONS: readonly Dimension[] = ["country", "ip", "userId"];

/** The source of clicks that carry none (older producers, direct calls). */
export const ANONYMOUS_SOURCE = "";

export interface AggregatorOptions {
  /** Partition number this operator aggregates (copied into every output). */
  partition: number;
  /** Event-time lateness accepted before a minute closes. Required: no hidden default. */
  allowedLatenessMs: number;
  /** Processing time without a click or mark after which a source stops holding minutes open. */
  idleTimeoutMs: number;
  /** Event time a slow source may hold the watermark behind the fastest; default 10 min. */
  maxHoldMs?: number;
  /** Open minutes holding data, at most; default 20. */
  maxOpenMinutes?: number;
  /** Star-schema dimensions counted per ad; default `["country"]`. */
  dimensions?: readonly Dimension[];
  /** Entries of the per-minute top list. */
  topK: number;
  latePolicy: LatePolicy;
  /** Policy "amend": event time after its close during which a minute is amended; default 15 min. */
  amendHorizonMs?: number;
}

/** Options after defaults and validation; plain data (part of the snapshot). */
export interface ResolvedAggregatorOptions {
  readonly partition: number;
  readonly allowedLatenessMs: number;
  readonly idleTimeoutMs: number;
  readonly maxHoldMs: number;
  readonly maxOpenMinutes: number;
  readonly dimensions: readonly Dimension[];
  readonly topK: number;
  readonly latePolicy: LatePolicy;
  readonly amendHorizonMs: number;
}

/** One emitted minute of one partition: absolute values, safe to upsert idempotently. */
export interface ClosedMinute {
  partition: number;
  minuteStartMs: number;
  /** The revision: 1 for the first emission; +1 for every amendment of the minute. */
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

/** Where a message's clicks come from, and what it says of its source. */
export interface MessageOrigin {
  /** The source id (a shipped file, a producer); {@link ANONYMOUS_SOURCE} when none. */
  source: string;
  /** The source's progress mark: its clicks before this message reached this event time. */
  progressMs?: number | null;
  /** The source has ended: nothing more will come from it. */
  end?: boolean;
  /** The source is at the end of its input: it holds no minute open. */
  caughtUp?: boolean;
}

/** Why late clicks were not counted. */
export type LateReason = "drop" | "horizon";

export interface IngestResult {
  /** Clicks counted on time. */
  accepted: number;
  /** Late clicks counted into their (closed) minute under policy "amend". */
  amended: number;
  /** Clicks not counted because their id was already counted in their minute. */
  duplicates: number;
  /** Late clicks not counted, in order (policy "drop", or past the amendment horizon). */
  late: ClickEvent[];
  lateReason: LateReason;
  /** Revisions of already emitted minutes changed by this message, ascending by minute. */
  corrections: ClosedMinute[];
  /** Clicks of hot ads left to their epoch's shards (counted there, merged at a barrier). */
  routed: number;
}

/** A minute whose hot shards' partials must be merged at a barrier of this episode. */
export interface BarrierRequest {
  minuteStartMs: number;
  episode: number;
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
   * two messages reuse it instead of sorting the minute's ads again (a pending minute's
   * counts only grow, so an unchanged event count means unchanged counts).
   */
  live?: { eventCount: number; view: Omit<LiveMinute, "closed"> };
  /**
   * The latest partials of the hot shards that were routed clicks of this minute, by
   * `<epoch>.<shard>` (see docs/hot-ads.md); merged into every emission.
   */
  parts?: Map<string, PartialCounts>;
  /** Barriers asked for this minute so far (episodes 1, 2, …). */
  episodes: number;
  /** Waiting for the barrier of episode `episodes` before (re-)emitting. */
  awaiting: boolean;
}

/** Mutable operator state. Treat as opaque; read it through the exported functions. */
export interface AggregatorState {
  readonly options: ResolvedAggregatorOptions;
  readonly watermark: WatermarkState;
  /** Minutes not emitted yet, by start. */
  readonly pending: Map<number, Slot>;
  /** Emitted minutes kept for amendments (policy "amend"), by start. */
  readonly retained: Map<number, Slot>;
  readonly dedupe: WindowDedupe;
  /** End of the newest purged minute: minutes ending at or before it are never re-created. */
  purgedThroughMs: number;
  /** Closed minutes not emitted yet because hot shards' partials are due at a barrier. */
  readonly awaiting: Map<number, Slot>;
  /** Hot ads' epochs: which clicks the shards count (src/hot/epochs.ts). */
  readonly hot: HotEpochs;
  /** Barriers to publish (drained by the runtime: {@link takeBarrierRequests}). */
  barrierRequests: BarrierRequest[];
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
  if (!LATE_POLICIES.includes(opts.latePolicy)) {
    throw new ConfigError(
      "latePolicy",
      `"${String(opts.latePolicy)}" is not one of ${LATE_POLICIES.join(", ")}`,
    );
  }
  return {
    partition: intSetting("partition", opts.partition, 0),
    allowedLatenessMs: intSetting("allowedLatenessMs", opts.allowedLatenessMs, 0),
    idleTimeoutMs: intSetting("idleTimeoutMs", opts.idleTimeoutMs, 1),
    maxHoldMs: intSetting("maxHoldMs", opts.maxHoldMs ?? DEFAULT_MAX_HOLD_MS, 0),
    maxOpenMinutes: intSetting(
      "maxOpenMinutes",
      opts.maxOpenMinutes ?? DEFAULT_MAX_OPEN_MINUTES,
      1,
    ),
    dimensions,
    topK: intSetting("topK", opts.topK, 1),
    latePolicy: opts.latePolicy,
    amendHorizonMs: intSetting(
      "amendHorizonMs",
      opts.amendHorizonMs ?? DEFAULT_AMEND_HORIZON_MS,
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
    maxHoldMs: o.maxHoldMs,
    windowSizeMs: WINDOW_SIZE_MS,
  };
}

function newState(
  options: ResolvedAggregatorOptions,
  watermark: WatermarkState,
  hot: HotEpochs = createHotEpochs(),
): AggregatorState {
  return {
    options,
    watermark,
    pending: new Map(),
    retained: new Map(),
    dedupe: new WindowDedupe(),
    purgedThroughMs: Number.NEGATIVE_INFINITY,
    awaiting: new Map(),
    hot,
    barrierRequests: [],
  };
}

function newPendingSlot(state: AggregatorState, startMs: number): Slot {
  const slot: Slot = {
    counts: new MinuteState(startMs, WINDOW_SIZE_MS, state.options.dimensions),
    ids: state.dedupe.idsFor(startMs),
    version: 0,
    dirty: false,
    episodes: 0,
    awaiting: false,
  };
  state.pending.set(startMs, slot);
  return slot;
}

function toClosedMinute(state: AggregatorState, slot: Slot): ClosedMinute {
  const sorted = slot.counts.sortedAds();
  let adCounts = slot.counts.adCounts(sorted);
  let dimCounts = slot.counts.dimCounts(sorted);
  let eventCount = slot.counts.eventCount;
  if (slot.parts !== undefined && slot.parts.size > 0) {
    const merged = mergePartials(
      adCounts,
      dimCounts,
      slot.parts.values(),
      state.options.dimensions,
    );
    adCounts = merged.adCounts;
    dimCounts = merged.dimCounts;
    eventCount += merged.events;
  }
  return {
    partition: state.options.partition,
    minuteStartMs: slot.counts.startMs,
    version: slot.version,
    adCounts,
    dimCounts,
    topK: topK(adCounts, state.options.topK),
    eventCount,
  };
}

function byStart(a: Slot, b: Slot): number {
  return a.counts.startMs - b.counts.startMs;
}

/**
 * Brings the watermark up to processing time `nowMs` (sources going idle, holds bounded) and
 * keeps at most `maxOpenMinutes` open minutes holding data: past that, the watermark closes
 * the oldest.
 */
function settleWatermark(state: AggregatorState, nowMs: number): void {
  const w = state.watermark;
  updateWatermark(w, nowMs);
  const max = state.options.maxOpenMinutes;
  if (state.pending.size <= max) return;
  const open: number[] = [];
  for (const slot of state.pending.values()) {
    if (slot.counts.endMs > w.watermarkMs) open.push(slot.counts.endMs);
  }
  if (open.length <= max) return;
  open.sort((a, b) => a - b);
  raiseWatermark(w, open[open.length - max - 1] as number);
}

/**
 * Feeds one message (its clicks in arrival order, possibly none) read at processing time
 * `nowMs`: settles the watermark, classifies, dedupes and counts the clicks, then records what
 * the message says of its source. Clicks must have a finite `timestampMs` (the parser
 * guarantees it); any other is returned in `late`.
 *
 * Invariant: `accepted + amended + duplicates + late.length === events.length`.
 */
export function ingest(
  state: AggregatorState,
  events: readonly ClickEvent[],
  nowMs: number,
  origin: MessageOrigin = { source: ANONYMOUS_SOURCE },
): IngestResult {
  const w = state.watermark;
  settleWatermark(state, nowMs);
  const n = events.length;
  const amend = state.options.latePolicy === "amend";
  const lateReason: LateReason = amend ? "horizon" : "drop";
  if (n === 0) {
    observeSource(w, origin.source, { maxEventTimeMs: Number.NEGATIVE_INFINITY, ...origin }, nowMs);
    return {
      accepted: 0,
      amended: 0,
      duplicates: 0,
      late: [],
      lateReason,
      corrections: [],
      routed: 0,
    };
  }

  const wm = w.watermarkMs;
  const horizonMs = state.options.amendHorizonMs;
  const purgedThrough = state.purgedThroughMs;
  const pending = state.pending;
  const retained = state.retained;
  const awaiting = state.awaiting;
  const hot = state.hot;
  const anyHot = hot.byAd.size > 0;
  const late: ClickEvent[] = [];
  let accepted = 0;
  let amended = 0;
  let duplicates = 0;
  let routed = 0;
  let maxEventTimeMs = Number.NEGATIVE_INFINITY;
  let dirty: Slot[] | null = null;
  // Cache of the current click's minute: consecutive clicks mostly share one.
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
      cur = pending.get(curStart) ?? retained.get(curStart) ?? awaiting.get(curStart);
    }
    if (t > maxEventTimeMs) maxEventTimeMs = t;
    if (anyHot) {
      const epoch = ownerOf(hot, e.adId, curStart);
      if (epoch !== null) {
        // A hot ad's click: its shard counts (and dedupes) it; the minute must exist here so
        // it closes, and an emitted one is merged again at a barrier.
        if (cur !== undefined && (cur.awaiting || cur.version === 0)) {
          // open, or closed and waiting for its barrier: the partial then includes it
        } else if (curEnd > wm) {
          cur = newPendingSlot(state, curStart);
        } else if (amend && curEnd > purgedThrough && curEnd + horizonMs > wm) {
          if (cur === undefined) cur = newPendingSlot(state, curStart);
          else {
            cur.episodes++;
            cur.awaiting = true;
            state.barrierRequests.push({ minuteStartMs: curStart, episode: cur.episodes });
          }
        } else {
          late.push(e);
          continue;
        }
        epoch.routed.add(curStart);
        routed++;
        continue;
      }
    }
    if (curEnd > wm) {
      // Open minute: never emitted, so it is pending or not created yet.
      if (cur === undefined) cur = newPendingSlot(state, curStart);
      if (cur.ids.add(e.eventId)) {
        cur.counts.add(e);
        accepted++;
      } else {
        duplicates++;
      }
    } else if (amend && curEnd > purgedThrough && curEnd + horizonMs > wm) {
      // Closed, within the horizon: amend the minute (or count a minute never seen before).
      if (cur === undefined) cur = newPendingSlot(state, curStart);
      if (cur.ids.add(e.eventId)) {
        cur.counts.add(e);
        amended++;
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
  observeSource(w, origin.source, { ...origin, maxEventTimeMs }, nowMs);

  const corrections: ClosedMinute[] = [];
  if (dirty !== null) {
    dirty.sort(byStart);
    for (const slot of dirty) {
      slot.dirty = false;
      slot.version++;
      corrections.push(toClosedMinute(state, slot));
    }
  }
  return { accepted, amended, duplicates, late, lateReason, corrections, routed };
}

function purge(state: AggregatorState, slot: Slot): void {
  const start = slot.counts.startMs;
  state.dedupe.forget(start);
  if (slot.counts.endMs > state.purgedThroughMs) {
    state.purgedThroughMs = slot.counts.endMs;
    if (state.hot.byAd.size > 0) {
      purgeEpochMinutes(state.hot, shardPurgeBoundMs(state), WINDOW_SIZE_MS);
    }
  }
}

/**
 * What shards may forget: minutes ending at or before it. The purge bound, held back before
 * any minute still waiting for a barrier (a re-merge of an old minute outlives its horizon).
 */
export function shardPurgeBoundMs(state: AggregatorState): number {
  let bound = state.purgedThroughMs;
  for (const slot of state.awaiting.values()) bound = Math.min(bound, slot.counts.startMs);
  for (const slot of state.retained.values()) {
    if (slot.awaiting) bound = Math.min(bound, slot.counts.startMs);
  }
  return bound;
}

/** Emits a slot for the first time (version 1), then keeps it for amendments or purges it. */
function emitFirst(state: AggregatorState, slot: Slot, wm: number): ClosedMinute {
  slot.version = 1;
  const minute = toClosedMinute(state, slot);
  if (
    state.options.latePolicy === "amend" &&
    slot.counts.endMs + state.options.amendHorizonMs > wm
  ) {
    // Kept for amendments, which are rare: its growth slack goes.
    slot.counts.compact();
    slot.ids.compact();
    state.retained.set(slot.counts.startMs, slot);
  } else purge(state, slot);
  return minute;
}

/**
 * Settles the watermark at processing time `nowMs`, then emits every minute it has closed and
 * that was not emitted yet, ascending by minute, and purges state no longer needed (under
 * "drop" at once, under "amend" once the minute leaves the horizon).
 */
export function advance(state: AggregatorState, nowMs: number): ClosedMinute[] {
  settleWatermark(state, nowMs);
  const wm = state.watermark.watermarkMs;
  const horizonMs = state.options.amendHorizonMs;
  const amend = state.options.latePolicy === "amend";

  const closing: Slot[] = [];
  for (const slot of state.pending.values()) {
    if (slot.counts.endMs <= wm) closing.push(slot);
  }
  closing.sort(byStart);
  const out: ClosedMinute[] = [];
  for (const slot of closing) {
    const start = slot.counts.startMs;
    state.pending.delete(start);
    if (state.hot.byAd.size > 0 && epochsRoutedIn(state.hot, start).length > 0) {
      // Hot shards hold part of it: emitted at its barrier, merged with their partials.
      slot.episodes = 1;
      slot.awaiting = true;
      state.awaiting.set(start, slot);
      state.barrierRequests.push({ minuteStartMs: start, episode: 1 });
      continue;
    }
    out.push(emitFirst(state, slot, wm));
  }
  for (const [start, slot] of state.retained) {
    if (slot.awaiting) continue; // purged after its re-merge
    if (!amend || slot.counts.endMs + horizonMs <= wm) {
      state.retained.delete(start);
      purge(state, slot);
    }
  }
  return out;
}

/** Barriers to publish since the last call, in the order they were asked for. */
export function takeBarrierRequests(state: AggregatorState): BarrierRequest[] {
  const out = state.barrierRequests;
  state.barrierRequests = [];
  return out;
}

/** The slot waiting for this barrier, or undefined (a stale or foreign barrier). */
function awaitingSlot(state: AggregatorState, minuteStartMs: number, episode: number) {
  const slot = state.awaiting.get(minuteStartMs) ?? state.retained.get(minuteStartMs);
  return slot?.awaiting && slot.episodes === episode ? slot : undefined;
}

/**
 * The partials a barrier read back at this point needs, as `[epoch, shard]` pairs: every
 * shard of every epoch routed clicks of the minute so far. Empty when the barrier is not one
 * this state waits for (stale, repeated after a crash, or already merged): skip it.
 */
export function barrierWants(
  state: AggregatorState,
  minuteStartMs: number,
  episode: number,
): [epoch: number, shard: number][] {
  if (!awaitingSlot(state, minuteStartMs, episode)) return [];
  const wants: [number, number][] = [];
  for (const e of epochsRoutedIn(state.hot, minuteStartMs)) {
    for (let k = 0; k < e.shards; k++) wants.push([e.id, k]);
  }
  return wants;
}

/** The key of a shard's partial in a slot: `<epoch>.<shard>`. */
export const partKey = (epoch: number, shard: number) => `${epoch}.${shard}`;

/**
 * Merges the partials asked for by {@link barrierWants} (keyed by {@link partKey}) into the
 * minute at its barrier. A first merge emits the minute
 * (version 1); a re-merge emits a new revision only if a partial changed (shards' counts only
 * grow). Returns the emission, or null (nothing changed, or not a barrier this state waits for).
 */
export function mergeAtBarrier(
  state: AggregatorState,
  minuteStartMs: number,
  episode: number,
  partials: ReadonlyMap<string, PartialCounts>,
): ClosedMinute | null {
  const slot = awaitingSlot(state, minuteStartMs, episode);
  if (!slot) return null;
  slot.awaiting = false;
  let changed = slot.version === 0;
  const parts = slot.parts ?? new Map<string, PartialCounts>();
  for (const [key, p] of partials) {
    if ((parts.get(key)?.eventCount ?? -1) !== p.eventCount) changed = true;
    parts.set(key, p);
  }
  slot.parts = parts;
  const wm = state.watermark.watermarkMs;
  if (slot.version === 0) {
    state.awaiting.delete(minuteStartMs);
    return emitFirst(state, slot, wm);
  }
  if (changed) slot.version++;
  const minute = changed ? toClosedMinute(state, slot) : null;
  if (
    state.options.latePolicy !== "amend" ||
    slot.counts.endMs + state.options.amendHorizonMs <= wm
  ) {
    state.retained.delete(minuteStartMs);
    purge(state, slot);
  }
  return minute;
}

/** Minutes the aggregator holds a count of the ad in (what a split of the ad excludes). */
export function minutesHolding(state: AggregatorState, adId: string): number[] {
  const out: number[] = [];
  for (const map of [state.pending, state.awaiting, state.retained]) {
    for (const [start, slot] of map) if (slot.counts.adCount(adId) > 0) out.push(start);
  }
  return out.sort((a, b) => a - b);
}

/**
 * Minutes not emitted yet (open, or closed with emission pending), ascending. The arrays
 * are shared between calls while a minute's counts do not change: treat them as read-only.
 */
export function openMinutes(state: AggregatorState): LiveMinute[] {
  const slots = [...state.pending.values(), ...state.awaiting.values()].sort(byStart);
  const wm = state.watermark.watermarkMs;
  return slots.map((slot) => {
    if (slot.live?.eventCount !== slot.counts.eventCount) {
      const sorted = slot.counts.sortedAds();
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

/** The current watermark (-Infinity before anything is known). */
export function watermarkOf(state: AggregatorState): number {
  return state.watermark.watermarkMs;
}

/** The watermark, how complete it is, and the lagging sources (see watermark.ts). */
export function completeness(state: AggregatorState): Completeness {
  return completenessOf(state.watermark);
}

/** The source holding the partition's watermark back now (the slowest active one), or null. */
export function holdingSource(state: AggregatorState): SourceBehind | null {
  return holderOf(state.watermark);
}

/** One source as this partition sees it. */
export interface SourceView {
  source: string;
  /** Event time its clicks and marks reached here (null: nothing yet). */
  progressMs: number | null;
  standing: SourceStanding;
  /** Processing time (stream timestamp) it was last heard from here. */
  lastSeenMs: number;
}

/** Every source this partition knows, slowest first. */
export function sourcesOf(state: AggregatorState): SourceView[] {
  const w = state.watermark;
  return [...w.sources.values()]
    .map((s) => ({
      source: s.id,
      progressMs: Number.isFinite(s.progressMs) ? s.progressMs : null,
      standing: standingOf(w, s),
      lastSeenMs: s.lastSeenMs,
    }))
    .sort(
      (a, b) =>
        (a.progressMs ?? Number.NEGATIVE_INFINITY) - (b.progressMs ?? Number.NEGATIVE_INFINITY) ||
        (a.source < b.source ? -1 : 1),
    );
}

/**
 * Processing time at which a source going idle could close minutes, or null if none would;
 * a runtime calls {@link advance} then (one timer, no polling).
 */
export function nextIdleDeadlineMs(state: AggregatorState): number | null {
  return idleDeadlineMs(state.watermark);
}

// ---------------------------------------------------------------------------------------
// Snapshot / restore

/**
 * 3: source-aware watermark (sources and processing time in `watermark`), `purgedThroughMs`,
 * options `maxHoldMs`, `maxOpenMinutes`, `amendHorizonMs` and policy `"amend"`. An older build
 * would misread it, so it must refuse it. This build restores formats 1 and 2 (ids as strings;
 * 16-byte id keys), whose single watermark becomes one anonymous source.
 */
export const AGGREGATOR_SNAPSHOT_FORMAT_VERSION = 3;
/**
 * 4: format 3 plus hot ads' state (epochs, partials, minutes waiting for a barrier). Written
 * only when that state exists, so a deployment that never split an ad can still roll back.
 */
export const AGGREGATOR_SNAPSHOT_FORMAT_HOT = 4;
const READABLE_SNAPSHOT_FORMATS: readonly number[] = [1, 2, 3, 4];

/** One minute in a snapshot: its counts, emission version and remembered ids. */
export interface MinuteSnapshot extends MinuteCountsSnapshot {
  /** 0 = not emitted yet (pending); ≥ 1 = emitted and retained for amendments. */
  version: number;
  /** Ids kept as strings: those without a 16-byte form (all of them in older snapshots). */
  ids: string[];
  /** The other ids, as the dedupe set's exact 16-byte keys in base64 (see dedupe.ts). */
  idKeys?: string;
  /** Hot shards' latest partials, by `<epoch>.<shard>` (absent: none). */
  parts?: [key: string, counts: PartialCounts][];
  /** Barriers asked for the minute (absent: 0). */
  episodes?: number;
  /** Waiting for the barrier of episode `episodes` (absent: false). */
  awaiting?: boolean;
}

/** The options a snapshot was taken with (formats 1 and 2 had policy "correct" and minutes). */
export interface SnapshotOptions {
  partition: number;
  allowedLatenessMs: number;
  idleTimeoutMs: number;
  maxHoldMs?: number;
  maxOpenMinutes?: number;
  dimensions: Dimension[];
  topK: number;
  latePolicy: LatePolicy | "correct";
  amendHorizonMs?: number;
  retainClosedMinutes?: number;
}

/**
 * The whole operator state as plain data (JSON and msgpack safe: no Map, Set, Infinity or
 * undefined).
 */
export interface AggregatorSnapshot {
  /** {@link AGGREGATOR_SNAPSHOT_FORMAT_VERSION} when written. */
  formatVersion: number;
  options: SnapshotOptions;
  watermark: WatermarkSnapshot;
  /** Pending and retained minutes, ascending by start. */
  minutes: MinuteSnapshot[];
  /** See {@link AggregatorState.purgedThroughMs}; absent before format 3. */
  purgedThroughMs?: number | null;
  /** Hot ads' epochs (absent: none, as in snapshots of older builds). */
  hot?: HotEpochsSnapshot;
}

/**
 * Captures the state between calls. The result shares nothing mutable with the state, so
 * it can be encoded asynchronously while the operator goes on.
 */
export function snapshotAggregator(state: AggregatorState): AggregatorSnapshot {
  const slots = [
    ...state.pending.values(),
    ...state.awaiting.values(),
    ...state.retained.values(),
  ].sort(byStart);
  const o = state.options;
  const hot =
    state.hot.nextId > 1 || slots.some((slot) => slot.episodes > 0 || slot.parts !== undefined);
  return {
    formatVersion: hot ? AGGREGATOR_SNAPSHOT_FORMAT_HOT : AGGREGATOR_SNAPSHOT_FORMAT_VERSION,
    options: {
      partition: o.partition,
      allowedLatenessMs: o.allowedLatenessMs,
      idleTimeoutMs: o.idleTimeoutMs,
      maxHoldMs: o.maxHoldMs,
      maxOpenMinutes: o.maxOpenMinutes,
      dimensions: [...o.dimensions],
      topK: o.topK,
      latePolicy: o.latePolicy,
      amendHorizonMs: o.amendHorizonMs,
    },
    watermark: snapshotWatermark(state.watermark),
    purgedThroughMs: Number.isFinite(state.purgedThroughMs) ? state.purgedThroughMs : null,
    minutes: slots.map((slot) => {
      const ids = slot.ids.toCompact();
      return {
        ...slot.counts.toSnapshot(),
        version: slot.version,
        ids: ids.long,
        ...(ids.keys ? { idKeys: ids.keys } : {}),
        ...(slot.parts && slot.parts.size > 0 ? { parts: [...slot.parts] } : {}),
        ...(slot.episodes > 0 ? { episodes: slot.episodes } : {}),
        ...(slot.awaiting ? { awaiting: true } : {}),
      };
    }),
    ...(hot ? { hot: snapshotHotEpochs(state.hot) } : {}),
  };
}

/** A setting whose configured value differs from the one a snapshot was taken with. */
export interface OptionChange {
  option: keyof ResolvedAggregatorOptions;
  stored: unknown;
  configured: unknown;
}

/** The options a snapshot was taken with, in this build's terms (older formats mapped). */
function storedOptions(snap: AggregatorSnapshot): ResolvedAggregatorOptions {
  const o = snap.options;
  const policy: LatePolicy = o.latePolicy === "correct" ? "amend" : o.latePolicy;
  return {
    partition: o.partition,
    allowedLatenessMs: o.allowedLatenessMs,
    idleTimeoutMs: o.idleTimeoutMs,
    maxHoldMs: o.maxHoldMs ?? DEFAULT_MAX_HOLD_MS,
    maxOpenMinutes: o.maxOpenMinutes ?? DEFAULT_MAX_OPEN_MINUTES,
    dimensions: o.dimensions,
    topK: o.topK,
    latePolicy: policy,
    amendHorizonMs:
      o.amendHorizonMs ??
      (o.retainClosedMinutes !== undefined
        ? o.retainClosedMinutes * WINDOW_SIZE_MS
        : DEFAULT_AMEND_HORIZON_MS),
  };
}

const sameDimensions = (a: readonly Dimension[], b: readonly Dimension[]) =>
  a.length === b.length && a.every((d) => b.includes(d));

/**
 * Checks a snapshot against the configured options: the configuration wins. Every setting
 * is applied to the restored state (the returned changes say which differ) except the
 * dimensions while the snapshot holds minutes — they were counted without the new ones — which
 * is refused. `settingName` maps an option to the name users set (an environment variable).
 *
 * @throws ConfigError naming the setting, its stored and configured values, and how to migrate.
 * @throws AdclickError (INTERNAL) for an unreadable format or another partition's snapshot.
 */
export function checkRestorable(
  snap: AggregatorSnapshot,
  configured: AggregatorOptions,
  settingName: (option: keyof ResolvedAggregatorOptions) => string = (o) => o,
): OptionChange[] {
  if (!READABLE_SNAPSHOT_FORMATS.includes(snap?.formatVersion)) {
    throw new AdclickError(
      "INTERNAL",
      `aggregator snapshot formatVersion ${String(snap?.formatVersion)} is not supported (expected one of ${READABLE_SNAPSHOT_FORMATS.join(", ")})`,
    );
  }
  const want = resolveOptions(configured);
  const had = storedOptions(snap);
  if (had.partition !== want.partition) {
    throw new AdclickError(
      "INTERNAL",
      `the snapshot is partition ${had.partition}'s, not partition ${want.partition}'s`,
    );
  }
  if (!sameDimensions(had.dimensions, want.dimensions) && snap.minutes.length > 0) {
    const setting = settingName("dimensions");
    throw new ConfigError(
      setting,
      `partition ${want.partition}'s aggregator state counts "${had.dimensions.join(",")}" but the configuration says "${want.dimensions.join(",")}", ` +
        `and ${snap.minutes.length} open or amendable minute(s) were counted without the new value. Start with ${setting}=${had.dimensions.join(",")}; ` +
        `to change it, stop the input, wait until every minute is closed and past the amendment horizon (or restart once with the old value and ${settingName("amendHorizonMs")}=0), ` +
        "then restart with the new value (earlier minutes get the new dimension's counts from `adclick replay --apply`)",
    );
  }
  const changes: OptionChange[] = [];
  for (const option of [
    "allowedLatenessMs",
    "idleTimeoutMs",
    "maxHoldMs",
    "maxOpenMinutes",
    "dimensions",
    "topK",
    "latePolicy",
    "amendHorizonMs",
  ] as const) {
    const a = had[option];
    const b = want[option];
    const same =
      option === "dimensions"
        ? sameDimensions(a as Dimension[], b as Dimension[])
        : (a as unknown) === (b as unknown);
    if (!same) changes.push({ option, stored: a, configured: b });
  }
  return changes;
}

/**
 * Rebuilds an operator from a snapshot with the configured options (see
 * {@link checkRestorable}, which it calls). A snapshot of format 1 or 2 had one watermark
 * for the partition: it becomes one anonymous source at that progress, heard from at
 * `lastEventAtMs` (its processing time of last arrival, kept by the runtime).
 */
export function restoreAggregator(
  snap: AggregatorSnapshot,
  configured: AggregatorOptions,
  lastEventAtMs: number | null = null,
): AggregatorState {
  checkRestorable(snap, configured);
  const options = resolveOptions(configured);
  const wsnap: WatermarkSnapshot = { ...snap.watermark };
  if (snap.formatVersion < 3 && snap.watermark.maxEventTimeMs !== null) {
    wsnap.sources = [
      {
        id: ANONYMOUS_SOURCE,
        progressMs: snap.watermark.maxEventTimeMs,
        lastSeenMs: lastEventAtMs,
        ended: false,
        caughtUp: false,
      },
    ];
    wsnap.nowMs = lastEventAtMs;
  }
  const state = newState(
    options,
    restoreWatermark(watermarkOptions(options), wsnap),
    restoreHotEpochs(snap.hot),
  );
  if (snap.purgedThroughMs != null) state.purgedThroughMs = snap.purgedThroughMs;
  else if (snap.formatVersion < 3 && snap.watermark.watermarkMs !== null) {
    // Older builds purged emitted minutes without recording it: every closed minute not
    // in the snapshot may have been.
    const retained = snap.minutes.filter((m) => m.version > 0).map((m) => m.startMs);
    const oldest = retained.length > 0 ? Math.min(...retained) : Number.POSITIVE_INFINITY;
    state.purgedThroughMs = Math.min(
      Math.floor(snap.watermark.watermarkMs / WINDOW_SIZE_MS) * WINDOW_SIZE_MS,
      oldest,
    );
  }
  const stored = storedOptions(snap);
  for (const m of snap.minutes) {
    const ids = state.dedupe.idsFor(m.startMs);
    if (m.idKeys) ids.addCompact({ keys: m.idKeys, long: [] });
    for (const id of m.ids) ids.add(id);
    const slot: Slot = {
      // Counted with the stored dimensions (equal to the configured ones: see checkRestorable).
      counts: MinuteState.fromSnapshot(m, WINDOW_SIZE_MS, stored.dimensions),
      ids,
      version: m.version,
      dirty: false,
      episodes: m.episodes ?? 0,
      awaiting: m.awaiting ?? false,
      ...(m.parts ? { parts: new Map(m.parts) } : {}),
    };
    if (m.version > 0) {
      slot.counts.compact();
      ids.compact();
    }
    const into = m.version > 0 ? state.retained : slot.awaiting ? state.awaiting : state.pending;
    into.set(m.startMs, slot);
  }
  return state;
}
