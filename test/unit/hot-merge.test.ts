import { describe, expect, it } from "vitest";
import { prng } from "../../src/gen/click-log.js";
import type { Dimension } from "../../src/model.js";
import { mergePartials, type PartialCounts } from "../../src/windows/merge-partials.js";
import type { AdCount, AdDimCount } from "../../src/windows/minute-state.js";

type Dims = Partial<Record<Dimension, AdDimCount[]>>;

// Ids whose code-unit order differs from a numeric or locale order.
const ADS = ["ad1", "ad10", "ad2", "ad9", "Ad1", "b", "ä", "ad 1", "ad-1", "z"];
const VALUES: Record<Dimension, string[]> = {
  country: ["US", "DE", "FR", "JP", "de", "ÜK"],
  userId: ["u1", "u10", "u2", "u9", "U1"],
  ip: ["10.0.0.1", "10.0.0.10", "10.0.0.2", "::1"],
};
const cmp = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

/** The expected result, by plain summing of everything and sorting. */
function bruteForce(
  base: AdCount[],
  baseDims: Dims,
  parts: PartialCounts[],
  dimensions: Dimension[],
): { adCounts: AdCount[]; dimCounts: Dims; events: number } {
  const ads = new Map<string, number>();
  for (const [ad, n] of base) ads.set(ad, (ads.get(ad) ?? 0) + n);
  for (const p of parts) for (const [ad, n] of p.ads) ads.set(ad, (ads.get(ad) ?? 0) + n);
  const dimCounts: Dims = {};
  for (const d of dimensions) {
    const sums = new Map<string, AdDimCount>();
    const rows = [...(baseDims[d] ?? []), ...parts.flatMap((p) => p.dims[d] ?? [])];
    for (const [ad, v, n] of rows) {
      const k = JSON.stringify([ad, v]);
      const row = sums.get(k);
      if (row) row[2] += n;
      else sums.set(k, [ad, v, n]);
    }
    dimCounts[d] = [...sums.values()].sort((x, y) => cmp(x[0], y[0]) || cmp(x[1], y[1]));
  }
  return {
    adCounts: [...ads.entries()].sort((x, y) => cmp(x[0], y[0])),
    dimCounts,
    events: parts.reduce((s, p) => s + p.eventCount, 0),
  };
}

/** Random counts of `ads` with dimension rows summing to each ad's count. */
function randomCounts(
  rnd: () => number,
  ads: string[],
  dimensions: Dimension[],
): { adCounts: AdCount[]; dims: Dims; events: number } {
  const adCounts: AdCount[] = [];
  const dims: Dims = {};
  for (const d of dimensions) dims[d] = [];
  let events = 0;
  for (const ad of [...ads].sort(cmp)) {
    const n = 1 + Math.floor(rnd() * 50);
    adCounts.push([ad, n]);
    events += n;
    for (const d of dimensions) {
      const values = VALUES[d];
      const per = new Map<string, number>();
      for (let i = 0; i < n; i++) {
        const v = values[Math.floor(rnd() * values.length)] as string;
        per.set(v, (per.get(v) ?? 0) + 1);
      }
      for (const [v, c] of [...per.entries()].sort((x, y) => cmp(x[0], y[0])))
        dims[d]?.push([ad, v, c]);
    }
  }
  return { adCounts, dims, events };
}

function pick(rnd: () => number, from: string[], p: number): string[] {
  return from.filter(() => rnd() < p);
}

const ALL_DIMS: Dimension[][] = [[], ["country"], ["userId"], ["country", "ip", "userId"]];

