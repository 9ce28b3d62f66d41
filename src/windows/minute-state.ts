/**
 * The counts of one minute of one partition — the star schema of the chapter: a fact count
 * per ad, and per ad × value of each configured dimension (country by default).
 *
 * Layout, tuned for the per-event path and for memory (with 2,000,000 ads nearly every event
 * of a minute is a new ad, so what an ad costs is what a minute costs). Nothing per ad or per
 * event is a JS object: the minute holds a few typed arrays and no reference to the decoded
 * events' strings, so the garbage collector neither traces nor copies it.
 * - Ads: one record of `5 + 2 × dimensions` int32 words per ad in `recs` — the ad id as a
 *   16-byte key (ids of at most 16 characters in U+0001..U+007F packed 7 bits a character,
 *   as the dedupe set packs event ids; any other id kept as its string beside the table),
 *   its count, and per dimension its first value and that value's count inline. An
 *   open-addressing table of `[hash, record + 1]` (load ≤ 1/2, linear probing) finds them.
 * - Per dimension, a {@link ValueIndex} interning the minute's values to small integers, and
 *   the (ad, value) pairs beyond an ad's first value in a flat `[ad, value, count]` array
 *   with its own open-addressing table.
 * Counts are unsigned 32-bit (an ad cannot get 2^32 clicks in a minute of one partition).
 * Memory is O(distinct ads + distinct values + distinct (ad, value) pairs) of the minute.
 */
import type { ClickEvent, Dimension } from "../model.js";
import { compactSlots, decodeKey, hashKey, hashString, padBits, rehashPairs } from "./dedupe.js";

/** `[adId, count]`, the row shape of per-ad counts. */
export type AdCount = [adId: string, count: number];
/** `[adId, dimensionValue, count]`, the row shape of per-ad × dimension counts. */
export type AdDimCount = [adId: string, value: string, count: number];

/** Per-minute counts as plain data (snapshots). */
export interface MinuteCountsSnapshot {
  startMs: number;
  eventCount: number;
  /** Sorted by adId. */
  ads: AdCount[];
  /** Parallel to the dimensions; each sorted by adId, then value. */
  dims: AdDimCount[][];
}

/** Code-unit order: deterministic and locale-free (what sorting of ids must be). */
export function compareIds(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareValue(a: AdDimCount, b: AdDimCount): number {
  return compareIds(a[1], b[1]);
}

/** Interns the values of one dimension within one minute: value ↔ small integer. */
export class ValueIndex {
  private readonly ids = new Map<string, number>();
  readonly values: string[] = [];

  /** The id of a value already seen, or -1. */
  find(value: string): number {
    return this.ids.get(value) ?? -1;
  }

  idOf(value: string): number {
    let id = this.ids.get(value);
    if (id === undefined) {
      id = this.values.length;
      this.values.push(value);
      this.ids.set(value, id);
    }
    return id;
  }
}

// The ad key being looked up (synchronous use only: module scratch is safe).
const TAG_PACKED = 1 << 28;
const TAG_LONG = 3 << 28;
const TAG_MASK = 0xf << 28;
const LOW28 = (1 << 28) - 1;
let k0 = 0;
let k1 = 0;
let k2 = 0;
let k3 = 0;
let keyHash = 0;

/**
 * Encodes an ad id into k0..k3 and its hash into keyHash. Returns false for a long id (more
 * than 16 characters, or one outside U+0001..U+007F): k0 is then TAG_LONG and k2 its hash.
 * Packed keys compare word by word in the code-unit order of their ids (left-aligned
 * characters, zero padding below any character).
 */
function encodeAd(id: string): boolean {
  const n = id.length;
  if (n <= 16) {
    let w0 = 0;
    let w1 = 0;
    let w2 = 0;
    let w3 = 0;
    let i = 0;
    for (; i < n; i++) {
      const c = id.charCodeAt(i);
      if (c === 0 || c > 127) break;
      const w = i >> 2;
      if (w === 0) w0 = (w0 << 7) | c;
      else if (w === 1) w1 = (w1 << 7) | c;
      else if (w === 2) w2 = (w2 << 7) | c;
      else w3 = (w3 << 7) | c;
    }
    if (i === n) {
      k0 = TAG_PACKED | ((w0 << padBits(n)) & LOW28);
      k1 = w1 << padBits(n - 4);
      k2 = w2 << padBits(n - 8);
      k3 = w3 << padBits(n - 12);
      keyHash = hashKey(k0, k1, k2, k3);
      return true;
    }
  }
  keyHash = hashString(id);
  k0 = TAG_LONG;
  k1 = -1;
  k2 = keyHash;
  k3 = 0;
  return false;
}

function pairHash(cell: number, id: number): number {
  let h = Math.imul(cell, 0x9e3779b1) ^ Math.imul(id + 1, 0x85ebca6b);
  h ^= h >>> 15;
  h = Math.imul(h, 0x2c1b3c6d);
  h ^= h >>> 12;
  return h;
}

/** A count as stored: the low 32 bits (read back with `>>> 0`). */
function checkedCount(n: number): number {
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) {
    throw new RangeError(`a minute's count must be an integer in [0, 2^32), got ${n}`);
  }
  return n;
}

