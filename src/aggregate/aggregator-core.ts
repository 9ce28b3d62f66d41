import { SUBJECTS } from "../../nats/layout.js";
import { ONE_MINUTE_MS } from "../model.js";
import {
  answerLive,
  type LiveMinuteView,
  type LiveReply,
  type LiveRequest,
} from "../query/live.js";

export type { LiveMinuteView };

import { closeEpoch, liveEpochs, openEpoch, openEpochOf, snapshotEpoch } from "../hot/epochs.js";
import {
  createHotDetector,
  type HotDecision,
  type HotDetectorOptions,
  type HotDetectorSnapshot,
  type HotDetectorState,
  hotView,
  observeMessage,
  observeTime,
  restoreHotDetector,
  snapshotHotDetector,
} from "../hot/hot-detector.js";
import { mergePartials, type PartialCounts } from "../windows/merge-partials.js";
import {
  type AggregatorOptions,
  type AggregatorSnapshot,
  type AggregatorState,
  advance,
  barrierWants,
  checkRestorable,
  completeness,
  createAggregatorState,
  holdingSource,
  ingest,
  mergeAtBarrier,
  minutesHolding,
  nextIdleDeadlineMs,
  type OptionChange,
  openMinutes,
  restoreAggregator,
  type SourceView,
  shardPurgeBoundMs,
  snapshotAggregator,
  sourcesOf,
  takeBarrierRequests,
} from "../windows/partition-aggregator.js";
import { topK } from "../windows/topk.js";
import { maxProgressOf } from "../windows/watermark.js";
import {
  encodeAggregate,
  LATE_CLICKS_SEQ_HEADER,
  LATE_REASON_HEADER,
  lateMsgId,
  type MinuteRevision,
  minuteMsgId,
  progressMsgId,
  TICK_HEADER,
  tickMsgId,
} from "../wire/aggregate-messages.js";
import { type ClickMessage, decodeClickMessage, encodeBatch } from "../wire/batch-codec.js";
import {
  barrierMsgId,
  decodeHotControl,
  encodeHotControl,
  HOT_TICK,
  type HotControl,
  mergeMsgId,
} from "../wire/hot-messages.js";

/**
 * The aggregator of one partition as pure state and pure steps: a batch of the partition's
 * messages (clicks.<p> and the sources' progress marks, in stream order) goes in, the
 * publications it makes come out — closed minutes, amendments, late clicks, progress with
 * completeness — with deterministic message IDs. No I/O and no clock: processing time is the
 * stream timestamp of each message, so a restore from a snapshot (state + last sequence)
 * followed by a replay makes exactly the same publications under the same IDs (JetStream drops
 * them as duplicates, the sink upserts the same values). The aggregator actor
 * (actors/aggregator.ts) owns one of these and performs the effects.
 */

/** A message of the partition's input as the core needs it (the consumer maps JetStream's). */
export interface StreamMessage {
  seq: number;
  /** The stream's stored timestamp: the same on every replay of the message. */
  timestampMs: number;
  /** An idle tick or hot control message the aggregator published into its own partition (no clicks). */
  tick: boolean;
  /** A hot control message (`data` is a HotControl: src/wire/hot-messages.ts). */
  hot?: boolean;
  data: Uint8Array;
}

/** Something to publish, in order, before the batch counts as done. */
export interface Publication {
  subject: string;
  msgId: string;
  payload: Uint8Array;
  events: number;
  headers?: Record<string, string>;
}

export interface AggregatorStatus {
  partition: number;
  lastSeq: number;
  watermarkMs: number;
  closedThroughMs: number;
  /** Every minute ending at or before this is complete: no active source is behind it. */
  completeThroughMs: number;
  events: number;
  duplicates: number;
  amended: number;
  late: number;
  minutesEmitted: number;
  amendments: number;
  lastSnapshotAtMs: number;
  snapshotBytes: number;
  /** Every source this partition knows, slowest first. */
  sources: SourceView[];
  /** The most advanced event time any click or source reached here. */
  maxProgressMs: number;
  /** Event time the watermark is held behind the most advanced source, now, and by which. */
  heldMs: number;
  heldBy: { source: string; progressMs: number } | null;
  /** Holds so far (a slower source holding the watermark back), and the longest (stream time). */
  holds: number;
  longestHoldMs: number;
  /** Settings the configuration changed against the restored snapshot (applied). */
  configChanges: OptionChange[];
  /** Hot ads' clicks left to their shards so far. */
  routed: number;
  /** Hot ads: the detector's view and the live epochs (what `adclick admin actors` shows). */
  hot?: HotStatus;
}

