import type { NatsConnection } from "@nats-io/transport-node";
import { Histogram } from "prom-client";
import { registry } from "../metrics/registry.js";
import { type Dimension, ONE_MINUTE_MS } from "../model.js";
import { partitionOf } from "../partition.js";
import type {
  AggregateStore,
  MinuteRevisionInfo,
  StoredCompleteness,
} from "../storage/aggregate-store.js";
import type { RawStore, SequencedEvent } from "../storage/raw-store.js";
import { topK } from "../windows/topk.js";
import {
  type Completion,
  completionOf,
  type MinuteLifecycle,
  minuteLifecycle,
  type PartitionProgress,
  partitionProgressOf,
} from "./completion.js";
import { type LiveReply, requestLive } from "./live.js";
import type { CountRequest, Filter, TopRequest } from "./request.js";
import { isoMinute } from "./request.js";
import { StoreRollup } from "./rollup.js";

const queryLatency = new Histogram({
  name: "adclick_query_seconds",
  help: "Query latency by endpoint",
  labelNames: ["endpoint"] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  registers: [registry],
});

/** Raw-store minute reads in flight for one filtered query. */
const RAW_READS_IN_FLIGHT = 8;

export interface CountReply extends Completion {
  ad_id: string;
  from: string;
  to: string;
  count: number;
}

export interface SeriesPoint {
  minute: string;
  count: number;
  /** open → closed → final → amended (see completion.ts). */
  state: MinuteLifecycle;
  /** The minute's stored (or emitted) revision; null while never emitted. */
  revision: number | null;
}

export interface SeriesReply extends Completion {
  ad_id: string;
  from: string;
  to: string;
  series: SeriesPoint[];
}

export interface TopReply extends Completion {
  from: string;
  to: string;
  n: number;
  ads: { ad_id: string; count: number }[];
}

/** Where one partition stands for a query: the store's progress and the live aggregator. */
interface PartitionRead {
  progress: PartitionProgress;
  /** closed_through as stored, bounded by the range's end. */
  storedThrough: number;
  live?: LiveReply;
}

/**
 * Answers the three queries exactly. Minutes every partition has stored come from Cassandra
 * (the query rollup of the partition minutes; past its window, the per-ad tables as far as
 * they are written, then the partition minutes); newer minutes come from the live
 * aggregators over NATS. Filters on country use the star schema; filters on ip or user_id
 * (or several filters at once) are counted from the raw store's ip / user_id index,
 * exactly, unless those dimensions are configured as aggregated ones. A raw-store count of a
 * minute keeps only the clicks the minute's revision has seen (by stream sequence), so a
 * filtered count never exceeds the unfiltered count of the same revision.
 *
 * Every reply says how complete it is (completion.ts): `final`, the newest `revision`,
 * `complete_through` and the sources still behind; a series gives each minute's state.
 */
export class QueryEngine {
  private statusCache?: {
    atMs: number;
    progress: Map<number, number>;
    completeness: Map<number, StoredCompleteness>;
  };
  private readonly rollup?: StoreRollup;

  constructor(
    private readonly deps: { nc: NatsConnection; aggregates: AggregateStore; raw: RawStore },
    private readonly o: {
      partitions: number;
      dimensions: readonly Dimension[];
      progressCacheMs?: number;
      /**
       * Stored minutes held in memory for counts and top N (see rollup.ts); 0 turns the
       * rollup off (every query reads Cassandra). Default 70: "the last 60 minutes" with
       * room for a range ending a little before the newest stored minute.
       */
      rollupMinutes?: number;
      /** The rollup's refresh period and the staleness after which a query waits for one. */
      rollupRefreshMs?: number;
      rollupMaxStaleMs?: number;
    },
  ) {
    const minutes = o.rollupMinutes ?? 70;
    if (minutes > 0) {
      this.rollup = new StoreRollup(deps.aggregates, {
        partitions: o.partitions,
        windowMinutes: minutes,
        refreshMs: o.rollupRefreshMs ?? 250,
        maxStaleMs: o.rollupMaxStaleMs ?? 1000,
      });
    }
  }

