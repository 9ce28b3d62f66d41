/**
 * The query side at the book's scale, in process: 60 stored minutes at the book's peak
 * (50,000 clicks/s = 3,000,000 a minute over 2,000,000 Zipf ads, 16 partitions, country
 * dimension) loaded into the query engine's rollup from a store double that serves exactly
 * what partition_minutes would hold. Measures the rollup's memory, its load time, the cold
 * and warm cost of top-100 over 60 minutes, counts, and the recompute after a new minute.
 *
 * (The pipeline run cannot store 60 minutes at that rate within a benchmark's time: 180
 * million clicks. This measures the same code on the same shapes.)
 */

import { Packr } from "msgpackr";
import { prng, zipfSampler } from "../../src/gen/click-log.js";
import { ONE_MINUTE_MS } from "../../src/model.js";
import { partitionOf } from "../../src/partition.js";
import { StoreRollup } from "../../src/query/rollup.js";
import type { AggregateStore, StoredPartitionMinute } from "../../src/storage/aggregate-store.js";
import { compareIds } from "../../src/windows/minute-state.js";
import { topK } from "../../src/windows/topk.js";
import { adIdOf, BOOK_COUNTRIES } from "./book.js";
import { gc } from "./gc.js";
import { percentile } from "./queries.js";

export interface RollupBenchResult {
  minutes: number;
  clicksPerMinute: number;
  cells: number;
  dimCells: number;
  loadSeconds: number;
  heapBytes: number;
  rssBytes: number;
  top60ColdMs: number;
  top60CountryColdMs: number;
  top60WarmP50Ms: number;
  top60WarmP99Ms: number;
  count60P50Ms: number;
  count60P99Ms: number;
  /**
   * Before the rollup: what the query engine did per top-N request (every partition-minute
   * of the range read and decoded, summed in a Map, top N taken), on the same data. CPU
   * only: the Cassandra reads of those blobs, which came on top, are not included.
   */
  top60BeforeMs: number;
  /** Bringing top-100 over 60 minutes up to date after one partition stored a new minute. */
  recomputeAfterNewMinuteMs: number;
  recomputeMaxMs: number;
}

/** One minute of a partition's stored counts at the given rate. */
function makeMinutes(
  minuteMs: number,
  clicks: number,
  partitions: number,
  zipf: () => number,
  rand: () => number,
): StoredPartitionMinute[] {
  const counts = new Map<number, number[]>();
  for (let i = 0; i < clicks; i++) {
    const r = zipf();
    let c = counts.get(r);
    if (!c) {
      c = new Array<number>(BOOK_COUNTRIES.length).fill(0);
      counts.set(r, c);
    }
    const j = Math.floor(rand() * BOOK_COUNTRIES.length);
    c[j] = (c[j] ?? 0) + 1;
  }
  const per: StoredPartitionMinute[] = Array.from({ length: partitions }, (_, p) => ({
    partition: p,
    minuteStartMs: minuteMs,
    version: 1,
    eventCount: 0,
    adCounts: [],
    dimCounts: { country: [] },
  }));
  const ids = [...counts.keys()].map((r) => adIdOf(r)).sort(compareIds);
  for (const adId of ids) {
    const byCountry = counts.get(Number(adId.slice(2))) as number[];
    const pm = per[partitionOf(adId, partitions)] as StoredPartitionMinute;
    let total = 0;
    for (let c = 0; c < byCountry.length; c++) {
      const n = byCountry[c] as number;
      if (n === 0) continue;
      total += n;
      (pm.dimCounts.country as [string, string, number][]).push([
        adId,
        BOOK_COUNTRIES[c] as string,
        n,
      ]);
    }
    pm.adCounts.push([adId, total]);
    pm.eventCount += total;
  }
  for (const pm of per) {
    (pm.dimCounts.country as [string, string, number][]).sort(
      (a, b) => compareIds(a[0], b[0]) || compareIds(a[1], b[1]),
    );
  }
  return per;
}