describe("mergePartials", () => {
  it.each(
    Array.from({ length: 24 }, (_, i) => ({ seed: i + 1, dims: ALL_DIMS[i % 4] as Dimension[] })),
  )("equals a brute-force sum on random inputs (seed $seed, dims $dims)", ({ seed, dims }) => {
    const rnd = prng(seed);
    const base = randomCounts(rnd, pick(rnd, ADS, 0.4), dims);
    const nParts = Math.floor(rnd() * 6);
    const parts: PartialCounts[] = [];
    for (let i = 0; i < nParts; i++) {
      // A shard counts one ad (sometimes none); several shards may count the same ad.
      const ad = rnd() < 0.15 ? [] : [ADS[Math.floor(rnd() * ADS.length)] as string];
      const c = randomCounts(rnd, ad, dims);
      parts.push({ eventCount: c.events, ads: c.adCounts, dims: c.dims });
    }
    const before = structuredClone({ base, parts });
    const got = mergePartials(base.adCounts, base.dims, parts, dims);
    // Inputs untouched.
    expect({ base, parts }).toEqual(before);
    const want = bruteForce(base.adCounts, base.dims, parts, dims);
    expect(got.events).toBe(want.events);
    expect(got.adCounts).toEqual(want.adCounts);
    for (const d of dims) expect(got.dimCounts[d]).toEqual(want.dimCounts[d]);
    // Every dimension still sums to the ad counts.
    const total = got.adCounts.reduce((s, [, n]) => s + n, 0);
    expect(total).toBe(base.events + want.events);
    for (const d of dims) expect(got.dimCounts[d]?.reduce((s, r) => s + r[2], 0)).toBe(total);
  });

  it("adds several shards of one ad to the ad's base count, value by value", () => {
    const got = mergePartials(
      [
        ["a", 5],
        ["hot", 2],
        ["z", 1],
      ],
      {
        country: [
          ["a", "US", 5],
          ["hot", "DE", 2],
          ["z", "FR", 1],
        ],
      },
      [
        {
          eventCount: 3,
          ads: [["hot", 3]],
          dims: {
            country: [
              ["hot", "DE", 1],
              ["hot", "US", 2],
            ],
          },
        },
        { eventCount: 4, ads: [["hot", 4]], dims: { country: [["hot", "US", 4]] } },
        { eventCount: 0, ads: [], dims: {} },
        { eventCount: 1, ads: [["hot", 1]], dims: { country: [["hot", "AU", 1]] } },
      ],
      ["country"],
    );
    expect(got).toEqual({
      adCounts: [
        ["a", 5],
        ["hot", 10],
        ["z", 1],
      ],
      dimCounts: {
        country: [
          ["a", "US", 5],
          ["hot", "AU", 1],
          ["hot", "DE", 3],
          ["hot", "US", 6],
          ["z", "FR", 1],
        ],
      },
      events: 8,
    });
  });

  it("inserts an ad absent from the base in its sorted place", () => {
    const got = mergePartials(
      [
        ["ad1", 1],
        ["ad3", 1],
      ],
      {
        country: [
          ["ad1", "US", 1],
          ["ad3", "US", 1],
        ],
      },
      [
        {
          eventCount: 2,
          ads: [["ad2", 2]],
          dims: {
            country: [
              ["ad2", "JP", 1],
              ["ad2", "DE", 1],
            ],
          },
        },
      ],
      ["country"],
    );
    expect(got.adCounts).toEqual([
      ["ad1", 1],
      ["ad2", 2],
      ["ad3", 1],
    ]);
    expect(got.dimCounts.country).toEqual([
      ["ad1", "US", 1],
      ["ad2", "DE", 1],
      ["ad2", "JP", 1],
      ["ad3", "US", 1],
    ]);
    expect(got.events).toBe(2);
  });

  it("merges into an empty base (every count of the minute is the shards')", () => {
    const got = mergePartials(
      [],
      {},
      [
        { eventCount: 1, ads: [["h", 1]], dims: { userId: [["h", "u1", 1]] } },
        { eventCount: 2, ads: [["h", 2]], dims: { userId: [["h", "u1", 2]] } },
      ],
      ["userId"],
    );
    expect(got).toEqual({
      adCounts: [["h", 3]],
      dimCounts: { userId: [["h", "u1", 3]] },
      events: 3,
    });
  });

  it.each([
    { why: "no partials", parts: [] as PartialCounts[] },
    { why: "one empty partial", parts: [{ eventCount: 0, ads: [], dims: {} }] },
    {
      why: "several empty partials",
      parts: [
        { eventCount: 0, ads: [], dims: {} },
        { eventCount: 0, ads: [], dims: { country: [] } },
      ],
    },
  ])("returns the base unchanged, as copies, for $why", ({ parts }) => {
    const base: AdCount[] = [
      ["a", 2],
      ["b", 1],
    ];
    const dims: Dims = {
      country: [
        ["a", "US", 2],
        ["b", "DE", 1],
      ],
    };
    const got = mergePartials(base, dims, parts, ["country"]);
    expect(got.events).toBe(0);
    expect(got.adCounts).toEqual(base);
    expect(got.adCounts).not.toBe(base);
    expect(got.dimCounts.country).toEqual(dims.country);
    got.adCounts.push(["c", 9]);
    expect(base).toHaveLength(2);
  });

  it("sums dimensions other than country, each on its own", () => {
    const got = mergePartials(
      [["h", 2]],
      {
        ip: [["h", "10.0.0.1", 2]],
        userId: [
          ["h", "u1", 1],
          ["h", "u2", 1],
        ],
      },
      [
        {
          eventCount: 3,
          ads: [["h", 3]],
          dims: {
            ip: [
              ["h", "10.0.0.1", 1],
              ["h", "10.0.0.10", 2],
            ],
            userId: [
              ["h", "u10", 1],
              ["h", "u2", 2],
            ],
          },
        },
      ],
      ["ip", "userId"],
    );
    expect(got.dimCounts).toEqual({
      ip: [
        ["h", "10.0.0.1", 3],
        ["h", "10.0.0.10", 2],
      ],
      userId: [
        ["h", "u1", 1],
        ["h", "u10", 1],
        ["h", "u2", 3],
      ],
    });
    expect(got.adCounts).toEqual([["h", 5]]);
  });

  it("keeps ad and value apart when they could run into each other in a key", () => {
    // ("a", "b c") and ("a b", "c") must stay two rows.
    const got = mergePartials(
      [["a", 1]],
      { userId: [["a", "b c", 1]] },
      [{ eventCount: 1, ads: [["a b", 1]], dims: { userId: [["a b", "c", 1]] } }],
      ["userId"],
    );
    expect(got.dimCounts.userId).toEqual([
      ["a", "b c", 1],
      ["a b", "c", 1],
    ]);
  });

  it("counts the events of every partial, the empty ones included", () => {
    const parts: PartialCounts[] = [3, 0, 7, 1].map((n) => ({
      eventCount: n,
      ads: n > 0 ? [["h", n]] : [],
      dims: n > 0 ? { country: [["h", "US", n]] } : {},
    }));
    const got = mergePartials([["a", 100]], { country: [["a", "US", 100]] }, parts, ["country"]);
    expect(got.events).toBe(11);
    expect(got.adCounts).toEqual([
      ["a", 100],
      ["h", 11],
    ]);
  });

  it("reads partials from any iterable, once", () => {
    function* gen(): Generator<PartialCounts> {
      yield { eventCount: 1, ads: [["h", 1]], dims: { country: [["h", "US", 1]] } };
      yield { eventCount: 2, ads: [["h", 2]], dims: { country: [["h", "US", 2]] } };
    }
    const got = mergePartials([], { country: [] }, gen(), ["country"]);
    expect(got.adCounts).toEqual([["h", 3]]);
    expect(got.dimCounts.country).toEqual([["h", "US", 3]]);
  });
});