const INITIAL_ADS = 16;

/**
 * One dimension of a minute: its values interned, and the (ad, value) pairs beyond each ad's
 * first value (which sits in the ad's record, at word `at`).
 */
class DimCounts {
  readonly index = new ValueIndex();
  /** `[ad record, value id, count]` per pair, in insertion order. */
  pairs = new Int32Array(3 * INITIAL_ADS);
  /** Open addressing: pair index + 1 (0 = empty); the key is read from `pairs`. */
  table = new Int32Array(2 * INITIAL_ADS);
  mask = 2 * INITIAL_ADS - 1;
  size = 0;
  /** Pairs held before the table doubles: half its slots, 3/4 after {@link compact}. */
  private limit = INITIAL_ADS;

  constructor(readonly at: number) {}

  /** Adds `n` to the pair (cell, id). */
  add(cell: number, id: number, n: number): void {
    const table = this.table;
    const pairs = this.pairs;
    const mask = this.mask;
    let slot = pairHash(cell, id) & mask;
    for (;;) {
      const ref = table[slot] as number;
      if (ref === 0) break;
      const at = (ref - 1) * 3;
      if (pairs[at] === cell && pairs[at + 1] === id) {
        pairs[at + 2] = ((pairs[at + 2] as number) + n) | 0;
        return;
      }
      slot = (slot + 1) & mask;
    }
    let store = pairs;
    const at = this.size * 3;
    if (at + 3 > store.length) {
      store = new Int32Array(store.length * 2);
      store.set(pairs);
      this.pairs = store;
    }
    store[at] = cell;
    store[at + 1] = id;
    store[at + 2] = n | 0;
    this.size++;
    table[slot] = this.size;
    if (this.size > this.limit) this.rehash((mask + 1) * 2);
  }

  /** The count of the pair (cell, id), 0 when absent. */
  count(cell: number, id: number): number {
    const table = this.table;
    const pairs = this.pairs;
    const mask = this.mask;
    let slot = pairHash(cell, id) & mask;
    for (;;) {
      const ref = table[slot] as number;
      if (ref === 0) return 0;
      const at = (ref - 1) * 3;
      if (pairs[at] === cell && pairs[at + 1] === id) return (pairs[at + 2] as number) >>> 0;
      slot = (slot + 1) & mask;
    }
  }

  private rehash(slots: number): void {
    const table = new Int32Array(slots);
    const mask = slots - 1;
    const pairs = this.pairs;
    for (let p = 0; p < this.size; p++) {
      let slot = pairHash(pairs[p * 3] as number, pairs[p * 3 + 1] as number) & mask;
      while (table[slot] !== 0) slot = (slot + 1) & mask;
      table[slot] = p + 1;
    }
    this.table = table;
    this.mask = mask;
    this.limit = slots >> 1;
  }

  /** See {@link MinuteState.compact}. */
  compact(): void {
    const used = this.size * 3;
    if (used < this.pairs.length) this.pairs = this.pairs.slice(0, Math.max(used, 3));
    const slots = compactSlots(this.size, 2 * INITIAL_ADS);
    if (slots < this.mask + 1) {
      this.rehash(slots);
      this.limit = (slots * 3) >> 2;
    }
  }
}

/** A minute's ads in code-unit order of their ids: record numbers and ids, parallel. */
export interface SortedAds {
  readonly cells: readonly number[];
  readonly ids: readonly string[];
}

