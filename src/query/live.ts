import type { NatsConnection, Subscription } from "@nats-io/transport-node";
import type { LiveMinuteView } from "../aggregate/aggregator-runner.js";
import type { Dimension } from "../model.js";

/**
 * Live minutes over NATS: each worker answers, for the partitions it aggregates, with the
 * minutes the store does not have yet (open ones and just-emitted ones), so that a query
 * service anywhere can include them. Internal subjects: adclick.live.<p>.
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

export interface LiveReply {
  partition: number;
  minutes: { minuteStartMs: number; closed: boolean; ads: [string, number][] }[];
  error?: string;
}

/** Answers a live request from a partition's minutes (pure). */
export function answerLive(
  partition: number,
  minutes: LiveMinuteView[],
  r: LiveRequest,
): LiveReply {
  const out: LiveReply = { partition, minutes: [] };
  for (const m of minutes) {
    let ads: [string, number][];
    const filter =
      r.dim ??
      (r.country !== undefined ? { dim: "country" as const, value: r.country } : undefined);
    if (filter !== undefined) {
      const rows = m.dimCounts[filter.dim];
      if (!rows)
        return {
          partition,
          minutes: [],
          error: `the aggregators do not count the ${filter.dim} dimension`,
        };
      ads = rows.filter(([, v]) => v === filter.value).map(([a, , n]) => [a, n]);
    } else {
      ads = m.adCounts;
    }
    if (r.adId !== undefined) ads = ads.filter(([a]) => a === r.adId);
    out.minutes.push({ minuteStartMs: m.minuteStartMs, closed: m.closed, ads });
  }
  return out;
}

/**
 * Serves adclick.live.<p> for the given partitions. No queue group: every worker offering a
 * partition hears the request, and only the one whose aggregator runs it (the lease holder)
 * answers; standbys stay silent.
 */
export function serveLive(
  nc: NatsConnection,
  partitions: number[],
  minutesOf: (p: number, fromMs: number, toMs: number) => LiveMinuteView[] | undefined,
): { close(): void } {
  const subs: Subscription[] = [];
  for (const p of partitions) {
    subs.push(
      nc.subscribe(liveSubject(p), {
        callback: (err, msg) => {
          if (err) return;
          let reply: LiveReply;
          try {
            const r = msg.json<LiveRequest>();
            const minutes = minutesOf(p, r.fromMs, r.toMs);
            if (!minutes) return; // not running here: the lease holder answers
            reply = answerLive(p, minutes, r);
          } catch (e) {
            reply = { partition: p, minutes: [], error: String(e) };
          }
          msg.respond(JSON.stringify(reply));
        },
      }),
    );
  }
  return {
    close() {
      for (const s of subs) s.unsubscribe();
    },
  };
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