export interface HotStatus {
  ads: { adId: string; shards: number; ratePerSec: number; share: number }[];
  epochs: {
    epoch: number;
    adId: string;
    shards: number;
    startSeq: number;
    merged: boolean;
    minutes: number;
  }[];
  /** Partition rate (clicks/s of stream time) over the detection period. */
  ratePerSec: number;
  splits: number;
  merges: number;
  /** Minutes waiting for a barrier now. */
  awaiting: number;
}

/** What an aggregator snapshot holds besides the operator state. */
export interface AggregatorSnapshotState {
  agg: AggregatorSnapshot;
  /** Processing time of the last message read (stream timestamps: part of the replayable log). */
  lastEventAtMs: number | null;
  closedThroughMs: number;
  /** The last progress report's key (see reportProgress); absent in older snapshots. */
  reportedKey?: string;
  /** The hot-ad detector (absent: none yet, or splitting off). */
  hotDetector?: HotDetectorSnapshot;
  /** Splits and merges so far. */
  hotCounts?: { splits: number; merges: number };
}

export interface AggregatorCore {
  partition: number;
  state: AggregatorState;
  status: AggregatorStatus;
  /** The last progress report's content, so an unchanged one is not sent again. */
  reportedKey: string;
  /** Stream time the current hold started (null: not held). */
  holdStartedAtMs: number | null;
  /** Emitted minutes the store may not have yet (see liveMinutes), with their positions. */
  recentlyEmitted: Map<number, MinuteRevision & { throughSeq: number }>;
  /** Detects hot ads and decides splits and merges (undefined: splitting is off). */
  hotDetector?: HotDetectorState;
  hotCounts: { splits: number; merges: number };
  /** Scratch: one message's clicks per ad, for the detector. */
  readonly adScratch: Map<string, number>;
}

/** What a batch did, besides its publications: for metrics and logs. */
export interface BatchOutcome {
  publications: Publication[];
  counted: number;
  duplicates: number;
  amended: number;
  lateHorizon: number;
  lateDropped: number;
  /** Minutes emitted, first emissions and amendments. */
  emitted: { minuteStartMs: number; kind: "closed" | "correction" }[];
  /** Holds that ended in this batch, their lengths in stream time. */
  holdsEndedMs: number[];
  /** Hot ads' clicks left to their shards. */
  routed: number;
  /** Splits and merges made in this batch. */
  hotChanges: HotChange[];
  /**
   * The batch stopped at a barrier of ours: the partials it wants must be fetched and given to
   * {@link resumeAtBarrier}, then `rest` stepped.
   */
  stop?: BarrierStop;
}

export type HotChange =
  | { kind: "split"; adId: string; epoch: number; shards: number; atSeq: number }
  | { kind: "merge"; adId: string; epoch: number; atSeq: number };

export interface BarrierStop {
  minuteStartMs: number;
  episode: number;
  /** The barrier's stream sequence: the partials are "as of" it. */
  seq: number;
  timestampMs: number;
  wants: [epoch: number, shard: number][];
  rest: StreamMessage[];
}

const RECENT_MINUTES_KEPT = 10;

export function aggregatorSnapshotKey(partition: number): string {
  return `agg.${partition}`;
}

function emptyStatus(partition: number): AggregatorStatus {
  return {
    partition,
    lastSeq: 0,
    watermarkMs: Number.NEGATIVE_INFINITY,
    closedThroughMs: Number.NEGATIVE_INFINITY,
    completeThroughMs: Number.NEGATIVE_INFINITY,
    events: 0,
    duplicates: 0,
    amended: 0,
    late: 0,
    minutesEmitted: 0,
    amendments: 0,
    lastSnapshotAtMs: 0,
    snapshotBytes: 0,
    sources: [],
    maxProgressMs: Number.NEGATIVE_INFINITY,
    heldMs: 0,
    heldBy: null,
    holds: 0,
    longestHoldMs: 0,
    configChanges: [],
    routed: 0,
  };
}

