import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";
import {
  CLICK_ID_PREFIX,
  clickEventId,
  DERIVED_ID_PREFIX,
  derivedEventId,
  eventIdHash64,
} from "../../src/identity.js";

/** The documented derivation, spelled out with the streaming hash API. */
function referenceDerivedId(source: string, file: string, byteOffset: number): string {
  const digest = createHash("sha1").update(`${source}\0${file}\0${byteOffset}`, "utf8").digest();
  return `o:${digest.subarray(0, 12).toString("base64url")}`;
}

describe("derivedEventId", () => {
  // FROZEN: dedupe of lines without click_id relies on these ids staying the same across
  // versions. If this test fails, re-shipped log regions would count twice. Revert.
  it.each<[string, string, number, string]>([
    ["web-1", "/var/log/clicks.log", 0, "o:OFY37UOyGzhLpfHE"],
    ["web-1", "/var/log/clicks.log", 4711, "o:X7mUvF-yTOdPwFna"],
  ])("derives the pinned id for %s %s @%i", (source, file, offset, id) => {
    expect(derivedEventId(source, file, offset)).toBe(id);
  });

  it.each<[string, string, number]>([
    ["web-1", "/var/log/clicks.log", 0],
    ["web-1", "/var/log/clicks.log", 123_456_789],
    ["", "", 0],
    ["h\u00f4te-\u{1F4A5}", "/logs/\u5e7f\u544a.log", 42],
    ["web-1", "/var/log/clicks.log", Number.MAX_SAFE_INTEGER],
  ])(
    "is the first 12 bytes of SHA-1 over source, file and offset for %j %j @%i",
    (source, file, offset) => {
      expect(derivedEventId(source, file, offset)).toBe(referenceDerivedId(source, file, offset));
    },
  );

  it("is 'o:' and 16 base64url characters", () => {
    expect(derivedEventId("web-1", "/a.log", 1)).toMatch(/^o:[A-Za-z0-9_-]{16}$/);
    expect(DERIVED_ID_PREFIX).toBe("o:");
  });

  it("is deterministic", () => {
    expect(derivedEventId("web-1", "/a.log", 99)).toBe(derivedEventId("web-1", "/a.log", 99));
  });

  it.each<[string, [string, string, number], [string, string, number]]>([
    ["the offset", ["web-1", "/a.log", 1], ["web-1", "/a.log", 2]],
    ["the file", ["web-1", "/a.log", 1], ["web-1", "/b.log", 1]],
    ["the source", ["web-1", "/a.log", 1], ["web-2", "/a.log", 1]],
    ["where source ends and file begins", ["ab", "c", 1], ["a", "bc", 1]],
    ["where file ends and offset begins", ["a", "b1", 0], ["a", "b", 10]],
  ])("differs when only %s differs", (_name, a, b) => {
    expect(derivedEventId(...a)).not.toBe(derivedEventId(...b));
  });

  it("gives 200k distinct ids for 200k offsets of one file", () => {
    const ids = new Set<string>();
    for (let offset = 0; offset < 200_000; offset++)
      ids.add(derivedEventId("web-1", "/a.log", offset * 73));
    expect(ids.size).toBe(200_000);
  });

  it.each<[string, number]>([
    ["a negative offset", -1],
    ["a fractional offset", 1.5],
    ["NaN", Number.NaN],
    ["infinity", Number.POSITIVE_INFINITY],
    ["an unsafe integer", Number.MAX_SAFE_INTEGER + 1],
  ])("throws a RangeError for %s", (_name, offset) => {
    expect(() => derivedEventId("web-1", "/a.log", offset)).toThrow(RangeError);
  });

  it.each<[string, string, string]>([
    ["a NUL in the source", "we\0b", "/a.log"],
    ["a NUL in the file", "web-1", "/a\0.log"],
  ])("throws a RangeError for %s (it would make the encoding ambiguous)", (_name, source, file) => {
    expect(() => derivedEventId(source, file, 0)).toThrow(RangeError);
  });
});

describe("clickEventId", () => {
  it.each<[string, string]>([
    ["clk-1", "c:clk-1"],
    ["a:b", "c:a:b"],
  ])("prefixes click_id %j as %j", (clickId, id) => {
    expect(clickEventId(clickId)).toBe(id);
    expect(CLICK_ID_PREFIX).toBe("c:");
  });

  it("can never equal a derived id, whatever the click_id", () => {
    const derived = derivedEventId("web-1", "/a.log", 0);
    expect(clickEventId(derived.slice(2))).not.toBe(derived);
  });
});

describe("eventIdHash64", () => {
  it.each<[string, bigint]>([
    ["c:clk-1", 15890695709450774995n],
    ["o:wKv3ddmn-CVC9xpR", 7499639458562360600n],
  ])("keeps the pinned hash of %j", (eventId, hash) => {
    expect(eventIdHash64(eventId)).toBe(hash);
  });

  it.each<[string]>([["c:clk-1"], ["o:OFY37UOyGzhLpfHE"], [""], ["c:\u{1F4A5}"]])(
    "is the first 8 bytes of SHA-1 of %j, big-endian",
    (eventId) => {
      const digest = createHash("sha1").update(eventId, "utf8").digest();
      expect(eventIdHash64(eventId)).toBe(digest.readBigUInt64BE(0));
    },
  );

  it("stays within 0..2^64-1 and has no collisions over 100k ids", () => {
    const hashes = new Set<bigint>();
    let outOfRange = 0;
    for (let i = 0; i < 100_000; i++) {
      const h = eventIdHash64(`c:clk-${i}`);
      if (h < 0n || h >= 2n ** 64n) outOfRange++;
      hashes.add(h);
    }
    expect(outOfRange).toBe(0);
    expect(hashes.size).toBe(100_000);
  });
});
