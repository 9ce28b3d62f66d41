import { pack, unpack } from "msgpackr";
import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/errors.js";
import { prng, zipfSampler } from "../../src/gen/click-log.js";
import {
  createHotDetector,
  type HotDecision,
  type HotDetectorOptions,
  type HotDetectorState,
  hotView,
  observeMessage,
  observeTime,
  resolveHotDetectorOptions,
  restoreHotDetector,
  shardsFor,
  snapshotHotDetector,
} from "../../src/hot/hot-detector.js";

const zipfOf = (rnd: () => number, n: number, s: number) => zipfSampler(n, s, rnd);

interface Message {
  at: number;
  clicks: Map<string, number>;
}

const BACKGROUND_ADS = 100;

/**
 * A message every `everyMs` in [fromMs, toMs): `perMessage` clicks, of which ad "hot" takes
 * share(at) and the rest is spread evenly over 100 background ads (more than the default 64
 * counters, so the sketch evicts). Shares are chosen so every count is an integer.
 */
function traffic(
  fromMs: number,
  toMs: number,
  perMessage: number,
  share: (at: number) => number,
  everyMs = 100,
): Message[] {
  const out: Message[] = [];
  for (let at = fromMs; at < toMs; at += everyMs) {
    const hot = Math.round(perMessage * share(at));
    const each = (perMessage - hot) / BACKGROUND_ADS;
    if (!Number.isInteger(each)) throw new Error(`uneven background at ${at}: ${each}`);
    const clicks = new Map<string, number>();
    if (hot > 0) clicks.set("hot", hot);
    if (each > 0) for (let i = 0; i < BACKGROUND_ADS; i++) clicks.set(`bg${i}`, each);
    out.push({ at, clicks });
  }
  return out;
}

function describeDecision(at: number, d: HotDecision): string {
  const k = d.kind === "split" ? ` K=${d.shards}` : "";
  return `${at} ${d.kind} ${d.adId}${k} ${d.ratePerSec}/s ${d.share.toFixed(4)}`;
}

/** Feeds messages, returns every decision with the time of the message that made it. */
function run(d: HotDetectorState, messages: Message[]): string[] {
  const out: string[] = [];
  for (const m of messages) {
    for (const dec of observeMessage(d, m.clicks, m.at)) out.push(describeDecision(m.at, dec));
  }
  return out;
}

/** A share by time: `phases` are [fromMs, share], the last one from ≤ at applies. */
function phases(...list: [number, number][]): (at: number) => number {
  return (at) => {
    let share = 0;
    for (const [from, s] of list) if (at >= from) share = s;
    return share;
  };
}

