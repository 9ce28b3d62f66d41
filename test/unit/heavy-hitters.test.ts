import { pack, unpack } from "msgpackr";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/errors.js";
import { prng, zipfSampler } from "../../src/gen/click-log.js";
import {
  type AdCounts,
  candidates,
  coverageOf,
  createHeavyHitters,
  estimate,
  type HeavyHittersState,
  observe,
  offer,
  offerBatch,
  restoreHeavyHitters,
  SpaceSaving,
  snapshotHeavyHitters,
  totalOf,
} from "../../src/hot/heavy-hitters.js";

const zipfOf = (rnd: () => number, n: number, s: number) => zipfSampler(n, s, rnd);

function shuffle<T>(rnd: () => number, xs: T[]): T[] {
  const out = xs.slice();
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

/**
 * The space-saving guarantees of `ss` against exact counts of what it was offered, as a list
 * of violations (one expect per check keeps thousands of cases fast).
 */
function spaceSavingViolations(ss: SpaceSaving, exact: Map<string, number>): string[] {
  const bad: string[] = [];
  const total = [...exact.values()].reduce((a, b) => a + b, 0);
  const counters = ss.counters();
  const held = new Set(counters.map((c) => c.adId));
  let sum = 0;
  for (const c of counters) {
    const t = exact.get(c.adId) ?? 0;
    if (!(c.count - c.error <= t && t <= c.count)) bad.push(`${c.adId}: ${t} not in bounds`);
    sum += c.count;
  }
  if (sum > total) bad.push(`counts sum to ${sum} > total ${total}`);
  const min = ss.minCount();
  if (min * ss.capacity > total) bad.push(`min ${min} > total/m`);
  for (const [adId, t] of exact) {
    if (t * ss.capacity > total && !held.has(adId)) bad.push(`heavy ${adId} (${t}) missing`);
    if (!held.has(adId) && t > (ss.full ? min : 0)) bad.push(`absent ${adId} (${t}) > min`);
  }
  return bad;
}

describe("SpaceSaving", () => {
  it.each([
    {
      why: "is empty before any offer",
      capacity: 3,
      offers: [] as [string, number][],
      out: [] as [string, number, number][],
      min: 0,
    },
    {
      why: "counts one ad exactly",
      capacity: 3,
      offers: [
        ["a", 2],
        ["a", 5],
      ] as [string, number][],
      out: [["a", 7, 0]] as [string, number, number][],
      min: 0,
    },
    {
      why: "reports min 0 while not full, since nothing was evicted",
      capacity: 3,
      offers: [
        ["a", 2],
        ["b", 5],
      ] as [string, number][],
      out: [
        ["b", 5, 0],
        ["a", 2, 0],
      ] as [string, number, number][],
      min: 0,
    },
    {
      why: "with capacity 1, every new ad takes the counter and inherits its count as error",
      capacity: 1,
      offers: [
        ["a", 3],
        ["b", 1],
        ["c", 2],
      ] as [string, number][],
      out: [["c", 6, 4]] as [string, number, number][],
      min: 6,
    },
    {
      why: "replaces, among equal minimum counts, the smallest adId",
      capacity: 2,
      offers: [
        ["b", 1],
        ["a", 1],
        ["c", 1],
      ] as [string, number][],
      out: [
        ["c", 2, 1],
        ["b", 1, 0],
      ] as [string, number, number][],
      min: 1,
    },
    {
      why: "replaces the smallest count, not the oldest",
      capacity: 2,
      offers: [
        ["a", 5],
        ["b", 2],
        ["c", 1],
      ] as [string, number][],
      out: [
        ["a", 5, 0],
        ["c", 3, 2],
      ] as [string, number, number][],
      min: 3,
    },
  ])("$why", ({ capacity, offers, out, min }) => {
    const ss = new SpaceSaving(capacity);
    for (const [adId, w] of offers) ss.offer(adId, w);
    expect(ss.counters()).toEqual(out.map(([adId, count, error]) => ({ adId, count, error })));
    expect(ss.minCount()).toBe(min);
    expect(ss.size).toBe(out.length);
  });

  it.each([0, -1, 1.5, Number.NaN])("refuses capacity %s", (capacity) => {
    expect(() => new SpaceSaving(capacity)).toThrow(ConfigError);
  });

  it.each([
    {
      why: "adds to held ads, then keeps the largest of counters and candidates (min + weight)",
      capacity: 2,
      before: [
        ["a", 5],
        ["b", 2],
      ] as [string, number][],
      batch: [
        ["c", 1],
        ["d", 4],
        ["b", 1],
      ] as [string, number][],
      // min before = 2: candidates c = 3 (error 2), d = 6 (error 2); b = 3. Keep d:6, a:5.
      out: [
        ["d", 6, 2],
        ["a", 5, 0],
      ] as [string, number, number][],
    },
    {
      why: "breaks a tie between a candidate and a counter by adId (the greater stays)",
      capacity: 1,
      before: [["b", 3]] as [string, number][],
      batch: [
        ["a", 0 + 0],
        ["c", 0 + 0],
      ].map(([id]) => [id, 3] as [string, number]) as [string, number][],
      // min 3: a = 6, c = 6 (errors 3), b = 3. The largest (count, adId) is c:6.
      out: [["c", 6, 3]] as [string, number, number][],
    },
    {
      why: "fills free counters with exact counts, keeping the largest when they overflow",
      capacity: 2,
      before: [] as [string, number][],
      batch: [
        ["x", 1],
        ["y", 3],
        ["z", 2],
      ] as [string, number][],
      out: [
        ["y", 3, 0],
        ["z", 2, 0],
      ] as [string, number, number][],
    },
  ])("offerBatch $why", ({ capacity, before, batch, out }) => {
    for (const order of [batch, batch.slice().reverse()]) {
      const ss = new SpaceSaving(capacity);
      for (const [adId, w] of before) ss.offer(adId, w);
      ss.offerBatch(new Map(order));
      expect(ss.counters()).toEqual(out.map(([adId, count, error]) => ({ adId, count, error })));
    }
  });

  it.each([
    { seed: 1, capacity: 1, ads: 50, s: 1.1, n: 3_000 },
    { seed: 2, capacity: 4, ads: 200, s: 1.0, n: 10_000 },
    { seed: 3, capacity: 16, ads: 1_000, s: 0.8, n: 20_000 },
    { seed: 4, capacity: 64, ads: 5_000, s: 1.0, n: 50_000 },
    { seed: 5, capacity: 64, ads: 40, s: 1.2, n: 5_000 },
  ])(
    "keeps its guarantees against exact counts, one by one (seed $seed, m = $capacity, $ads ads)",
    ({ seed, capacity, ads, s, n }) => {
      const rnd = prng(seed);
      const draw = zipfOf(rnd, ads, s);
      const ss = new SpaceSaving(capacity);
      const exact = new Map<string, number>();
      for (let i = 0; i < n; i++) {
        const adId = `ad${draw()}`;
        const w = 1 + Math.floor(rnd() * 3);
        ss.offer(adId, w);
        exact.set(adId, (exact.get(adId) ?? 0) + w);
        if (i % 997 === 0) expect(spaceSavingViolations(ss, exact)).toEqual([]);
      }
      expect(spaceSavingViolations(ss, exact)).toEqual([]);
      // One by one, the counts sum to the total exactly.
      const sum = ss.counters().reduce((a, c) => a + c.count, 0);
      expect(sum).toBe([...exact.values()].reduce((a, b) => a + b, 0));
    },
  );

  it.each([
    { seed: 11, capacity: 1, ads: 50, s: 1.1 },
    { seed: 12, capacity: 4, ads: 300, s: 1.0 },
    { seed: 13, capacity: 64, ads: 5_000, s: 1.0 },
    { seed: 14, capacity: 16, ads: 100, s: 0.6 },
  ])(
    "keeps its guarantees in batches, whatever their order (seed $seed, m = $capacity)",
    ({ seed, capacity, ads, s }) => {
      const rnd = prng(seed);
      const draw = zipfOf(rnd, ads, s);
      const ss = new SpaceSaving(capacity);
      const shuffled = new SpaceSaving(capacity);
      const exact = new Map<string, number>();
      for (let b = 0; b < 200; b++) {
        const batch = new Map<string, number>();
        const size = Math.floor(rnd() * 300);
        for (let i = 0; i < size; i++) {
          const adId = `ad${draw()}`;
          batch.set(adId, (batch.get(adId) ?? 0) + 1);
          exact.set(adId, (exact.get(adId) ?? 0) + 1);
        }
        ss.offerBatch(batch);
        shuffled.offerBatch(new Map(shuffle(rnd, [...batch])));
        if (b % 10 === 9) expect(spaceSavingViolations(ss, exact)).toEqual([]);
        expect(shuffled.counters()).toEqual(ss.counters());
      }
    },
  );

  it("restores from its snapshot and goes on identically", () => {
    const rnd = prng(21);
    const draw = zipfOf(rnd, 500, 1);
    const a = new SpaceSaving(8);
    for (let i = 0; i < 2_000; i++) a.offer(`ad${draw()}`, 1);
    const b = new SpaceSaving(8);
    b.load(JSON.parse(JSON.stringify(a.snapshot())));
    for (let i = 0; i < 2_000; i++) {
      const adId = `ad${draw()}`;
      a.offer(adId, 2);
      b.offer(adId, 2);
    }
    expect(b.snapshot()).toEqual(a.snapshot());
  });

  it("refuses a snapshot larger than its capacity", () => {
    const ss = new SpaceSaving(1);
    expect(() => ss.load({ ids: ["a", "b"], counts: [1, 1], errors: [0, 0] })).toThrow(RangeError);
  });
});

/** Builds AdCounts from "a:3 b:1" style text. */
function counts(text: string): [string, number][] {
  return text
    .split(" ")
    .filter((t) => t !== "")
    .map((t) => {
      const [adId, n] = t.split(":");
      return [adId as string, Number(n)];
    });
}

function bounds(s: HeavyHittersState): string[] {
  return candidates(s).map((e) => `${e.adId}:${e.lower}..${e.upper}`);
}

describe("createHeavyHitters options", () => {
  it("defaults to a 10 s period in 5 buckets of 2 s, 64 counters", () => {
    expect(createHeavyHitters().options).toEqual({
      periodMs: 10_000,
      buckets: 5,
      capacity: 64,
      bucketMs: 2_000,
    });
  });

  it.each([
    { opts: { periodMs: 0 }, setting: "periodMs" },
    { opts: { periodMs: 1.5 }, setting: "periodMs" },
    { opts: { periodMs: Number.POSITIVE_INFINITY }, setting: "periodMs" },
    { opts: { buckets: 0 }, setting: "buckets" },
    { opts: { buckets: 2.5 }, setting: "buckets" },
    { opts: { capacity: 0 }, setting: "capacity" },
    { opts: { capacity: -3 }, setting: "capacity" },
    { opts: { periodMs: 10_000, buckets: 3 }, setting: "periodMs" },
    { opts: { periodMs: "10000" as unknown as number }, setting: "periodMs" },
  ])("refuses $opts, naming $setting", ({ opts, setting }) => {
    expect(() => createHeavyHitters(opts)).toThrow(ConfigError);
    try {
      createHeavyHitters(opts);
    } catch (e) {
      expect((e as ConfigError).setting).toBe(setting);
    }
  });
});

describe("sliding heavy hitters", () => {
  const small = { periodMs: 300, buckets: 3, capacity: 2 }; // buckets of 100 ms

  it("answers nothing before any click", () => {
    const s = createHeavyHitters(small);
    expect(candidates(s)).toEqual([]);
    expect(totalOf(s)).toBe(0);
    expect(coverageOf(s)).toMatchObject({ coveredMs: 0, full: false });
    expect(estimate(s, "a")).toEqual({ adId: "a", lower: 0, upper: 0 });
  });

  it.each([
    {
      why: "keeps the open bucket out of every answer",
      steps: [{ at: 0, clicks: "a:5" }],
      total: 0,
      out: [],
    },
    {
      why: "answers once a later time closes the bucket",
      steps: [
        { at: 0, clicks: "a:5 b:1" },
        { at: 100, clicks: "" },
      ],
      total: 6,
      out: ["a:5..5", "b:1..1"],
    },
    {
      why: "puts a time exactly at a multiple of the bucket length in the new bucket",
      steps: [
        { at: 99, clicks: "a:1" },
        { at: 100, clicks: "a:7" },
        { at: 199, clicks: "" },
      ],
      total: 1,
      out: ["a:1..1"],
    },
    {
      why: "sums the period's buckets",
      steps: [
        { at: 0, clicks: "a:1" },
        { at: 100, clicks: "a:2" },
        { at: 200, clicks: "a:3" },
        { at: 300, clicks: "" },
      ],
      total: 6,
      out: ["a:6..6"],
    },
    {
      why: "drops a bucket once it is older than the period",
      steps: [
        { at: 0, clicks: "a:1" },
        { at: 100, clicks: "a:2" },
        { at: 200, clicks: "a:3" },
        { at: 300, clicks: "b:4" },
        { at: 400, clicks: "" },
      ],
      total: 9,
      out: ["a:5..5", "b:4..4"],
    },
    {
      why: "bounds an evicted ad by the bucket's minimum (capacity 2)",
      steps: [
        { at: 0, clicks: "a:5 b:3" },
        { at: 1, clicks: "c:1" },
        { at: 100, clicks: "" },
      ],
      // At 1: min 3 → c = 4 (error 3) replaces b. b: absent, ≤ min (4).
      total: 9,
      out: ["a:5..5", "c:1..4"],
    },
    {
      why: "empties everything after a gap longer than the period",
      steps: [
        { at: 0, clicks: "a:5" },
        { at: 100, clicks: "b:1" },
        { at: 5_000, clicks: "c:1" },
        { at: 5_100, clicks: "" },
      ],
      total: 1,
      out: ["c:1..1"],
    },
    {
      why: "counts clicks at an earlier time with the latest time's (time went backwards)",
      steps: [
        { at: 150, clicks: "a:1" },
        { at: 20, clicks: "b:2" },
        { at: 200, clicks: "" },
      ],
      total: 3,
      out: ["b:2..2", "a:1..1"],
    },
    {
      why: "ignores a time that is not finite",
      steps: [
        { at: 50, clicks: "a:1" },
        { at: Number.NaN, clicks: "a:1" },
        { at: Number.POSITIVE_INFINITY, clicks: "a:1" },
        { at: 100, clicks: "" },
      ],
      total: 3,
      out: ["a:3..3"],
    },
    {
      why: "drops clicks offered before any valid time",
      steps: [
        { at: Number.NaN, clicks: "a:1" },
        { at: 0, clicks: "b:1" },
        { at: 100, clicks: "" },
      ],
      total: 1,
      out: ["b:1..1"],
    },
  ])("$why", ({ steps, total, out }) => {
    const s = createHeavyHitters(small);
    for (const step of steps) offerBatch(s, counts(step.clicks), step.at);
    expect(totalOf(s)).toBe(total);
    expect(bounds(s)).toEqual(out);
  });

  it.each([
    { why: "a gap of several buckets", times: [0, 50, 350], closed: [0, 0, 3] },
    { why: "exact multiples", times: [0, 100, 200], closed: [0, 1, 1] },
    { why: "time going backwards", times: [250, 10, 250, 299, 300], closed: [0, 0, 0, 0, 1] },
  ])("observe returns how many buckets closed: $why", ({ times, closed }) => {
    const s = createHeavyHitters(small);
    expect(times.map((t) => observe(s, t))).toEqual(closed);
  });

  it.each([
    {
      why: "first observation at a bucket start: full after `buckets` closes",
      first: 1_000,
      at: [1_100, 1_200, 1_300],
      covered: [100, 200, 300],
    },
    {
      why: "first observation mid-bucket: that bucket is only partly covered",
      first: 1_050,
      at: [1_100, 1_200, 1_300, 1_400],
      covered: [50, 150, 250, 300],
    },
    {
      why: "a gap keeps the period covered (no message means no clicks)",
      first: 0,
      at: [300, 10_000],
      covered: [300, 300],
    },
  ])("coverage: $why", ({ first, at, covered }) => {
    const s = createHeavyHitters(small);
    observe(s, first);
    const got = at.map((t) => {
      observe(s, t);
      return coverageOf(s);
    });
    expect(got.map((c) => c.coveredMs)).toEqual(covered);
    expect(got.map((c) => c.full)).toEqual(covered.map((c) => c === 300));
  });

  it.each([
    { weight: 0 },
    { weight: -1 },
    { weight: 1.5 },
    { weight: Number.NaN },
    { weight: Number.POSITIVE_INFINITY },
  ])("refuses a weight of $weight before changing anything", ({ weight }) => {
    const s = createHeavyHitters(small);
    offerBatch(s, counts("a:1"), 0);
    const before = snapshotHeavyHitters(s);
    expect(() => offerBatch(s, [["b", 2] as const, ["c", weight] as const], 150)).toThrow(
      RangeError,
    );
    expect(() => offer(s, "d", weight, 150)).toThrow(RangeError);
    expect(snapshotHeavyHitters(s)).toEqual(before);
  });

  it("accepts a Map of counts", () => {
    const s = createHeavyHitters(small);
    offerBatch(
      s,
      new Map([
        ["a", 2],
        ["b", 1],
      ]),
      0,
    );
    observe(s, 100);
    expect(bounds(s)).toEqual(["a:2..2", "b:1..1"]);
  });

  /**
   * A random stream of messages: timestamps mostly advance by a few ms, sometimes repeat,
   * sometimes go backwards or jump past the period.
   */
  function randomStream(seed: number, ads: number, s: number, messages: number) {
    const rnd = prng(seed);
    const draw = zipfOf(rnd, ads, s);
    const out: { at: number; clicks: Map<string, number> }[] = [];
    let t = 1_000 + Math.floor(rnd() * 1_000);
    for (let i = 0; i < messages; i++) {
      const r = rnd();
      if (r < 0.6) t += Math.floor(rnd() * 40);
      else if (r < 0.95) t += 0;
      else if (r < 0.99) t -= Math.floor(rnd() * 200);
      else t += 400 + Math.floor(rnd() * 600);
      const clicks = new Map<string, number>();
      const size = Math.floor(rnd() * 60);
      for (let j = 0; j < size; j++) {
        const adId = `ad${draw()}`;
        clicks.set(adId, (clicks.get(adId) ?? 0) + 1);
      }
      out.push({ at: t, clicks });
    }
    return out;
  }

  it.each([
    { seed: 31, capacity: 1, ads: 30, s: 1.2 },
    { seed: 32, capacity: 4, ads: 200, s: 1.0 },
    { seed: 33, capacity: 16, ads: 2_000, s: 0.9 },
    { seed: 34, capacity: 64, ads: 5_000, s: 1.1 },
  ])(
    "bounds every ad over the period against exact counts (seed $seed, m = $capacity)",
    ({ seed, capacity, ads, s: skew }) => {
      const opts = { periodMs: 500, buckets: 5, capacity };
      const s = createHeavyHitters(opts);
      // Brute force: every click with the bucket of its effective time (the latest seen).
      let log: { index: number; adId: string; n: number }[] = [];
      let latest = Number.NEGATIVE_INFINITY;
      for (const msg of randomStream(seed, ads, skew, 3_000)) {
        latest = Math.max(latest, msg.at);
        const closed = offerBatch(s, msg.clicks, msg.at);
        for (const [adId, n] of msg.clicks) log.push({ index: Math.floor(latest / 100), adId, n });
        if (closed === 0) continue;
        const open = Math.floor(latest / 100);
        log = log.filter((c) => c.index >= open - 5);
        const exact = new Map<string, number>();
        let total = 0;
        for (const c of log) {
          if (c.index >= open - 5 && c.index < open) {
            exact.set(c.adId, (exact.get(c.adId) ?? 0) + c.n);
            total += c.n;
          }
        }
        expect(totalOf(s)).toBe(total);
        const cands = candidates(s);
        const byAd = new Map(cands.map((e) => [e.adId, e]));
        const bad: string[] = [];
        for (const e of cands) {
          const t = exact.get(e.adId) ?? 0;
          if (!(e.lower <= t && t <= e.upper)) bad.push(`candidate ${e.adId}: ${t} not in bounds`);
          const one = estimate(s, e.adId);
          if (one.lower !== e.lower || one.upper !== e.upper)
            bad.push(`estimate ${e.adId} differs`);
        }
        for (const [adId, t] of exact) {
          if (t * capacity > total && !byAd.has(adId)) bad.push(`heavy ${adId} missing`);
          const e = byAd.get(adId) ?? estimate(s, adId);
          if (!(e.lower <= t && t <= e.upper)) bad.push(`${adId}: ${t} not in bounds`);
        }
        expect(bad).toEqual([]);
        // Sorted by lower bound desc, then adId asc.
        const sorted = cands
          .slice()
          .sort((a, b) => b.lower - a.lower || (a.adId < b.adId ? -1 : 1));
        expect(cands).toEqual(sorted);
      }
    },
  );

  it.each([41, 42, 43])(
    "gives the same answers whether a timestamp's clicks come in one message or many (seed %i)",
    (seed) => {
      const rnd = prng(seed);
      const opts = { periodMs: 500, buckets: 5, capacity: 4 };
      const whole = createHeavyHitters(opts);
      const split = createHeavyHitters(opts);
      for (const msg of randomStream(seed, 300, 1.0, 2_000)) {
        offerBatch(whole, msg.clicks, msg.at);
        // The same clicks, one by one, shuffled, as messages of random sizes.
        const singles: [string, number][] = [];
        for (const [adId, n] of msg.clicks) for (let i = 0; i < n; i++) singles.push([adId, 1]);
        const order = shuffle(rnd, singles);
        while (order.length > 0) {
          const part = new Map<string, number>();
          for (const [adId] of order.splice(0, 1 + Math.floor(rnd() * 5))) {
            part.set(adId, (part.get(adId) ?? 0) + 1);
          }
          offerBatch(split, part, msg.at);
        }
        if (msg.clicks.size === 0) observe(split, msg.at);
        expect(candidates(split)).toEqual(candidates(whole));
        expect(totalOf(split)).toBe(totalOf(whole));
      }
    },
  );

  it.each([
    { seed: 51, cut: 1 },
    { seed: 52, cut: 777 },
    { seed: 53, cut: 1_500 },
  ])(
    "continues exactly after snapshot and restore (seed $seed, cut after message $cut)",
    ({ seed, cut }) => {
      const opts = { periodMs: 500, buckets: 5, capacity: 8 };
      const stream = randomStream(seed, 500, 1.0, 2_000);
      const uninterrupted = createHeavyHitters(opts);
      let resumed = createHeavyHitters(opts);
      stream.forEach((msg, i) => {
        offerBatch(uninterrupted, msg.clicks, msg.at);
        offerBatch(resumed, msg.clicks, msg.at);
        if (i === cut) {
          const snap = snapshotHeavyHitters(resumed);
          // Plain data: survives JSON and msgpack unchanged.
          expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
          expect(unpack(pack(snap))).toEqual(snap);
          resumed = restoreHeavyHitters(JSON.parse(JSON.stringify(snap)), opts);
        }
        if (i >= cut) {
          expect(candidates(resumed)).toEqual(candidates(uninterrupted));
          expect(coverageOf(resumed)).toEqual(coverageOf(uninterrupted));
        }
      });
      expect(snapshotHeavyHitters(resumed)).toEqual(snapshotHeavyHitters(uninterrupted));
    },
  );

  it("keeps the clicks of the latest timestamp, not yet in a summary, across a restore", () => {
    const s = createHeavyHitters(small);
    offerBatch(s, counts("a:2"), 10);
    offerBatch(s, counts("a:1 b:1"), 10);
    const r = restoreHeavyHitters(snapshotHeavyHitters(s), small);
    observe(r, 100);
    expect(bounds(r)).toEqual(["a:3..3", "b:1..1"]);
  });

  it("snapshots an untouched sketch as plain data and restores it", () => {
    const snap = snapshotHeavyHitters(createHeavyHitters(small));
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
    const r = restoreHeavyHitters(snap, small);
    expect(coverageOf(r).coveredMs).toBe(0);
    offerBatch(r, counts("a:1"), 0);
    observe(r, 100);
    expect(bounds(r)).toEqual(["a:1..1"]);
  });

  it("starts afresh when the options change the sketch's shape", () => {
    const s = createHeavyHitters(small);
    offerBatch(s, counts("a:1"), 0);
    observe(s, 100);
    const r = restoreHeavyHitters(snapshotHeavyHitters(s), { ...small, capacity: 3 });
    expect(r.options.capacity).toBe(3);
    expect(bounds(r)).toEqual([]);
    expect(coverageOf(r).coveredMs).toBe(0);
  });

  it("refuses a snapshot of an unknown version", () => {
    const snap = { ...snapshotHeavyHitters(createHeavyHitters(small)), v: 2 as 1 };
    expect(() => restoreHeavyHitters(snap, small)).toThrow(RangeError);
  });

  it("takes AdCounts as an array of pairs or a Map alike", () => {
    const asArray: AdCounts = counts("a:3 b:1");
    const asMap: AdCounts = new Map(asArray);
    const x = createHeavyHitters(small);
    const y = createHeavyHitters(small);
    offerBatch(x, asArray, 0);
    offerBatch(y, asMap, 0);
    observe(x, 100);
    observe(y, 100);
    expect(candidates(x)).toEqual(candidates(y));
  });
});
