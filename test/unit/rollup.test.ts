import { describe, expect, it } from "vitest";
import type { Dimension } from "../../src/model.js";
import { type RollupSource, StoreRollup } from "../../src/query/rollup.js";
import type { StoredPartitionMinute } from "../../src/storage/aggregate-store.js";
import { type TopEntry, topK } from "../../src/windows/topk.js";

const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9, 10);
const PARTITIONS = 3;

/**
 * The store as data: partition-minutes at their versions and progress, as partition_minutes
 * and partition_progress hold them. The rollup is checked against sums over this same data.
 */
class StoreData implements RollupSource {
  readonly minutes = new Map<string, StoredPartitionMinute>();
  readonly closedThrough = new Map<number, number>();
  reads = 0;

  put(pm: StoredPartitionMinute): void {
    this.minutes.set(`${pm.partition}:${pm.minuteStartMs}`, pm);
  }

  async progress(): Promise<Map<number, number>> {
    return new Map(this.closedThrough);
  }

  async completeness() {
    return new Map();
  }

  async partitionMinuteVersions(p: number, fromMs: number, toMs: number) {
    const out = new Map<number, number>();
    for (const pm of this.minutes.values())
      if (pm.partition === p && pm.minuteStartMs >= fromMs && pm.minuteStartMs < toMs)
        out.set(pm.minuteStartMs, pm.version);
    return out;
  }

  async partitionMinute(p: number, m: number) {
    this.reads++;
    return this.minutes.get(`${p}:${m}`);
  }

  /** Brute force: per-ad sums over each partition's stored minutes in [from, through[p]). */
  sums(fromMs: number, through: readonly number[], filter?: { dim: Dimension; value: string }) {
    const sums = new Map<string, number>();
    for (const pm of this.minutes.values()) {
      if (pm.minuteStartMs < fromMs || pm.minuteStartMs >= (through[pm.partition] as number))
        continue;
      if (filter) {
        for (const [ad, v, n] of pm.dimCounts[filter.dim] ?? [])
          if (v === filter.value) sums.set(ad, (sums.get(ad) ?? 0) + n);
      } else for (const [ad, n] of pm.adCounts) sums.set(ad, (sums.get(ad) ?? 0) + n);
    }
    return sums;
  }
}

function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s % n;
  };
}

/** A partition-minute of random, skewed counts over the partition's ads (ad ids sorted). */
function randomMinute(
  rand: (n: number) => number,
  p: number,
  minuteStartMs: number,
  version: number,
): StoredPartitionMinute {
  const byAd = new Map<string, Map<string, number>>();
  const events = 50 + rand(400);
  for (let i = 0; i < events; i++) {
    // Skewed: low ad numbers far more often; ads of partition p only (disjoint partitions).
    const a = Math.min(rand(60), rand(60), rand(60));
    const ad = `ad${String(a * PARTITIONS + p).padStart(4, "0")}`;
    const country = ["USA", "KOR", "DEU"][rand(3)] as string;
    const perCountry = byAd.get(ad) ?? new Map<string, number>();
    perCountry.set(country, (perCountry.get(country) ?? 0) + 1);
    byAd.set(ad, perCountry);
  }
  const ads = [...byAd.keys()].sort();
  const adCounts: [string, number][] = ads.map((ad) => [
    ad,
    [...(byAd.get(ad) as Map<string, number>).values()].reduce((x, y) => x + y, 0),
  ]);
  const country: [string, string, number][] = [];
  for (const ad of ads)
    for (const [v, n] of [...(byAd.get(ad) as Map<string, number>)].sort())
      country.push([ad, v, n]);
  return {
    partition: p,
    minuteStartMs,
    version,
    eventCount: events,
    adCounts,
    dimCounts: { country },
  };
}

const asPairs = (t: TopEntry[]) => t.map((e) => [e.adId, e.count]);

