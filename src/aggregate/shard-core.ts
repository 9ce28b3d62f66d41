/**
 * One shard of a hot ad's epoch, as pure state and steps: it reads the same partition log as
 * the partition aggregator (clicks.<p>, from the epoch's first sequence), counts the clicks of
 * its ad whose event ids hash to it, deduplicated per minute, and answers the aggregator's
 * barriers with its partial of the barrier's minute as of the barrier. No I/O and no clock:
 * a restore from a snapshot followed by a replay writes the same partials (docs/hot-ads.md).
 */

import { shardOfEvent } from "../hot/epochs.js";
import type { ClickEvent, Dimension } from "../model.js";
import { type CompactIds, IdSet } from "../windows/dedupe.js";
import type { PartialCounts } from "../windows/merge-partials.js";
import { type MinuteCountsSnapshot, MinuteState } from "../windows/minute-state.js";
import { WINDOW_SIZE_MS, windowStartOf } from "../windows/window.js";
import { decodeClickMessage } from "../wire/batch-codec.js";
import { decodeHotControl, type HotControl, type ShardPartial } from "../wire/hot-messages.js";
import type { StreamMessage } from "./aggregator-core.js";

export interface ShardOptions {
  partition: number;
  epoch: number;
  adId: string;
  shards: number;
  shard: number;
  /** The epoch's first sequence: the shard reads from there (or its snapshot's position). */
  startSeq: number;
  /** Minutes the aggregator kept counting the ad in (not this shard's). */
  excluded: readonly number[];
  dimensions: readonly Dimension[];
}

interface ShardMinute {
  counts: MinuteState;
  ids: IdSet;
}

export interface ShardCore {
  readonly options: ShardOptions;
  readonly minutes: Map<number, ShardMinute>;
  readonly excluded: Set<number>;
  /** After the merge: the only minutes the epoch keeps (null: open). */
  keep: Set<number> | null;
  /** Minutes ending at or before it are purged by the aggregator: never counted again. */
  purgedThroughMs: number;
  lastSeq: number;
  status: ShardStatus;
}

export interface ShardStatus {
  partition: number;
  epoch: number;
  adId: string;
  shard: number;
  shards: number;
  lastSeq: number;
  counted: number;
  duplicates: number;
  partials: number;
  merged: boolean;
  minutes: number;
}

export interface ShardStepOutcome {
  partials: ShardPartial[];
  counted: number;
  duplicates: number;
}

export interface ShardSnapshot {
  lastSeq: number;
  purgedThroughMs: number | null;
  keep: number[] | null;
  minutes: { counts: MinuteCountsSnapshot; ids: CompactIds }[];
}

export function createShardCore(options: ShardOptions, stored?: ShardSnapshot): ShardCore {
  const core: ShardCore = {
    options,
    minutes: new Map(),
    excluded: new Set(options.excluded),
    keep: null,
    purgedThroughMs: Number.NEGATIVE_INFINITY,
    lastSeq: options.startSeq - 1,
    status: {
      partition: options.partition,
      epoch: options.epoch,
      adId: options.adId,
      shard: options.shard,
      shards: options.shards,
      lastSeq: options.startSeq - 1,
      counted: 0,
      duplicates: 0,
      partials: 0,
      merged: false,
      minutes: 0,
    },
  };
  if (stored) {
    core.lastSeq = stored.lastSeq;
    core.purgedThroughMs = stored.purgedThroughMs ?? Number.NEGATIVE_INFINITY;
    core.keep = stored.keep ? new Set(stored.keep) : null;
    for (const m of stored.minutes) {
      const ids = new IdSet();
      ids.addCompact(m.ids);
      core.minutes.set(m.counts.startMs, {
        counts: MinuteState.fromSnapshot(m.counts, WINDOW_SIZE_MS, options.dimensions),
        ids,
      });
    }
  }
  refresh(core);
  return core;
}

export function snapshotShard(core: ShardCore): ShardSnapshot {
  return {
    lastSeq: core.lastSeq,
    purgedThroughMs: Number.isFinite(core.purgedThroughMs) ? core.purgedThroughMs : null,
    keep: core.keep ? [...core.keep].sort((a, b) => a - b) : null,
    minutes: [...core.minutes.values()]
      .sort((a, b) => a.counts.startMs - b.counts.startMs)
      .map((m) => ({ counts: m.counts.toSnapshot(), ids: m.ids.toCompact() })),
  };
}

