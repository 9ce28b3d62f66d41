/**
 * Parser for click log lines. Pure: no clock, no I/O; runs on the hot path (hundreds of
 * thousands of lines per second), so it is a hand-written scanner over the string with no
 * regular expressions and no allocation beyond the field values and the result it returns.
 *
 *     [AdClickEvent] ad001, 2024-07-09 00:00:01, user-1, 207.148.22.22, USA[, click_id]
 *
 * Rules (see also the field parsers below):
 * - `line` is one line without its `\n`; one trailing `\r` is tolerated (CRLF files), and so
 *   is a leading UTF-8 byte order mark (U+FEFF) on the first line of a file.
 * - Lines over 4096 UTF-8 bytes (not counting the `\r`) are LINE_TOO_LONG; lines that are
 *   empty or only spaces/tabs are EMPTY (callers may skip those silently).
 * - Spaces and tabs may surround the prefix and every field; nothing else is trimmed.
 * - Five fields, or six with the click_id. A present field may not be empty, including the
 *   sixth: `..., USA,` is FIELD_COUNT-correct but BAD_CLICK_ID.
 * - When several things are wrong, the first check in the order of MALFORMED_CODES, then the
 *   first bad field from the left, determines the code.
 */
import { Buffer } from "node:buffer";
import { clickEventId, derivedEventId } from "../identity.js";
import type { ClickEvent } from "../model.js";

export const CLICK_LINE_PREFIX = "[AdClickEvent]";
/** Longest accepted line, in UTF-8 bytes, excluding the line terminator. */
export const MAX_LINE_BYTES = 4096;
/** `MalformedLine.raw` keeps at most this many UTF-16 code units of the line. */
export const MAX_RAW_CHARS = 1024;

export const MAX_AD_ID_LENGTH = 64;
export const MAX_USER_ID_LENGTH = 128;
export const MAX_CLICK_ID_LENGTH = 128;
export const MIN_COUNTRY_LENGTH = 2;
export const MAX_COUNTRY_LENGTH = 64;
export const MIN_YEAR = 2000;
export const MAX_YEAR = 2099;

/** Every reason a line can be rejected, in the order the checks run. */
export const MALFORMED_CODES = [
  "LINE_TOO_LONG",
  "EMPTY",
  "MISSING_PREFIX",
  "FIELD_COUNT",
  "BAD_AD_ID",
  "BAD_TIMESTAMP",
  "BAD_USER_ID",
  "BAD_IP",
  "BAD_COUNTRY",
  "BAD_CLICK_ID",
] as const;
export type MalformedCode = (typeof MALFORMED_CODES)[number];

/** Where a line came from: the identity of lines without click_id derives from this. */
export interface LineLocation {
  /** The producing host or other origin name. */
  source: string;
  file: string;
  /** Offset of the line's first byte in the file. */
  byteOffset: number;
  /** 1-based line number, for humans. */
  lineNo: number;
}

/** A rejected line, ready for counting, reporting and the dead-letter store. */
export interface MalformedLine {
  code: MalformedCode;
  /** Human-readable detail; not stable, do not match on it. */
  reason: string;
  source: string;
  file: string;
  lineNo: number;
  byteOffset: number;
  /** The line as given, cut to MAX_RAW_CHARS code units (never inside a surrogate pair). */
  raw: string;
}

export type ParseResult = { ok: true; event: ClickEvent } | { ok: false; error: MalformedLine };

/** What formatClickLine needs: a ClickEvent's attributes plus the optional click_id. */
export interface ClickLineFields {
  adId: string;
  timestampMs: number;
  userId: string;
  ip: string;
  country: string;
  clickId?: string;
}

// ---------------------------------------------------------------------------------------
// Character classes (char codes; the parser never builds substrings to test them).

const TAB = 0x09;
const CR = 0x0d;
const SPACE = 0x20;
const BOM = 0xfeff;
const DOT = 0x2e;
const COLON = 0x3a;
const HYPHEN = 0x2d;
const DIGIT_0 = 0x30;

function isBlank(c: number): boolean {
  return c === SPACE || c === TAB;
}

function isDigit(c: number): boolean {
  return c >= 0x30 && c <= 0x39;
}

