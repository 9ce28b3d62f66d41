import { describe, expect, it } from "vitest";
import { prng } from "../../src/gen/click-log.js";
import {
  closeEpoch,
  createHotEpochs,
  epochsRoutedIn,
  type HotEpochs,
  type HotEpochsSnapshot,
  liveEpochs,
  MAX_SHARDS,
  openEpoch,
  openEpochOf,
  ownerOf,
  purgeEpochMinutes,
  restoreHotEpochs,
  shardOfEvent,
  snapshotHotEpochs,
} from "../../src/hot/epochs.js";

const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9, 10, 0, 0);
/** The start of the i-th minute from T0. */
const m = (i: number) => T0 + i * MIN;

/** The id of the owner of each (ad, minute), null for the aggregator. */
function owners(t: HotEpochs, ads: string[], minutes: number[]): (number | null)[][] {
  return ads.map((ad) => minutes.map((mm) => ownerOf(t, ad, mm)?.id ?? null));
}

describe("ownerOf", () => {
  it("is null for every minute of an ad that was never split", () => {
    const t = createHotEpochs();
    expect(ownerOf(t, "a", m(0))).toBeNull();
    openEpoch(t, "b", 2, 10, []);
    expect(ownerOf(t, "a", m(0))).toBeNull();
    expect(ownerOf(t, "b", m(0))?.adId).toBe("b");
  });

  it.each([
    { why: "no minute held", held: [] as number[], owned: [0, 1, 2, 3], kept: [] as number[] },
    { why: "one minute held", held: [1], owned: [0, 2, 3], kept: [1] },
    { why: "several minutes held", held: [0, 3], owned: [1, 2], kept: [0, 3] },
  ])("gives an open epoch every minute but the excluded ones ($why)", ({ held, owned, kept }) => {
    const t = createHotEpochs();
    const e = openEpoch(
      t,
      "a",
      4,
      100,
      held.map((i) => m(i)),
    );
    for (const i of owned) expect(ownerOf(t, "a", m(i))).toBe(e);
    for (const i of kept) expect(ownerOf(t, "a", m(i))).toBeNull();
    // A minute far in the future (nobody counted the ad there) is the open epoch's too.
    expect(ownerOf(t, "a", m(10_000))).toBe(e);
  });

  it("gives a closed epoch only its routed minutes, the excluded ones included back to the aggregator", () => {
    const t = createHotEpochs();
    const e = openEpoch(t, "a", 3, 5, [m(0)]);
    e.routed.add(m(1));
    e.routed.add(m(3));
    expect(closeEpoch(t, "a", 50)).toBe(e);
    expect(e.closedAtSeq).toBe(50);
    expect(e.excluded.size).toBe(0);
    expect(openEpochOf(t, "a")).toBeNull();
    expect(owners(t, ["a"], [0, 1, 2, 3, 4].map(m))).toEqual([[null, e.id, null, e.id, null]]);
  });

  it("closeEpoch of an ad with no open epoch changes nothing and returns null", () => {
    const t = createHotEpochs();
    expect(closeEpoch(t, "a", 1)).toBeNull();
    const e = openEpoch(t, "a", 2, 1, []);
    e.routed.add(m(0));
    closeEpoch(t, "a", 9);
    expect(closeEpoch(t, "a", 20)).toBeNull();
    expect(e.closedAtSeq).toBe(9);
  });

  it("looks a minute up in a closed epoch that routed it first, then in the open epoch unless excluded", () => {
    const t = createHotEpochs();
    const first = openEpoch(t, "a", 2, 10, []);
    first.routed.add(m(1));
    first.routed.add(m(2));
    closeEpoch(t, "a", 20);
    // The aggregator counted the ad in m(3) in between; the closed epoch's routed minutes keep
    // their owner whether or not the new epoch lists them as held.
    const second = openEpoch(t, "a", 4, 21, [m(2), m(3)]);
    expect(second.id).toBe(first.id + 1);
    expect(openEpochOf(t, "a")).toBe(second);
    expect(ownerOf(t, "a", m(1))).toBe(first);
    expect(ownerOf(t, "a", m(2))).toBe(first);
    expect(ownerOf(t, "a", m(3))).toBeNull();
    expect(ownerOf(t, "a", m(0))).toBe(second);
    expect(ownerOf(t, "a", m(4))).toBe(second);
    second.routed.add(m(4));
    expect(epochsRoutedIn(t, m(2))).toEqual([first]);
    expect(epochsRoutedIn(t, m(4))).toEqual([second]);
    expect(epochsRoutedIn(t, m(3))).toEqual([]);
  });

  it("keeps the oldest closed epoch first when two closed epochs and an open one coexist", () => {
    const t = createHotEpochs();
    const e1 = openEpoch(t, "a", 2, 1, []);
    e1.routed.add(m(0));
    closeEpoch(t, "a", 5);
    const e2 = openEpoch(t, "a", 2, 6, [m(1)]);
    e2.routed.add(m(2));
    closeEpoch(t, "a", 9);
    const e3 = openEpoch(t, "a", 8, 10, [m(1)]);
    expect(owners(t, ["a"], [0, 1, 2, 3].map(m))).toEqual([[e1.id, null, e2.id, e3.id]]);
    expect(liveEpochs(t).map((e) => e.id)).toEqual([1, 2, 3]);
  });
});