describe("StoreRollup", () => {
  it.each([
    { seed: 1, k: 5 },
    { seed: 2, k: 20 },
    { seed: 3, k: 1000 },
    { seed: 4, k: 1 },
  ])(
    "answers top k and series exactly while minutes arrive, slide out and are corrected (seed $seed, k $k)",
    async ({ seed, k }) => {
      const rand = rng(seed);
      const data = new StoreData();
      let now = 0;
      const rollup = new StoreRollup(
        data,
        { partitions: PARTITIONS, windowMinutes: 10, refreshMs: 0, maxStaleMs: 0 },
        () => now,
      );
      const next = [0, 0, 0];
      for (let step = 0; step < 60; step++) {
        now += 1000;
        // Partitions advance unevenly; sometimes a stored minute is corrected (new version).
        const p = rand(PARTITIONS);
        const m = T0 + (next[p] as number) * MIN;
        data.put(randomMinute(rand, p, m, 1));
        next[p] = (next[p] as number) + 1;
        data.closedThrough.set(p, m + MIN);
        if (rand(4) === 0) {
          const q = rand(PARTITIONS);
          const have = [...data.minutes.values()].filter((x) => x.partition === q);
          const old = have[rand(Math.max(1, have.length))];
          if (old) data.put(randomMinute(rand, q, old.minuteStartMs, old.version + 1));
        }
        const view = await rollup.view();
        const through = Array.from(
          { length: PARTITIONS },
          (_, i) => view.progress.get(i) ?? Number.NEGATIVE_INFINITY,
        );
        const newest = Math.max(...through);
        for (const span of [1, 3, 8]) {
          const from = newest - span * MIN;
          if (!rollup.covers(view, from)) continue;
          for (const filter of [undefined, { dim: "country" as const, value: "KOR" }]) {
            const got = rollup.rangeTop(view, from, through, k, filter, span * MIN);
            const want = topK(data.sums(from, through, filter), k);
            expect(asPairs(got.top), `step ${step} span ${span} ${filter?.value ?? ""}`).toEqual(
              asPairs(want),
            );
            const sums = data.sums(from, through, filter);
            for (const ad of ["ad0000", "ad0001", "ad0005", "ad0100", "nope"])
              expect(got.storedCount(ad)).toBe(sums.get(ad) ?? 0);
          }
          for (const ad of ["ad0000", "ad0004", "ad0017"]) {
            const p0 = Number(ad.slice(2)) % PARTITIONS;
            const series = rollup.series(p0, ad, from, through[p0] as number);
            const want = new Map<number, number>();
            for (const pm of data.minutes.values()) {
              if (pm.partition !== p0 || pm.minuteStartMs < from) continue;
              if (pm.minuteStartMs >= (through[p0] as number)) continue;
              const n = pm.adCounts.find(([a]) => a === ad)?.[1];
              if (n !== undefined) want.set(pm.minuteStartMs, n);
            }
            expect(new Map([...series].sort((a, b) => a[0] - b[0]))).toEqual(
              new Map([...want].sort((a, b) => a[0] - b[0])),
            );
          }
        }
      }
    },
  );

  it("loads only minutes that are new or whose version changed", async () => {
    const rand = rng(9);
    const data = new StoreData();
    let now = 0;
    const rollup = new StoreRollup(
      data,
      { partitions: PARTITIONS, windowMinutes: 60, refreshMs: 0, maxStaleMs: 0 },
      () => now,
    );
    for (let p = 0; p < PARTITIONS; p++) {
      for (let i = 0; i < 5; i++) data.put(randomMinute(rand, p, T0 + i * MIN, 1));
      data.closedThrough.set(p, T0 + 5 * MIN);
    }
    await rollup.view();
    expect(data.reads).toBe(15);
    now += 1;
    await rollup.view();
    expect(data.reads).toBe(15);
    data.put(randomMinute(rand, 1, T0 + 2 * MIN, 2));
    now += 1;
    const view = await rollup.view();
    expect(data.reads).toBe(16);
    const through = [0, 1, 2].map((p) => view.progress.get(p) as number);
    expect(asPairs(rollup.rangeTop(view, T0, through, 10).top)).toEqual(
      asPairs(topK(data.sums(T0, through), 10)),
    );
  });

  it("holds nothing and covers no range before the store has progress", async () => {
    const rollup = new StoreRollup(new StoreData(), {
      partitions: PARTITIONS,
      windowMinutes: 10,
      refreshMs: 0,
      maxStaleMs: 0,
    });
    const view = await rollup.view();
    expect(view.progress.size).toBe(0);
    expect(rollup.covers(view, T0)).toBe(false);
  });
});
