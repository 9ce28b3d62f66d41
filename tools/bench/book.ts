/**
 * The benchmark's input, shaped like the book's (System Design Interview Vol. 2, ch. 6):
 * 2,000,000 ads with Zipf popularity, countries, ips and user_ids, ~100-byte log lines, a few
 * per cent duplicates (the same click_id again, as retries make them) and out-of-order event
 * times within the allowed lateness.
 *
 * Written as a stream (tens of millions of lines never sit in memory) into one file per
 * shipper, with the ground truth kept as it is written: the independent recount the
 * benchmark checks the pipeline against. The truth comes from the generator's own
 * decisions, never from the parser or the pipeline.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { prng, zipfSampler } from "../../src/gen/click-log.js";
import type { ClickEvent } from "../../src/model.js";
import { ONE_MINUTE_MS } from "../../src/model.js";

export interface BookShape {
  seed: number;
  /** Lines to write (events, duplicates and malformed lines together). */
  lines: number;
  ads: number;
  zipfS: number;
  users: number;
  countries: readonly string[];
  /** Event time of the first line, epoch ms (a whole minute). */
  startMs: number;
  /** Event-time events per second: the span of the input is lines / rate. */
  eventRatePerSec: number;
  /** Share of clicks with a click_id (the rest get an identity from their log position). */
  clickIdRatio: number;
  /** Share of lines repeating a recent click with its click_id (retries). */
  duplicateRatio: number;
  /** Share of malformed lines (dead-lettered, never counted). */
  malformedRatio: number;
  /** A click's event time is up to this much before the steady clock (within the lateness). */
  disorderMs: number;
}

export const BOOK_COUNTRIES = [
  "USA",
  "KOR",
  "JPN",
  "DEU",
  "BRA",
  "IND",
  "GBR",
  "FRA",
  "CAN",
  "AUS",
];

export const DEFAULT_BOOK: BookShape = {
  seed: 7,
  lines: 6_000_000,
  ads: 2_000_000,
  zipfS: 1.1,
  users: 1_000_000,
  countries: BOOK_COUNTRIES,
  startMs: Date.UTC(2024, 6, 9, 0, 0, 0),
  eventRatePerSec: 50_000,
  clickIdRatio: 0.5,
  duplicateRatio: 0.03,
  malformedRatio: 0.001,
  disorderMs: 5_000,
};

/** The ad id of Zipf rank k: ad0000000, ad0000001, … (rank 0 is the most clicked). */
export function adIdOf(rank: number): string {
  return `ad${String(rank).padStart(7, "0")}`;
}

/** The rank of an ad id made by adIdOf; -1 for anything else. */
export function rankOfAdId(adId: string): number {
  if (adId.length !== 9 || !adId.startsWith("ad")) return -1;
  const n = Number(adId.slice(2));
  return Number.isInteger(n) ? n : -1;
}

/** Users whose every click the truth keeps (for user_id-filtered queries). */
export const TRACKED_USERS = 8;

/**
 * The independent recount of a generated input: unique clicks per (minute, ad) and per
 * (minute, ad, country), plus every click of a few tracked users.
 */
export class Truth {
  readonly ads: number;
  readonly countries: readonly string[];
  /** Unique clicks. */
  events = 0;
  lines = 0;
  duplicates = 0;
  malformed = 0;
  /** Smallest and largest event time of a unique click. */
  minTsMs = Number.POSITIVE_INFINITY;
  maxTsMs = Number.NEGATIVE_INFINITY;
  /** key (minute index · ads + ad rank) → clicks; minute index counts from `baseMinuteMs`. */
  readonly adMinute = new Map<number, number>();
  /** key ((minute index · ads + ad rank) · countries + country) → clicks. */
  readonly adMinuteCountry = new Map<number, number>();
  /** minute start → unique clicks in it. */
  readonly perMinute = new Map<number, number>();
  /** Tracked user index → [ad rank, minute start][] of their unique clicks. */
  readonly userClicks = new Map<number, [number, number][]>();

  constructor(
    readonly baseMinuteMs: number,
    ads: number,
    countries: readonly string[],
  ) {
    this.ads = ads;
    this.countries = countries;
  }

  /** Records one unique click. */
  add(rank: number, tsMs: number, country: number, user: number): void {
    const minute = Math.floor(tsMs / ONE_MINUTE_MS) * ONE_MINUTE_MS;
    const mi = (minute - this.baseMinuteMs) / ONE_MINUTE_MS;
    const k = mi * this.ads + rank;
    this.adMinute.set(k, (this.adMinute.get(k) ?? 0) + 1);
    const kc = k * this.countries.length + country;
    this.adMinuteCountry.set(kc, (this.adMinuteCountry.get(kc) ?? 0) + 1);
    this.perMinute.set(minute, (this.perMinute.get(minute) ?? 0) + 1);
    if (user < TRACKED_USERS) {
      const list = this.userClicks.get(user);
      if (list) list.push([rank, minute]);
      else this.userClicks.set(user, [[rank, minute]]);
    }
    this.events++;
    if (tsMs < this.minTsMs) this.minTsMs = tsMs;
    if (tsMs > this.maxTsMs) this.maxTsMs = tsMs;
  }