function isLetter(c: number): boolean {
  return (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
}

/** [A-Za-z0-9_.:-], the alphabet of ad_id and click_id. */
function isIdChar(c: number): boolean {
  return isLetter(c) || isDigit(c) || c === 0x5f || c === DOT || c === COLON || c === HYPHEN;
}

/** 0..15 for a hex digit, -1 otherwise. */
function hexValue(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30;
  const lower = c | 0x20;
  if (lower >= 0x61 && lower <= 0x66) return lower - 0x61 + 10;
  return -1;
}

/** A field's value is bad; `reason` is only built on this (cold) path. */
class FieldError {
  constructor(readonly reason: string) {}
}

/** A short printable quote of a field for error messages. */
function quote(line: string, start: number, end: number): string {
  const max = 80;
  const text = end - start > max ? `${line.slice(start, start + max)}…` : line.slice(start, end);
  return JSON.stringify(text);
}

// ---------------------------------------------------------------------------------------
// Field parsers. Each takes the line and the [start, end) bounds of the trimmed field and
// returns the field's value or a FieldError.

function parseIdField(
  name: string,
  maxLength: number,
  line: string,
  start: number,
  end: number,
): string | FieldError {
  const length = end - start;
  if (length === 0) return new FieldError(`${name} is empty`);
  if (length > maxLength) {
    return new FieldError(`${name} is ${length} characters long, more than ${maxLength}`);
  }
  for (let i = start; i < end; i++) {
    if (!isIdChar(line.charCodeAt(i))) {
      return new FieldError(
        `${name} ${quote(line, start, end)} has a character outside [A-Za-z0-9_.:-] at position ${i - start + 1}`,
      );
    }
  }
  return line.slice(start, end);
}

function parseAdId(line: string, start: number, end: number): string | FieldError {
  return parseIdField("ad_id", MAX_AD_ID_LENGTH, line, start, end);
}

function parseClickId(line: string, start: number, end: number): string | FieldError {
  return parseIdField("click_id", MAX_CLICK_ID_LENGTH, line, start, end);
}

function parseUserId(line: string, start: number, end: number): string | FieldError {
  const length = end - start;
  if (length === 0) return new FieldError("user_id is empty");
  if (length > MAX_USER_ID_LENGTH) {
    return new FieldError(`user_id is ${length} characters long, more than ${MAX_USER_ID_LENGTH}`);
  }
  for (let i = start; i < end; i++) {
    const c = line.charCodeAt(i);
    // Printable ASCII without space; commas cannot occur (they separate fields).
    if (c <= SPACE || c >= 0x7f) {
      return new FieldError(
        `user_id ${quote(line, start, end)} has a character outside printable ASCII at position ${i - start + 1}`,
      );
    }
  }
  return line.slice(start, end);
}

function parseCountry(line: string, start: number, end: number): string | FieldError {
  const length = end - start;
  if (length === 0) return new FieldError("country is empty");
  if (length < MIN_COUNTRY_LENGTH || length > MAX_COUNTRY_LENGTH) {
    return new FieldError(
      `country ${quote(line, start, end)} must be ${MIN_COUNTRY_LENGTH}..${MAX_COUNTRY_LENGTH} letters`,
    );
  }
  let hasLower = false;
  for (let i = start; i < end; i++) {
    const c = line.charCodeAt(i);
    if (!isLetter(c)) {
      return new FieldError(
        `country ${quote(line, start, end)} has a character other than A-Z/a-z at position ${i - start + 1}`,
      );
    }
    if (c >= 0x61) hasLower = true;
  }
  const value = line.slice(start, end);
  return hasLower ? value.toUpperCase() : value;
}

/** Reads `count` decimal digits at `at`; -1 if any is not a digit. */
function readDigits(line: string, at: number, count: number): number {
  let value = 0;
  for (let i = at; i < at + count; i++) {
    const c = line.charCodeAt(i);
    if (!isDigit(c)) return -1;
    value = value * 10 + (c - DIGIT_0);
  }
  return value;
}

function isLeapYear(year: number): boolean {
  return (year % 4 === 0 && year % 100 !== 0) || year % 400 === 0;
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];

function daysInMonth(year: number, month: number): number {
  return month === 2 && isLeapYear(year) ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0);
}

/**
 * A timestamp error (cold path). A module-level function rather than a closure inside
 * parseTimestamp: that closure was allocated on every call, i.e. for every line.
 */
function badTimestamp(line: string, start: number, end: number, detail: string): FieldError {
  return new FieldError(`timestamp ${quote(line, start, end)} ${detail}`);
}