/**
 * A core from its saved snapshot (or a fresh one). The configuration is authoritative: what
 * it changed against the snapshot is applied and listed in `status.configChanges`.
 */
export function restoreCore(
  options: AggregatorOptions,
  stored?: { state: AggregatorSnapshotState; streamSeq: number; takenAtMs: number },
  /** Hot-ad splitting: its settings, or null for off. Off under late policy "drop". */
  hot: HotDetectorOptions | null = null,
): AggregatorCore {
  const core: AggregatorCore = {
    partition: options.partition,
    state: createAggregatorState(options),
    status: emptyStatus(options.partition),
    reportedKey: "",
    holdStartedAtMs: null,
    recentlyEmitted: new Map(),
    hotCounts: { splits: 0, merges: 0 },
    adScratch: new Map(),
  };
  // Under "drop" a shard cannot know which of its clicks the aggregator would drop as late.
  const splitting = hot !== null && core.state.options.latePolicy === "amend";
  if (splitting) core.hotDetector = createHotDetector(hot);
  if (stored) {
    const s = stored.state;
    core.state = restoreAggregator(s.agg, options, s.lastEventAtMs);
    core.status.configChanges = checkRestorable(s.agg, options);
    core.status.closedThroughMs = s.closedThroughMs;
    core.status.lastSeq = stored.streamSeq;
    core.status.lastSnapshotAtMs = stored.takenAtMs;
    core.reportedKey = s.reportedKey ?? "";
    if (splitting && s.hotDetector) core.hotDetector = restoreHotDetector(s.hotDetector, hot);
    if (s.hotCounts) core.hotCounts = { ...s.hotCounts };
  }
  refreshStatus(core);
  return core;
}

/** The state to save with the position `core.status.lastSeq`. */
export function snapshotStateOf(core: AggregatorCore): AggregatorSnapshotState {
  const nowMs = core.state.watermark.nowMs;
  return {
    agg: snapshotAggregator(core.state),
    lastEventAtMs: Number.isFinite(nowMs) ? nowMs : null,
    closedThroughMs: core.status.closedThroughMs,
    reportedKey: core.reportedKey,
    ...(core.hotDetector ? { hotDetector: snapshotHotDetector(core.hotDetector) } : {}),
    ...(core.hotCounts.splits > 0 ? { hotCounts: { ...core.hotCounts } } : {}),
  };
}

function decode(data: Uint8Array): ClickMessage | undefined {
  try {
    return decodeClickMessage(data);
  } catch {
    return undefined; // poison: the raw writer terminates it; nothing to count here
  }
}

/**
 * Processes one batch in stream order. Amendments of a minute within one batch are
 * coalesced: only its newest revision is published. The version counter is part of the
 * state (one increment per message that changed the minute), so the newest revision's
 * content and position are the same however a replay happens to batch the messages.
 */
export function newOutcome(): BatchOutcome {
  return {
    publications: [],
    counted: 0,
    duplicates: 0,
    amended: 0,
    lateHorizon: 0,
    lateDropped: 0,
    emitted: [],
    holdsEndedMs: [],
    routed: 0,
    hotChanges: [],
  };
}

