/**
 * The exactness check: every (ad, minute) and (ad, minute, country) count the pipeline
 * stored, compared with the generator's recount — both ways, so a missing row and an extra
 * row are differences too.
 */
import { ONE_MINUTE_MS } from "../../src/model.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import type { CassandraClient } from "../../src/storage/cassandra-client.js";
import { rankOfAdId, type Truth } from "./book.js";

export interface StoreTotals {
  /** minute → events counted in the store (sum over partitions). */
  perMinute: Map<number, number>;
  /** minute → partitions holding it. */
  partitionsPerMinute: Map<number, number>;
}

/** Per-minute event counts in the store, without reading the blobs (cheap; polled). */
export async function storeTotals(
  cql: CassandraClient,
  partitions: number,
  fromMs: number,
  toMs: number,
): Promise<StoreTotals> {
  const store = new AggregateStore(cql);
  const perMinute = new Map<number, number>();
  const partitionsPerMinute = new Map<number, number>();
  const reads: Promise<void>[] = [];
  for (let p = 0; p < partitions; p++) {
    reads.push(
      store.partitionMinuteEventCounts(p, fromMs, toMs).then((counts) => {
        for (const [m, n] of counts) {
          perMinute.set(m, (perMinute.get(m) ?? 0) + n);
          partitionsPerMinute.set(m, (partitionsPerMinute.get(m) ?? 0) + 1);
        }
      }),
    );
  }
  await Promise.all(reads);
  return { perMinute, partitionsPerMinute };
}

/** closed_through of every partition (absent: none yet). */
export function storeProgress(cql: CassandraClient): Promise<Map<number, number>> {
  return new AggregateStore(cql).progress();
}

/** True when the store's per-minute totals equal the truth's for every minute. */
export function totalsMatch(t: Truth, s: StoreTotals): boolean {
  for (const [m, n] of t.perMinute) if (s.perMinute.get(m) !== n) return false;
  for (const [m, n] of s.perMinute) if (n !== 0 && !t.perMinute.has(m)) return false;
  return true;
}

export interface ExactnessReport {
  ok: boolean;
  adMinuteRows: number;
  adMinuteCountryRows: number;
  events: number;
  differences: number;
  /** The first differences, for the loud failure message. */
  examples: string[];
}

/**
 * Reads every stored partition-minute (all ads, all countries) of [fromMs, toMs) and
 * compares it with the truth, entry by entry, both ways.
 */
export async function checkExactness(
  cql: CassandraClient,
  t: Truth,
  partitions: number,
  fromMs: number,
  toMs: number,
): Promise<ExactnessReport> {
  const C = t.countries.length;
  const countryIndex = new Map(t.countries.map((c, i) => [c, i]));
  const seenAd = new Set<number>();
  const seenCountry = new Set<number>();
  const examples: string[] = [];
  let differences = 0;
  let events = 0;
  const diff = (what: string) => {
    differences++;
    if (examples.length < 20) examples.push(what);
  };
  const store = new AggregateStore(cql);
  for (let p = 0; p < partitions; p++) {
    // A few minutes at a time: the blobs of a whole range do not fit in memory at bench scale.
    for await (const pm of store.eachPartitionMinute(p, fromMs, toMs, 5)) {
      const minute = pm.minuteStartMs;
      const mi = t.minuteIndex(minute);
      events += pm.eventCount;
      for (const [adId, n] of pm.adCounts) {
        const rank = rankOfAdId(adId);
        const k = mi * t.ads + rank;
        const want = rank < 0 ? 0 : (t.adMinute.get(k) ?? 0);
        if (rank >= 0) seenAd.add(k);
        if (want !== n) diff(`${adId} @ ${iso(minute)}: stored ${n}, recount ${want}`);
      }
      for (const [adId, country, n] of pm.dimCounts.country ?? []) {
        const rank = rankOfAdId(adId);
        const ci = countryIndex.get(country);
        const kc = (mi * t.ads + rank) * C + (ci ?? 0);
        const want = rank < 0 || ci === undefined ? 0 : (t.adMinuteCountry.get(kc) ?? 0);
        if (rank >= 0 && ci !== undefined) seenCountry.add(kc);
        if (want !== n) diff(`${adId} ${country} @ ${iso(minute)}: stored ${n}, recount ${want}`);
      }
    }
  }
  const lo = t.minuteIndex(fromMs);
  const hi = t.minuteIndex(toMs);
  const inRange = (k: number, per: number) => {
    const mi = Math.floor(k / per);
    return mi >= lo && mi < hi;
  };
  for (const [k, n] of t.adMinute) {
    if (!inRange(k, t.ads) || seenAd.has(k)) continue;
    const mi = Math.floor(k / t.ads);
    diff(
      `ad rank ${k - mi * t.ads} @ ${iso(t.baseMinuteMs + mi * ONE_MINUTE_MS)}: missing, recount ${n}`,
    );
  }
  for (const [kc, n] of t.adMinuteCountry) {
    if (!inRange(kc, t.ads * C) || seenCountry.has(kc)) continue;
    diff(`ad×country key ${kc}: missing, recount ${n}`);
  }
  let truthEvents = 0;
  for (const [m, n] of t.perMinute) if (m >= fromMs && m < toMs) truthEvents += n;
  if (events !== truthEvents) diff(`events in the store ${events}, recount ${truthEvents}`);
  return {
    ok: differences === 0,
    adMinuteRows: seenAd.size,
    adMinuteCountryRows: seenCountry.size,
    events,
    differences,
    examples,
  };
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}
