import { Buffer } from "node:buffer";
import { describe, expect, it } from "vitest";
import { derivedEventId } from "../../src/identity.js";
import type { ClickEvent } from "../../src/model.js";
import {
  CLICK_LINE_PREFIX,
  type ClickLineFields,
  formatClickLine,
  formatClickTimestamp,
  type LineLocation,
  MALFORMED_CODES,
  MAX_LINE_BYTES,
  MAX_RAW_CHARS,
  type MalformedCode,
  type MalformedLine,
  parseClickLine,
} from "../../src/parse/click-line.js";

const LOC: LineLocation = {
  source: "web-1",
  file: "/var/log/clicks.log",
  byteOffset: 4711,
  lineNo: 17,
};

const SPEC_LINE = "[AdClickEvent] ad001, 2024-07-09 00:00:01, user-1, 207.148.22.22, USA";
const SPEC_TS = Date.parse("2024-07-09T00:00:01Z");

interface LineParts {
  adId: string;
  ts: string;
  userId: string;
  ip: string;
  country: string;
  clickId?: string;
}

const DEFAULT_PARTS: LineParts = {
  adId: "ad001",
  ts: "2024-07-09 00:00:01",
  userId: "user-1",
  ip: "207.148.22.22",
  country: "USA",
};

/** A line like the SPEC's with some parts replaced. */
function lineWith(parts: Partial<LineParts>): string {
  const p = { ...DEFAULT_PARTS, ...parts };
  const base = `${CLICK_LINE_PREFIX} ${p.adId}, ${p.ts}, ${p.userId}, ${p.ip}, ${p.country}`;
  return p.clickId === undefined ? base : `${base}, ${p.clickId}`;
}

function parseOk(line: string, loc: LineLocation = LOC): ClickEvent {
  const result = parseClickLine(line, loc);
  if (!result.ok) {
    throw new Error(
      `expected ${JSON.stringify(line)} to parse, got ${result.error.code}: ${result.error.reason}`,
    );
  }
  return result.event;
}

function parseBad(line: string, loc: LineLocation = LOC): MalformedLine {
  const result = parseClickLine(line, loc);
  if (result.ok) throw new Error(`expected ${JSON.stringify(line)} to be rejected`);
  return result.error;
}

/** Deterministic PRNG (mulberry32), so the property tests are reproducible. */
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

function pick<T>(rnd: () => number, items: readonly T[]): T {
  const item = items[Math.floor(rnd() * items.length)];
  if (item === undefined) throw new Error("pick from an empty list");
  return item;
}

function randomString(rnd: () => number, alphabet: string, min: number, max: number): string {
  const length = min + Math.floor(rnd() * (max - min + 1));
  let s = "";
  for (let i = 0; i < length; i++) s += alphabet[Math.floor(rnd() * alphabet.length)];
  return s;
}

const ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.:-";
const USER_ALPHABET = Array.from({ length: 0x7f - 0x21 }, (_, i) => String.fromCharCode(0x21 + i))
  .filter((c) => c !== ",")
  .join("");
const LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

describe("parseClickLine on whole lines", () => {
  it("parses the SPEC's example line into a ClickEvent with a derived event id", () => {
    expect(parseClickLine(SPEC_LINE, LOC)).toEqual({
      ok: true,
      event: {
        adId: "ad001",
        timestampMs: SPEC_TS,
        userId: "user-1",
        ip: "207.148.22.22",
        country: "USA",
        eventId: derivedEventId(LOC.source, LOC.file, LOC.byteOffset),
      },
    });
  });

  it.each<[string, string]>([
    ["a trailing carriage return (CRLF file)", `${SPEC_LINE}\r`],
    ["no space after the prefix", SPEC_LINE.replace("] ", "]")],
    ["extra spaces around every field", SPEC_LINE.replaceAll(", ", "   ,   ")],
    ["tabs around fields", SPEC_LINE.replaceAll(", ", "\t,\t")],
    ["no spaces after commas", SPEC_LINE.replaceAll(", ", ",")],
    ["trailing spaces before the CR", `${SPEC_LINE}  \t\r`],
    ["leading spaces before the prefix", `  ${SPEC_LINE}`],
    ["a byte order mark before the prefix (first line of a file)", `\uFEFF${SPEC_LINE}`],
    ["a lower-case country", SPEC_LINE.replace("USA", "usa")],
    ["a mixed-case country", SPEC_LINE.replace("USA", "uSa")],
  ])("accepts a line with %s and yields the same event", (_name, line) => {
    expect(parseOk(line)).toEqual(parseOk(SPEC_LINE));
  });

  it("uses the click_id as event identity when a sixth field is given", () => {
    const event = parseOk(`${SPEC_LINE}, clk-0001`);
    expect(event.eventId).toBe("c:clk-0001");
    expect(event).toMatchObject({ adId: "ad001", timestampMs: SPEC_TS, country: "USA" });
  });

  it.each<["the same" | "a different", string, LineLocation]>([
    ["the same", "the line number", { ...LOC, lineNo: 99 }],
    ["a different", "the byte offset", { ...LOC, byteOffset: LOC.byteOffset + 1 }],
    ["a different", "the file", { ...LOC, file: "/var/log/clicks.log.1" }],
    ["a different", "the source", { ...LOC, source: "web-2" }],
  ])("derives %s event id when %s changes", (expectation, _what, other) => {
    const a = parseOk(SPEC_LINE, LOC).eventId;
    const b = parseOk(SPEC_LINE, other).eventId;
    expect(a === b).toBe(expectation === "the same");
  });

  it("derives the event id from the location, not the line's content", () => {
    const other = SPEC_LINE.replace("user-1", "user-2");
    expect(parseOk(other).eventId).toBe(parseOk(SPEC_LINE).eventId);
  });

  it("ignores the location when a click_id is given", () => {
    const line = `${SPEC_LINE}, clk-7`;
    expect(parseOk(line, { ...LOC, byteOffset: 1 }).eventId).toBe(
      parseOk(line, { ...LOC, byteOffset: 2, source: "other" }).eventId,
    );
  });
});