export function stepBatch(
  core: AggregatorCore,
  msgs: readonly StreamMessage[],
  out: BatchOutcome = newOutcome(),
): BatchOutcome {
  out.stop = undefined;
  const p = core.partition;
  const corrections = new Map<number, MinuteRevision & { throughSeq: number }>();
  for (let i = 0; i < msgs.length; i++) {
    const m = msgs[i] as StreamMessage;
    const nowMs = m.timestampMs;
    if (m.hot) {
      const control = decodeControl(m.data);
      if (control?.kind === "barrier") {
        const wants = barrierWants(core.state, control.minuteStartMs, control.episode);
        if (wants.length > 0) {
          emitCorrections(core, out, corrections);
          out.stop = {
            minuteStartMs: control.minuteStartMs,
            episode: control.episode,
            seq: m.seq,
            timestampMs: nowMs,
            wants,
            rest: msgs.slice(i + 1),
          };
          refreshStatus(core);
          return out;
        }
      }
      afterMessage(core, out, m.seq, nowMs);
      continue;
    }
    const message = m.tick ? undefined : decode(m.data);
    if (message) {
      const r = ingest(core.state, message.events, nowMs, message);
      core.status.events += r.accepted + r.amended;
      core.status.duplicates += r.duplicates;
      core.status.amended += r.amended;
      core.status.late += r.late.length;
      out.counted += r.accepted;
      out.duplicates += r.duplicates;
      out.amended += r.amended;
      if (r.lateReason === "drop") out.lateDropped += r.late.length;
      else out.lateHorizon += r.late.length;
      if (r.late.length > 0) {
        out.publications.push({
          subject: SUBJECTS.late(p),
          msgId: lateMsgId(p, m.seq),
          payload: encodeBatch(r.late),
          events: r.late.length,
          headers: {
            [LATE_REASON_HEADER]: r.lateReason,
            [LATE_CLICKS_SEQ_HEADER]: String(m.seq),
          },
        });
      }
      for (const c of r.corrections) corrections.set(c.minuteStartMs, { ...c, throughSeq: m.seq });
      out.routed += r.routed;
      core.status.routed += r.routed;
      if (core.hotDetector) observeHot(core, out, message.events, m.seq, nowMs);
    }
    afterMessage(core, out, m.seq, nowMs);
  }
  emitCorrections(core, out, corrections);
  refreshStatus(core);
  return out;
}

/** One click in this many is offered to the hot-ad detector (see observeHot). */
const HOT_SAMPLE_STRIDE = 8;

/** The detector sees a message's clicks; its decisions take effect from the next message. */
function observeHot(
  core: AggregatorCore,
  out: BatchOutcome,
  events: readonly { adId: string }[],
  seq: number,
  nowMs: number,
): void {
  const counts = core.adScratch;
  counts.clear();
  // Every HOT_SAMPLE_STRIDE-th click stands for the stride before it (the last one for the
  // rest): the message's total stays exact, an ad's weight is estimated. Hotness is judged on
  // thousands of clicks a period, so the sample loses nothing that matters, and it is a pure
  // function of the message (a replay samples the same clicks).
  const n = events.length;
  for (let i = 0; i < n; i += HOT_SAMPLE_STRIDE) {
    const ad = (events[i] as { adId: string }).adId;
    const w = Math.min(HOT_SAMPLE_STRIDE, n - i);
    counts.set(ad, (counts.get(ad) ?? 0) + w);
  }
  const decisions = observeMessage(core.hotDetector as HotDetectorState, counts, nowMs);
  counts.clear();
  applyHotDecisions(core, out, decisions, seq);
}

function applyHotDecisions(
  core: AggregatorCore,
  out: BatchOutcome,
  decisions: readonly HotDecision[],
  seq: number,
): void {
  for (const d of decisions) {
    if (d.kind === "split") {
      if (openEpochOf(core.state.hot, d.adId) !== null) continue; // split already
      const e = openEpoch(
        core.state.hot,
        d.adId,
        d.shards,
        seq + 1,
        minutesHolding(core.state, d.adId),
      );
      core.hotCounts.splits++;
      out.hotChanges.push({
        kind: "split",
        adId: d.adId,
        epoch: e.id,
        shards: e.shards,
        atSeq: seq,
      });
    } else {
      mergeBack(core, out, d.adId, seq);
    }
  }
}

/** Merges an ad back at `seq`: its epoch keeps the minutes it was routed; its shards are told. */
function mergeBack(core: AggregatorCore, out: BatchOutcome, adId: string, seq: number): void {
  const e = closeEpoch(core.state.hot, adId, seq);
  if (!e) return;
  core.hotCounts.merges++;
  out.hotChanges.push({ kind: "merge", adId, epoch: e.id, atSeq: seq });
  out.publications.push(
    hotControlPublication(core.partition, mergeMsgId(core.partition, e.id), {
      kind: "merge",
      epoch: e.id,
      routed: snapshotEpoch(e).routed,
    }),
  );
}