/**
 * `YYYY-MM-DD HH:MM:SS`, with `T` allowed for the space, then optionally `.f`, `.ff` or `.fff`
 * (fraction of a second), then optionally `Z` or a numeric offset `±HH:MM`.
 *
 * Without a zone the time is UTC (the SPEC's format). A numeric offset is converted
 * correctly to UTC (`2024-07-09T02:00:00+02:00` is 00:00:00Z); `+00:00` and `-00:00` mean
 * UTC. The calendar is checked strictly (month 1..12, real day of month with leap years,
 * hour 0..23, minute and second 0..59: no leap second 60, no 24:00). The written year must
 * be 2000..2099; the converted instant may cross that bound by the offset. `T` and `Z` are
 * upper case only; more than 3 fraction digits is rejected (no silent truncation).
 */
function parseTimestamp(line: string, start: number, end: number): number | FieldError {
  const length = end - start;
  if (length === 0) return new FieldError("timestamp is empty");
  if (length < 19) return badTimestamp(line, start, end, "is not YYYY-MM-DD HH:MM:SS");
  const sep = line.charCodeAt(start + 10);
  if (
    line.charCodeAt(start + 4) !== HYPHEN ||
    line.charCodeAt(start + 7) !== HYPHEN ||
    (sep !== SPACE && sep !== 0x54) /* T */ ||
    line.charCodeAt(start + 13) !== COLON ||
    line.charCodeAt(start + 16) !== COLON
  ) {
    return badTimestamp(line, start, end, "is not YYYY-MM-DD HH:MM:SS");
  }
  const year = readDigits(line, start, 4);
  const month = readDigits(line, start + 5, 2);
  const day = readDigits(line, start + 8, 2);
  const hour = readDigits(line, start + 11, 2);
  const minute = readDigits(line, start + 14, 2);
  const second = readDigits(line, start + 17, 2);
  if (year < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0) {
    return badTimestamp(line, start, end, "is not YYYY-MM-DD HH:MM:SS");
  }
  if (year < MIN_YEAR || year > MAX_YEAR)
    return badTimestamp(line, start, end, `has a year outside ${MIN_YEAR}..${MAX_YEAR}`);
  if (month < 1 || month > 12) return badTimestamp(line, start, end, "has no such month");
  if (day < 1 || day > daysInMonth(year, month))
    return badTimestamp(line, start, end, "has no such day");
  if (hour > 23 || minute > 59 || second > 59)
    return badTimestamp(line, start, end, "has no such time of day");

  let i = start + 19;
  let millis = 0;
  if (i < end && line.charCodeAt(i) === DOT) {
    i++;
    let digits = 0;
    while (i < end && isDigit(line.charCodeAt(i))) {
      millis = millis * 10 + (line.charCodeAt(i) - DIGIT_0);
      digits++;
      i++;
    }
    if (digits === 0 || digits > 3)
      return badTimestamp(line, start, end, "must have 1 to 3 fraction digits");
    millis *= digits === 1 ? 100 : digits === 2 ? 10 : 1;
  }

  // Zone: nothing (UTC), `Z`, or `±HH:MM`.
  let offsetMinutes = 0;
  const zone = line.charCodeAt(i);
  const zoneLength = end - i;
  if (zoneLength === 6 && (zone === 0x2b /* + */ || zone === HYPHEN)) {
    const offHours = readDigits(line, i + 1, 2);
    const offMinutes = readDigits(line, i + 4, 2);
    if (
      line.charCodeAt(i + 3) !== COLON ||
      offHours < 0 ||
      offMinutes < 0 ||
      offHours > 23 ||
      offMinutes > 59
    ) {
      return badTimestamp(line, start, end, "has an invalid UTC offset (expected ±HH:MM)");
    }
    offsetMinutes = (zone === HYPHEN ? -1 : 1) * (offHours * 60 + offMinutes);
  } else if (zoneLength !== 0 && !(zoneLength === 1 && zone === 0x5a) /* Z */) {
    return badTimestamp(line, start, end, "has trailing characters (expected Z or ±HH:MM)");
  }

  return Date.UTC(year, month - 1, day, hour, minute, second, millis) - offsetMinutes * 60_000;
}

/**
 * Dotted quad at [start, end) as a 32-bit unsigned value, or a negative error: each octet is
 * 1..3 digits, 0..255, without leading zeros ("01" is ambiguous: octal in some parsers).
 */
