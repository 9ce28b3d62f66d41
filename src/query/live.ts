import type { NatsConnection } from "@nats-io/transport-node";
import type { Dimension } from "../model.js";
import type { ClosedMinute } from "../windows/partition-aggregator.js";

/**
 * Live minutes over NATS: each worker answers (its live server, actors/live-server.ts), for
 * the partitions it aggregates, with the minutes the store does not have yet (open ones and
 * just-emitted ones), so that a query service anywhere can include them. Internal subjects:
 * adclick.live.<p>.
 */
export const liveSubject = (p: number) => `adclick.live.${p}`;

export interface LiveRequest {
  fromMs: number;
  toMs: number;
  /** Only this ad's counts. */
  adId?: string;
  /** Counts of this country only (the aggregators must count the country dimension). */
  country?: string;
  /**
   * Counts of one value of any star-schema dimension (the aggregators must count it). Wins
   * over `country`, which older query services send.
   */
  dim?: { dim: Dimension; value: string };
}

export interface LiveMinuteReply {
  minuteStartMs: number;
  closed: boolean;
  /** 0: never emitted (open, or closed with its emission pending); else its revision. */
  version: number;
  /** Every click of the minute up to this CLICKS sequence is counted here. */
  throughSeq: number;
  ads: [string, number][];
}

export interface LiveReply {
  partition: number;
  /** The aggregator has read its partition up to this CLICKS sequence (minutes not listed: 0 clicks up to it). */
  throughSeq: number;
  minutes: LiveMinuteReply[];
  error?: string;
}

/** A minute as the live view gives it to queries. */
export type LiveMinuteView = Omit<ClosedMinute, "version"> & {
  closed: boolean;
  /** 0 while never emitted. */
  version: number;
  /** Every click of the minute in the partition's messages up to this sequence is counted. */
  throughSeq: number;
};

/** What a partition's aggregator shows queries: its live minutes and how far it has read. */
export interface LiveView {
  minutes: LiveMinuteView[];
  throughSeq: number;
}

/** Answers a live request from a partition's minutes (pure). */
export function answerLive(partition: number, view: LiveView, r: LiveRequest): LiveReply {
  const out: LiveReply = { partition, throughSeq: view.throughSeq, minutes: [] };
  for (const m of view.minutes) {
    let ads: [string, number][];
    const filter =
      r.dim ??
      (r.country !== undefined ? { dim: "country" as const, value: r.country } : undefined);
    if (filter !== undefined) {
      const rows = m.dimCounts[filter.dim];
      if (!rows)
        return {
          partition,
          throughSeq: view.throughSeq,
          minutes: [],
          error: `the aggregators do not count the ${filter.dim} dimension`,
        };
      ads = rows.filter(([, v]) => v === filter.value).map(([a, , n]) => [a, n]);
    } else {
      ads = m.adCounts;
    }
    if (r.adId !== undefined) ads = ads.filter(([a]) => a === r.adId);
    out.minutes.push({
      minuteStartMs: m.minuteStartMs,
      closed: m.closed,
      version: m.version,
      throughSeq: m.throughSeq,
      ads,
    });
  }
  return out;
}

/** Asks partition p's aggregator; undefined when none answers in time. */
export async function requestLive(
  nc: NatsConnection,
  p: number,
  r: LiveRequest,
  timeoutMs = 1000,
): Promise<LiveReply | undefined> {
  try {
    const msg = await nc.request(liveSubject(p), JSON.stringify(r), { timeout: timeoutMs });
    const reply = msg.json<LiveReply>();
    return reply.error ? undefined : reply;
  } catch {
    return undefined;
  }
}