describe("openEpoch", () => {
  it("refuses a second open epoch of the same ad, without using up an id", () => {
    const t = createHotEpochs();
    openEpoch(t, "a", 2, 1, []);
    expect(() => openEpoch(t, "a", 3, 2, [])).toThrow(RangeError);
    expect(() => openEpoch(t, "a", 3, 2, [])).toThrow(/already split/);
    expect(liveEpochs(t)).toHaveLength(1);
    expect(openEpoch(t, "b", 2, 3, []).id).toBe(2);
  });

  it("opens again after a merge, with the next id", () => {
    const t = createHotEpochs();
    openEpoch(t, "a", 2, 1, []);
    closeEpoch(t, "a", 4);
    const e = openEpoch(t, "a", 5, 5, []);
    expect(e.id).toBe(2);
    expect(e.shards).toBe(5);
    expect(e.startSeq).toBe(5);
    expect(t.nextId).toBe(3);
  });

  it.each([0, 1, -2, 65, 1000, 2.5, Number.NaN, Number.POSITIVE_INFINITY])(
    "refuses %d shards",
    (shards) => {
      const t = createHotEpochs();
      expect(() => openEpoch(t, "a", shards, 1, [])).toThrow(RangeError);
      expect(t.byAd.size).toBe(0);
      expect(t.nextId).toBe(1);
    },
  );

  it.each([2, 3, 63, MAX_SHARDS])("accepts %d shards", (shards) => {
    const t = createHotEpochs();
    expect(openEpoch(t, "a", shards, 1, []).shards).toBe(shards);
    expect(MAX_SHARDS).toBe(64);
  });

  it("copies the held minutes (a later change of the caller's collection does not leak in)", () => {
    const t = createHotEpochs();
    const held = new Set([m(0)]);
    const e = openEpoch(t, "a", 2, 1, held);
    held.add(m(1));
    expect(e.excluded).toEqual(new Set([m(0)]));
    expect(ownerOf(t, "a", m(1))).toBe(e);
  });
});

