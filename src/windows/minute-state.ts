/**
 * The counts of one minute of one partition — the star schema of the chapter: a fact count
 * per ad, and per ad × value of each configured dimension (country by default).
 *
 * Layout, tuned for the per-event path (no key is ever built by string concatenation):
 * - `Map<adId, AdCell>`: one hash lookup finds everything of an ad;
 * - per dimension, a {@link ValueIndex} interning the minute's values to small integers
 *   (a tiny, cache-hot map for country);
 * - per cell and dimension, {@link ValueCounts} keyed by those integers: a flat
 *   `[id, count, id, count, …]` array scanned linearly while short, a `Map<id, count>` once
 *   it grows. Compared with a `Map<string, count>` per cell this avoids hashing the value
 *   again and touching the stored key strings scattered over the heap.
 * Memory is O(distinct ads + distinct values + distinct (ad, value) pairs) of the minute.
 */
import type { ClickEvent, Dimension } from "../model.js";

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

/** Pairs kept in the flat array before switching to a Map. */
const FLAT_MAX_PAIRS = 16;

/**
 * Counts per interned value id for one ad and one dimension: a flat
 * `[id, count, id, count, …]` array while short (scanned linearly; one object, next to
 * nothing to chase), a `Map<id, count>` once it has more than FLAT_MAX_PAIRS values.
 */
export type ValueCounts = number[] | Map<number, number>;

/** Adds `n` to value `id`; returns the container to store back (it changes on upgrade). */
export function addValueCount(c: ValueCounts, id: number, n: number): ValueCounts {
  if (Array.isArray(c)) {
    const len = c.length;
    for (let i = 0; i < len; i += 2) {
      if (c[i] === id) {
        c[i + 1] = (c[i + 1] as number) + n;
        return c;
      }
    }
    if (len < 2 * FLAT_MAX_PAIRS) {
      c.push(id, n);
      return c;
    }
    const m = new Map<number, number>();
    for (let i = 0; i < len; i += 2) m.set(c[i] as number, c[i + 1] as number);
    m.set(id, n);
    return m;
  }
  c.set(id, (c.get(id) ?? 0) + n);
  return c;
}

function valueCountOf(c: ValueCounts, id: number): number {
  if (!Array.isArray(c)) return c.get(id) ?? 0;
  for (let i = 0; i < c.length; i += 2) if (c[i] === id) return c[i + 1] as number;
  return 0;
}

function forEachValueCount(c: ValueCounts, fn: (id: number, count: number) => void): void {
  if (!Array.isArray(c)) {
    for (const [id, n] of c) fn(id, n);
    return;
  }
  for (let i = 0; i < c.length; i += 2) fn(c[i] as number, c[i + 1] as number);
}

/**
 * Everything counted for one ad in one minute. One field per dimension (null when the
 * dimension is not counted) rather than an array indexed by dimension: named, monomorphic
 * property loads keep the per-event path much faster than `event[dimName]`.
 */
export interface AdCell {
  count: number;
  country: ValueCounts | null;
  ip: ValueCounts | null;
  userId: ValueCounts | null;
}

export class MinuteState {
  /** Events counted (sum of all ad counts). */
  eventCount = 0;
  readonly ads = new Map<string, AdCell>();
  readonly endMs: number;
  private readonly countryIndex: ValueIndex | null;
  private readonly ipIndex: ValueIndex | null;
  private readonly userIdIndex: ValueIndex | null;

  constructor(
    readonly startMs: number,
    sizeMs: number,
    readonly dimensions: readonly Dimension[],
  ) {
    this.endMs = startMs + sizeMs;
    this.countryIndex = dimensions.includes("country") ? new ValueIndex() : null;
    this.ipIndex = dimensions.includes("ip") ? new ValueIndex() : null;
    this.userIdIndex = dimensions.includes("userId") ? new ValueIndex() : null;
  }

  /** Counts one event (hot path: one ad lookup, one intern + small scan per dimension). */
  add(e: ClickEvent): void {
    let cell = this.ads.get(e.adId);
    if (cell === undefined) cell = this.newCell(e.adId);
    cell.count++;
    this.eventCount++;
    const country = cell.country;
    if (country !== null) {
      cell.country = addValueCount(country, (this.countryIndex as ValueIndex).idOf(e.country), 1);
    }
    const ip = cell.ip;
    if (ip !== null) cell.ip = addValueCount(ip, (this.ipIndex as ValueIndex).idOf(e.ip), 1);
    const userId = cell.userId;
    if (userId !== null) {
      cell.userId = addValueCount(userId, (this.userIdIndex as ValueIndex).idOf(e.userId), 1);
    }
  }

