import { Packr } from "msgpackr";
import type { ClosedMinute } from "../windows/partition-aggregator.js";
import type { TopEntry } from "../windows/topk.js";

/**
 * Messages of the aggregates stream (the second queue), msgpack-encoded:
 *  - aggregates.minute.<p>: a closed (or corrected) minute of partition p, and progress
 *    reports "every minute ending at or before closedThroughMs is closed in partition p";
 *  - aggregates.top: the reducer's global top N of a minute.
 * Every message has a deterministic ID (see the *MsgId functions): a re-emission is a no-op.
 */
export type AggregateMessage =
  | ({ kind: "minute" } & ClosedMinute)
  | { kind: "progress"; partition: number; closedThroughMs: number }
  | {
      kind: "top";
      minuteStartMs: number;
      version: number;
      n: number;
      ads: TopEntry[];
      partitions: number;
    };

const packr = new Packr({ useRecords: false });

export function encodeAggregate(m: AggregateMessage): Uint8Array {
  return packr.pack(m);
}

export function decodeAggregate(data: Uint8Array): AggregateMessage {
  const m = packr.unpack(data) as AggregateMessage;
  if (!m || typeof m !== "object" || !("kind" in m)) throw new Error("not an aggregate message");
  return m;
}

export const minuteMsgId = (p: number, minuteStartMs: number, version: number) =>
  `min:${p}:${minuteStartMs}:${version}`;
export const progressMsgId = (p: number, closedThroughMs: number) => `prog:${p}:${closedThroughMs}`;
export const topMsgId = (minuteStartMs: number, version: number, contributors: string) =>
  `top:${minuteStartMs}:${version}:${contributors}`;
export const lateMsgId = (p: number, streamSeq: number) => `late:${p}:${streamSeq}`;
export const tickMsgId = (p: number, afterSeq: number, bucket: number) =>
  `tick:${p}:${afterSeq}:${bucket}`;

/** Header marking an idle tick in a raw-click partition (no payload; see aggregator-runner). */
export const TICK_HEADER = "Adclick-Tick";