describe("purgeEpochMinutes", () => {
  it.each([
    { bound: m(1) - 1, left: [0, 1, 2] },
    { bound: m(1), left: [1, 2] },
    { bound: m(1) + 1, left: [1, 2] },
    { bound: m(2) + MIN - 1, left: [2] },
    { bound: m(3), left: [] as number[] },
  ])("with the bound $bound forgets the minutes ending at or before it", ({ bound, left }) => {
    const t = createHotEpochs();
    const e = openEpoch(t, "a", 2, 1, [m(0), m(1), m(2)]);
    for (const i of [0, 1, 2]) e.routed.add(m(i));
    purgeEpochMinutes(t, bound, MIN);
    expect([...e.routed].sort((x, y) => x - y)).toEqual(left.map(m));
    expect([...e.excluded].sort((x, y) => x - y)).toEqual(left.map(m));
  });

  it("retires only closed epochs left with no routed minute, returned by id", () => {
    const t = createHotEpochs();
    const a1 = openEpoch(t, "a", 2, 1, []);
    a1.routed.add(m(0));
    closeEpoch(t, "a", 2);
    const b1 = openEpoch(t, "b", 2, 3, []);
    b1.routed.add(m(0));
    b1.routed.add(m(5));
    closeEpoch(t, "b", 4);
    const a2 = openEpoch(t, "a", 2, 5, []);
    a2.routed.add(m(1));
    const c1 = openEpoch(t, "c", 2, 6, []); // open, never routed: stays
    const d1 = openEpoch(t, "d", 2, 7, []);
    d1.routed.add(m(0));
    closeEpoch(t, "d", 8);

    const retired = purgeEpochMinutes(t, m(2), MIN);
    expect(retired.map((e) => e.id)).toEqual([a1.id, d1.id]);
    // a2 is open (its routed minute purged, still open), b1 keeps m(5), c1 is open.
    expect(liveEpochs(t).map((e) => e.id)).toEqual([b1.id, a2.id, c1.id]);
    expect(a2.routed.size).toBe(0);
    expect(t.byAd.has("d")).toBe(false);
    expect(t.byAd.get("a")).toEqual([a2]);
    expect(ownerOf(t, "a", m(0))).toBe(a2);
    // Nothing left to retire at the same bound.
    expect(purgeEpochMinutes(t, m(2), MIN)).toEqual([]);
    expect(purgeEpochMinutes(t, m(6), MIN).map((e) => e.id)).toEqual([b1.id]);
    expect(t.byAd.has("b")).toBe(false);
  });

  it("retires a closed epoch that was never routed a click at the first purge", () => {
    const t = createHotEpochs();
    const e = openEpoch(t, "a", 2, 1, [m(9)]);
    closeEpoch(t, "a", 2);
    expect(purgeEpochMinutes(t, Number.NEGATIVE_INFINITY, MIN)).toEqual([e]);
    expect(t.byAd.size).toBe(0);
  });

  it("leaves the id counter alone (ids are never reused)", () => {
    const t = createHotEpochs();
    openEpoch(t, "a", 2, 1, []);
    closeEpoch(t, "a", 2);
    purgeEpochMinutes(t, m(100), MIN);
    expect(openEpoch(t, "a", 2, 3, []).id).toBe(2);
  });
});

describe("snapshotHotEpochs / restoreHotEpochs", () => {
  it("restores nothing to an empty table", () => {
    const t = restoreHotEpochs(undefined);
    expect(t.byAd.size).toBe(0);
    expect(t.nextId).toBe(1);
  });

  it.each([1, 2, 3, 4, 5])(
    "round-trips a random table through JSON with identical owners (seed %i)",
    (seed) => {
      const rnd = prng(seed);
      const ads = ["a", "b", "c", "d"];
      const t = createHotEpochs();
      let seq = 1;
      for (let step = 0; step < 60; step++) {
        const ad = ads[Math.floor(rnd() * ads.length)] as string;
        const r = rnd();
        const open = openEpochOf(t, ad);
        if (open === null && r < 0.5) {
          const held = [0, 1, 2, 3, 4, 5, 6, 7].filter(() => rnd() < 0.3).map(m);
          openEpoch(t, ad, 2 + Math.floor(rnd() * 63), seq, held);
        } else if (open !== null && r < 0.6) {
          open.routed.add(m(Math.floor(rnd() * 8)));
        } else if (open !== null && r < 0.8) {
          closeEpoch(t, ad, seq);
        } else if (r > 0.95) {
          purgeEpochMinutes(t, m(Math.floor(rnd() * 4)), MIN);
        }
        seq++;
      }
      const snap = snapshotHotEpochs(t);
      const json = JSON.parse(JSON.stringify(snap)) as HotEpochsSnapshot;
      expect(json).toEqual(snap);
      const back = restoreHotEpochs(json);
      const minutes = [-1, 0, 1, 2, 3, 4, 5, 6, 7, 8].map(m);
      expect(owners(back, [...ads, "zz"], minutes)).toEqual(owners(t, [...ads, "zz"], minutes));
      expect(snapshotHotEpochs(back)).toEqual(snap);
      expect(back.nextId).toBe(t.nextId);
      for (const ad of ads) expect(openEpochOf(back, ad)?.id).toBe(openEpochOf(t, ad)?.id);
    },
  );

  it("restores epochs listed out of order by id, oldest first per ad", () => {
    const t = createHotEpochs();
    const e1 = openEpoch(t, "a", 2, 1, []);
    e1.routed.add(m(0));
    closeEpoch(t, "a", 3);
    openEpoch(t, "a", 3, 4, [m(1)]);
    const snap = snapshotHotEpochs(t);
    const back = restoreHotEpochs({ nextId: snap.nextId, epochs: [...snap.epochs].reverse() });
    expect(back.byAd.get("a")?.map((e) => e.id)).toEqual([1, 2]);
    expect(ownerOf(back, "a", m(0))?.id).toBe(1);
    expect(ownerOf(back, "a", m(1))).toBeNull();
    expect(ownerOf(back, "a", m(2))?.id).toBe(2);
  });

  it("lists the minutes sorted and shares no Set with the live table", () => {
    const t = createHotEpochs();
    const e = openEpoch(t, "a", 2, 1, [m(3), m(1), m(2)]);
    e.routed.add(m(7));
    e.routed.add(m(5));
    const snap = snapshotHotEpochs(t);
    expect(snap.epochs[0]?.excluded).toEqual([m(1), m(2), m(3)]);
    expect(snap.epochs[0]?.routed).toEqual([m(5), m(7)]);
    e.routed.add(m(9));
    expect(snap.epochs[0]?.routed).toEqual([m(5), m(7)]);
    const back = restoreHotEpochs(snap);
    back.byAd.get("a")?.[0]?.routed.add(m(11));
    expect(snap.epochs[0]?.routed).toEqual([m(5), m(7)]);
  });
});