function readIPv4(line: string, start: number, end: number): number {
  let value = 0;
  let i = start;
  for (let octet = 0; octet < 4; octet++) {
    if (octet > 0) {
      if (i >= end || line.charCodeAt(i) !== DOT) return IPV4_SHAPE;
      i++;
    }
    const first = i;
    let n = 0;
    while (i < end && isDigit(line.charCodeAt(i))) {
      n = n * 10 + (line.charCodeAt(i) - DIGIT_0);
      i++;
      if (i - first > 3) return IPV4_SHAPE;
    }
    if (i === first) return IPV4_SHAPE;
    if (i - first > 1 && line.charCodeAt(first) === DIGIT_0) return IPV4_LEADING_ZERO;
    if (n > 255) return IPV4_RANGE;
    value = value * 256 + n;
  }
  return i === end ? value : IPV4_SHAPE;
}

const IPV4_SHAPE = -1;
const IPV4_LEADING_ZERO = -2;
const IPV4_RANGE = -3;

function ipv4Reason(code: number): string {
  if (code === IPV4_LEADING_ZERO) return "has an octet with a leading zero";
  if (code === IPV4_RANGE) return "has an octet above 255";
  return "is not a dotted quad a.b.c.d";
}

function formatIPv4(value: number): string {
  return `${value >>> 24}.${(value >>> 16) & 255}.${(value >>> 8) & 255}.${value & 255}`;
}

/** Longest textual IPv6 form: 0000:0000:0000:0000:0000:ffff:255.255.255.255 */
const MAX_IPV6_LENGTH = 45;

/** The 8 groups of the IPv6 address being parsed (parsing is synchronous, so one suffices). */
const v6Groups = new Uint16Array(8);

/**
 * IPv6 at [start, end) into `v6Groups`; returns undefined, or the reason it is invalid.
 * Accepts the full form, `::` (once, standing for one or more zero groups) and a dotted
 * quad in place of the last two groups. Zone ids (`%eth0`) and brackets are rejected.
 */
function readIPv6(line: string, start: number, end: number): string | undefined {
  if (end - start > MAX_IPV6_LENGTH) return "is too long for an IPv6 address";
  const groups = v6Groups;
  let count = 0;
  let gapAt = -1; // number of groups before the `::`
  let i = start;
  if (line.charCodeAt(i) === COLON) {
    if (line.charCodeAt(i + 1) !== COLON) return "starts with a single ':'";
    gapAt = 0;
    i += 2;
  }
  while (i < end) {
    if (count === 8) return "has more than 8 groups";
    const groupStart = i;
    let value = 0;
    let h = hexValue(line.charCodeAt(i));
    while (h >= 0) {
      value = value * 16 + h;
      i++;
      h = i < end ? hexValue(line.charCodeAt(i)) : -1;
    }
    if (i < end && line.charCodeAt(i) === DOT) {
      if (count > 6) return "has more than 8 groups";
      const v4 = readIPv4(line, groupStart, end);
      if (v4 < 0) return `has an invalid IPv4 tail: ${ipv4Reason(v4)}`;
      groups[count++] = v4 >>> 16;
      groups[count++] = v4 & 0xffff;
      break;
    }
    const digits = i - groupStart;
    if (digits === 0) return "has an empty or non-hex group";
    if (digits > 4) return "has a group of more than 4 hex digits";
    groups[count++] = value;
    if (i === end) break;
    if (line.charCodeAt(i) !== COLON) return "has a character that is not hex or ':'";
    i++;
    if (i < end && line.charCodeAt(i) === COLON) {
      if (gapAt >= 0) return "has '::' more than once";
      gapAt = count;
      i++;
    } else if (i === end) {
      return "ends with a single ':'";
    }
  }
  if (gapAt < 0) return count === 8 ? undefined : "does not have 8 groups";
  if (count === 8) return "has '::' but already 8 groups";
  // Move the groups after the gap to the end and zero the gap.
  const shift = 8 - count;
  for (let g = count - 1; g >= gapAt; g--) groups[g + shift] = groups[g] ?? 0;
  groups.fill(0, gapAt, gapAt + shift);
  return undefined;
}

/**
 * RFC 5952 text of `v6Groups`: lower-case hex without leading zeros, the longest run of two
 * or more zero groups (the first of equal runs) written as `::`.
 */