/** What every message ends with: closes, barriers asked for, progress, holds, position. */
function afterMessage(core: AggregatorCore, out: BatchOutcome, seq: number, nowMs: number): void {
  if (core.hotDetector) applyHotDecisions(core, out, observeTime(core.hotDetector, nowMs), seq);
  else if (core.state.hot.byAd.size > 0) {
    // Splitting was turned off with ads split (a restart with other settings): merge them back.
    for (const e of liveEpochs(core.state.hot)) {
      if (e.closedAtSeq === null) mergeBack(core, out, e.adId, seq);
    }
  }
  for (const c of advance(core.state, nowMs)) emit(core, out, { ...c, throughSeq: seq }, "closed");
  for (const b of takeBarrierRequests(core.state)) {
    const control: HotControl = {
      kind: "barrier",
      minuteStartMs: b.minuteStartMs,
      episode: b.episode,
      purgedThroughMs: finiteOrNull(shardPurgeBoundMs(core.state)),
    };
    out.publications.push(
      hotControlPublication(
        core.partition,
        barrierMsgId(core.partition, b.minuteStartMs, b.episode),
        control,
      ),
    );
  }
  reportProgress(core, out, seq);
  trackHold(core, out, nowMs);
  core.status.lastSeq = seq;
}

function emitCorrections(
  core: AggregatorCore,
  out: BatchOutcome,
  corrections: Map<number, MinuteRevision & { throughSeq: number }>,
): void {
  for (const minute of [...corrections.keys()].sort((x, y) => x - y)) {
    emit(
      core,
      out,
      corrections.get(minute) as MinuteRevision & { throughSeq: number },
      "correction",
    );
  }
  corrections.clear();
}

/**
 * Finishes the barrier `out.stop` with the partials it wanted (keyed by `partKey(epoch,
 * shard)`): merges and emits its minute, then ends the barrier message like any other. The
 * caller then steps `stop.rest` with the same outcome.
 */
export function resumeAtBarrier(
  core: AggregatorCore,
  out: BatchOutcome,
  partials: ReadonlyMap<string, PartialCounts>,
): void {
  const stop = out.stop;
  if (!stop) return;
  out.stop = undefined;
  const minute = mergeAtBarrier(core.state, stop.minuteStartMs, stop.episode, partials);
  if (minute) {
    emit(
      core,
      out,
      { ...minute, throughSeq: stop.seq },
      minute.version === 1 ? "closed" : "correction",
    );
  }
  afterMessage(core, out, stop.seq, stop.timestampMs);
  refreshStatus(core);
}

const finiteOrNull = (x: number) => (Number.isFinite(x) ? x : null);

function decodeControl(data: Uint8Array): HotControl | undefined {
  try {
    return decodeHotControl(data);
  } catch {
    return undefined;
  }
}

function hotControlPublication(p: number, msgId: string, control: HotControl): Publication {
  return {
    subject: SUBJECTS.clicks(p),
    msgId,
    payload: encodeHotControl(control),
    events: 0,
    headers: { [TICK_HEADER]: HOT_TICK },
  };
}

function emit(
  core: AggregatorCore,
  out: BatchOutcome,
  c: MinuteRevision & { throughSeq: number },
  kind: "closed" | "correction",
): void {
  out.publications.push({
    subject: SUBJECTS.minuteAggregates(core.partition),
    msgId: minuteMsgId(core.partition, c.minuteStartMs, c.version),
    payload: encodeAggregate({ kind: "minute", ...c }),
    events: c.eventCount,
  });
  out.emitted.push({ minuteStartMs: c.minuteStartMs, kind });
  core.status.minutesEmitted++;
  if (kind === "correction") core.status.amendments++;
  core.recentlyEmitted.set(c.minuteStartMs, c);
  if (core.recentlyEmitted.size > RECENT_MINUTES_KEPT) {
    core.recentlyEmitted.delete(Math.min(...core.recentlyEmitted.keys()));
  }
}