describe("hot detector options", () => {
  it("states its defaults", () => {
    expect(resolveHotDetectorOptions()).toEqual({
      hotShare: 0.3,
      hotMinRatePerSec: 5000,
      shardRatePerSec: 20_000,
      maxShards: 4,
      maxHotAds: 4,
      periodMs: 10_000,
      buckets: 5,
      capacity: 64,
      bucketMs: 2_000,
    });
  });

  it.each([
    { opts: { hotShare: 0 }, setting: "hotShare" },
    { opts: { hotShare: -0.1 }, setting: "hotShare" },
    { opts: { hotShare: 1.01 }, setting: "hotShare" },
    { opts: { hotShare: Number.NaN }, setting: "hotShare" },
    { opts: { hotShare: "0.3" as unknown as number }, setting: "hotShare" },
    { opts: { hotMinRatePerSec: 0 }, setting: "hotMinRatePerSec" },
    { opts: { hotMinRatePerSec: 2.5 }, setting: "hotMinRatePerSec" },
    { opts: { shardRatePerSec: 0 }, setting: "shardRatePerSec" },
    { opts: { maxShards: 1 }, setting: "maxShards" },
    { opts: { maxShards: 65 }, setting: "maxShards" },
    { opts: { maxShards: 3.5 }, setting: "maxShards" },
    { opts: { maxHotAds: 0 }, setting: "maxHotAds" },
    { opts: { periodMs: 0 }, setting: "periodMs" },
    { opts: { buckets: 0 }, setting: "buckets" },
    { opts: { periodMs: 1_000, buckets: 3 }, setting: "periodMs" },
    { opts: { capacity: 0 }, setting: "capacity" },
  ] as { opts: HotDetectorOptions; setting: string }[])(
    "refuses $opts, naming $setting",
    ({ opts, setting }) => {
      let err: unknown;
      try {
        createHotDetector(opts);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(ConfigError);
      expect((err as ConfigError).setting).toBe(setting);
    },
  );

  it.each([
    { hotShare: 1 },
    { hotShare: 0.0001 },
    { maxShards: 2 },
    { maxShards: 64 },
    { maxHotAds: 1 },
    { hotMinRatePerSec: 1 },
  ])("accepts the edge value %o", (opts) => {
    expect(() => createHotDetector(opts)).not.toThrow();
  });
});

describe("shardsFor", () => {
  it.each([
    { rate: 0, shards: 2 },
    { rate: 5_000, shards: 2 },
    { rate: 40_000, shards: 2 },
    { rate: 40_001, shards: 3 },
    { rate: 60_000, shards: 3 },
    { rate: 80_000, shards: 4 },
    { rate: 1_000_000, shards: 4 },
  ])("gives $shards shards at $rate clicks/s (defaults)", ({ rate, shards }) => {
    expect(shardsFor(resolveHotDetectorOptions(), rate)).toBe(shards);
  });

  it("goes up to maxShards", () => {
    expect(shardsFor(resolveHotDetectorOptions({ maxShards: 64 }), 1_000_000)).toBe(50);
    expect(shardsFor(resolveHotDetectorOptions({ maxShards: 64 }), 10_000_000)).toBe(64);
  });
});

describe("hot detection", () => {
  it("splits an ad going from 5% to 50% and merges it when it is back at 5%", () => {
    const d = createHotDetector();
    // 100 000 clicks/s: 10 000 per message, one message per 100 ms.
    const share = phases([0, 0.05], [30_000, 0.5], [60_000, 0.05]);
    expect(run(d, traffic(0, 100_000, 10_000, share))).toEqual([
      // Period [26 s, 36 s): 2 buckets at 5% and 3 at 50% → 32%, ≥ 30%; 32 000/s → K = 2.
      "36000 split hot K=2 32000/s 0.3200",
      // It may cool from the period starting at 36 s. Period [58 s, 68 s): 1 bucket at 50%
      // and 4 at 5% → 14% < 15% (the hot ad holds its counter in every bucket: exact).
      "68000 merge hot 14000/s 0.1400",
    ]);
    expect(d.hot.size).toBe(0);
  });

  it.each([
    { why: "clamps K to 2 from below", perSec: 20_000, share: 0.3, out: "K=2 6000/s 0.3000" },
    { why: "splits at exactly hotShare", perSec: 100_000, share: 0.3, out: "K=2 30000/s 0.3000" },
    { why: "takes K = ceil(rate / 20 000)", perSec: 100_000, share: 0.45, out: "K=3 45000/s" },
    { why: "clamps K to maxShards", perSec: 200_000, share: 0.5, out: "K=4 100000/s 0.5000" },
    { why: "does not split below hotShare", perSec: 100_000, share: 0.29, out: null },
    { why: "does not split below hotMinRatePerSec", perSec: 10_000, share: 0.4, out: null },
  ])("$why", ({ perSec, share, out }) => {
    const d = createHotDetector();
    const got = run(
      d,
      traffic(0, 30_000, perSec / 10, () => share),
    );
    // Aligned at 0: the first full period ends at 10 s.
    expect(got).toEqual(out === null ? [] : [expect.stringContaining(`10000 split hot ${out}`)]);
  });

  it.each([
    { why: "first click at a bucket start", from: 0, at: "10000" },
    { why: "first click mid-bucket (period full one bucket later)", from: 1, at: "12001" },
  ])("decides nothing on a partly filled period: $why", ({ from, at }) => {
    const d = createHotDetector();
    const got = run(
      d,
      traffic(from, 20_000, 10_000, () => 0.6),
    );
    expect(got.map((s) => s.split(" ")[0])).toEqual([at]);
  });

  it("does not flap when the share hovers around hotShare (hysteresis)", () => {
    const d = createHotDetector();
    // Alternates 25% / 35% by bucket: the period's share swings between 29% and 31%.
    const share = (at: number) => (Math.floor(at / 2_000) % 2 === 0 ? 0.25 : 0.35);
    const periodShares: number[] = [];
    const decisions: string[] = [];
    for (const m of traffic(0, 200_000, 10_000, share)) {
      const made = observeMessage(d, m.clicks, m.at);
      for (const dec of made) decisions.push(describeDecision(m.at, dec));
      if (m.at % 2_000 === 0 && m.at >= 10_000) {
        periodShares.push(hotView(d).top.find((c) => c.adId === "hot")?.lowerShare ?? 0);
      }
    }
    // Without hysteresis this would split and merge about every bucket:
    expect(periodShares.filter((s) => s >= 0.3).length).toBeGreaterThan(40);
    expect(periodShares.filter((s) => s < 0.3).length).toBeGreaterThan(40);
    expect(decisions).toEqual(["12000 split hot K=2 31000/s 0.3100"]);
  });

  it("merges once, and does not split again, when the share hovers around hotShare / 2", () => {
    const d = createHotDetector();
    // 50% until 20 s, then 10% / 20% by bucket: the period's share swings around 15%.
    const share = (at: number) =>
      at < 20_000 ? 0.5 : Math.floor(at / 2_000) % 2 === 0 ? 0.1 : 0.2;
    const got = run(d, traffic(0, 200_000, 10_000, share));
    expect(got.map((s) => s.split(" ").slice(0, 3).join(" "))).toEqual([
      "10000 split hot",
      expect.stringMatching(/^\d+ merge hot$/),
    ]);
  });

  it("keeps a hot ad hot for at least one period after it went hot", () => {
    const d = createHotDetector();
    // 60% until 10 s, then none at all: a period [x, x + 10 s) that starts at 10 s or later
    // is the first one cooling may be judged on. Without that rule it would merge at 18 s
    // (period share 12% < 15%).
    const got = run(d, traffic(0, 40_000, 10_000, phases([0, 0.6], [10_000, 0])));
    expect(got.map((s) => s.split(" ").slice(0, 3).join(" "))).toEqual([
      "10000 split hot",
      "20000 merge hot",
    ]);
  });

  it("merges on a gap longer than the period (an idle tick: no clicks at all)", () => {
    const d = createHotDetector();
    expect(
      run(
        d,
        traffic(0, 11_000, 10_000, () => 0.6),
      ),
    ).toHaveLength(1);
    expect(observeTime(d, 40_000)).toEqual([
      { kind: "merge", adId: "hot", ratePerSec: 0, share: 0 },
    ]);
    expect(hotView(d)).toMatchObject({ hot: [], top: [], totalRatePerSec: 0, full: true });
  });

  it("treats time going backwards as the latest time, without throwing or deciding", () => {
    const d = createHotDetector();
    run(
      d,
      traffic(0, 11_000, 10_000, () => 0.05),
    );
    const before = snapshotHotDetector(d);
    expect(observeTime(d, 5_000)).toEqual([]);
    expect(observeTime(d, Number.NaN)).toEqual([]);
    expect(snapshotHotDetector(d)).toEqual(before);
    // Clicks at an earlier time count with the latest one (10.9 s: bucket [10 s, 12 s)).
    expect(observeMessage(d, new Map([["late", 2_000]]), 3_000)).toEqual([]);
    observeTime(d, 12_000);
    expect(hotView(d, 200).top.find((c) => c.adId === "late")?.lowerRatePerSec).toBe(200);
  });

  it.each([0, -3, 2.5])("refuses a count of %s before changing anything", (n) => {
    const d = createHotDetector();
    run(
      d,
      traffic(0, 1_000, 1_000, () => 0.5),
    );
    const before = snapshotHotDetector(d);
    expect(() =>
      observeMessage(
        d,
        new Map([
          ["a", 1],
          ["b", n],
        ]),
        50_000,
      ),
    ).toThrow(RangeError);
    expect(snapshotHotDetector(d)).toEqual(before);
  });

  it("keeps at most maxHotAds hot, the highest lower bounds first, ties by adId", () => {
    const d = createHotDetector({ hotShare: 0.1, maxHotAds: 2, hotMinRatePerSec: 1 });
    const msg = (spec: Record<string, number>) => new Map(Object.entries(spec));
    const decisions: string[] = [];
    const feed = (from: number, to: number, spec: Record<string, number>) => {
      for (let at = from; at < to; at += 100) {
        for (const dec of observeMessage(d, msg(spec), at)) {
          decisions.push(describeDecision(at, dec));
        }
      }
    };
    // c, b, a tie at 25%; d 10%; background 15%.
    feed(0, 12_000, { c: 25, b: 25, a: 25, d: 10, x: 5, y: 5, z: 5 });
    expect(decisions).toEqual(["10000 split a K=2 250/s 0.2500", "10000 split b K=2 250/s 0.2500"]);
    // e outgrows everything: no room, and hot ads are not displaced.
    feed(12_000, 40_000, { a: 20, b: 20, c: 5, e: 55 });
    expect(decisions).toHaveLength(2);
    // a cools: its place goes to e, in the same evaluation, after the merge.
    feed(40_000, 60_000, { b: 20, e: 80 });
    expect(decisions.slice(2).map((s) => s.split(" ").slice(0, 3).join(" "))).toEqual([
      // Period [38 s, 48 s): a only in its first bucket, 20% / 5 = 4% < 5%.
      "48000 merge a",
      "48000 split e",
    ]);
  });

  it("shows hot ads and the top candidates for status", () => {
    const d = createHotDetector();
    run(
      d,
      traffic(0, 12_000, 10_000, () => 0.5),
    );
    const v = hotView(d, 2);
    expect(v.hot).toEqual([
      { adId: "hot", shards: 3, sinceMs: 10_000, ratePerSec: 50_000, share: 0.5 },
    ]);
    expect(v.top).toHaveLength(2);
    expect(v.top[0]).toEqual({
      adId: "hot",
      lowerRatePerSec: 50_000,
      upperRatePerSec: 50_000,
      lowerShare: 0.5,
      upperShare: 0.5,
    });
    expect(v).toMatchObject({
      totalRatePerSec: 100_000,
      coveredMs: 10_000,
      full: true,
      periodEndMs: 10_000,
    });
  });

  /**
   * Random traffic with repeated timestamps and a few backward steps: Zipf background over
   * 300 ads plus "hot" whose share moves through phases, so the detector splits and merges
   * several times. Small capacity: the sketch evicts all the time.
   */
  function randomTraffic(seed: number): Message[] {
    const rnd = prng(seed);
    const draw = zipfOf(rnd, 300, 1.0);
    const out: Message[] = [];
    let at = 500;
    for (let i = 0; i < 6_000; i++) {
      const r = rnd();
      if (r < 0.6) at += Math.floor(rnd() * 20);
      else if (r < 0.98) at += 0;
      else at -= Math.floor(rnd() * 100);
      const phase = Math.floor(at / 4_000) % 3; // 0: 5%, 1: 50%, 2: 20%
      const hotShare = [0.05, 0.5, 0.2][phase] as number;
      const clicks = new Map<string, number>();
      const size = Math.floor(rnd() * 80);
      for (let j = 0; j < size; j++) {
        const adId = rnd() < hotShare ? "hot" : `ad${draw()}`;
        clicks.set(adId, (clicks.get(adId) ?? 0) + 1);
      }
      out.push({ at, clicks });
    }
    return out;
  }

  const randomOptions: HotDetectorOptions = {
    periodMs: 2_000,
    buckets: 5,
    capacity: 4,
    hotShare: 0.25,
    hotMinRatePerSec: 50,
    shardRatePerSec: 1_000,
    maxShards: 8,
  };

  it.each([61, 62, 63])(
    "decides the same whether a timestamp's clicks come in one message or many (seed %i)",
    (seed) => {
      const rnd = prng(seed * 7);
      const whole = createHotDetector(randomOptions);
      const split = createHotDetector(randomOptions);
      const messages = randomTraffic(seed);
      const expected = run(whole, messages);
      const got: string[] = [];
      for (const m of messages) {
        // The same clicks, one at a time, shuffled, regrouped into messages of 1..6 clicks.
        const singles: string[] = [];
        for (const [adId, n] of m.clicks) for (let i = 0; i < n; i++) singles.push(adId);
        for (let i = singles.length - 1; i > 0; i--) {
          const j = Math.floor(rnd() * (i + 1));
          [singles[i], singles[j]] = [singles[j] as string, singles[i] as string];
        }
        const parts: Map<string, number>[] = [];
        while (singles.length > 0) {
          const part = new Map<string, number>();
          for (const adId of singles.splice(0, 1 + Math.floor(rnd() * 6))) {
            part.set(adId, (part.get(adId) ?? 0) + 1);
          }
          parts.push(part);
        }
        if (parts.length === 0) parts.push(new Map());
        for (const part of parts) {
          for (const dec of observeMessage(split, part, m.at))
            got.push(describeDecision(m.at, dec));
        }
      }
      expect(expected.length).toBeGreaterThanOrEqual(4);
      expect(expected.some((s) => s.includes(" merge "))).toBe(true);
      expect(got).toEqual(expected);
      expect(hotView(split, 10)).toEqual(hotView(whole, 10));
    },
  );

  it.each([
    { seed: 71, cut: 0 },
    { seed: 72, cut: 2_345 },
    { seed: 73, cut: 4_000 },
    { seed: 74, cut: 5_998 },
  ])(
    "makes the same later decisions after snapshot and restore (seed $seed, cut after $cut)",
    ({ seed, cut }) => {
      const messages = randomTraffic(seed);
      const uninterrupted = createHotDetector(randomOptions);
      const expected = run(uninterrupted, messages);
      let resumed = createHotDetector(randomOptions);
      const got: string[] = [];
      messages.forEach((m, i) => {
        for (const dec of observeMessage(resumed, m.clicks, m.at)) {
          got.push(describeDecision(m.at, dec));
        }
        if (i === cut) {
          const snap = snapshotHotDetector(resumed);
          expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
          resumed = restoreHotDetector(unpack(pack(snap)), randomOptions);
        }
      });
      expect(expected.length).toBeGreaterThanOrEqual(4);
      expect(got).toEqual(expected);
      expect(snapshotHotDetector(resumed)).toEqual(snapshotHotDetector(uninterrupted));
    },
  );

  it("keeps the hot set, and waits for a full period, when the sketch's shape changes", () => {
    const d = createHotDetector();
    run(
      d,
      traffic(0, 12_000, 10_000, () => 0.5),
    );
    const r = restoreHotDetector(snapshotHotDetector(d), { capacity: 32 });
    expect([...r.hot.keys()]).toEqual(["hot"]);
    // The new sketch starts at 12 s: its first full period ends at 22 s.
    const got = run(
      r,
      traffic(12_000, 40_000, 10_000, () => 0.01),
    );
    expect(got.map((s) => s.split(" ").slice(0, 3).join(" "))).toEqual(["22000 merge hot"]);
  });

  it("refuses a snapshot of an unknown version", () => {
    const snap = { ...snapshotHotDetector(createHotDetector()), v: 2 as 1 };
    expect(() => restoreHotDetector(snap)).toThrow(RangeError);
  });
});