function formatIPv6(groups: Uint16Array): string {
  let gapStart = -1;
  let gapLength = 1; // a lone zero group is never compressed
  let runStart = -1;
  for (let g = 0; g <= 8; g++) {
    if (g < 8 && groups[g] === 0) {
      if (runStart < 0) runStart = g;
    } else if (runStart >= 0) {
      if (g - runStart > gapLength) {
        gapStart = runStart;
        gapLength = g - runStart;
      }
      runStart = -1;
    }
  }
  let text = "";
  for (let g = 0; g < 8; g++) {
    if (g === gapStart) {
      text += "::";
      g += gapLength - 1;
    } else {
      if (g > 0 && g !== gapStart + gapLength) text += ":";
      text += (groups[g] ?? 0).toString(16);
    }
  }
  return text;
}

/**
 * An IPv4 or IPv6 address, normalised:
 * - IPv4 dotted quads are already canonical (no leading zeros are accepted) and kept as is.
 * - IPv4-mapped IPv6 (`::ffff:a.b.c.d` in any spelling, e.g. `::FFFF:0102:0304`) becomes the
 *   plain dotted quad `a.b.c.d`: it is the same IPv4 client, seen through a dual-stack
 *   socket, and must not count as a second ip in the ip dimension.
 * - Every other IPv6 address is written per RFC 5952 in pure hex (a dotted tail such as
 *   `64:ff9b::1.2.3.4` becomes `64:ff9b::102:304`).
 */
function parseIp(line: string, start: number, end: number): string | FieldError {
  if (end === start) return new FieldError("ip is empty");
  let isV6 = false;
  for (let i = start; i < end; i++) {
    if (line.charCodeAt(i) === COLON) {
      isV6 = true;
      break;
    }
  }
  if (!isV6) {
    const v4 = readIPv4(line, start, end);
    if (v4 < 0) return new FieldError(`ip ${quote(line, start, end)} ${ipv4Reason(v4)}`);
    return line.slice(start, end);
  }
  const invalid = readIPv6(line, start, end);
  if (invalid !== undefined) return new FieldError(`ip ${quote(line, start, end)} ${invalid}`);
  const groups = v6Groups;
  const isV4Mapped =
    groups[0] === 0 &&
    groups[1] === 0 &&
    groups[2] === 0 &&
    groups[3] === 0 &&
    groups[4] === 0 &&
    groups[5] === 0xffff;
  if (isV4Mapped) {
    return formatIPv4((groups[6] ?? 0) * 0x10000 + (groups[7] ?? 0));
  }
  return formatIPv6(groups);
}

// ---------------------------------------------------------------------------------------
// The line.

function utf8Length(text: string): number {
  return Buffer.byteLength(text, "utf8");
}

function truncateRaw(line: string): string {
  if (line.length <= MAX_RAW_CHARS) return line;
  const last = line.charCodeAt(MAX_RAW_CHARS - 1);
  const cut = last >= 0xd800 && last <= 0xdbff ? MAX_RAW_CHARS - 1 : MAX_RAW_CHARS;
  return line.slice(0, cut);
}

function malformed(
  code: MalformedCode,
  reason: string,
  line: string,
  loc: LineLocation,
): { ok: false; error: MalformedLine } {
  return {
    ok: false,
    error: {
      code,
      reason,
      source: loc.source,
      file: loc.file,
      lineNo: loc.lineNo,
      byteOffset: loc.byteOffset,
      raw: truncateRaw(line),
    },
  };
}

/** Field bounds of the line being parsed: [start, end) pairs, reused (parsing is synchronous). */
const bounds = new Int32Array(12);

/**
 * Parses one click line. Never throws for bad input: every rejection is a MalformedLine
 * with a code, a reason and the location. (It throws RangeError only for an invalid `loc`,
 * through derivedEventId, which is a caller bug.)
 */