  /** Progress and completeness per partition (cached briefly; completeness read first). */
  private async storeStatus(): Promise<{
    progress: Map<number, number>;
    completeness: Map<number, StoredCompleteness>;
  }> {
    const now = Date.now();
    if (this.statusCache && now - this.statusCache.atMs < (this.o.progressCacheMs ?? 200)) {
      return this.statusCache;
    }
    const completeness = await this.deps.aggregates.completeness();
    const progress = await this.deps.aggregates.progress();
    this.statusCache = { atMs: now, progress, completeness };
    return this.statusCache;
  }

  /** Which source answers a filter: none, the star-schema dimension, or raw events. */
  private filterPlan(
    f: Filter,
  ): { kind: "none" } | { kind: "dim"; dim: Dimension; value: string } | { kind: "raw" } {
    const given = Object.entries(f).filter(([, v]) => v !== undefined) as [Dimension, string][];
    if (given.length === 0) return { kind: "none" };
    if (given.length === 1) {
      const [dim, value] = given[0] as [Dimension, string];
      if (this.o.dimensions.includes(dim)) return { kind: "dim", dim, value };
    }
    return { kind: "raw" };
  }

  async count(r: CountRequest): Promise<CountReply> {
    const s = await this.series(r, "count");
    return {
      ad_id: s.ad_id,
      from: s.from,
      to: s.to,
      count: s.series.reduce((n, x) => n + x.count, 0),
      final: s.final,
      revision: s.revision,
      complete_through: s.complete_through,
      sources_behind: s.sources_behind,
    };
  }

  async series(r: CountRequest, endpoint = "series"): Promise<SeriesReply> {
    const started = performance.now();
    const p = partitionOf(r.adId, this.o.partitions);
    const plan = this.filterPlan(r.filter);
    const view = this.rollup ? await this.rollup.view() : undefined;
    const status = view ?? (await this.storeStatus());
    const progress = partitionProgressOf(status.progress.get(p), status.completeness.get(p));
    const storedThrough = Math.min(r.toMs, progress.storedThroughMs);
    const useRollup = view !== undefined && this.rollup?.covers(view, r.fromMs) === true;
    const dimFilter = plan.kind === "dim" ? { dim: plan.dim, value: plan.value } : undefined;

    // Revisions of the stored minutes (and, for a raw-store count, the positions they saw).
    let revisions: Map<number, MinuteRevisionInfo> | undefined;
    const versions = new Map<number, number>();
    if (storedThrough > r.fromMs) {
      if (plan.kind === "raw" || !useRollup) {
        revisions = await this.deps.aggregates.partitionMinuteRevisions(p, r.fromMs, storedThrough);
        for (const [m, rev] of revisions) versions.set(m, rev.version);
      } else {
        for (const [m, v] of (this.rollup as StoreRollup).versions(p, r.fromMs, storedThrough))
          versions.set(m, v);
      }
    }
    const live =
      storedThrough < r.toMs
        ? await requestLive(this.deps.nc, p, {
            fromMs: Math.max(r.fromMs, storedThrough),
            toMs: r.toMs,
            adId: r.adId,
            ...(dimFilter ? { dim: dimFilter } : {}),
          })
        : undefined;

    const perMinute = new Map<number, number>();
    if (plan.kind === "raw") {
      const bound = seqBound(new Map([[p, { progress, storedThrough, live }]]), revisions, p);
      for (const [m, n] of await this.rawCounts(r.filter, r.fromMs, r.toMs, r.adId, bound))
        perMinute.set(m, n);
    } else {
      if (storedThrough > r.fromMs) {
        const series = useRollup
          ? (this.rollup as StoreRollup).series(p, r.adId, r.fromMs, storedThrough, dimFilter)
          : await this.storedSeries(p, r.adId, r.fromMs, storedThrough, dimFilter);
        for (const [m, n] of series) perMinute.set(m, n);
      }
      for (const m of live?.minutes ?? []) {
        for (const [, n] of m.ads) perMinute.set(m.minuteStartMs, n);
      }
    }
    const liveMinutes = new Map((live?.minutes ?? []).map((m) => [m.minuteStartMs, m]));
    const series: SeriesPoint[] = [];
    const seen: number[] = [];
    for (let m = r.fromMs; m < r.toMs; m += ONE_MINUTE_MS) {
      const lm = liveMinutes.get(m);
      const stored = m + ONE_MINUTE_MS <= storedThrough;
      const revision = stored
        ? (versions.get(m) ?? null)
        : lm && lm.version > 0
          ? lm.version
          : null;
      if (revision !== null) seen.push(revision);
      series.push({
        minute: isoMinute(m),
        count: perMinute.get(m) ?? 0,
        state: minuteLifecycle(m, progress, revision, lm?.closed ?? false),
        revision,
      });
    }
    queryLatency.observe({ endpoint }, (performance.now() - started) / 1000);
    return {
      ad_id: r.adId,
      from: isoMinute(r.fromMs),
      to: isoMinute(r.toMs),
      series,
      ...completionOf([progress], r.toMs, seen),
    };
  }