  private newCell(adId: string): AdCell {
    const cell: AdCell = {
      count: 0,
      country: this.countryIndex !== null ? [] : null,
      ip: this.ipIndex !== null ? [] : null,
      userId: this.userIdIndex !== null ? [] : null,
    };
    this.ads.set(adId, cell);
    return cell;
  }

  private indexOf(dimension: Dimension): ValueIndex | null {
    return dimension === "country"
      ? this.countryIndex
      : dimension === "ip"
        ? this.ipIndex
        : this.userIdIndex;
  }

  /** Count of one ad (0 when absent). */
  adCount(adId: string): number {
    return this.ads.get(adId)?.count ?? 0;
  }

  /** Count of one ad × dimension value (0 when absent or the dimension is not counted). */
  dimCount(adId: string, dimension: Dimension, value: string): number {
    const index = this.indexOf(dimension);
    const counts = this.ads.get(adId)?.[dimension];
    if (index === null || counts == null) return 0;
    const id = index.find(value);
    return id < 0 ? 0 : valueCountOf(counts, id);
  }

  /** The minute's ad ids in code-unit order. */
  sortedAdIds(): string[] {
    return [...this.ads.keys()].sort(compareIds);
  }

  /** `[adId, count]` rows sorted by adId. */
  adCounts(sortedAdIds: readonly string[] = this.sortedAdIds()): AdCount[] {
    const out: AdCount[] = [];
    for (const adId of sortedAdIds) out.push([adId, (this.ads.get(adId) as AdCell).count]);
    return out;
  }

  /**
   * Rows of one dimension, sorted by adId then value (empty when it is not counted). Walks
   * the ads in order and sorts each ad's few rows, rather than sorting all rows at once.
   */
  dimCountsOf(
    dimension: Dimension,
    sortedAdIds: readonly string[] = this.sortedAdIds(),
  ): AdDimCount[] {
    const out: AdDimCount[] = [];
    const index = this.indexOf(dimension);
    if (index === null) return out;
    const values = index.values;
    const rows: AdDimCount[] = [];
    const collect = (id: number, n: number): void => {
      rows.push(["", values[id] as string, n]);
    };
    for (const adId of sortedAdIds) {
      const counts = (this.ads.get(adId) as AdCell)[dimension];
      if (counts === null) continue;
      rows.length = 0;
      forEachValueCount(counts, collect);
      if (rows.length > 1) rows.sort(compareValue);
      for (const row of rows) {
        row[0] = adId;
        out.push(row);
      }
    }
    return out;
  }

  /** All dimensions' rows, keyed by dimension name. */
  dimCounts(
    sortedAdIds: readonly string[] = this.sortedAdIds(),
  ): Partial<Record<Dimension, AdDimCount[]>> {
    const out: Partial<Record<Dimension, AdDimCount[]>> = {};
    for (const d of this.dimensions) out[d] = this.dimCountsOf(d, sortedAdIds);
    return out;
  }

  toSnapshot(): MinuteCountsSnapshot {
    const sorted = this.sortedAdIds();
    const dims: AdDimCount[][] = [];
    for (const d of this.dimensions) dims.push(this.dimCountsOf(d, sorted));
    return { startMs: this.startMs, eventCount: this.eventCount, ads: this.adCounts(sorted), dims };
  }

  static fromSnapshot(
    snap: MinuteCountsSnapshot,
    sizeMs: number,
    dimensions: readonly Dimension[],
  ): MinuteState {
    const m = new MinuteState(snap.startMs, sizeMs, dimensions);
    for (const [adId, count] of snap.ads) m.newCell(adId).count = count;
    for (let d = 0; d < dimensions.length; d++) {
      const dim = dimensions[d] as Dimension;
      const index = m.indexOf(dim) as ValueIndex;
      for (const [adId, value, n] of snap.dims[d] ?? []) {
        const cell = m.ads.get(adId) ?? m.newCell(adId);
        const counts = cell[dim];
        if (counts !== null) cell[dim] = addValueCount(counts, index.idOf(value), n);
      }
    }
    m.eventCount = snap.eventCount;
    return m;
  }
}