export function parseClickLine(line: string, loc: LineLocation): ParseResult {
  let end = line.length;
  if (end > 0 && line.charCodeAt(end - 1) === CR) end--;
  // A UTF-8 line never has fewer bytes than UTF-16 code units, nor more than three per unit.
  if (
    end > MAX_LINE_BYTES ||
    (end * 3 > MAX_LINE_BYTES && utf8Length(line.slice(0, end)) > MAX_LINE_BYTES)
  ) {
    return malformed("LINE_TOO_LONG", `line is longer than ${MAX_LINE_BYTES} bytes`, line, loc);
  }

  let i = 0;
  if (i < end && line.charCodeAt(i) === BOM) i++;
  while (i < end && isBlank(line.charCodeAt(i))) i++;
  if (i === end) return malformed("EMPTY", "line is blank", line, loc);
  if (!line.startsWith(CLICK_LINE_PREFIX, i)) {
    return malformed("MISSING_PREFIX", `line does not start with ${CLICK_LINE_PREFIX}`, line, loc);
  }
  i += CLICK_LINE_PREFIX.length;

  // Split into at most 6 fields, trimming spaces and tabs around each.
  let fields = 0;
  let fieldStart = i;
  for (;;) {
    const comma = line.indexOf(",", fieldStart);
    const fieldEnd = comma < 0 || comma >= end ? end : comma;
    if (fields < 6) {
      let s = fieldStart;
      let e = fieldEnd;
      while (s < e && isBlank(line.charCodeAt(s))) s++;
      while (e > s && isBlank(line.charCodeAt(e - 1))) e--;
      bounds[fields * 2] = s;
      bounds[fields * 2 + 1] = e;
    }
    fields++;
    if (fieldEnd === end) break;
    fieldStart = fieldEnd + 1;
  }
  if (fields < 5 || fields > 6) {
    return malformed(
      "FIELD_COUNT",
      `line has ${fields} comma-separated fields, expected 5 (ad_id, timestamp, user_id, ip, country) or 6 (with click_id)`,
      line,
      loc,
    );
  }

  const adId = parseField(0, parseAdId, line);
  if (adId instanceof FieldError) return malformed("BAD_AD_ID", adId.reason, line, loc);
  const timestampMs = parseField(1, parseTimestamp, line);
  if (timestampMs instanceof FieldError) {
    return malformed("BAD_TIMESTAMP", timestampMs.reason, line, loc);
  }
  const userId = parseField(2, parseUserId, line);
  if (userId instanceof FieldError) return malformed("BAD_USER_ID", userId.reason, line, loc);
  const ip = parseField(3, parseIp, line);
  if (ip instanceof FieldError) return malformed("BAD_IP", ip.reason, line, loc);
  const country = parseField(4, parseCountry, line);
  if (country instanceof FieldError) return malformed("BAD_COUNTRY", country.reason, line, loc);

  let eventId: string;
  if (fields === 6) {
    const clickId = parseField(5, parseClickId, line);
    if (clickId instanceof FieldError) return malformed("BAD_CLICK_ID", clickId.reason, line, loc);
    eventId = clickEventId(clickId);
  } else {
    eventId = derivedEventId(loc.source, loc.file, loc.byteOffset);
  }

  return { ok: true, event: { adId, timestampMs, userId, ip, country, eventId } };
}

/** The JSON form of a click from programmatic producers (the SPEC's wire names). */
export interface ClickObject {
  ad_id: string;
  /** `YYYY-MM-DD HH:MM:SS` (UTC), ISO-8601, or epoch milliseconds. */
  timestamp: string | number;
  user_id: string;
  ip: string;
  country: string;
  click_id?: string;
}

const CLICK_OBJECT_KEYS = new Set(["ad_id", "timestamp", "user_id", "ip", "country", "click_id"]);

/**
 * Validates a click given as an object (ingest subject, library call) with exactly the rules
 * of a log line. Never throws for bad input. Without click_id, the identity derives from
 * `loc` as for a line.
 */