describe("shardOfEvent", () => {
  const ids = Array.from({ length: 100_000 }, (_, i) => `evt-${i}-${(i * 2654435761) >>> 0}`);

  it.each([2, 3, 4, 5, 6, 7, 8])("spreads 100k ids over %i shards within ±3 %", (k) => {
    const counts = new Array<number>(k).fill(0);
    let outside = 0;
    for (const id of ids) {
      const s = shardOfEvent(id, k);
      if (Number.isInteger(s) && s >= 0 && s < k) counts[s] = (counts[s] as number) + 1;
      else outside++;
    }
    expect(outside).toBe(0);
    const even = ids.length / k;
    for (const c of counts) {
      expect(c).toBeGreaterThanOrEqual(even * 0.97);
      expect(c).toBeLessThanOrEqual(even * 1.03);
    }
  });

  it("spreads sequential uuid-like ids too (a generator's ids share long prefixes)", () => {
    const counts = [0, 0, 0, 0];
    for (let i = 0; i < 100_000; i++) {
      const id = `3f2b9c1e-7d4a-4e8b-9a1c-${i.toString(16).padStart(12, "0")}`;
      const s = shardOfEvent(id, 4);
      counts[s] = (counts[s] as number) + 1;
    }
    for (const c of counts) expect(Math.abs(c - 25_000)).toBeLessThanOrEqual(750);
  });

  it("is deterministic and in range for random ids and shard counts", () => {
    const rnd = prng(42);
    for (let i = 0; i < 2000; i++) {
      const len = Math.floor(rnd() * 40);
      let id = "";
      for (let j = 0; j < len; j++) id += String.fromCharCode(32 + Math.floor(rnd() * 0x3000));
      const k = 2 + Math.floor(rnd() * 63);
      const s = shardOfEvent(id, k);
      expect(s).toBeGreaterThanOrEqual(0);
      expect(s).toBeLessThan(k);
      expect(Number.isInteger(s)).toBe(true);
      expect(shardOfEvent(id, k)).toBe(s);
      expect(shardOfEvent(`${id}`, k)).toBe(s);
    }
  });

  // Frozen: an id's shard must not change between versions (a running epoch's shards would
  // count each other's ids). Pinned from the current implementation.
  it.each([
    ["", [1, 2, 3, 4, 3, 11]],
    ["a", [1, 0, 3, 0, 3, 51]],
    ["evt-0", [1, 0, 3, 2, 7, 15]],
    ["evt-1", [1, 0, 3, 0, 3, 27]],
    ["3f2b9c1e-7d4a-4e8b-9a1c-2d3e4f5a6b7c", [1, 1, 1, 0, 5, 37]],
    ["ü-é-日本", [1, 0, 1, 1, 5, 21]],
    ["x".repeat(40), [0, 0, 0, 2, 4, 52]],
  ])("pins the shards of %j over 2, 3, 4, 7, 8, 64 shards", (id, want) => {
    expect([2, 3, 4, 7, 8, 64].map((k) => shardOfEvent(id, k))).toEqual(want);
  });
});