describe("malformed lines", () => {
  const table: [string, string, MalformedCode][] = [
    ["an empty line", "", "EMPTY"],
    ["a line of spaces", "    ", "EMPTY"],
    ["a line of tabs and spaces", " \t \t", "EMPTY"],
    ["a lone carriage return", "\r", "EMPTY"],
    ["a lone byte order mark", "\uFEFF", "EMPTY"],
    ["no prefix", "ad001, 2024-07-09 00:00:01, user-1, 207.148.22.22, USA", "MISSING_PREFIX"],
    ["a lower-case prefix", SPEC_LINE.replace("AdClickEvent", "adclickevent"), "MISSING_PREFIX"],
    [
      "a prefix without brackets",
      SPEC_LINE.replace("[AdClickEvent]", "AdClickEvent"),
      "MISSING_PREFIX",
    ],
    ["a different event tag", SPEC_LINE.replace("AdClickEvent", "AdViewEvent"), "MISSING_PREFIX"],
    ["text before the prefix", `x${SPEC_LINE}`, "MISSING_PREFIX"],
    ["a non-breaking space before the prefix", `\u00a0${SPEC_LINE}`, "MISSING_PREFIX"],
    ["a truncated prefix", "[AdClickEv", "MISSING_PREFIX"],
    ["unicode junk", "\u{1F4A5}\u00e9\u200b\ud800", "MISSING_PREFIX"],
    ["a JSON object", '{"ad_id":"ad001"}', "MISSING_PREFIX"],
    ["the prefix alone", CLICK_LINE_PREFIX, "FIELD_COUNT"],
    ["no commas", SPEC_LINE.replaceAll(",", ""), "FIELD_COUNT"],
    [
      "four fields",
      "[AdClickEvent] ad001, 2024-07-09 00:00:01, user-1, 207.148.22.22",
      "FIELD_COUNT",
    ],
    ["seven fields", `${SPEC_LINE}, clk-1, extra`, "FIELD_COUNT"],
    ["seven empty fields", "[AdClickEvent] ,,,,,,", "FIELD_COUNT"],
    ["full-width commas", SPEC_LINE.replaceAll(",", "\uff0c"), "FIELD_COUNT"],
    ["semicolons instead of commas", SPEC_LINE.replaceAll(",", ";"), "FIELD_COUNT"],
    ["an empty ad_id", lineWith({ adId: "" }), "BAD_AD_ID"],
    ["five empty fields", "[AdClickEvent] , , , , ", "BAD_AD_ID"],
    [
      "a bad ad_id and a bad ip (the first bad field wins)",
      lineWith({ adId: "a d", ip: "x" }),
      "BAD_AD_ID",
    ],
    ["an empty timestamp", lineWith({ ts: "" }), "BAD_TIMESTAMP"],
    ["an impossible date", lineWith({ ts: "2023-02-29 00:00:00" }), "BAD_TIMESTAMP"],
    ["an empty user_id", lineWith({ userId: "" }), "BAD_USER_ID"],
    ["an empty ip", lineWith({ ip: "" }), "BAD_IP"],
    ["an invalid ip", lineWith({ ip: "256.1.1.1" }), "BAD_IP"],
    ["an empty country", lineWith({ country: "" }), "BAD_COUNTRY"],
    ["a NUL after the country", `${SPEC_LINE}\u0000`, "BAD_COUNTRY"],
    ["a non-breaking space before the country", lineWith({ country: "\u00a0USA" }), "BAD_COUNTRY"],
    ["a CR inside the last field", `${SPEC_LINE}\rX`, "BAD_COUNTRY"],
    ["an empty click_id (trailing comma)", `${SPEC_LINE},`, "BAD_CLICK_ID"],
    ["a blank click_id", `${SPEC_LINE},   `, "BAD_CLICK_ID"],
    ["an invalid click_id", `${SPEC_LINE}, clk/1`, "BAD_CLICK_ID"],
    ["a line of 4097 bytes", "x".repeat(MAX_LINE_BYTES + 1), "LINE_TOO_LONG"],
    [
      "a valid line padded past 4096 bytes",
      SPEC_LINE.replace("] ", `]${" ".repeat(MAX_LINE_BYTES)}`),
      "LINE_TOO_LONG",
    ],
    [
      "1400 three-byte characters (4200 bytes)",
      `${CLICK_LINE_PREFIX} ${"\u20ac".repeat(1400)}`,
      "LINE_TOO_LONG",
    ],
    [
      "1100 four-byte characters (4400 bytes)",
      `${CLICK_LINE_PREFIX} ${"\u{1F4A5}".repeat(1100)}`,
      "LINE_TOO_LONG",
    ],
  ];

  it.each(table)("rejects %s", (_name, line, code) => {
    expect(parseBad(line).code).toBe(code);
  });

  it("covers every malformed code in the table above", () => {
    expect(new Set(table.map(([, , code]) => code))).toEqual(new Set(MALFORMED_CODES));
  });

  it.each(table)("gives a non-empty reason for %s", (_name, line) => {
    expect(parseBad(line).reason.length).toBeGreaterThan(0);
  });

  it("reports the source, file, line number, byte offset and raw line", () => {
    const line = lineWith({ ip: "1.2.3" });
    expect(parseBad(line)).toEqual({
      code: "BAD_IP",
      reason: expect.stringContaining("1.2.3"),
      source: "web-1",
      file: "/var/log/clicks.log",
      lineNo: 17,
      byteOffset: 4711,
      raw: line,
    });
  });

  it("keeps the raw line as given, including its carriage return", () => {
    expect(parseBad("garbage\r").raw).toBe("garbage\r");
  });

  it.each<[string, string, string]>([
    ["a short line whole", "junk", "junk"],
    ["a line of exactly 1024 characters whole", "j".repeat(1024), "j".repeat(1024)],
    ["a long line to its first 1024 characters", "j".repeat(5000), "j".repeat(1024)],
    [
      "before a surrogate pair that straddles character 1024",
      `${"j".repeat(1023)}\u{1F4A5}tail`,
      "j".repeat(1023),
    ],
    [
      "after a surrogate pair that ends at character 1024",
      `${"j".repeat(1022)}\u{1F4A5}tail`,
      `${"j".repeat(1022)}\u{1F4A5}`,
    ],
  ])("truncates raw: keeps %s", (_name, line, raw) => {
    const error = parseBad(line);
    expect(error.raw).toBe(raw);
    expect(error.raw.length).toBeLessThanOrEqual(MAX_RAW_CHARS);
  });
});