/**
 * Tells the reducer and the store how far the partition is closed and complete, and which
 * sources are behind, whenever that changes (to the minute): "every minute ending at or
 * before closedThrough is closed here; every one ending at or before completeThrough has
 * every active source past it".
 */
function reportProgress(core: AggregatorCore, out: BatchOutcome, seq: number): void {
  const c = completeness(core.state);
  if (!Number.isFinite(c.watermarkMs)) return;
  // To the minute: a report per minute a watermark or a lagging source moves, not per click.
  const toMinute = (t: number) =>
    Number.isFinite(t) ? Math.floor(t / ONE_MINUTE_MS) * ONE_MINUTE_MS : null;
  // A closed minute waiting for its barrier is not stored yet: not closed to the readers.
  let closedThrough = toMinute(c.watermarkMs) as number;
  for (const start of core.state.awaiting.keys()) closedThrough = Math.min(closedThrough, start);
  // null: a lagging source has no progress at all, so no minute is complete.
  const completeThrough = toMinute(c.completeThroughMs);
  const behind = c.behind.map((b) => ({ source: b.source, progressMs: toMinute(b.progressMs) }));
  const key = `${closedThrough}|${completeThrough}|${behind.map((b) => `${b.source}@${b.progressMs}`).join(",")}`;
  if (key === core.reportedKey) return;
  core.reportedKey = key;
  core.status.closedThroughMs = closedThrough;
  out.publications.push({
    subject: SUBJECTS.minuteAggregates(core.partition),
    msgId: progressMsgId(core.partition, seq),
    payload: encodeAggregate({
      kind: "progress",
      partition: core.partition,
      closedThroughMs: closedThrough,
      completeThroughMs: completeThrough,
      behind,
      seq,
    }),
    events: 0,
  });
}

/** Event time the watermark is held behind the most advanced source (0: not held). */
function heldMs(core: AggregatorCore): number {
  const w = core.state.watermark;
  const max = maxProgressOf(w);
  if (!Number.isFinite(max) || !Number.isFinite(w.watermarkMs)) return 0;
  return Math.max(0, max - w.allowedLatenessMs - w.watermarkMs);
}

/** Starts or ends a hold episode at stream time `nowMs`. */
function trackHold(core: AggregatorCore, out: BatchOutcome, nowMs: number): void {
  const held = Number.isFinite(core.state.watermark.watermarkMs) && heldMs(core) > 0;
  if (held && core.holdStartedAtMs === null) {
    core.holdStartedAtMs = nowMs;
    core.status.holds++;
  } else if (!held && core.holdStartedAtMs !== null) {
    const ms = Math.max(0, nowMs - core.holdStartedAtMs);
    out.holdsEndedMs.push(ms);
    if (ms > core.status.longestHoldMs) core.status.longestHoldMs = ms;
    core.holdStartedAtMs = null;
  }
  if (core.holdStartedAtMs !== null) {
    const ms = nowMs - core.holdStartedAtMs;
    if (ms > core.status.longestHoldMs) core.status.longestHoldMs = ms;
  }
}

function refreshStatus(core: AggregatorCore): void {
  if (core.hotDetector) core.status.hot = hotStatus(core);
  const c = completeness(core.state);
  core.status.watermarkMs = c.watermarkMs;
  core.status.completeThroughMs = c.completeThroughMs;
  core.status.sources = sourcesOf(core.state);
  core.status.maxProgressMs = maxProgressOf(core.state.watermark);
  core.status.heldMs = heldMs(core);
  core.status.heldBy = holdingSource(core.state);
}

function hotStatus(core: AggregatorCore): HotStatus {
  const view = hotView(core.hotDetector as HotDetectorState, 0);
  return {
    ads: view.hot.map((h) => ({
      adId: h.adId,
      shards: h.shards,
      ratePerSec: h.ratePerSec,
      share: h.share,
    })),
    epochs: liveEpochs(core.state.hot).map((e) => ({
      epoch: e.id,
      adId: e.adId,
      shards: e.shards,
      startSeq: e.startSeq,
      merged: e.closedAtSeq !== null,
      minutes: e.routed.size,
    })),
    ratePerSec: view.totalRatePerSec,
    splits: core.hotCounts.splits,
    merges: core.hotCounts.merges,
    awaiting: core.state.awaiting.size,
  };
}

