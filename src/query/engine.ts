import type { NatsConnection } from "@nats-io/transport-node";
import { Histogram } from "prom-client";
import { registry } from "../metrics/registry.js";
import { type ClickEvent, type Dimension, ONE_MINUTE_MS } from "../model.js";
import { partitionOf } from "../partition.js";
import type { AggregateStore } from "../storage/aggregate-store.js";
import type { RawStore } from "../storage/raw-store.js";
import { topK } from "../windows/topk.js";
import { requestLive } from "./live.js";
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

export interface CountReply {
  ad_id: string;
  from: string;
  to: string;
  count: number;
  final: boolean;
}

export interface SeriesReply {
  ad_id: string;
  from: string;
  to: string;
  series: { minute: string; count: number }[];
  final: boolean;
}

export interface TopReply {
  from: string;
  to: string;
  n: number;
  ads: { ad_id: string; count: number }[];
  final: boolean;
}

/**
 * Answers the three queries exactly. Minutes every partition has stored come from Cassandra
 * (per-ad tables for counts, whole partition-minutes for top N); newer minutes come from the
 * live aggregators over NATS. Filters on country use the star schema; filters on ip or
 * user_id (or several filters at once) are counted from the raw store's dimension blocks,
 * exactly, unless those dimensions are configured as aggregated ones.
 * `final` is true when every minute of the range is closed and stored.
 */
export class QueryEngine {
  private progressCache?: { atMs: number; value: Map<number, number> };
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