  minuteIndex(minuteMs: number): number {
    return (minuteMs - this.baseMinuteMs) / ONE_MINUTE_MS;
  }

  /** Clicks of an ad in [fromMs, toMs), optionally of one country. */
  count(rank: number, fromMs: number, toMs: number, country?: number): number {
    let n = 0;
    for (let m = fromMs; m < toMs; m += ONE_MINUTE_MS) {
      const k = this.minuteIndex(m) * this.ads + rank;
      n +=
        country === undefined
          ? (this.adMinute.get(k) ?? 0)
          : (this.adMinuteCountry.get(k * this.countries.length + country) ?? 0);
    }
    return n;
  }

  /** The exact top n of [fromMs, toMs) (count desc, ad_id asc), optionally of one country. */
  top(n: number, fromMs: number, toMs: number, country?: number): [string, number][] {
    const lo = this.minuteIndex(fromMs);
    const hi = this.minuteIndex(toMs);
    const sums = new Map<number, number>();
    const C = this.countries.length;
    if (country === undefined) {
      for (const [k, c] of this.adMinute) {
        const mi = Math.floor(k / this.ads);
        if (mi >= lo && mi < hi) {
          const r = k - mi * this.ads;
          sums.set(r, (sums.get(r) ?? 0) + c);
        }
      }
    } else {
      for (const [kc, c] of this.adMinuteCountry) {
        if (kc % C !== country) continue;
        const k = (kc - country) / C;
        const mi = Math.floor(k / this.ads);
        if (mi >= lo && mi < hi) {
          const r = k - mi * this.ads;
          sums.set(r, (sums.get(r) ?? 0) + c);
        }
      }
    }
    return rankTop(sums, n);
  }

  /** A tracked user's clicks of one ad (or all ads) in [fromMs, toMs). */
  userCount(user: number, fromMs: number, toMs: number, rank?: number): number {
    let n = 0;
    for (const [r, m] of this.userClicks.get(user) ?? []) {
      if (m >= fromMs && m < toMs && (rank === undefined || r === rank)) n++;
    }
    return n;
  }

  userTop(user: number, n: number, fromMs: number, toMs: number): [string, number][] {
    const sums = new Map<number, number>();
    for (const [r, m] of this.userClicks.get(user) ?? []) {
      if (m >= fromMs && m < toMs) sums.set(r, (sums.get(r) ?? 0) + 1);
    }
    return rankTop(sums, n);
  }
}

function rankTop(sums: Map<number, number>, n: number): [string, number][] {
  // Ad ids sort like their ranks (fixed width), so ties break by rank ascending.
  return [...sums]
    .sort((a, b) => b[1] - a[1] || a[0] - b[0])
    .slice(0, n)
    .map(([r, c]) => [adIdOf(r), c]);
}

/** `YYYY-MM-DD HH:MM:SS` of a whole second (cached: consecutive lines share seconds). */
function secondText(sec: number): string {
  return new Date(sec * 1000).toISOString().slice(0, 19).replace("T", " ");
}

interface Recent {
  rank: number;
  tsMs: number;
  user: number;
  ip: string;
  country: number;
  clickId: string;
}

/**
 * Writes `shape.lines` lines round-robin into `files` (one per shipper, each covering the
 * whole event-time span in order, so shippers advance through event time together) and
 * returns the truth. `onProgress` is called every ~500k lines.
 */
