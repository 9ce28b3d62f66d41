import { Packr } from "msgpackr";
import type { ClosedMinute } from "../windows/partition-aggregator.js";
import type { TopEntry } from "../windows/topk.js";

/**
 * Messages of the aggregates stream (the second queue), msgpack-encoded:
 *  - aggregates.minute.<p>: a closed (or amended) minute of partition p, with the stream
 *    position its counts reflect; and progress reports "every minute ending at or before
 *    closedThroughMs is closed in partition p, and every one ending at or before
 *    completeThroughMs is complete (no source still behind it)";
 *  - aggregates.top: the reducer's global top N of a minute.
 * Every message has a deterministic ID (see the *MsgId functions): a re-emission is a no-op.
 */
export type AggregateMessage =
  | ({ kind: "minute" } & MinuteRevision)
  | ProgressReport
  | {
      kind: "top";
      minuteStartMs: number;
      version: number;
      n: number;
      ads: TopEntry[];
      partitions: number;
    };

/** A minute's revision and the position it reflects. */
export interface MinuteRevision extends ClosedMinute {
  /**
   * The revision counts every click of its minute the partition's CLICKS messages up to this
   * stream sequence hold (those past the amendment horizon excepted: the late repair counts
   * them in a later revision). Absent in messages of older builds.
   */
  throughSeq?: number;
}

/** A partition's progress: closed and complete through, and the sources still behind. */
export interface ProgressReport {
  kind: "progress";
  partition: number;
  closedThroughMs: number;
  /**
   * Absent in reports of older builds (then equal to closedThroughMs); null when a lagging
   * source has no progress at all (no minute is complete).
   */
  completeThroughMs?: number | null;
  /** Lagging sources, to the minute (null: no progress yet): closed minutes after are not complete. */
  behind?: { source: string; progressMs: number | null }[];
  /** The CLICKS sequence the report was made at: orders reports of one partition. */
  seq?: number;
}

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
export const progressMsgId = (p: number, clicksSeq: number) => `prog:${p}:${clicksSeq}`;
export const topMsgId = (minuteStartMs: number, version: number, contributors: string) =>
  `top:${minuteStartMs}:${version}:${contributors}`;
export const lateMsgId = (p: number, streamSeq: number) => `late:${p}:${streamSeq}`;
export const tickMsgId = (p: number, afterSeq: number, bucket: number) =>
  `tick:${p}:${afterSeq}:${bucket}`;

/** Header marking an idle tick in a raw-click partition (no payload; see aggregator-runner). */
export const TICK_HEADER = "Adclick-Tick";
/** Headers of a late.clicks.<p> message: why its clicks were not counted, and where they came in. */
export const LATE_REASON_HEADER = "Adclick-Late-Reason";
export const LATE_CLICKS_SEQ_HEADER = "Adclick-Clicks-Seq";
