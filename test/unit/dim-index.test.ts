import { describe, expect, it } from "vitest";
import type { ClickEvent } from "../../src/model.js";
import { fnv1a32Utf8 } from "../../src/partition.js";
import {
  encodeIndexBlock,
  INDEX_BUCKETS,
  INDEX_PERIOD_MS,
  IndexDecodeError,
  type IndexEntry,
  indexBucket,
  indexPeriod,
  indexShard,
  scanIndexBlock,
} from "../../src/storage/dim-index.js";

function entry(
  value: string,
  adId: string,
  eventId: string,
  seq: number,
  country = "USA",
): IndexEntry {
  const event: ClickEvent = { adId, timestampMs: 0, userId: value, ip: "", country, eventId };
  return { value, event, streamSeq: seq };
}

function scan(blob: Buffer, value: string, base: number): string[] {
  const out: string[] = [];
  scanIndexBlock(blob, Buffer.from(value, "utf8"), base, (ad, c, id, seq) =>
    out.push(`${ad}/${c}/${id}@${seq}`),
  );
  return out;
}

describe("dim index encoding", () => {
  it("returns exactly the entries of the value asked, in order, and none of the others", () => {
    const entries = [
      entry("u1", "ad1", "c:1", 100),
      entry("u2", "ad2", "c:2", 101),
      entry("u1", "ad3", "c:3", 105, "FRA"),
      entry("u10", "ad4", "c:4", 100),
      entry("u", "ad5", "c:5", 100),
    ];
    const blob = encodeIndexBlock(entries, 100);
    expect(scan(blob, "u1", 100)).toEqual(["ad1/USA/c:1@100", "ad3/FRA/c:3@105"]);
    expect(scan(blob, "u2", 100)).toEqual(["ad2/USA/c:2@101"]);
    expect(scan(blob, "u10", 100)).toEqual(["ad4/USA/c:4@100"]);
    expect(scan(blob, "u", 100)).toEqual(["ad5/USA/c:5@100"]);
    expect(scan(blob, "u3", 100)).toEqual([]);
    expect(scan(blob, "", 100)).toEqual([]);
  });

  it("round-trips non-ASCII, long strings and large sequence deltas", () => {
    const long = "x".repeat(300);
    const uni = "üser-é-漢字-😀";
    const entries = [
      entry(uni, "ad-ü", "id-😀", 2 ** 40 + 7),
      entry(long, long, `${long}!`, 5),
      entry("a", "", "", 5, ""),
    ];
    const blob = encodeIndexBlock(entries, 5);
    expect(scan(blob, uni, 5)).toEqual([`ad-ü/USA/id-😀@${2 ** 40 + 7}`]);
    expect(scan(blob, long, 5)).toEqual([`${long}/USA/${long}!@5`]);
    expect(scan(blob, "a", 5)).toEqual(["//@5"]);
  });

  it("is compact: well under the whole event's msgpack tuple", () => {
    const entries = Array.from({ length: 100 }, (_, i) =>
      entry(
        `user-${100_000 + i}`,
        `ad${String(i).padStart(7, "0")}`,
        `o:${"k".repeat(16)}`,
        1000 + i,
      ),
    );
    const blob = encodeIndexBlock(entries, 1000);
    // value 12 + ad 10 + country 3 + id 18, a length byte each, a count and a seq delta.
    expect(blob.length / entries.length).toBeLessThanOrEqual(49);
  });

  it("rejects a sequence below the row's base, an unknown format and a truncated block", () => {
    expect(() => encodeIndexBlock([entry("u", "a", "i", 4)], 5)).toThrow(RangeError);
    const blob = encodeIndexBlock([entry("u1", "ad1", "c:1", 9)], 9);
    expect(() => scan(Buffer.from([2, ...blob.subarray(1)]), "u1", 9)).toThrow(IndexDecodeError);
    expect(() => scan(blob.subarray(0, blob.length - 2), "u1", 9)).toThrow(IndexDecodeError);
    expect(() => scan(blob.subarray(0, blob.length - 2), "zz", 9)).toThrow(IndexDecodeError);
  });

  it("buckets by the value's FNV-1a hash, shards by bucket, periods of ten minutes", () => {
    expect(INDEX_BUCKETS).toBe(4096);
    for (const v of ["user-1", "10.0.0.1", "ü"]) {
      expect(indexBucket(v)).toBe(fnv1a32Utf8(v) % 4096);
      expect(indexShard(indexBucket(v))).toBe(indexBucket(v) % 32);
    }
    const t = Date.UTC(2024, 6, 9, 10, 27);
    expect(indexPeriod(t)).toBe(Date.UTC(2024, 6, 9, 10, 20));
    expect(indexPeriod(t + INDEX_PERIOD_MS)).toBe(Date.UTC(2024, 6, 9, 10, 30));
    // Spread: 20,000 user ids over 4096 buckets leave no bucket with more than 3× the mean.
    const counts = new Array(4096).fill(0);
    for (let i = 0; i < 20_000; i++) counts[indexBucket(`user-${i}`)]++;
    expect(Math.max(...counts)).toBeLessThan((3 * 20_000) / 4096);
  });
});