export function parseClickObject(value: unknown, loc: LineLocation): ParseResult {
  let raw: string;
  try {
    raw = JSON.stringify(value) ?? String(value);
  } catch {
    raw = String(value);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return malformed("FIELD_COUNT", "a click must be a JSON object", raw, loc);
  }
  const o = value as Record<string, unknown>;
  for (const k of Object.keys(o)) {
    if (!CLICK_OBJECT_KEYS.has(k)) {
      return malformed(
        "FIELD_COUNT",
        `unknown field "${k}" (expected ad_id, timestamp, user_id, ip, country, click_id)`,
        raw,
        loc,
      );
    }
  }
  const str = (k: string): string | undefined =>
    typeof o[k] === "string" ? (o[k] as string) : undefined;
  const field = <T>(
    k: string,
    parse: (line: string, start: number, end: number) => T | FieldError,
  ): T | FieldError => {
    const v = str(k);
    return v === undefined ? new FieldError(`${k} must be a string`) : parse(v, 0, v.length);
  };
  const adId = field("ad_id", parseAdId);
  if (adId instanceof FieldError) return malformed("BAD_AD_ID", adId.reason, raw, loc);
  let timestampMs: number | FieldError;
  if (typeof o.timestamp === "number") {
    const t = o.timestamp;
    const year = Number.isSafeInteger(t) ? new Date(t).getUTCFullYear() : Number.NaN;
    timestampMs =
      year >= MIN_YEAR && year <= MAX_YEAR
        ? t
        : new FieldError(`timestamp ${t} is not epoch milliseconds in ${MIN_YEAR}..${MAX_YEAR}`);
  } else {
    timestampMs = field("timestamp", parseTimestamp);
  }
  if (timestampMs instanceof FieldError)
    return malformed("BAD_TIMESTAMP", timestampMs.reason, raw, loc);
  const userId = field("user_id", parseUserId);
  if (userId instanceof FieldError) return malformed("BAD_USER_ID", userId.reason, raw, loc);
  const ip = field("ip", parseIp);
  if (ip instanceof FieldError) return malformed("BAD_IP", ip.reason, raw, loc);
  const country = field("country", parseCountry);
  if (country instanceof FieldError) return malformed("BAD_COUNTRY", country.reason, raw, loc);
  let eventId: string;
  if (o.click_id !== undefined) {
    const clickId = field("click_id", parseClickId);
    if (clickId instanceof FieldError) return malformed("BAD_CLICK_ID", clickId.reason, raw, loc);
    eventId = clickEventId(clickId);
  } else {
    eventId = derivedEventId(loc.source, loc.file, loc.byteOffset);
  }
  return { ok: true, event: { adId, timestampMs, userId, ip, country, eventId } };
}

/** Runs a field parser on the trimmed bounds of field `k` of the current line. */
function parseField<T>(
  k: number,
  parse: (line: string, start: number, end: number) => T | FieldError,
  line: string,
): T | FieldError {
  return parse(line, bounds[2 * k] ?? 0, bounds[2 * k + 1] ?? 0);
}

// ---------------------------------------------------------------------------------------
// Formatting.

/**
 * The UTC timestamp as the parser reads it: `YYYY-MM-DD HH:MM:SS` for whole seconds, else
 * ISO `YYYY-MM-DDTHH:MM:SS.fffZ`.
 * @throws RangeError for a non-integer or out-of-range epoch.
 */
export function formatClickTimestamp(timestampMs: number): string {
  if (!Number.isSafeInteger(timestampMs)) {
    throw new RangeError(`timestampMs must be an integer, got ${timestampMs}`);
  }
  const d = new Date(timestampMs);
  if (Number.isNaN(d.getTime())) throw new RangeError(`timestampMs out of range: ${timestampMs}`);
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  if (d.getUTCMilliseconds() !== 0) return iso;
  return `${iso.slice(0, 10)} ${iso.slice(11, 19)}`;
}

/**
 * The canonical line for an event (for generators and tests). It does not validate the
 * fields: pass invalid values and you get a line the parser rejects, which tests may want.
 * `parseClickLine(formatClickLine(x))` gives back x's fields (ip and country normalised),
 * with eventId `"c:" + clickId` when a clickId is given.
 */
export function formatClickLine(e: ClickLineFields): string {
  const base = `${CLICK_LINE_PREFIX} ${e.adId}, ${formatClickTimestamp(e.timestampMs)}, ${e.userId}, ${e.ip}, ${e.country}`;
  return e.clickId === undefined ? base : `${base}, ${e.clickId}`;
}

/** The SPEC's wire names of the fields, in line order (for reports and docs). */
export const CLICK_LINE_FIELDS = [
  "ad_id",
  "timestamp",
  "user_id",
  "ip",
  "country",
  "click_id",
] as const;

/**
 * Validates and normalises one field value on its own (query filters use the same rules as
 * log lines). Returns the normalised value, or an error reason.
 */
export function parseFieldValue(
  field: "ad_id" | "user_id" | "ip" | "country",
  value: string,
): { ok: true; value: string } | { ok: false; reason: string } {
  const parse = { ad_id: parseAdId, user_id: parseUserId, ip: parseIp, country: parseCountry }[
    field
  ];
  const r = parse(value, 0, value.length);
  return r instanceof FieldError ? { ok: false, reason: r.reason } : { ok: true, value: r };
}