/** Words of an ad's record before its dimensions: key (4), count (1). */
const AD_WORDS = 5;
const COUNT = 4;

export class MinuteState {
  /** Events counted (sum of all ad counts). */
  eventCount = 0;
  readonly endMs: number;
  /** Words per ad record. */
  private readonly stride: number;
  /** Ad records (see the module comment), in insertion order. */
  private recs: Int32Array;
  /** Open addressing over slots of two words: [hash, record + 1] (0 = empty). */
  private table = new Int32Array(4 * INITIAL_ADS);
  private mask = 2 * INITIAL_ADS - 1;
  private count = 0;
  /** Ads held before the table doubles: half its slots, 3/4 after {@link compact}. */
  private limit = INITIAL_ADS;
  /** Ad ids without a 16-byte form, referenced from their records. */
  private readonly longIds: string[] = [];
  private readonly country: DimCounts | null = null;
  private readonly ip: DimCounts | null = null;
  private readonly userId: DimCounts | null = null;

  constructor(
    readonly startMs: number,
    sizeMs: number,
    readonly dimensions: readonly Dimension[],
  ) {
    this.endMs = startMs + sizeMs;
    let at = AD_WORDS;
    for (const d of dimensions) {
      const dim = new DimCounts(at);
      at += 2;
      if (d === "country") this.country = dim;
      else if (d === "ip") this.ip = dim;
      else if (d === "userId") this.userId = dim;
    }
    this.stride = at;
    this.recs = new Int32Array(at * INITIAL_ADS);
  }

  /** Distinct ads counted in the minute. */
  get size(): number {
    return this.count;
  }

  /** Bytes of typed arrays held (long ids' strings and the value indexes not included). */
  get bytes(): number {
    let n = this.recs.byteLength + this.table.byteLength;
    for (const d of [this.country, this.ip, this.userId]) {
      if (d !== null) n += d.pairs.byteLength + d.table.byteLength;
    }
    return n;
  }

  /** Counts one event (hot path: one probe for the ad, one intern + inline check per dimension). */
  add(e: ClickEvent): void {
    let cell = this.find(e.adId);
    if (cell < 0) cell = this.insert(-cell - 1, e.adId);
    const recs = this.recs;
    const base = cell * this.stride;
    recs[base + COUNT] = ((recs[base + COUNT] as number) + 1) | 0;
    this.eventCount++;
    const country = this.country;
    if (country !== null) this.addValue(country, cell, base, country.index.idOf(e.country), 1);
    const ip = this.ip;
    if (ip !== null) this.addValue(ip, cell, base, ip.index.idOf(e.ip), 1);
    const userId = this.userId;
    if (userId !== null) this.addValue(userId, cell, base, userId.index.idOf(e.userId), 1);
  }

  private addValue(d: DimCounts, cell: number, base: number, id: number, n: number): void {
    const recs = this.recs;
    const at = base + d.at;
    const first = recs[at] as number;
    if (first === id + 1) recs[at + 1] = ((recs[at + 1] as number) + n) | 0;
    else if (first === 0) {
      recs[at] = id + 1;
      recs[at + 1] = n | 0;
    } else d.add(cell, id, n);
  }

  /**
   * The record of ad `id`, or `-1 - slot` with the free table slot where it would go (k0..k3
   * and keyHash then hold its key).
   */
  private find(id: string): number {
    const packed = encodeAd(id);
    const h = keyHash;
    const table = this.table;
    const recs = this.recs;
    const mask = this.mask;
    const stride = this.stride;
    let slot = h & mask;
    for (;;) {
      const ref = table[(slot << 1) + 1] as number;
      if (ref === 0) return -1 - slot;
      if (table[slot << 1] === h) {
        const at = (ref - 1) * stride;
        if (recs[at] === k0) {
          if (packed) {
            if (recs[at + 1] === k1 && recs[at + 2] === k2 && recs[at + 3] === k3) return ref - 1;
          } else if (this.longIds[recs[at + 1] as number] === id) {
            return ref - 1;
          }
        }
      }
      slot = (slot + 1) & mask;
    }
  }