  private async progress(): Promise<Map<number, number>> {
    const now = Date.now();
    if (this.progressCache && now - this.progressCache.atMs < (this.o.progressCacheMs ?? 200)) {
      return this.progressCache.value;
    }
    const value = await this.deps.aggregates.progress();
    this.progressCache = { atMs: now, value };
    return value;
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
    };
  }

  async series(r: CountRequest, endpoint = "series"): Promise<SeriesReply> {
    const started = performance.now();
    const p = partitionOf(r.adId, this.o.partitions);
    const plan = this.filterPlan(r.filter);
    const view = plan.kind !== "raw" && this.rollup ? await this.rollup.view() : undefined;
    const storedThrough = Math.min(
      r.toMs,
      (view ? view.progress : await this.progress()).get(p) ?? Number.NEGATIVE_INFINITY,
    );
    const perMinute = new Map<number, number>();
    if (storedThrough > r.fromMs) {
      if (view && this.rollup?.covers(view, r.fromMs)) {
        const series = this.rollup.series(
          p,
          r.adId,
          r.fromMs,
          storedThrough,
          plan.kind === "dim" ? { dim: plan.dim, value: plan.value } : undefined,
        );
        for (const [m, n] of series) perMinute.set(m, n);
      } else if (plan.kind === "raw") {
        for (const [m, n] of await this.rawCounts(r.filter, r.fromMs, storedThrough, r.adId))
          perMinute.set(m, n);
      } else {
        const series = await this.deps.aggregates.adSeries(
          r.adId,
          r.fromMs,
          storedThrough,
          plan.kind === "dim" ? { dim: plan.dim, value: plan.value } : undefined,
        );
        for (const [m, n] of series) perMinute.set(m, n);
      }
    }
    let final = storedThrough >= r.toMs;
    if (!final) {
      const liveFrom = Math.max(r.fromMs, storedThrough);
      const live =
        plan.kind === "raw"
          ? undefined
          : await requestLive(this.deps.nc, p, {
              fromMs: liveFrom,
              toMs: r.toMs,
              adId: r.adId,
              ...(plan.kind === "dim" ? { dim: { dim: plan.dim, value: plan.value } } : {}),
            });
      for (const m of live?.minutes ?? []) {
        for (const [, n] of m.ads) perMinute.set(m.minuteStartMs, n);
      }
      if (plan.kind === "raw") {
        for (const [m, n] of await this.rawCounts(r.filter, liveFrom, r.toMs, r.adId))
          perMinute.set(m, n);
      }
      final = false;
    }
    const series: SeriesReply["series"] = [];
    for (let m = r.fromMs; m < r.toMs; m += ONE_MINUTE_MS) {
      series.push({ minute: isoMinute(m), count: perMinute.get(m) ?? 0 });
    }
    queryLatency.observe({ endpoint }, (performance.now() - started) / 1000);
    return { ad_id: r.adId, from: isoMinute(r.fromMs), to: isoMinute(r.toMs), series, final };
  }

  async top(r: TopRequest): Promise<TopReply> {
    const started = performance.now();
    const plan = this.filterPlan(r.filter);
    const view = plan.kind !== "raw" && this.rollup ? await this.rollup.view() : undefined;
    const progress = view ? view.progress : await this.progress();
    const sums = new Map<string, number>();
    const add = (ad: string, n: number) => sums.set(ad, (sums.get(ad) ?? 0) + n);
    let final = true;
    let ads: { ad_id: string; count: number }[] | undefined;
    if (plan.kind === "raw") {
      // Raw events carry every attribute: count them for the whole range at once.
      const minStored = Math.min(
        ...Array.from(
          { length: this.o.partitions },
          (_, p) => progress.get(p) ?? Number.NEGATIVE_INFINITY,
        ),
      );
      if (minStored < r.toMs) final = false;
      for (const e of await this.rawEvents(r.filter, r.fromMs, r.toMs)) add(e.adId, 1);
    } else {
      const storedThrough = Array.from({ length: this.o.partitions }, (_, p) =>
        Math.min(r.toMs, progress.get(p) ?? Number.NEGATIVE_INFINITY),
      );
      const maxStored = Math.max(...storedThrough);
      const dimFilter = plan.kind === "dim" ? { dim: plan.dim, value: plan.value } : undefined;
      const lagging = storedThrough.flatMap((t, p) => (t < r.toMs ? [p] : []));
      if (lagging.length > 0) final = false;
      const replies = await Promise.all(
        lagging.map((p) =>
          requestLive(this.deps.nc, p, {
            fromMs: Math.max(r.fromMs, storedThrough[p] as number),
            toMs: r.toMs,
            ...(plan.kind === "dim" ? { dim: { dim: plan.dim, value: plan.value } } : {}),
          }),
        ),
      );
      const live = new Map<string, number>();
      for (const reply of replies)
        for (const m of reply?.minutes ?? [])
          for (const [ad, n] of m.ads) live.set(ad, (live.get(ad) ?? 0) + n);
      if (view && this.rollup?.covers(view, r.fromMs)) {
        // Stored minutes from the rollup: their top k (k ≥ n) is cached per view. An ad
        // outside that top k can only enter the answer through live counts, so the exact
        // answer is the top n of (stored top k ∪ ads with live counts), each at its total.
        const k = Math.max(r.n, 1000);
        const stored = this.rollup.rangeTop(
          view,
          r.fromMs,
          storedThrough,
          k,
          dimFilter,
          r.toMs - r.fromMs,
        );
        if (live.size === 0) {
          ads = stored.top.slice(0, r.n).map((e) => ({ ad_id: e.adId, count: e.count }));
        } else {
          for (const e of stored.top) sums.set(e.adId, e.count);
          for (const [ad, n] of live) sums.set(ad, (sums.get(ad) ?? stored.storedCount(ad)) + n);
        }
      } else {
        if (maxStored > r.fromMs) {
          for (const pm of await this.deps.aggregates.partitionMinutes(
            this.o.partitions,
            r.fromMs,
            maxStored,
          )) {
            if (pm.minuteStartMs >= (storedThrough[pm.partition] as number)) continue;
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
    return { from: isoMinute(r.fromMs), to: isoMinute(r.toMs), n: r.n, ads, final };
  }

  /** Unique raw events of [fromMs, toMs) matching every given filter field. */
  private async rawEvents(
    f: Filter,
    fromMs: number,
    toMs: number,
    adId?: string,
  ): Promise<ClickEvent[]> {
    const out: ClickEvent[] = [];
    const match = (e: ClickEvent) =>
      (adId === undefined || e.adId === adId) &&
      (f.country === undefined || e.country === f.country) &&
      (f.ip === undefined || e.ip === f.ip) &&
      (f.userId === undefined || e.userId === f.userId);
    const readMinute = async (m: number): Promise<ClickEvent[]> => {
      if (f.userId !== undefined) return this.deps.raw.readByDimension("userId", f.userId, m);
      if (f.ip !== undefined) return this.deps.raw.readByDimension("ip", f.ip, m);
      if (adId !== undefined)
        return this.deps.raw.readMinute(partitionOf(adId, this.o.partitions), m);
      const all: ClickEvent[] = [];
      for (let p = 0; p < this.o.partitions; p++)
        for (const e of await this.deps.raw.readMinute(p, m)) all.push(e);
      return all;
    };
    // Minutes are independent reads: a few in flight at once instead of one after another.
    const minutes: number[] = [];
    for (let m = fromMs; m < toMs; m += ONE_MINUTE_MS) minutes.push(m);
    const perMinute: ClickEvent[][] = new Array(minutes.length);
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
    for (const events of perMinute) for (const e of events ?? []) if (match(e)) out.push(e);
    return out;
  }

  private async rawCounts(
    f: Filter,
    fromMs: number,
    toMs: number,
    adId: string,
  ): Promise<Map<number, number>> {
    const perMinute = new Map<number, number>();
    for (const e of await this.rawEvents(f, fromMs, toMs, adId)) {
      const m = Math.floor(e.timestampMs / ONE_MINUTE_MS) * ONE_MINUTE_MS;
      perMinute.set(m, (perMinute.get(m) ?? 0) + 1);
    }
    return perMinute;
  }
}
