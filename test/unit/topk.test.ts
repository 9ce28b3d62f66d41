import { describe, expect, it } from "vitest";
import { compareTop, mergeTopK, type TopEntry, TopKHeap, topK } from "../../src/windows/topk.js";

/** mulberry32: a small seeded PRNG, so every random case is reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function bruteForce(pairs: [string, number][], k: number): TopEntry[] {
  return pairs
    .map(([adId, count]) => ({ adId, count }))
    .sort((a, b) => (a.count !== b.count ? b.count - a.count : a.adId < b.adId ? -1 : 1))
    .slice(0, k);
}

function randomCounts(rnd: () => number, n: number, maxCount: number): [string, number][] {
  const out: [string, number][] = [];
  const used = new Set<string>();
  while (out.length < n) {
    const id = `ad${Math.floor(rnd() * n * 3)}`;
    if (used.has(id)) continue;
    used.add(id);
    out.push([id, 1 + Math.floor(rnd() * maxCount)]);
  }
  return out;
}

describe("topK", () => {
  it.each([
    {
      why: "orders by count descending",
      input: [
        ["a", 1],
        ["b", 3],
        ["c", 2],
      ] as [string, number][],
      k: 3,
      out: [
        ["b", 3],
        ["c", 2],
        ["a", 1],
      ],
    },
    {
      why: "breaks ties by adId ascending",
      input: [
        ["c", 5],
        ["a", 5],
        ["b", 5],
      ] as [string, number][],
      k: 3,
      out: [
        ["a", 5],
        ["b", 5],
        ["c", 5],
      ],
    },
    {
      why: "keeps the smaller adId when a tie straddles the cut",
      input: [
        ["z", 7],
        ["m", 4],
        ["b", 4],
        ["x", 4],
      ] as [string, number][],
      k: 2,
      out: [
        ["z", 7],
        ["b", 4],
      ],
    },
    {
      why: "replaces a held tie with a smaller adId arriving later",
      input: [
        ["d", 2],
        ["c", 2],
        ["b", 2],
        ["a", 2],
      ] as [string, number][],
      k: 2,
      out: [
        ["a", 2],
        ["b", 2],
      ],
    },
    {
      why: "returns everything, sorted, when k exceeds the input",
      input: [
        ["a", 1],
        ["b", 2],
      ] as [string, number][],
      k: 10,
      out: [
        ["b", 2],
        ["a", 1],
      ],
    },
    { why: "returns nothing for k = 0", input: [["a", 1]] as [string, number][], k: 0, out: [] },
    { why: "returns nothing for no input", input: [] as [string, number][], k: 3, out: [] },
    {
      why: "compares adIds by code unit, not locale",
      input: [
        ["b", 1],
        ["B", 1],
        ["a", 1],
        ["ä", 1],
      ] as [string, number][],
      k: 4,
      out: [
        ["B", 1],
        ["a", 1],
        ["b", 1],
        ["ä", 1],
      ],
    },
    {
      why: "takes a count of zero like any other",
      input: [
        ["a", 0],
        ["b", 1],
      ] as [string, number][],
      k: 1,
      out: [["b", 1]],
    },
  ])("$why", ({ input, k, out }) => {
    expect(topK(input, k)).toEqual(out.map(([adId, count]) => ({ adId, count })));
  });

  it("accepts a Map of counts", () => {
    const m = new Map([
      ["a", 2],
      ["b", 9],
    ]);
    expect(topK(m, 1)).toEqual([{ adId: "b", count: 9 }]);
  });

  it.each([-1, 1.5, Number.NaN])("rejects k = %s", (k) => {
    expect(() => topK([["a", 1]], k)).toThrow(RangeError);
  });

  it.each([
    { seed: 1, cases: 300, maxN: 60, maxCount: 5, why: "many ties" },
    { seed: 2, cases: 300, maxN: 60, maxCount: 1_000_000, why: "few ties" },
    { seed: 3, cases: 30, maxN: 3_000, maxCount: 50, why: "larger inputs" },
  ])(
    "matches a brute-force sort on random inputs (seed $seed, $why)",
    ({ seed, cases, maxN, maxCount }) => {
      const rnd = prng(seed);
      for (let c = 0; c < cases; c++) {
        const input = randomCounts(rnd, Math.floor(rnd() * maxN), maxCount);
        const k = Math.floor(rnd() * (maxN + 2));
        expect(topK(input, k)).toEqual(bruteForce(input, k));
      }
    },
  );

  it("holds at most k entries while streaming", () => {
    const h = new TopKHeap(3);
    for (let i = 0; i < 100; i++) h.offer(`ad${i}`, i % 7);
    expect(h.size).toBe(3);
    expect(h.result()).toEqual([
      { adId: "ad13", count: 6 },
      { adId: "ad20", count: 6 },
      { adId: "ad27", count: 6 },
    ]);
  });

  it("orders entries with compareTop the same way", () => {
    const list = [
      { adId: "b", count: 1 },
      { adId: "a", count: 1 },
      { adId: "c", count: 2 },
    ];
    expect(list.sort(compareTop).map((e) => e.adId)).toEqual(["c", "a", "b"]);
  });
});

describe("mergeTopK", () => {
  it.each([
    {
      why: "merges disjoint partitions into the global order",
      lists: [
        [
          { adId: "a", count: 9 },
          { adId: "b", count: 2 },
        ],
        [
          { adId: "c", count: 5 },
          { adId: "d", count: 2 },
        ],
      ],
      k: 3,
      out: ["a:9", "c:5", "b:2"],
    },
    {
      why: "breaks ties across partitions by adId",
      lists: [[{ adId: "y", count: 4 }], [{ adId: "x", count: 4 }], [{ adId: "z", count: 4 }]],
      k: 2,
      out: ["x:4", "y:4"],
    },
    {
      why: "handles empty lists and no lists",
      lists: [[], [{ adId: "a", count: 1 }], []],
      k: 5,
      out: ["a:1"],
    },
    { why: "returns nothing from nothing", lists: [], k: 5, out: [] },
  ])("$why", ({ lists, k, out }) => {
    expect(mergeTopK(lists, k).map((e) => `${e.adId}:${e.count}`)).toEqual(out);
  });

  it("refuses lists that share an adId, since the merge would not be exact", () => {
    expect(() => mergeTopK([[{ adId: "a", count: 1 }], [{ adId: "a", count: 2 }]], 2)).toThrow(
      RangeError,
    );
  });

  it.each([4, 5, 6])(
    "equals the top k of the union for random disjoint partitions (seed %i)",
    (seed) => {
      const rnd = prng(seed);
      for (let c = 0; c < 100; c++) {
        const all = randomCounts(rnd, 1 + Math.floor(rnd() * 200), 20);
        const partitions = 1 + Math.floor(rnd() * 8);
        const k = 1 + Math.floor(rnd() * 30);
        const parts: [string, number][][] = Array.from({ length: partitions }, () => []);
        for (const pair of all) parts[Math.floor(rnd() * partitions)]?.push(pair);
        const perPartition = parts.map((p) => topK(p, k));
        expect(mergeTopK(perPartition, k)).toEqual(bruteForce(all, k));
      }
    },
  );
});
