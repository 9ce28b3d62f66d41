import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import {
  assertPartitionCount,
  fmix32,
  fnv1a32Utf8,
  MAX_PARTITIONS,
  partitionOf,
  partitionSubject,
} from "../../src/partition.js";

/** Reference FNV-1a 32-bit over Node's own UTF-8 encoding, written as plainly as possible. */
function referenceFnv1a32(text: string): number {
  let hash = 0x811c9dc5;
  for (const byte of Buffer.from(text, "utf8")) {
    hash = Number((BigInt((hash ^ byte) >>> 0) * 0x01000193n) % 0x1_0000_0000n);
  }
  return hash;
}

/** Deterministic PRNG (mulberry32): the distribution tests see the same ids every run. */
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

function hex(rnd: () => number, length: number): string {
  let s = "";
  for (let i = 0; i < length; i++) s += Math.floor(rnd() * 16).toString(16);
  return s;
}

describe("fnv1a32Utf8", () => {
  it.each<[string, string, number]>([
    ["the empty string (the offset basis)", "", 0x811c9dc5],
    ["'a'", "a", 0xe40c292c],
    ["'foobar'", "foobar", 0xbf9cf968],
  ])("matches the published FNV-1a test vector for %s", (_name, text, hash) => {
    expect(fnv1a32Utf8(text)).toBe(hash);
  });

  it.each<[string, string]>([
    ["ASCII", "ad001"],
    ["two-byte characters", "caf\u00e9 \u00fc\u00df"],
    ["three-byte characters", "\u5e7f\u544a-\u20ac"],
    ["a surrogate pair (four bytes)", "\u{1F4A5}ad"],
    ["a lone high surrogate at the end", "ad\ud83d"],
    ["a lone high surrogate before ASCII", "\ud83dad"],
    ["a lone low surrogate", "\udca5ad"],
    ["two high surrogates then a low one", "\ud83d\ud83d\udca5"],
    ["U+FFFF and U+0800 boundaries", "\uffff\u0800\u07ff\u007f\u0080"],
  ])("hashes %s exactly like FNV-1a over Buffer.from(text, 'utf8')", (_name, text) => {
    expect(fnv1a32Utf8(text)).toBe(referenceFnv1a32(text));
  });

  it("agrees with the reference on 2000 random strings over the whole UTF-16 range", () => {
    const rnd = prng(99);
    for (let n = 0; n < 2000; n++) {
      let text = "";
      const length = Math.floor(rnd() * 12);
      for (let i = 0; i < length; i++) text += String.fromCharCode(Math.floor(rnd() * 0x10000));
      expect(fnv1a32Utf8(text)).toBe(referenceFnv1a32(text));
    }
  });
});

