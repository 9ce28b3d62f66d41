import { describe, expect, it } from "vitest";
import type { ClickEvent, Dimension } from "../../src/model.js";
import {
  type AdDimCount,
  compareIds,
  type MinuteCountsSnapshot,
  MinuteState,
} from "../../src/windows/minute-state.js";

const MIN = 60_000;

function ev(adId: string, over: Partial<ClickEvent> = {}): ClickEvent {
  return {
    adId,
    timestampMs: 1,
    userId: "u",
    ip: "10.0.0.1",
    country: "USA",
    eventId: "e",
    ...over,
  };
}

/** The obvious model: maps of strings, sorted at the end. */
class Reference {
  readonly ads = new Map<string, number>();
  readonly dims = new Map<Dimension, Map<string, number>>();
  eventCount = 0;
  constructor(readonly dimensions: readonly Dimension[]) {
    for (const d of dimensions) this.dims.set(d, new Map());
  }
  add(e: ClickEvent): void {
    this.ads.set(e.adId, (this.ads.get(e.adId) ?? 0) + 1);
    this.eventCount++;
    for (const d of this.dimensions) {
      const m = this.dims.get(d) as Map<string, number>;
      const key = JSON.stringify([e.adId, e[d]]);
      m.set(key, (m.get(key) ?? 0) + 1);
    }
  }
  snapshot(startMs: number): MinuteCountsSnapshot {
    const ads = [...this.ads].sort((a, b) => compareIds(a[0], b[0]));
    const dims = this.dimensions.map((d) =>
      [...(this.dims.get(d) as Map<string, number>)]
        .map(([k, n]) => [...(JSON.parse(k) as [string, string]), n] as AdDimCount)
        .sort((a, b) => compareIds(a[0], b[0]) || compareIds(a[1], b[1])),
    );
    return { startMs, eventCount: this.eventCount, ads, dims };
  }
}

/** A deterministic generator (xorshift32). */
function rng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

// Ad ids of every class the key encoding distinguishes.
const ID_CLASSES: Record<string, (i: number) => string> = {
  "book-shaped (9 ASCII characters)": (i) => `ad${String(i).padStart(7, "0")}`,
  "short and of mixed lengths": (i) => i.toString(36),
  "exactly 16 characters": (i) => `x${String(i).padStart(15, "0")}`,
  "17 characters (kept as strings)": (i) => `y${String(i).padStart(16, "0")}`,
  "non-ASCII (kept as strings)": (i) => `é${i}`,
  "with U+007F and U+0001": (i) => `\u007f${i}\u0001`,
};

function checkAgainstReference(
  dimensions: readonly Dimension[],
  events: ClickEvent[],
): { m: MinuteState; ref: Reference } {
  const m = new MinuteState(0, MIN, dimensions);
  const ref = new Reference(dimensions);
  for (const e of events) {
    m.add(e);
    ref.add(e);
  }
  const want = ref.snapshot(0);
  expect(m.toSnapshot()).toEqual(want);
  expect(m.size).toBe(ref.ads.size);
  expect(m.sortedAdIds()).toEqual(want.ads.map(([a]) => a));
  expect([...ref.ads].map(([adId]) => m.adCount(adId))).toEqual([...ref.ads.values()]);
  for (let d = 0; d < dimensions.length; d++) {
    const dim = dimensions[d] as Dimension;
    expect(m.dimCountsOf(dim)).toEqual(want.dims[d]);
    const rows = want.dims[d] as AdDimCount[];
    expect(rows.map(([adId, value]) => m.dimCount(adId, dim, value))).toEqual(
      rows.map(([, , n]) => n),
    );
  }
  return { m, ref };
}