describe("line length limit", () => {
  /** The SPEC line padded with spaces after the prefix to exactly `bytes` UTF-8 bytes. */
  function paddedTo(bytes: number): string {
    return SPEC_LINE.replace("] ", `]${" ".repeat(bytes - SPEC_LINE.length + 1)}`);
  }

  it.each<[string, string, boolean]>([
    ["a valid line of exactly 4096 bytes", paddedTo(4096), true],
    ["a valid line of 4096 bytes plus a CR", `${paddedTo(4096)}\r`, true],
    ["a valid line of 4097 bytes", paddedTo(4097), false],
    [
      "4096 bytes of three-byte characters and ASCII",
      `${CLICK_LINE_PREFIX} ${"\u20ac".repeat(1360)}x`,
      true,
    ],
    [
      "4097 bytes of three-byte characters and ASCII",
      `${CLICK_LINE_PREFIX} ${"\u20ac".repeat(1360)}xx`,
      false,
    ],
    [
      "4096 bytes of four-byte characters and ASCII",
      `${CLICK_LINE_PREFIX} ${"\u{1F4A5}".repeat(1020)}x`,
      true,
    ],
  ])("treats %s as within the limit: %s", (_name, line, within) => {
    const bytes = Buffer.byteLength(line.endsWith("\r") ? line.slice(0, -1) : line);
    expect(bytes <= MAX_LINE_BYTES).toBe(within);
    const result = parseClickLine(line, LOC);
    const tooLong = !result.ok && result.error.code === "LINE_TOO_LONG";
    expect(tooLong).toBe(!within);
  });

  it("parses a valid line padded to the limit into the SPEC line's event", () => {
    expect(parseOk(paddedTo(4096))).toEqual(parseOk(SPEC_LINE));
  });
});