  /** Appends the ad whose key {@link find} just encoded, at free table slot `slot`. */
  private insert(slot: number, id: string): number {
    if (k0 === TAG_LONG) {
      k1 = this.longIds.length;
      this.longIds.push(id);
    }
    const stride = this.stride;
    let recs = this.recs;
    const cell = this.count;
    const at = cell * stride;
    if (at + stride > recs.length) {
      recs = new Int32Array(recs.length * 2);
      recs.set(this.recs);
      this.recs = recs;
    }
    recs[at] = k0;
    recs[at + 1] = k1;
    recs[at + 2] = k2;
    recs[at + 3] = k3;
    this.count++;
    this.table[slot << 1] = keyHash;
    this.table[(slot << 1) + 1] = this.count;
    if (this.count > this.limit) this.rehash((this.mask + 1) * 2);
    return cell;
  }

  private rehash(slots: number): void {
    this.table = rehashPairs(this.table, slots);
    this.mask = slots - 1;
    this.limit = slots >> 1;
  }

  /**
   * Gives back the growth slack of a minute that will get few more events (closed, kept for
   * amendments): arrays trimmed to their use, tables rebuilt at a load of at most 3/4. Every
   * count and answer stays the same; a later add grows it as before.
   */
  compact(): void {
    const used = this.count * this.stride;
    if (used < this.recs.length) this.recs = this.recs.slice(0, Math.max(used, this.stride));
    const slots = compactSlots(this.count, 2 * INITIAL_ADS);
    if (slots < this.mask + 1) {
      this.rehash(slots);
      this.limit = (slots * 3) >> 2;
    }
    for (const d of [this.country, this.ip, this.userId]) d?.compact();
  }

  /** The record of ad `adId`, created (count 0) when absent. */
  private cellFor(adId: string): number {
    const cell = this.find(adId);
    return cell < 0 ? this.insert(-cell - 1, adId) : cell;
  }

  /** The id of the ad of record `cell`. */
  private idOf(cell: number): string {
    const recs = this.recs;
    const at = cell * this.stride;
    const w0 = recs[at] as number;
    if (w0 === TAG_LONG) return this.longIds[recs[at + 1] as number] as string;
    return decodeKey(w0, recs[at + 1] as number, recs[at + 2] as number, recs[at + 3] as number);
  }

  private dimOf(dimension: Dimension): DimCounts | null {
    return dimension === "country" ? this.country : dimension === "ip" ? this.ip : this.userId;
  }

  /** Count of one ad (0 when absent). */
  adCount(adId: string): number {
    const cell = this.find(adId);
    return cell < 0 ? 0 : (this.recs[cell * this.stride + COUNT] as number) >>> 0;
  }

  /** Count of one ad × dimension value (0 when absent or the dimension is not counted). */
  dimCount(adId: string, dimension: Dimension, value: string): number {
    const d = this.dimOf(dimension);
    if (d === null) return 0;
    const cell = this.find(adId);
    const id = d.index.find(value);
    if (cell < 0 || id < 0) return 0;
    const at = cell * this.stride + d.at;
    const first = this.recs[at] as number;
    if (first === id + 1) return (this.recs[at + 1] as number) >>> 0;
    return first === 0 ? 0 : d.count(cell, id);
  }

  /** The minute's ads in code-unit order of their ids. */
  sortedAds(): SortedAds {
    const n = this.count;
    const recs = this.recs;
    const stride = this.stride;
    const ids: string[] = new Array(n);
    const cells: number[] = new Array(n);
    for (let c = 0; c < n; c++) {
      ids[c] = this.idOf(c);
      cells[c] = c;
    }
    cells.sort((a, b) => {
      const x = a * stride;
      const y = b * stride;
      const xa = recs[x] as number;
      const yb = recs[y] as number;
      if ((xa & TAG_MASK) === TAG_PACKED && (yb & TAG_MASK) === TAG_PACKED) {
        // Same order as the ids' code units (see encodeAd); equal keys are equal ids.
        if (xa !== yb) return xa - yb;
        for (let i = 1; i < 4; i++) {
          const d = (recs[x + i] as number) - (recs[y + i] as number);
          if (d !== 0) return d;
        }
        return 0;
      }
      return compareIds(ids[a] as string, ids[b] as string);
    });
    const sortedIds: string[] = new Array(n);
    for (let i = 0; i < n; i++) sortedIds[i] = ids[cells[i] as number] as string;
    return { cells, ids: sortedIds };
  }