describe("minute state (typed-array layout)", () => {
  it.each(Object.entries(ID_CLASSES))(
    "agrees with a map-based model on 20k events of ids %s, through growth and rehash",
    (_, idOf) => {
      const r = rng(42);
      const countries = ["USA", "KOR", "JPN", "DEU", "BRA", "IND", "GBR", "FRA", "CAN", "AUS"];
      const events: ClickEvent[] = [];
      for (let i = 0; i < 20_000; i++) {
        // Skewed: a few ads get many events (countries beyond the inline slot), most get one.
        const ad = r() < 0.3 ? Math.floor(r() * 20) : Math.floor(r() * 8_000);
        events.push(
          ev(idOf(ad), {
            country: countries[Math.floor(r() * r() * countries.length)] as string,
            ip: `10.0.${Math.floor(r() * 4)}.${Math.floor(r() * 50)}`,
            userId: `u${Math.floor(r() * 300)}`,
          }),
        );
      }
      checkAgainstReference(["country"], events);
      checkAgainstReference(["country", "ip", "userId"], events);
      checkAgainstReference(["userId"], events);
      checkAgainstReference([], events);
    },
  );

  it("sorts packed and string-kept ids together in code-unit order", () => {
    const ids = [
      "",
      "a",
      "ab",
      "abc",
      "abcd",
      "abcde",
      "b",
      "a\u0001",
      "a\u007f",
      "aé",
      "a\u0000",
      "zzzzzzzzzzzzzzzz",
      "zzzzzzzzzzzzzzzzz",
      "A",
      "~",
      "😀",
      "ad0000010",
      "ad0000002",
    ];
    const m = new MinuteState(0, MIN, ["country"]);
    for (const id of ids) m.add(ev(id, { country: id.length % 2 ? "KOR" : "USA" }));
    expect(m.sortedAdIds()).toEqual([...ids].sort(compareIds));
    for (const id of ids) expect(m.adCount(id)).toBe(1);
    expect(m.adCount("abcdef")).toBe(0);
    expect(m.adCount("zzzzzzzzzzzzzzzzzz")).toBe(0);
  });

  it.each([
    { name: "the first value only", values: ["USA", "USA", "USA"] },
    { name: "a second value (one pair)", values: ["USA", "KOR", "USA", "KOR", "KOR"] },
    { name: "every value once", values: ["A", "B", "C", "D", "E", "F", "G"] },
    { name: "a value seen first as a pair again", values: ["B", "A", "A", "B", "C", "A"] },
  ])("counts one ad's countries exactly: $name", ({ values }) => {
    const { m } = checkAgainstReference(
      ["country"],
      values.map((country) => ev("ad", { country })),
    );
    expect(m.dimCount("ad", "country", "ZZZ")).toBe(0);
    expect(m.dimCount("other", "country", "USA")).toBe(0);
    expect(m.dimCount("ad", "ip", "10.0.0.1")).toBe(0);
  });

  it("round-trips through a snapshot (JSON), and goes on counting after a restore", () => {
    const r = rng(7);
    const events = Array.from({ length: 5_000 }, () =>
      ev(`ad${Math.floor(r() * 700)}`, { country: `C${Math.floor(r() * 12)}` }),
    );
    const { m, ref } = checkAgainstReference(["country", "ip"], events);
    const snap = JSON.parse(JSON.stringify(m.toSnapshot())) as MinuteCountsSnapshot;
    const back = MinuteState.fromSnapshot(snap, MIN, ["country", "ip"]);
    expect(back.toSnapshot()).toEqual(m.toSnapshot());
    for (const e of events.slice(0, 1_000)) {
      back.add(e);
      ref.add(e);
    }
    expect(back.toSnapshot()).toEqual(ref.snapshot(0));
  });

  it("restores a snapshot written by the Map-based layout (same plain format)", () => {
    // As the previous build wrote it: ads sorted, rows sorted by ad then value; an ad without
    // dimension rows; an ad only in dimension rows; counts above 2^31.
    const snap: MinuteCountsSnapshot = {
      startMs: 120_000,
      eventCount: 3_000_000_010,
      ads: [
        ["a", 3_000_000_000],
        ["b", 4],
        ["c", 6],
      ],
      dims: [
        [
          ["a", "KOR", 1],
          ["a", "USA", 2_999_999_999],
          ["b", "DEU", 4],
          ["d", "USA", 1],
        ],
      ],
    };
    const m = MinuteState.fromSnapshot(snap, MIN, ["country"]);
    expect(m.toSnapshot()).toEqual({
      ...snap,
      ads: [...snap.ads, ["d", 0]],
    });
    expect(m.adCount("a")).toBe(3_000_000_000);
    expect(m.dimCount("a", "country", "USA")).toBe(2_999_999_999);
    expect(m.dimCountsOf("country")).toEqual(snap.dims[0]);
    m.add(ev("c", { country: "JPN" }));
    expect(m.dimCountsOf("country")).toContainEqual(["c", "JPN", 1]);
    expect(m.adCount("c")).toBe(7);
  });

  it.each([-1, 1.5, 2 ** 32, Number.NaN])(
    "refuses a snapshot count of %d rather than storing it wrong",
    (count) => {
      const snap: MinuteCountsSnapshot = {
        startMs: 0,
        eventCount: 1,
        ads: [["a", count]],
        dims: [[]],
      };
      expect(() => MinuteState.fromSnapshot(snap, MIN, ["country"])).toThrow(RangeError);
      const dimSnap: MinuteCountsSnapshot = {
        startMs: 0,
        eventCount: 1,
        ads: [["a", 1]],
        dims: [[["a", "USA", count]]],
      };
      expect(() => MinuteState.fromSnapshot(dimSnap, MIN, ["country"])).toThrow(RangeError);
    },
  );

  it.each([0, 1, 12, 13, 500, 5_000])(
    "compacts a minute of %i events without changing a count, and grows again after",
    (n) => {
      const r = rng(n + 1);
      const mk = () =>
        ev(`ad${Math.floor(r() * Math.max(1, n / 3))}`, {
          country: `C${Math.floor(r() * 5)}`,
          ip: `10.0.0.${Math.floor(r() * 9)}`,
        });
      const events = Array.from({ length: n }, mk);
      const { m, ref } = checkAgainstReference(["country", "ip"], events);
      const before = m.bytes;
      m.compact();
      expect(m.bytes).toBeLessThanOrEqual(before);
      expect(m.toSnapshot()).toEqual(ref.snapshot(0));
      m.compact();
      expect(m.toSnapshot()).toEqual(ref.snapshot(0));
      // Late events after compaction: existing ads and pairs, new ones, through growth.
      for (const e of [...events.slice(0, 200), ...Array.from({ length: 3 * n + 50 }, mk)]) {
        m.add(e);
        ref.add(e);
      }
      expect(m.toSnapshot()).toEqual(ref.snapshot(0));
      expect([...ref.ads].map(([adId]) => m.adCount(adId))).toEqual([...ref.ads.values()]);
    },
  );

  it("holds 200k ads in well under 100 bytes each (no object per ad)", () => {
    const m = new MinuteState(0, MIN, ["country"]);
    for (let i = 0; i < 200_000; i++) m.add(ev(`ad${String(i).padStart(7, "0")}`));
    expect(m.size).toBe(200_000);
    expect(m.bytes / m.size).toBeLessThan(100);
    expect(m.adCount("ad0199999")).toBe(1);
    expect(m.adCounts().slice(0, 2)).toEqual([
      ["ad0000000", 1],
      ["ad0000001", 1],
    ]);
  });
});