  /**
   * One ad's stored per-minute counts in [fromMs, toMs) (all closed and stored): from the
   * per-ad tables as far as their writer has stored them, from the partition-minute rows
   * (what `final` follows; the per-ad rows trail them) for the minutes after.
   */
  private async storedSeries(
    p: number,
    adId: string,
    fromMs: number,
    toMs: number,
    filter: { dim: Dimension; value: string } | undefined,
  ): Promise<Map<number, number>> {
    const adRowsThrough = Math.max(
      fromMs,
      Math.min(toMs, (await this.deps.aggregates.adRowsProgress()).get(p) ?? fromMs),
    );
    const out =
      adRowsThrough > fromMs
        ? await this.deps.aggregates.adSeries(adId, fromMs, adRowsThrough, filter)
        : new Map<number, number>();
    if (adRowsThrough < toMs) {
      for await (const pm of this.deps.aggregates.eachPartitionMinute(p, adRowsThrough, toMs)) {
        const n = filter
          ? (pm.dimCounts[filter.dim] ?? []).find(([a, v]) => a === adId && v === filter.value)
          : pm.adCounts.find(([a]) => a === adId);
        if (n) out.set(pm.minuteStartMs, n[n.length - 1] as number);
      }
    }
    return out;
  }

  async top(r: TopRequest): Promise<TopReply> {
    const started = performance.now();
    const plan = this.filterPlan(r.filter);
    const view = this.rollup ? await this.rollup.view() : undefined;
    const status = view ?? (await this.storeStatus());
    const parts = new Map<number, PartitionRead>();
    for (let p = 0; p < this.o.partitions; p++) {
      const progress = partitionProgressOf(status.progress.get(p), status.completeness.get(p));
      parts.set(p, { progress, storedThrough: Math.min(r.toMs, progress.storedThroughMs) });
    }
    const storedThrough = [...parts.values()].map((x) => x.storedThrough);
    const maxStored = Math.max(...storedThrough);
    const dimFilter = plan.kind === "dim" ? { dim: plan.dim, value: plan.value } : undefined;
    const lagging = [...parts].filter(([, x]) => x.storedThrough < r.toMs).map(([p]) => p);
    const replies = await Promise.all(
      lagging.map((p) =>
        requestLive(this.deps.nc, p, {
          fromMs: Math.max(r.fromMs, (parts.get(p) as PartitionRead).storedThrough),
          toMs: r.toMs,
          ...(dimFilter ? { dim: dimFilter } : {}),
        }),
      ),
    );
    lagging.forEach((p, i) => {
      const reply = replies[i];
      if (reply) (parts.get(p) as PartitionRead).live = reply;
    });
    const revisions: number[] = [];
    for (const reply of replies)
      for (const m of reply?.minutes ?? []) if (m.version > 0) revisions.push(m.version);
    const useRollup = view !== undefined && this.rollup?.covers(view, r.fromMs) === true;

    const sums = new Map<string, number>();
    const add = (ad: string, n: number) => sums.set(ad, (sums.get(ad) ?? 0) + n);
    let ads: { ad_id: string; count: number }[] | undefined;
    if (plan.kind === "raw") {
      // Raw events carry every attribute: count them for the whole range at once, each
      // partition-minute only as far as its revision has seen.
      const stored = new Map<number, Map<number, MinuteRevisionInfo>>();
      await Promise.all(
        [...parts].map(async ([p, x]) => {
          if (x.storedThrough <= r.fromMs) return;
          const revs = await this.deps.aggregates.partitionMinuteRevisions(
            p,
            r.fromMs,
            x.storedThrough,
          );
          stored.set(p, revs);
          for (const rev of revs.values()) revisions.push(rev.version);
        }),
      );
      const bounds = new Map([...parts.keys()].map((p) => [p, seqBound(parts, stored.get(p), p)]));
      const bound = (p: number, m: number) =>
        (bounds.get(p) as ReturnType<typeof seqBound> | undefined)?.(p, m) ?? 0;
      for (const e of await this.rawEvents(r.filter, r.fromMs, r.toMs, undefined, bound))
        add(e.adId, 1);
    } else {
      const live = new Map<string, number>();
      for (const reply of replies)
        for (const m of reply?.minutes ?? [])
          for (const [ad, n] of m.ads) live.set(ad, (live.get(ad) ?? 0) + n);
      if (useRollup) {
        const rollup = this.rollup as StoreRollup;
        for (let p = 0; p < this.o.partitions; p++)
          for (const v of rollup.versions(p, r.fromMs, storedThrough[p] as number).values())
            revisions.push(v);
        // Stored minutes from the rollup: their top k (k ≥ n) is cached per view. An ad
        // outside that top k can only enter the answer through live counts, so the exact
        // answer is the top n of (stored top k ∪ ads with live counts), each at its total.
        const k = Math.max(r.n, 1000);
        const top = rollup.rangeTop(
          view as NonNullable<typeof view>,
          r.fromMs,
          storedThrough,
          k,
          dimFilter,
          r.toMs - r.fromMs,
        );
        if (live.size === 0) {
          ads = top.top.slice(0, r.n).map((e) => ({ ad_id: e.adId, count: e.count }));
        } else {
          for (const e of top.top) sums.set(e.adId, e.count);
          for (const [ad, n] of live) sums.set(ad, (sums.get(ad) ?? top.storedCount(ad)) + n);
        }
      } else {
        if (maxStored > r.fromMs) {
          for (const pm of await this.deps.aggregates.partitionMinutes(
            this.o.partitions,
            r.fromMs,
            maxStored,
          )) {
            if (pm.minuteStartMs >= (storedThrough[pm.partition] as number)) continue;
            revisions.push(pm.version);
            if (dimFilter) {
              for (const [ad, v, n] of pm.dimCounts[dimFilter.dim] ?? [])
                if (v === dimFilter.value) add(ad, n);
            } else {
              for (const [ad, n] of pm.adCounts) add(ad, n);
            }
          }
        }
        for (const [ad, n] of live) add(ad, n);
      }
    }
    ads ??= topK(sums, r.n).map((e) => ({ ad_id: e.adId, count: e.count }));
    queryLatency.observe({ endpoint: "top" }, (performance.now() - started) / 1000);
    return {
      from: isoMinute(r.fromMs),
      to: isoMinute(r.toMs),
      n: r.n,
      ads,
      ...completionOf(
        [...parts.values()].map((x) => x.progress),
        r.toMs,
        revisions,
      ),
    };
  }