describe("ad_id", () => {
  it.each<[string, string]>([
    ["a single character", "a"],
    ["the SPEC's example", "ad001"],
    ["every allowed punctuation mark", "ad_1.2:3-x"],
    ["only digits", "12345"],
    ["64 characters", "a".repeat(64)],
    ["upper case (kept as is)", "AD001"],
  ])("accepts %s", (_name, adId) => {
    expect(parseOk(lineWith({ adId })).adId).toBe(adId);
  });

  it.each<[string, string]>([
    ["empty", ""],
    ["65 characters", "a".repeat(65)],
    ["an inner space", "ad 001"],
    ["an inner tab", "ad\t001"],
    ["a slash", "ad/001"],
    ["a quote", 'ad"001'],
    ["a plus", "ad+1"],
    ["a non-ASCII letter", "ad\u00e9"],
    ["an emoji", "ad\u{1F4A5}"],
    ["a NUL", "ad\u0000"],
    ["a zero-width space", "ad\u200b1"],
  ])("rejects %s", (_name, adId) => {
    expect(parseBad(lineWith({ adId })).code).toBe("BAD_AD_ID");
  });
});

describe("timestamp", () => {
  it.each<[string, string, string]>([
    ["the SPEC's format", "2024-07-09 00:00:01", "2024-07-09T00:00:01.000Z"],
    ["a leap day", "2024-02-29 12:00:00", "2024-02-29T12:00:00.000Z"],
    ["a leap day in a year divisible by 400", "2000-02-29 00:00:00", "2000-02-29T00:00:00.000Z"],
    ["the last second of a day", "2024-07-09 23:59:59", "2024-07-09T23:59:59.000Z"],
    ["the last second of a year", "2024-12-31 23:59:59", "2024-12-31T23:59:59.000Z"],
    ["the earliest accepted instant", "2000-01-01 00:00:00", "2000-01-01T00:00:00.000Z"],
    ["the latest accepted year", "2099-12-31 23:59:59", "2099-12-31T23:59:59.000Z"],
    ["30 April", "2024-04-30 10:00:00", "2024-04-30T10:00:00.000Z"],
    ["ISO with T", "2024-07-09T00:00:01", "2024-07-09T00:00:01.000Z"],
    ["ISO with Z", "2024-07-09T00:00:01Z", "2024-07-09T00:00:01.000Z"],
    ["ISO with milliseconds .999", "2024-07-09T00:00:01.999Z", "2024-07-09T00:00:01.999Z"],
    ["ISO with milliseconds .000", "2024-07-09T00:00:01.000Z", "2024-07-09T00:00:01.000Z"],
    ["one fraction digit as tenths", "2024-07-09T00:00:01.5Z", "2024-07-09T00:00:01.500Z"],
    ["two fraction digits as hundredths", "2024-07-09T00:00:01.05Z", "2024-07-09T00:00:01.050Z"],
    ["milliseconds without a zone", "2024-07-09T00:00:01.123", "2024-07-09T00:00:01.123Z"],
    ["a space separator with milliseconds", "2024-07-09 00:00:01.123", "2024-07-09T00:00:01.123Z"],
    ["a space separator with Z", "2024-07-09 00:00:01Z", "2024-07-09T00:00:01.000Z"],
    ["offset +00:00", "2024-07-09T00:00:01+00:00", "2024-07-09T00:00:01.000Z"],
    ["offset -00:00", "2024-07-09T00:00:01-00:00", "2024-07-09T00:00:01.000Z"],
    ["a positive offset, converted", "2024-07-09T02:30:01+02:30", "2024-07-09T00:00:01.000Z"],
    ["a negative offset, converted", "2024-07-08T19:00:01-05:00", "2024-07-09T00:00:01.000Z"],
    ["an offset crossing a year", "2025-01-01T01:00:00.250+02:00", "2024-12-31T23:00:00.250Z"],
  ])("accepts %s: %s", (_name, ts, iso) => {
    expect(parseOk(lineWith({ ts })).timestampMs).toBe(Date.parse(iso));
  });

  it.each<[string, string]>([
    ["29 February in a common year", "2023-02-29 00:00:00"],
    [
      "29 February in a year divisible by 100 but not 400 (out of range anyway)",
      "2100-02-29 00:00:00",
    ],
    ["30 February", "2024-02-30 00:00:00"],
    ["31 April", "2024-04-31 00:00:00"],
    ["32 January", "2024-01-32 00:00:00"],
    ["day 00", "2024-01-00 00:00:00"],
    ["month 00", "2024-00-10 00:00:00"],
    ["month 13", "2024-13-01 00:00:00"],
    ["hour 24", "2024-07-09 24:00:00"],
    ["minute 60", "2024-07-09 23:60:00"],
    ["a leap second", "2024-06-30 23:59:60"],
    ["the year 1999", "1999-12-31 23:59:59"],
    ["the year 2100", "2100-01-01 00:00:00"],
    ["the year 0000", "0000-01-01 00:00:00"],
    ["a date only", "2024-07-09"],
    ["a time only", "00:00:01"],
    ["single-digit fields", "2024-7-9 0:0:1"],
    ["slashes", "2024/07/09 00:00:01"],
    ["an underscore separator", "2024-07-09_00:00:01"],
    ["two spaces as separator", "2024-07-09  00:00:01"],
    ["a lower-case t", "2024-07-09t00:00:01"],
    ["a lower-case z", "2024-07-09T00:00:01z"],
    ["a dot without digits", "2024-07-09T00:00:01.Z"],
    ["four fraction digits", "2024-07-09T00:00:01.1234Z"],
    ["microseconds", "2024-07-09 00:00:01.999999"],
    ["an offset without colon", "2024-07-09T00:00:01+0200"],
    ["an hours-only offset", "2024-07-09T00:00:01+02"],
    ["offset hour 24", "2024-07-09T00:00:01+24:00"],
    ["offset minute 60", "2024-07-09T00:00:01+02:60"],
    ["Z followed by junk", "2024-07-09T00:00:01Zx"],
    ["a space before Z", "2024-07-09T00:00:01 Z"],
    ["a named zone", "2024-07-09T00:00:01 UTC"],
    ["trailing junk", "2024-07-09 00:00:01junk"],
    ["letters for the year", "abcd-07-09 00:00:01"],
    ["a negative year", "-2024-07-09 00:00:01"],
    ["full-width digits", "\uff12\uff10\uff12\uff14-07-09 00:00:01"],
    ["Arabic-Indic digits", "2024-07-09 00:00:\u0660\u0661"],
    ["an epoch number", "1720483201"],
    ["an epoch in milliseconds", "1720483201000"],
    ["an RFC 2822 date without weekday", "09 Jul 2024 00:00:01 GMT"],
  ])("rejects %s", (_name, ts) => {
    expect(parseBad(lineWith({ ts })).code).toBe("BAD_TIMESTAMP");
  });

  it("agrees with Date.parse on every day from 2000 to 2099 at a fixed time", () => {
    const mismatches: string[] = [];
    for (let ms = Date.UTC(2000, 0, 1, 13, 14, 15); ms < Date.UTC(2100, 0, 1); ms += 86_400_000) {
      const iso = new Date(ms).toISOString();
      const spec = `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;
      const parsed = parseClickLine(lineWith({ ts: spec }), LOC);
      if (!parsed.ok || parsed.event.timestampMs !== ms) mismatches.push(spec);
    }
    expect(mismatches).toEqual([]);
  });
});

describe("user_id", () => {
  it.each<[string, string]>([
    ["the SPEC's example", "user-1"],
    ["a single character", "u"],
    ["every printable ASCII character but comma", USER_ALPHABET],
    ["an email-like id", "jane.doe+ads@example.com"],
    ["a UUID", "123e4567-e89b-12d3-a456-426614174000"],
    ["128 characters", "u".repeat(128)],
  ])("accepts %s", (_name, userId) => {
    expect(parseOk(lineWith({ userId })).userId).toBe(userId);
  });

  it.each<[string, string]>([
    ["empty", ""],
    ["129 characters", "u".repeat(129)],
    ["an inner space", "user 1"],
    ["an inner tab", "user\t1"],
    ["a DEL character", "user\u007f"],
    ["a control character", "user\u0001"],
    ["a non-ASCII letter", "us\u00e9r"],
    ["an emoji", "\u{1F600}"],
    ["a lone surrogate", "user\ud800"],
  ])("rejects %s", (_name, userId) => {
    expect(parseBad(lineWith({ userId })).code).toBe("BAD_USER_ID");
  });
});

describe("ip", () => {
  it.each<[string, string, string]>([
    ["an IPv4 address", "207.148.22.22", "207.148.22.22"],
    ["IPv4 all zeros", "0.0.0.0", "0.0.0.0"],
    ["IPv4 all ones", "255.255.255.255", "255.255.255.255"],
    ["IPv4 with single zero octets", "10.0.0.1", "10.0.0.1"],
    ["IPv6 in full form", "2001:0db8:0000:0000:0000:0000:0000:0001", "2001:db8::1"],
    ["IPv6 in upper case", "2001:DB8::ABCD", "2001:db8::abcd"],
    [
      "IPv6 with leading zeros in groups",
      "2001:0db8:0001:0002:0003:0004:0005:0006",
      "2001:db8:1:2:3:4:5:6",
    ],
    ["the unspecified address", "::", "::"],
    ["the unspecified address in full", "0:0:0:0:0:0:0:0", "::"],
    ["loopback", "::1", "::1"],
    ["loopback in full", "0000:0000:0000:0000:0000:0000:0000:0001", "::1"],
    ["a trailing ::", "1::", "1::"],
    ["zeros at the end", "1:0:0:0:0:0:0:0", "1::"],
    ["link-local", "fe80::1:2", "fe80::1:2"],
    ["two equal zero runs (the first is compressed)", "2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
    ["a longer second zero run", "2001:0:0:1:0:0:0:1", "2001:0:0:1::1"],
    ["a single zero group (not compressed)", "2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["'::' standing for a single zero group", "2001:db8::1:1:1:1:1", "2001:db8:0:1:1:1:1:1"],
    ["'::' in a non-longest run", "1::2:0:0:0:3", "1:0:0:2::3"],
    [
      "all ones",
      "FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF:FFFF",
      "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ],
    ["IPv4-mapped (as plain IPv4)", "::ffff:1.2.3.4", "1.2.3.4"],
    ["IPv4-mapped in upper case", "::FFFF:207.148.22.22", "207.148.22.22"],
    ["IPv4-mapped in hex", "::ffff:0102:0304", "1.2.3.4"],
    ["IPv4-mapped in full form", "0:0:0:0:0:ffff:c000:0280", "192.0.2.128"],
    [
      "IPv4-mapped with a full dotted tail",
      "0000:0000:0000:0000:0000:ffff:255.255.255.255",
      "255.255.255.255",
    ],
    ["NAT64 with a dotted tail (as hex)", "64:ff9b::1.2.3.4", "64:ff9b::102:304"],
    ["IPv4-compatible (deprecated, as hex)", "::1.2.3.4", "::102:304"],
    ["six groups and a dotted tail", "1:2:3:4:5:6:1.2.3.4", "1:2:3:4:5:6:102:304"],
    ["IPv4-translated (not mapped)", "::ffff:0:1.2.3.4", "::ffff:0:102:304"],
  ])("accepts %s: %s → %s", (_name, ip, normalised) => {
    expect(parseOk(lineWith({ ip })).ip).toBe(normalised);
  });

  it.each<[string, string]>([
    ["an octet above 255", "256.1.1.1"],
    ["a last octet above 255", "1.1.1.300"],
    ["three octets", "1.2.3"],
    ["five octets", "1.2.3.4.5"],
    ["a leading zero", "01.2.3.4"],
    ["a padded zero", "1.2.3.00"],
    ["four digits", "1.2.3.0004"],
    ["a trailing dot", "1.2.3.4."],
    ["a leading dot", ".1.2.3"],
    ["an empty octet", "1..2.3"],
    ["a negative octet", "1.2.3.-4"],
    ["letters", "a.b.c.d"],
    ["a hex octet", "0x1.2.3.4"],
    ["a CIDR suffix", "1.2.3.4/24"],
    ["a port", "1.2.3.4:80"],
    ["a single number", "16909060"],
    ["a hostname", "localhost"],
    ["Arabic-Indic digits", "\u0661.\u0662.\u0663.\u0664"],
    ["an inner space", "1.2. 3.4"],
    ["three colons", ":::"],
    ["three colons inside", "1:::2"],
    ["'::' twice", "1::2::3"],
    ["a single leading colon", ":1::2"],
    ["a single trailing colon", "1::2:"],
    ["seven groups without '::'", "1:2:3:4:5:6:7"],
    ["nine groups", "1:2:3:4:5:6:7:8:9"],
    ["eight groups and '::'", "1:2:3:4:5:6:7::8"],
    ["eight groups and a trailing '::'", "1:2:3:4:5:6:7:8::"],
    ["a group of five hex digits", "12345::1"],
    ["a non-hex group", "g::1"],
    ["a zone id", "fe80::1%eth0"],
    ["brackets", "[::1]"],
    ["an invalid mapped IPv4", "::ffff:256.1.1.1"],
    ["a short mapped IPv4", "::ffff:1.2.3"],
    ["a mapped IPv4 with a leading zero", "::ffff:01.2.3.4"],
    ["a dotted quad not at the end", "::1.2.3.4:5"],
    ["seven groups and a dotted tail", "1:2:3:4:5:6:7:1.2.3.4"],
    ["a dotted tail as first group", "1.2.3.4::"],
    ["a group of forty zeros", `${"0".repeat(40)}::1`],
    ["more than 45 characters", `${"0000:".repeat(9)}1`],
    ["a full-width colon", "fe80\uff1a\uff1a1"],
  ])("rejects %s: %s", (_name, ip) => {
    expect(parseBad(lineWith({ ip })).code).toBe("BAD_IP");
  });

  /** Renders 8 groups the way a sloppy producer might: random case, zero-padding and `::`. */
  function sloppyIPv6(rnd: () => number, groups: number[]): string {
    const texts = groups.map((g) => {
      let t = g.toString(16);
      if (rnd() < 0.3) t = t.padStart(4, "0");
      return rnd() < 0.5 ? t.toUpperCase() : t;
    });
    const zeroRuns: [number, number][] = [];
    for (let i = 0; i < 8; i++) {
      for (let j = i; j < 8 && groups[j] === 0; j++) zeroRuns.push([i, j + 1]);
    }
    if (zeroRuns.length > 0 && rnd() < 0.7) {
      const [from, to] = pick(rnd, zeroRuns);
      return `${texts.slice(0, from).join(":")}::${texts.slice(to).join(":")}`;
    }
    return texts.join(":");
  }

  it("normalises 5000 random IPv6 spellings exactly like the WHATWG URL parser (RFC 5952)", () => {
    const rnd = prng(5952);
    const mismatches: string[] = [];
    for (let n = 0; n < 5000; n++) {
      const groups = Array.from({ length: 8 }, () => (rnd() < 0.5 ? 0 : Math.floor(rnd() * 65536)));
      const text = sloppyIPv6(rnd, groups);
      const isMapped = groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff;
      const expected = isMapped
        ? `${(groups[6] ?? 0) >> 8}.${(groups[6] ?? 0) & 255}.${(groups[7] ?? 0) >> 8}.${(groups[7] ?? 0) & 255}`
        : new URL(`http://[${text}]/`).hostname.slice(1, -1);
      const parsed = parseClickLine(lineWith({ ip: text }), LOC);
      if (!parsed.ok || parsed.event.ip !== expected) mismatches.push(`${text} → ${expected}`);
    }
    expect(mismatches).toEqual([]);
  });

  it("gives normalised addresses that normalise to themselves", () => {
    const rnd = prng(42);
    for (let n = 0; n < 1000; n++) {
      const groups = Array.from({ length: 8 }, () => (rnd() < 0.5 ? 0 : Math.floor(rnd() * 65536)));
      const once = parseOk(lineWith({ ip: sloppyIPv6(rnd, groups) })).ip;
      expect(parseOk(lineWith({ ip: once })).ip).toBe(once);
    }
  });
});

