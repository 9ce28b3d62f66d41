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

const queryLatency = new Histogram({
  name: "adclick_query_seconds",
  help: "Query latency by endpoint",
  labelNames: ["endpoint"] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
  registers: [registry],
});

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

  constructor(
    private readonly deps: { nc: NatsConnection; aggregates: AggregateStore; raw: RawStore },
    private readonly o: {
      partitions: number;
      dimensions: readonly Dimension[];
      progressCacheMs?: number;
    },
  ) {}

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
    const storedThrough = Math.min(
      r.toMs,
      (await this.progress()).get(p) ?? Number.NEGATIVE_INFINITY,
    );
    const perMinute = new Map<number, number>();
    const plan = this.filterPlan(r.filter);
    if (storedThrough > r.fromMs) {
      if (plan.kind === "raw") {
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
              ...(plan.kind === "dim" ? { country: plan.value } : {}),
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
    const progress = await this.progress();
    const plan = this.filterPlan(r.filter);
    const sums = new Map<string, number>();
    const add = (ad: string, n: number) => sums.set(ad, (sums.get(ad) ?? 0) + n);
    let final = true;
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
      if (maxStored > r.fromMs) {
        for (const pm of await this.deps.aggregates.partitionMinutes(
          this.o.partitions,
          r.fromMs,
          maxStored,
        )) {
          if (pm.minuteStartMs >= (storedThrough[pm.partition] as number)) continue;
          if (plan.kind === "dim") {
            for (const [ad, v, n] of pm.dimCounts[plan.dim] ?? []) if (v === plan.value) add(ad, n);
          } else {
            for (const [ad, n] of pm.adCounts) add(ad, n);
          }
        }
      }
      const lagging = storedThrough.flatMap((t, p) => (t < r.toMs ? [p] : []));
      if (lagging.length > 0) final = false;
      const replies = await Promise.all(
        lagging.map((p) =>
          requestLive(this.deps.nc, p, {
            fromMs: Math.max(r.fromMs, storedThrough[p] as number),
            toMs: r.toMs,
            ...(plan.kind === "dim" ? { country: plan.value } : {}),
          }),
        ),
      );
      for (const reply of replies)
        for (const m of reply?.minutes ?? []) for (const [ad, n] of m.ads) add(ad, n);
    }
    const ads = topK(sums, r.n).map((e) => ({ ad_id: e.adId, count: e.count }));
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
    for (let m = fromMs; m < toMs; m += ONE_MINUTE_MS) {
      let events: ClickEvent[];
      if (f.userId !== undefined)
        events = await this.deps.raw.readByDimension("userId", f.userId, m);
      else if (f.ip !== undefined) events = await this.deps.raw.readByDimension("ip", f.ip, m);
      else if (adId !== undefined)
        events = await this.deps.raw.readMinute(partitionOf(adId, this.o.partitions), m);
      else {
        events = [];
        for (let p = 0; p < this.o.partitions; p++)
          events.push(...(await this.deps.raw.readMinute(p, m)));
      }
      for (const e of events) if (match(e)) out.push(e);
    }
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