  /**
   * Unique raw events of [fromMs, toMs) matching every given filter field (their ad and
   * minute), each kept only when its stream sequence is within `bound(partition, minute)`.
   * An ip or user_id filter reads that value's entries from the raw store's index (both
   * filters: both values' entries, intersected by event id); other filters read whole
   * minutes.
   */
  private async rawEvents(
    f: Filter,
    fromMs: number,
    toMs: number,
    adId: string | undefined,
    bound: (partition: number, minuteMs: number) => number,
  ): Promise<{ adId: string; minuteMs: number }[]> {
    const out: { adId: string; minuteMs: number }[] = [];
    const parts = this.o.partitions;
    const keep = (e: { adId: string; country: string; streamSeq: number }, minuteMs: number) =>
      (adId === undefined || e.adId === adId) &&
      (f.country === undefined || e.country === f.country) &&
      e.streamSeq <= bound(partitionOf(e.adId, parts), minuteMs);
    if (f.userId !== undefined || f.ip !== undefined) {
      const raw = this.deps.raw;
      const [hits, other] = await Promise.all([
        f.userId !== undefined
          ? raw.readIndexed("userId", f.userId, fromMs, toMs)
          : raw.readIndexed("ip", f.ip as string, fromMs, toMs),
        f.userId !== undefined && f.ip !== undefined
          ? raw.readIndexed("ip", f.ip, fromMs, toMs)
          : undefined,
      ]);
      const ids = other ? new Set(other.map((e) => e.eventId)) : undefined;
      for (const e of hits)
        if ((ids === undefined || ids.has(e.eventId)) && keep(e, e.minuteMs))
          out.push({ adId: e.adId, minuteMs: e.minuteMs });
      return out;
    }
    const readMinute = async (m: number): Promise<SequencedEvent[]> => {
      if (adId !== undefined) return this.deps.raw.readMinuteSequenced(partitionOf(adId, parts), m);
      const all: SequencedEvent[] = [];
      for (let p = 0; p < parts; p++)
        for (const e of await this.deps.raw.readMinuteSequenced(p, m)) all.push(e);
      return all;
    };
    // Minutes are independent reads: a few in flight at once instead of one after another.
    const minutes: number[] = [];
    for (let m = fromMs; m < toMs; m += ONE_MINUTE_MS) minutes.push(m);
    const perMinute: SequencedEvent[][] = new Array(minutes.length);
    let next = 0;
    const worker = async () => {
      while (next < minutes.length) {
        const i = next++;
        perMinute[i] = await readMinute(minutes[i] as number);
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(RAW_READS_IN_FLIGHT, minutes.length) }, worker),
    );
    for (let i = 0; i < minutes.length; i++)
      for (const e of perMinute[i] ?? [])
        if (keep(e, minutes[i] as number))
          out.push({ adId: e.adId, minuteMs: minutes[i] as number });
    return out;
  }

  private async rawCounts(
    f: Filter,
    fromMs: number,
    toMs: number,
    adId: string,
    bound: (partition: number, minuteMs: number) => number,
  ): Promise<Map<number, number>> {
    const perMinute = new Map<number, number>();
    for (const e of await this.rawEvents(f, fromMs, toMs, adId, bound))
      perMinute.set(e.minuteMs, (perMinute.get(e.minuteMs) ?? 0) + 1);
    return perMinute;
  }
}

/**
 * How far into a partition's stream a raw-store count of each minute may look: as far as the
 * minute's counted revision has seen — its stored revision's position (an older build's
 * revision: everything), the live aggregator's for newer minutes, and nothing where neither
 * has counted anything (a closed minute without a revision has no clicks; without a live
 * answer the unfiltered count has none either). Clicks past it are not in the unfiltered
 * answer yet, so they stay out of the filtered one.
 */
function seqBound(
  parts: ReadonlyMap<number, PartitionRead>,
  stored: ReadonlyMap<number, MinuteRevisionInfo> | undefined,
  partition: number,
): (p: number, minuteMs: number) => number {
  return (p, m) => {
    const x = parts.get(p);
    if (!x) return 0;
    if (p === partition && m + ONE_MINUTE_MS <= x.storedThrough) {
      const rev = stored?.get(m);
      if (!rev) return 0;
      return rev.throughSeq ?? Number.POSITIVE_INFINITY;
    }
    if (!x.live) return 0;
    const lm = x.live.minutes.find((l) => l.minuteStartMs === m);
    return lm ? lm.throughSeq : x.live.throughSeq;
  };
}