describe("partitionOf", () => {
  // FROZEN: these values must never change. If this test fails, the partition function has
  // changed and every deployment's ads would move to other partitions. Revert the change.
  it.each<[string, number]>([
    ["ad001", 1],
    ["ad002", 11],
    ["ad003", 12],
    ["ad010", 12],
    ["ad100", 0],
    ["ad999", 4],
    ["a", 3],
    ["", 11],
    ["campaign-42.banner:7", 11],
    ["AD001", 4],
    ["ad_1.2:3-x", 13],
    ["x".repeat(64), 3],
    ["caf\u00e9", 2],
    ["\u5e7f\u544a-1", 9],
    ["\u{1F4A5}ad", 4],
  ])("keeps ad %j in partition %i of 16, forever", (adId, partition) => {
    expect(partitionOf(adId, 16)).toBe(partition);
  });

  it.each<[number]>([[1], [2], [3], [16], [100], [1000], [MAX_PARTITIONS]])(
    "returns an integer in 0..n-1 for n = %i",
    (n) => {
      for (let i = 0; i < 2000; i++) {
        const p = partitionOf(`ad${i}`, n);
        expect(Number.isInteger(p)).toBe(true);
        expect(p).toBeGreaterThanOrEqual(0);
        expect(p).toBeLessThan(n);
      }
    },
  );

  it("puts every ad in partition 0 when there is one partition", () => {
    expect(new Set(["a", "b", "ad001", ""].map((id) => partitionOf(id, 1)))).toEqual(new Set([0]));
  });

  it("is the mixed hash modulo the count", () => {
    expect(fnv1a32Utf8("ad001")).toBe(0x9a4bd18b);
    expect(fmix32(0x9a4bd18b)).toBe(0xa1840521);
    for (const n of [7, 16, 4096]) {
      expect(partitionOf("ad001", n)).toBe(0xa1840521 % n);
    }
  });

  it.each<[string, number]>([
    ["zero", 0],
    ["a negative count", -1],
    ["more than 4096", MAX_PARTITIONS + 1],
    ["a fraction", 1.5],
    ["NaN", Number.NaN],
    ["infinity", Number.POSITIVE_INFINITY],
  ])("throws a RangeError for %s partitions", (_name, n) => {
    expect(() => partitionOf("ad001", n)).toThrow(RangeError);
    expect(() => assertPartitionCount(n)).toThrow(RangeError);
  });

  const idFamilies: [string, (i: number, rnd: () => number) => string][] = [
    ["sequential ids", (i) => `ad${i}`],
    ["zero-padded ids", (i) => `ad${String(i).padStart(6, "0")}`],
    ["random hex ids", (_i, rnd) => hex(rnd, 12)],
    [
      "UUID-shaped ids",
      (_i, rnd) => `${hex(rnd, 8)}-${hex(rnd, 4)}-${hex(rnd, 4)}-${hex(rnd, 4)}-${hex(rnd, 12)}`,
    ],
  ];
  const counts = [10, 16, 64, 100, 128];
  const cases = idFamilies.flatMap(([name, make]) => counts.map((n) => [name, n, make] as const));
  const manyCounts = [256, 1024];
  const manyCases = idFamilies.flatMap(([name, make]) =>
    manyCounts.map((n) => [name, n, make] as const),
  );

  function bucketsOf(n: number, make: (i: number, rnd: () => number) => string, total: number) {
    const rnd = prng(n);
    const buckets = new Array<number>(n).fill(0);
    for (let i = 0; i < total; i++) {
      const p = partitionOf(make(i, rnd), n);
      buckets[p] = (buckets[p] ?? 0) + 1;
    }
    return buckets;
  }

  it.each(cases)(
    "spreads 100k %s evenly over %i partitions (chi-square within 5 sigma)",
    (_name, n, make) => {
      const total = 100_000;
      const buckets = bucketsOf(n, make, total);
      const expected = total / n;
      const chiSquare = buckets.reduce((sum, c) => sum + (c - expected) ** 2 / expected, 0);
      const df = n - 1;
      // Inputs are deterministic, so this is a regression bound, not a flaky statistical test.
      expect(chiSquare).toBeLessThan(df + 5 * Math.sqrt(2 * df));
      expect(Math.min(...buckets)).toBeGreaterThan(expected * 0.8);
      expect(Math.max(...buckets)).toBeLessThan(expected * 1.2);
    },
  );

  // FNV-1a keeps some structure for sequential ids at 256+ partitions (chi-square above the
  // random-hash bound), but the fullest partition stays as full as with an ideal hash:
  // Poisson noise at ~100 or ~400 ids per partition, not a hot spot.
  it.each(manyCases)(
    "keeps the fullest partition near the mean for 100k %s over %i partitions",
    (_name, n, make) => {
      const total = 100_000;
      const buckets = bucketsOf(n, make, total);
      const expected = total / n;
      expect(Math.max(...buckets)).toBeLessThan(expected + 6 * Math.sqrt(expected));
      expect(Math.min(...buckets)).toBeGreaterThan(expected - 6 * Math.sqrt(expected));
    },
  );
});

describe("partitionSubject", () => {
  it.each<[string, number, string]>([
    ["clicks.raw", 0, "clicks.raw.0"],
    ["clicks.raw", 7, "clicks.raw.7"],
    ["adclick.clicks", 4095, "adclick.clicks.4095"],
  ])("names partition %s / %i as %s", (prefix, p, subject) => {
    expect(partitionSubject(prefix, p)).toBe(subject);
  });

  it.each<[string, number]>([
    ["a negative partition", -1],
    ["a fractional partition", 1.5],
    ["a partition beyond the largest count", MAX_PARTITIONS],
    ["NaN", Number.NaN],
  ])("throws a RangeError for %s", (_name, p) => {
    expect(() => partitionSubject("clicks.raw", p)).toThrow(RangeError);
  });
});
