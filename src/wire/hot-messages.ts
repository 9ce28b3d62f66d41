import { Packr } from "msgpackr";
import type { PartialCounts } from "../windows/merge-partials.js";

/**
 * What the partition aggregator writes into its own partition (`clicks.<p>`, header
 * `Adclick-Tick: hot`, so the raw writer skips them like idle ticks) for the shards of its hot
 * ads, and what the shards answer (KV). See docs/hot-ads.md.
 */
export type HotControl =
  /**
   * Every shard that owns the minute: write your partial of it as of this message; forget
   * minutes ending at or before `purgedThroughMs`. The aggregator merges at the same message
   * (the partials of the epochs routed clicks of the minute by then).
   */
  | {
      kind: "barrier";
      minuteStartMs: number;
      /** 1 for the minute's close, then one more per re-merge (an amendment). */
      episode: number;
      purgedThroughMs: number | null;
    }
  /** The epoch was merged back: it keeps only these minutes (its shards may forget the rest). */
  | { kind: "merge"; epoch: number; routed: number[] };

/** The value of the tick header on a hot control message. */
export const HOT_TICK = "hot";

/** One shard's counts of its ad in one minute, as of a barrier. */
export interface ShardPartial {
  partition: number;
  epoch: number;
  shard: number;
  minuteStartMs: number;
  /** The barrier's stream sequence. */
  asOfSeq: number;
  /** The shard's counts (one ad; empty when it counted none). */
  counts: PartialCounts;
}

const packr = new Packr({ useRecords: false, moreTypes: false });

export function encodeHotControl(c: HotControl): Uint8Array {
  return packr.pack(c);
}

/** @throws Error when the payload is not a hot control message. */
export function decodeHotControl(data: Uint8Array): HotControl {
  const c = packr.unpack(data) as HotControl;
  if (!c || typeof c !== "object" || (c.kind !== "barrier" && c.kind !== "merge")) {
    throw new Error("not a hot control message");
  }
  return c;
}

export function encodeShardPartial(p: ShardPartial): Uint8Array {
  return packr.pack(p);
}

export function decodeShardPartial(data: Uint8Array): ShardPartial {
  const p = packr.unpack(data) as ShardPartial;
  if (!p || typeof p !== "object" || typeof p.asOfSeq !== "number" || !p.counts) {
    throw new Error("not a shard partial");
  }
  return p;
}

export function encodeShardLive(l: unknown): Uint8Array {
  return packr.pack(l);
}

export function decodeShardLive<T>(data: Uint8Array): T {
  return packr.unpack(data) as T;
}

export const barrierMsgId = (p: number, minuteStartMs: number, episode: number) =>
  `bar:${p}:${minuteStartMs}:${episode}`;
export const mergeMsgId = (p: number, epoch: number) => `hmerge:${p}:${epoch}`;

/** KV key of a shard's partial (the hot bucket; keys are dot-separated tokens). */
export const partialKey = (
  p: number,
  epoch: number,
  shard: number,
  minuteStartMs: number,
  asOfSeq: number,
) => `pt.${p}.${epoch}.${shard}.${minuteStartMs}.${asOfSeq}`;
/** KV key of a shard's live counts (open minutes, for queries; rewritten about every second). */
export const shardLiveKey = (p: number, epoch: number, shard: number) =>
  `live.${p}.${epoch}.${shard}`;
/** KV key of a shard's snapshot. */
export const shardSnapshotKey = (p: number, epoch: number, shard: number) =>
  `hs.${p}.${epoch}.${shard}`;
/** KV key of a partition's live epochs (what the shard pools watch). */
export const epochsKey = (p: number) => `epochs.${p}`;