describe("country", () => {
  it.each<[string, string, string]>([
    ["the SPEC's example", "USA", "USA"],
    ["a two-letter code", "DE", "DE"],
    ["lower case, upper-cased", "de", "DE"],
    ["a name, upper-cased", "Germany", "GERMANY"],
    ["64 letters", "x".repeat(64), "X".repeat(64)],
  ])("accepts %s: %s → %s", (_name, country, normalised) => {
    expect(parseOk(lineWith({ country })).country).toBe(normalised);
  });

  it.each<[string, string]>([
    ["empty", ""],
    ["one letter", "U"],
    ["65 letters", "x".repeat(65)],
    ["an inner space", "United States"],
    ["a hyphen", "US-CA"],
    ["a digit", "U5"],
    ["a numeric code", "840"],
    ["an umlaut", "\u00dcSA"],
    ["a Turkish dotted I", "\u0130T"],
    ["Cyrillic look-alikes", "\u0423\u0421\u0410"],
    ["an emoji flag", "\u{1F1FA}\u{1F1F8}"],
    ["a NUL", "US\u0000"],
    ["a zero-width joiner", "U\u200dS"],
  ])("rejects %s", (_name, country) => {
    expect(parseBad(lineWith({ country })).code).toBe("BAD_COUNTRY");
  });
});