/** Whether the minute is this shard's to count (its epoch's, and not purged). */
function owns(core: ShardCore, minuteStartMs: number): boolean {
  if (minuteStartMs + WINDOW_SIZE_MS <= core.purgedThroughMs) return false;
  if (core.keep !== null) return core.keep.has(minuteStartMs);
  return !core.excluded.has(minuteStartMs);
}

function count(core: ShardCore, e: ClickEvent, out: ShardStepOutcome): void {
  const start = windowStartOf(e.timestampMs, WINDOW_SIZE_MS);
  if (!owns(core, start)) return;
  let m = core.minutes.get(start);
  if (m === undefined) {
    m = {
      counts: new MinuteState(start, WINDOW_SIZE_MS, core.options.dimensions),
      ids: new IdSet(),
    };
    core.minutes.set(start, m);
  }
  if (m.ids.add(e.eventId)) {
    m.counts.add(e);
    out.counted++;
  } else out.duplicates++;
}

function partialOf(m: ShardMinute | undefined): PartialCounts {
  if (m === undefined) return { eventCount: 0, ads: [], dims: {} };
  const order = m.counts.sortedAds();
  return {
    eventCount: m.counts.eventCount,
    ads: m.counts.adCounts(order),
    dims: m.counts.dimCounts(order),
  };
}

function control(core: ShardCore, c: HotControl, seq: number, out: ShardStepOutcome): void {
  const o = core.options;
  if (c.kind === "merge") {
    if (c.epoch !== o.epoch) return;
    core.keep = new Set(c.routed);
    for (const start of core.minutes.keys()) if (!core.keep.has(start)) core.minutes.delete(start);
    return;
  }
  if (c.purgedThroughMs !== null && c.purgedThroughMs > core.purgedThroughMs) {
    core.purgedThroughMs = c.purgedThroughMs;
    for (const start of core.minutes.keys()) {
      if (start + WINDOW_SIZE_MS <= core.purgedThroughMs) core.minutes.delete(start);
    }
  }
  if (!owns(core, c.minuteStartMs)) return;
  out.partials.push({
    partition: o.partition,
    epoch: o.epoch,
    shard: o.shard,
    minuteStartMs: c.minuteStartMs,
    asOfSeq: seq,
    counts: partialOf(core.minutes.get(c.minuteStartMs)),
  });
}

/**
 * Processes messages in stream order (those at or before the shard's position are skipped: a
 * redelivery). Clicks of other ads and other shards are skipped after decoding; poison
 * messages are the raw writer's to report.
 */
export function stepShard(core: ShardCore, msgs: readonly StreamMessage[]): ShardStepOutcome {
  const out: ShardStepOutcome = { partials: [], counted: 0, duplicates: 0 };
  const { adId, shards, shard } = core.options;
  for (const msg of msgs) {
    if (msg.seq <= core.lastSeq) continue;
    core.lastSeq = msg.seq;
    if (msg.hot) {
      let c: HotControl | undefined;
      try {
        c = decodeHotControl(msg.data);
      } catch {
        c = undefined; // not ours to judge: the aggregator skips it too
      }
      if (c) control(core, c, msg.seq, out);
      continue;
    }
    if (msg.tick) continue;
    let events: ClickEvent[];
    try {
      events = decodeClickMessage(msg.data).events;
    } catch {
      continue;
    }
    for (let i = 0; i < events.length; i++) {
      const e = events[i] as ClickEvent;
      if (e.adId !== adId || !Number.isFinite(e.timestampMs)) continue;
      if (shardOfEvent(e.eventId, shards) !== shard) continue;
      count(core, e, out);
    }
  }
  core.status.counted += out.counted;
  core.status.duplicates += out.duplicates;
  core.status.partials += out.partials.length;
  refresh(core);
  return out;
}

function refresh(core: ShardCore): void {
  core.status.lastSeq = core.lastSeq;
  core.status.merged = core.keep !== null;
  core.status.minutes = core.minutes.size;
}

/** The shard's minutes and counts so far, for live queries of open minutes (not exact: live). */
export function shardLiveOf(core: ShardCore): {
  epoch: number;
  shard: number;
  minutes: { minuteStartMs: number; counts: PartialCounts }[];
} {
  return {
    epoch: core.options.epoch,
    shard: core.options.shard,
    minutes: [...core.minutes.entries()]
      .sort(([a], [b]) => a - b)
      .map(([minuteStartMs, m]) => ({ minuteStartMs, counts: partialOf(m) })),
  };
}

/** After the merge, once every kept minute is purged, the shard has nothing left to do. */
export function shardDone(core: ShardCore): boolean {
  return core.keep !== null && [...core.keep].every((m) => !owns(core, m));
}