export function writeBookLogs(
  shape: BookShape,
  files: readonly string[],
  onProgress?: (linesDone: number) => void,
): Truth {
  const o = shape;
  const rand = prng(o.seed);
  const adRank = zipfSampler(o.ads, o.zipfS, rand);
  const truth = new Truth(
    Math.floor((o.startMs - o.disorderMs) / ONE_MINUTE_MS) * ONE_MINUTE_MS,
    o.ads,
    o.countries,
  );
  const fds = files.map((f) => openSync(f, "w"));
  const buffers: string[][] = files.map(() => []);
  const sizes = files.map(() => 0);
  const flush = (i: number) => {
    writeSync(fds[i] as number, (buffers[i] as string[]).join(""));
    buffers[i] = [];
    sizes[i] = 0;
  };
  const spanMs = (o.lines / o.eventRatePerSec) * 1000;
  const recent: Recent[] = [];
  const RECENT = 20_000;
  let seq = 0;
  let cachedSec = Number.NaN;
  let cachedText = "";
  try {
    for (let i = 0; i < o.lines; i++) {
      const f = i % files.length;
      const clockMs = o.startMs + Math.floor((i / o.lines) * spanMs);
      const r = rand();
      let line: string;
      if (r < o.duplicateRatio && recent.length > 0) {
        const c = recent[Math.floor(rand() * recent.length)] as Recent;
        line = formatLine(
          c.rank,
          c.tsMs,
          c.user,
          c.ip,
          o.countries[c.country] as string,
          c.clickId,
        );
        truth.duplicates++;
      } else {
        const rank = adRank();
        const ts0 = clockMs - Math.floor(rand() * o.disorderMs);
        // Mostly whole seconds (the log format); some with milliseconds (ISO form).
        const tsMs = rand() < 0.05 ? ts0 : Math.floor(ts0 / 1000) * 1000;
        const user = Math.floor(rand() * o.users);
        const ip = `${10 + Math.floor(rand() * 200)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${1 + Math.floor(rand() * 254)}`;
        const country = Math.floor(rand() * o.countries.length);
        const withId = rand() < o.clickIdRatio;
        const clickId = withId ? `clk-${o.seed}-${seq++}` : "";
        if (r > 1 - o.malformedRatio) {
          // A broken line: its country is not letters. Dead-lettered, never counted.
          line = formatLine(rank, tsMs, user, ip, "U5A", clickId);
          truth.malformed++;
        } else {
          let ts: string;
          if (tsMs % 1000 === 0) {
            const sec = tsMs / 1000;
            if (sec !== cachedSec) {
              cachedSec = sec;
              cachedText = secondText(sec);
            }
            ts = cachedText;
          } else {
            ts = new Date(tsMs).toISOString();
          }
          line = `[AdClickEvent] ${adIdOf(rank)}, ${ts}, user-${user}, ${ip}, ${o.countries[country]}${withId ? `, ${clickId}` : ""}\n`;
          truth.add(rank, tsMs, country, user);
          if (withId) {
            const c: Recent = { rank, tsMs, user, ip, country, clickId };
            if (recent.length < RECENT) recent.push(c);
            else recent[seq % RECENT] = c;
          }
        }
      }
      (buffers[f] as string[]).push(line);
      sizes[f] = (sizes[f] as number) + 1;
      if ((sizes[f] as number) >= 20_000) flush(f);
      if (onProgress && i % 500_000 === 499_999) onProgress(i + 1);
    }
    for (let i = 0; i < files.length; i++) flush(i);
  } finally {
    for (const fd of fds) closeSync(fd);
  }
  truth.lines = o.lines;
  return truth;
}

function formatLine(
  rank: number,
  tsMs: number,
  user: number,
  ip: string,
  country: string,
  clickId: string,
): string {
  const ts = tsMs % 1000 === 0 ? secondText(tsMs / 1000) : new Date(tsMs).toISOString();
  return `[AdClickEvent] ${adIdOf(rank)}, ${ts}, user-${user}, ${ip}, ${country}${clickId ? `, ${clickId}` : ""}\n`;
}

/**
 * Book-shaped events in memory, as an aggregator sees them after decoding (for the
 * in-process aggregation benchmark): `count` events in event-time order with disorder,
 * `duplicateRatio` of them repeating a recent event id.
 */
export function bookEvents(shape: BookShape, count: number): ClickEvent[] {
  const o = shape;
  const rand = prng(o.seed);
  const adRank = zipfSampler(o.ads, o.zipfS, rand);
  const spanMs = (count / o.eventRatePerSec) * 1000;
  const out: ClickEvent[] = new Array(count);
  for (let i = 0; i < count; i++) {
    if (i > 0 && rand() < o.duplicateRatio) {
      const j = Math.max(0, i - 1 - Math.floor(rand() * 10_000));
      out[i] = { ...(out[j] as ClickEvent) };
      continue;
    }
    const clockMs = o.startMs + Math.floor((i / count) * spanMs);
    const user = Math.floor(rand() * o.users);
    out[i] = {
      adId: adIdOf(adRank()),
      timestampMs: Math.floor((clockMs - Math.floor(rand() * o.disorderMs)) / 1000) * 1000,
      userId: `user-${user}`,
      ip: `${10 + Math.floor(rand() * 200)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${1 + Math.floor(rand() * 254)}`,
      country: o.countries[Math.floor(rand() * o.countries.length)] as string,
      eventId:
        rand() < o.clickIdRatio
          ? `c:clk-${o.seed}-${i}`
          : `o:${Math.floor(rand() * 2 ** 48)
              .toString(36)
              .padStart(16, "x")}`,
    };
  }
  return out;
}