describe("click_id", () => {
  it.each<[string, string]>([
    ["a single character", "c"],
    ["a typical id", "clk-2024-07-09-000001"],
    ["every allowed punctuation mark", "a_b.c:d-e"],
    ["a UUID", "123e4567-e89b-12d3-a456-426614174000"],
    ["128 characters", "c".repeat(128)],
  ])("accepts %s as the event id", (_name, clickId) => {
    expect(parseOk(lineWith({ clickId })).eventId).toBe(`c:${clickId}`);
  });

  it.each<[string, string]>([
    ["empty", ""],
    ["blank", "  "],
    ["129 characters", "c".repeat(129)],
    ["an inner space", "clk 1"],
    ["a slash", "clk/1"],
    ["a plus", "clk+1"],
    ["a non-ASCII letter", "cl\u00e9"],
    ["an emoji", "\u{1F4A5}"],
  ])("rejects %s", (_name, clickId) => {
    expect(parseBad(lineWith({ clickId })).code).toBe("BAD_CLICK_ID");
  });
});

describe("formatClickLine", () => {
  const base: ClickLineFields = {
    adId: "ad001",
    timestampMs: SPEC_TS,
    userId: "user-1",
    ip: "207.148.22.22",
    country: "USA",
  };

  it.each<[string, ClickLineFields, string]>([
    ["the SPEC's line for whole seconds", base, SPEC_LINE],
    ["a sixth field for a click_id", { ...base, clickId: "clk-1" }, `${SPEC_LINE}, clk-1`],
    [
      "an ISO timestamp when there are milliseconds",
      { ...base, timestampMs: SPEC_TS + 7 },
      "[AdClickEvent] ad001, 2024-07-09T00:00:01.007Z, user-1, 207.148.22.22, USA",
    ],
    [
      "fields as given, without validating them",
      { ...base, adId: "bad id", ip: "x" },
      "[AdClickEvent] bad id, 2024-07-09 00:00:01, user-1, x, USA",
    ],
  ])("writes %s", (_name, fields, line) => {
    expect(formatClickLine(fields)).toBe(line);
  });

  it.each<[string, number, string]>([
    ["the epoch start", 0, "1970-01-01 00:00:00"],
    ["a leap day", Date.UTC(2024, 1, 29, 23, 59, 59), "2024-02-29 23:59:59"],
    ["a timestamp with .999", Date.UTC(2024, 1, 29, 23, 59, 59, 999), "2024-02-29T23:59:59.999Z"],
    ["a timestamp with .001", Date.UTC(2024, 1, 29, 0, 0, 0, 1), "2024-02-29T00:00:00.001Z"],
  ])("formats %s: %i → %s", (_name, ms, text) => {
    expect(formatClickTimestamp(ms)).toBe(text);
  });

  it.each<[string, number]>([
    ["a fractional millisecond", 1.5],
    ["NaN", Number.NaN],
    ["infinity", Number.POSITIVE_INFINITY],
    ["a time beyond Date's range", 8.64e15 + 1],
  ])("refuses %s as timestamp", (_name, ms) => {
    expect(() => formatClickLine({ ...base, timestampMs: ms })).toThrow(RangeError);
  });

  it("round-trips 5000 random events: parse(format(x)) gives x back", () => {
    const rnd = prng(2024);
    const lo = Date.UTC(2000, 0, 1);
    const hi = Date.UTC(2100, 0, 1);
    for (let n = 0; n < 5000; n++) {
      const wholeSecond = rnd() < 0.5;
      let timestampMs = lo + Math.floor(rnd() * (hi - lo));
      if (wholeSecond) timestampMs -= timestampMs % 1000;
      const ip =
        rnd() < 0.5
          ? Array.from({ length: 4 }, () => Math.floor(rnd() * 256)).join(".")
          : new URL(
              `http://[${Array.from({ length: 8 }, () => (rnd() < 0.4 ? 0 : Math.floor(rnd() * 65536)).toString(16)).join(":")}]/`,
            ).hostname.slice(1, -1);
      const fields: ClickLineFields = {
        adId: randomString(rnd, ID_ALPHABET, 1, 64),
        timestampMs,
        userId: randomString(rnd, USER_ALPHABET, 1, 128),
        ip,
        country: randomString(rnd, LETTERS, 2, 64).toUpperCase(),
      };
      const withClickId = rnd() < 0.5;
      if (withClickId) fields.clickId = randomString(rnd, ID_ALPHABET, 1, 128);
      const loc = { ...LOC, byteOffset: n * 100 };
      const event = parseOk(formatClickLine(fields), loc);
      const { clickId, ...rest } = fields;
      expect(event).toEqual({
        ...rest,
        eventId:
          clickId === undefined
            ? derivedEventId(loc.source, loc.file, loc.byteOffset)
            : `c:${clickId}`,
      });
    }
  });
});