/**
 * The partition's minutes in [fromMs, toMs) that queries cannot read from the store yet:
 * open ones (counts so far) and the last few emitted ones (the aggregate writer may not have
 * stored them yet). Ascending by minute.
 */
export function liveMinutes(
  core: AggregatorCore,
  fromMs: number,
  toMs: number,
  shardLive: Iterable<ShardLive> = [],
): LiveMinuteView[] {
  const byMinute = new Map<number, LiveMinuteView>();
  for (const c of core.recentlyEmitted.values()) {
    if (c.minuteStartMs >= fromMs && c.minuteStartMs < toMs)
      byMinute.set(c.minuteStartMs, { ...c, closed: true });
  }
  let parts: Map<number, PartialCounts[]> | undefined;
  for (const m of openMinutes(core.state)) {
    if (m.minuteStartMs < fromMs || m.minuteStartMs >= toMs) continue;
    parts ??= livePartsByMinute(core, shardLive);
    const extra = parts.get(m.minuteStartMs);
    if (extra === undefined) {
      byMinute.set(m.minuteStartMs, { ...m, version: 0, throughSeq: core.status.lastSeq });
      continue;
    }
    // A hot ad's open minute: its shards' counts so far (provisional, as every open minute).
    const merged = mergePartials(m.adCounts, m.dimCounts, extra, core.state.options.dimensions);
    byMinute.set(m.minuteStartMs, {
      ...m,
      adCounts: merged.adCounts,
      dimCounts: merged.dimCounts,
      topK: topK(merged.adCounts, core.state.options.topK),
      eventCount: m.eventCount + merged.events,
      version: 0,
      throughSeq: core.status.lastSeq,
    });
  }
  return [...byMinute.values()].sort((a, b) => a.minuteStartMs - b.minuteStartMs);
}

/** What a shard last said of its minutes, for live queries (src/aggregate/shard-core.ts). */
export interface ShardLive {
  epoch: number;
  shard: number;
  minutes: { minuteStartMs: number; counts: PartialCounts }[];
}

/** The shards' live counts of each minute, for the epochs routed clicks of it here. */
function livePartsByMinute(
  core: AggregatorCore,
  shardLive: Iterable<ShardLive>,
): Map<number, PartialCounts[]> {
  const out = new Map<number, PartialCounts[]>();
  const epochs = new Map(liveEpochs(core.state.hot).map((e) => [e.id, e]));
  if (epochs.size === 0) return out;
  for (const s of shardLive) {
    const e = epochs.get(s.epoch);
    if (!e || s.shard >= e.shards) continue;
    for (const m of s.minutes) {
      if (!e.routed.has(m.minuteStartMs)) continue;
      const list = out.get(m.minuteStartMs);
      if (list) list.push(m.counts);
      else out.set(m.minuteStartMs, [m.counts]);
    }
  }
  return out;
}

/** The answer to a live query (with what the hot shards last said of their open minutes). */
export function answerLiveQuery(
  core: AggregatorCore,
  r: LiveRequest,
  shardLive: Iterable<ShardLive> = [],
): LiveReply {
  return answerLive(
    core.partition,
    { minutes: liveMinutes(core, r.fromMs, r.toMs, shardLive), throughSeq: core.status.lastSeq },
    r,
  );
}

/** Whether a source still holds minutes open that an idle tick would let close. */
export function idleTickWanted(core: AggregatorCore): boolean {
  return nextIdleDeadlineMs(core.state) !== null;
}

/**
 * The idle tick: published into the partition when input stopped while a source still holds
 * minutes open; sources go idle when it is read back, at a recorded position of the log.
 * `bucket` (wall time / idle timeout) makes one tick per idle period.
 */
export function idleTick(core: AggregatorCore, bucket: number): Publication {
  return {
    subject: SUBJECTS.clicks(core.partition),
    msgId: tickMsgId(core.partition, core.status.lastSeq, bucket),
    payload: new Uint8Array(0),
    events: 0,
    headers: { [TICK_HEADER]: "idle" },
  };
}