export async function runRollupBench(
  o: { minutes: number; clicksPerMinute: number; ads: number; partitions: number; seed: number },
  log: (m: string) => void,
): Promise<RollupBenchResult> {
  const rand = prng(o.seed);
  const zipf = zipfSampler(o.ads, 1.1, rand);
  const base = Date.UTC(2024, 6, 9, 0, 0, 0);
  // What partition_minutes holds: msgpack blobs (the rollup decodes them as it would a read).
  const packr = new Packr({ useRecords: false });
  const data = new Map<
    string,
    { version: number; eventCount: number; ads: Buffer; dims: Buffer }
  >();
  let progressMs = base;
  /** Per partition: minutes land partition by partition, as the writer stores them. */
  let progressOf: number[] | undefined;
  let cells = 0;
  let dimCells = 0;
  const addMinute = (m: number) => {
    for (const pm of makeMinutes(
      base + m * ONE_MINUTE_MS,
      o.clicksPerMinute,
      o.partitions,
      zipf,
      rand,
    )) {
      data.set(`${pm.partition}|${pm.minuteStartMs}`, {
        version: pm.version,
        eventCount: pm.eventCount,
        ads: packr.pack(pm.adCounts),
        dims: packr.pack(pm.dimCounts),
      });
      cells += pm.adCounts.length;
      dimCells += pm.dimCounts.country?.length ?? 0;
    }
    progressMs = base + (m + 1) * ONE_MINUTE_MS;
  };
  log(
    `  rollup at book scale: generating ${o.minutes} minutes × ${o.clicksPerMinute.toLocaleString()} clicks over ${o.ads.toLocaleString()} ads`,
  );
  for (let m = 0; m < o.minutes; m++) {
    addMinute(m);
    if ((m + 1) % 10 === 0 || m + 1 === o.minutes)
      log(`    ${m + 1}/${o.minutes} minutes generated`);
  }
  // A store double serving exactly what AggregateStore would read.
  const store = {
    async progress() {
      return new Map(
        Array.from({ length: o.partitions }, (_, p) => [p, progressOf?.[p] ?? progressMs]),
      );
    },
    /** Every partition complete through its progress: no source behind. */
    async completeness() {
      return new Map(
        Array.from({ length: o.partitions }, (_, p) => [
          p,
          { completeThroughMs: progressOf?.[p] ?? progressMs, behind: [] },
        ]),
      );
    },
    async partitionMinuteVersions(p: number, fromMs: number, toMs: number) {
      const out = new Map<number, number>();
      for (let m = fromMs; m < toMs; m += ONE_MINUTE_MS) {
        const pm = data.get(`${p}|${m}`);
        if (pm) out.set(m, pm.version);
      }
      return out;
    },
    async partitionMinute(p: number, m: number): Promise<StoredPartitionMinute | undefined> {
      const pm = data.get(`${p}|${m}`);
      if (!pm) return undefined;
      return {
        partition: p,
        minuteStartMs: m,
        version: pm.version,
        eventCount: pm.eventCount,
        adCounts: packr.unpack(pm.ads),
        dimCounts: packr.unpack(pm.dims),
      };
    },
  } as unknown as AggregateStore;
  gc();
  const mem0 = process.memoryUsage();
  const rollup = new StoreRollup(store, {
    partitions: o.partitions,
    windowMinutes: o.minutes,
    refreshMs: 1e12,
    maxStaleMs: 1e12,
  });
  const t0 = performance.now();
  await rollup.refresh();
  const loadSeconds = (performance.now() - t0) / 1000;
  gc();
  const mem1 = process.memoryUsage();
  // Typed arrays live outside the JS heap: count both.
  const heapBytes = mem1.heapUsed - mem0.heapUsed + (mem1.arrayBuffers - mem0.arrayBuffers);
  const rssBytes = mem1.rss;
  const view = await rollup.view();
  const through = Array.from({ length: o.partitions }, () => progressMs);
  const from60 = progressMs - 60 * ONE_MINUTE_MS;
  const HOUR = 60 * ONE_MINUTE_MS;
  let t = performance.now();
  rollup.rangeTop(view, from60, through, 1000, undefined, HOUR);
  const top60ColdMs = performance.now() - t;
  t = performance.now();
  rollup.rangeTop(view, from60, through, 1000, { dim: "country", value: "USA" }, HOUR);
  const top60CountryColdMs = performance.now() - t;
  const warm: number[] = [];
  for (let i = 0; i < 2000; i++) {
    t = performance.now();
    rollup.rangeTop(view, from60, through, 1000, undefined, HOUR).top.slice(0, 100);
    warm.push(performance.now() - t);
  }
  const counts: number[] = [];
  for (let i = 0; i < 2000; i++) {
    const adId = adIdOf(Math.floor(rand() * 1000));
    t = performance.now();
    rollup.series(partitionOf(adId, o.partitions), adId, from60, progressMs);
    counts.push(performance.now() - t);
  }
  warm.sort((a, b) => a - b);
  counts.sort((a, b) => a - b);
  // The engine before the rollup, once (it takes seconds).
  gc();
  t = performance.now();
  {
    const sums = new Map<string, number>();
    for (let p = 0; p < o.partitions; p++) {
      for (let m = from60; m < progressMs; m += ONE_MINUTE_MS) {
        const pm = await store.partitionMinute(p, m);
        for (const [ad, n] of pm?.adCounts ?? []) sums.set(ad, (sums.get(ad) ?? 0) + n);
      }
    }
    topK(sums, 100);
  }
  const top60BeforeMs = performance.now() - t;
  // New minutes land partition by partition; after each, the next top-100 brings its sums
  // up to date (the minute entering the range is added, the one leaving it subtracted).
  const recompute: number[] = [];
  for (let extra = 0; extra < 3; extra++) {
    const before = progressMs;
    addMinute(o.minutes + extra);
    const after = progressMs;
    progressOf = Array.from({ length: o.partitions }, () => before);
    for (let p = 0; p < o.partitions; p++) {
      progressOf[p] = after;
      await rollup.refresh();
      const v = await rollup.view();
      t = performance.now();
      rollup.rangeTop(v, after - HOUR, progressOf, 1000, undefined, HOUR);
      recompute.push(performance.now() - t);
    }
  }
  recompute.sort((a, b) => a - b);
  const recomputeAfterNewMinuteMs = percentile(recompute, 0.5);
  const recomputeMaxMs = recompute[recompute.length - 1] as number;
  const r3 = (x: number) => Math.round(x * 1000) / 1000;
  return {
    minutes: o.minutes,
    clicksPerMinute: o.clicksPerMinute,
    cells,
    dimCells,
    loadSeconds: r3(loadSeconds),
    heapBytes,
    rssBytes,
    top60ColdMs: r3(top60ColdMs),
    top60CountryColdMs: r3(top60CountryColdMs),
    top60BeforeMs: r3(top60BeforeMs),
    top60WarmP50Ms: r3(percentile(warm, 0.5)),
    top60WarmP99Ms: r3(percentile(warm, 0.99)),
    count60P50Ms: r3(percentile(counts, 0.5)),
    count60P99Ms: r3(percentile(counts, 0.99)),
    recomputeAfterNewMinuteMs: r3(recomputeAfterNewMinuteMs),
    recomputeMaxMs: r3(recomputeMaxMs),
  };
}