describe("robustness", () => {
  const JUNK = [
    ",",
    " ",
    "\t",
    ":",
    ".",
    "-",
    "T",
    "Z",
    "+",
    "0",
    "9",
    "f",
    "[",
    "]",
    "\r",
    "\u0000",
    "\u00e9",
    "\u20ac",
    "\ud800",
    "\udc00",
    "\u{1F4A5}",
    "\uFEFF",
  ];

  it("never throws on 20000 mutated lines, and what it accepts re-formats to the same event", () => {
    const rnd = prng(7);
    const seeds = [
      SPEC_LINE,
      `${SPEC_LINE}, clk-1`,
      lineWith({ ts: "2024-02-29T23:59:59.999Z", ip: "2001:db8::1" }),
      lineWith({ ip: "::ffff:1.2.3.4", country: "de" }),
    ];
    for (let n = 0; n < 20_000; n++) {
      let line = pick(rnd, seeds);
      const edits = 1 + Math.floor(rnd() * 4);
      for (let e = 0; e < edits; e++) {
        const at = Math.floor(rnd() * (line.length + 1));
        const op = rnd();
        if (op < 0.4) line = line.slice(0, at) + pick(rnd, JUNK) + line.slice(at + 1);
        else if (op < 0.7) line = line.slice(0, at) + pick(rnd, JUNK) + line.slice(at);
        else line = line.slice(0, at) + line.slice(at + 1);
      }
      const result = parseClickLine(line, LOC);
      if (result.ok) {
        const { eventId, ...fields } = result.event;
        const clickId = eventId.startsWith("c:") ? eventId.slice(2) : undefined;
        const again = parseOk(formatClickLine({ ...fields, ...(clickId ? { clickId } : {}) }));
        expect(again).toEqual(result.event);
      } else {
        expect(MALFORMED_CODES).toContain(result.error.code);
        expect(result.error.raw).toBe(line);
      }
    }
  });

  it("never throws on 5000 random strings", () => {
    const rnd = prng(11);
    for (let n = 0; n < 5000; n++) {
      let line = rnd() < 0.5 ? CLICK_LINE_PREFIX : "";
      const length = Math.floor(rnd() * 80);
      for (let i = 0; i < length; i++) line += pick(rnd, JUNK);
      expect(() => parseClickLine(line, LOC)).not.toThrow();
    }
  });
});