  /** The minute's ad ids in code-unit order. */
  sortedAdIds(): string[] {
    return [...this.sortedAds().ids];
  }

  /** `[adId, count]` rows sorted by adId. */
  adCounts(order: SortedAds = this.sortedAds()): AdCount[] {
    const recs = this.recs;
    const stride = this.stride;
    const n = order.cells.length;
    const out: AdCount[] = new Array(n);
    for (let i = 0; i < n; i++) {
      const cell = order.cells[i] as number;
      out[i] = [order.ids[i] as string, (recs[cell * stride + COUNT] as number) >>> 0];
    }
    return out;
  }

  /**
   * Rows of one dimension, sorted by adId then value (empty when it is not counted). Walks
   * the ads in order and sorts each ad's few rows, rather than sorting all rows at once.
   */
  dimCountsOf(dimension: Dimension, order: SortedAds = this.sortedAds()): AdDimCount[] {
    const out: AdDimCount[] = [];
    const d = this.dimOf(dimension);
    if (d === null) return out;
    const values = d.index.values;
    const recs = this.recs;
    const stride = this.stride;
    // The pairs grouped by ad (a counting sort): those of record c are byAd[start[c]..start[c+1]).
    const pairs = d.pairs;
    const np = d.size;
    const start = new Int32Array(this.count + 1);
    for (let p = 0; p < np; p++) (start[(pairs[p * 3] as number) + 1] as number)++;
    for (let c = 0; c < this.count; c++) {
      start[c + 1] = (start[c + 1] as number) + (start[c] as number);
    }
    const fill = start.slice();
    const byAd = new Int32Array(np);
    for (let p = 0; p < np; p++) {
      const c = pairs[p * 3] as number;
      byAd[(fill[c] as number)++] = p * 3;
    }
    const rows: AdDimCount[] = [];
    for (let i = 0; i < order.cells.length; i++) {
      const cell = order.cells[i] as number;
      const at = cell * stride + d.at;
      const first = recs[at] as number;
      if (first === 0) continue;
      const adId = order.ids[i] as string;
      const from = start[cell] as number;
      const to = start[cell + 1] as number;
      if (from === to) {
        out.push([adId, values[first - 1] as string, (recs[at + 1] as number) >>> 0]);
        continue;
      }
      rows.length = 0;
      rows.push([adId, values[first - 1] as string, (recs[at + 1] as number) >>> 0]);
      for (let q = from; q < to; q++) {
        const p = byAd[q] as number;
        rows.push([adId, values[pairs[p + 1] as number] as string, (pairs[p + 2] as number) >>> 0]);
      }
      rows.sort(compareValue);
      for (const row of rows) out.push(row);
    }
    return out;
  }

  /** All dimensions' rows, keyed by dimension name. */
  dimCounts(order: SortedAds = this.sortedAds()): Partial<Record<Dimension, AdDimCount[]>> {
    const out: Partial<Record<Dimension, AdDimCount[]>> = {};
    for (const d of this.dimensions) out[d] = this.dimCountsOf(d, order);
    return out;
  }

  toSnapshot(): MinuteCountsSnapshot {
    const order = this.sortedAds();
    const dims: AdDimCount[][] = [];
    for (const d of this.dimensions) dims.push(this.dimCountsOf(d, order));
    return { startMs: this.startMs, eventCount: this.eventCount, ads: this.adCounts(order), dims };
  }

  /** @throws RangeError for a count that is not an integer in [0, 2^32). */
  static fromSnapshot(
    snap: MinuteCountsSnapshot,
    sizeMs: number,
    dimensions: readonly Dimension[],
  ): MinuteState {
    const m = new MinuteState(snap.startMs, sizeMs, dimensions);
    for (const [adId, count] of snap.ads) {
      const cell = m.cellFor(adId);
      m.recs[cell * m.stride + COUNT] = checkedCount(count) | 0;
    }
    for (let d = 0; d < dimensions.length; d++) {
      const dim = m.dimOf(dimensions[d] as Dimension) as DimCounts;
      for (const [adId, value, n] of snap.dims[d] ?? []) {
        const cell = m.cellFor(adId);
        m.addValue(dim, cell, cell * m.stride, dim.index.idOf(value), checkedCount(n));
      }
    }
    m.eventCount = snap.eventCount;
    return m;
  }
}
