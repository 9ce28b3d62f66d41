/**
 * The query side's rollup of the recent, stored minutes: every partition-minute of the last
 * `windowMinutes` stored minutes held in memory in a compact form, so that top N over the
 * last 60 minutes (2,000,000 ads) and counts answer in microseconds to milliseconds instead
 * of summing millions of Cassandra cells per query.
 *
 * Exact, and `final` keeps its meaning: the rollup mirrors the store — the same
 * partition_minutes rows (at their stored version) and the same partition_progress — as of
 * its last refresh. A refresh reads progress and the (minute, version) list of each
 * partition's window (no blobs), then loads only minutes that are new or whose version
 * changed (a correction). Queries are answered from a view at most `maxStaleMs` old (it is
 * refreshed in the background after `refreshMs`): an answer is the exact answer of the store
 * as it was at most that long ago — the same bound the engine's progress cache already had.
 *
 * Memory: ad ids are interned once (one string per distinct ad), a partition-minute is two
 * int32 arrays (ad index, count) plus the same per dimension value: ~8 bytes per
 * (ad, minute) cell instead of a JS tuple of ~80 bytes.
 */
import { ONE_MINUTE_MS } from "../model.js";
import type { AggregateStore, StoredCompleteness } from "../storage/aggregate-store.js";
import { ValueIndex } from "../windows/minute-state.js";
import { type TopEntry, TopKHeap } from "../windows/topk.js";

/** What the rollup reads of the aggregate store (all of it cheap but the minute blobs). */
export type RollupSource = Pick<
  AggregateStore,
  "progress" | "completeness" | "partitionMinuteVersions" | "partitionMinute"
>;

/** Cells of one list: ad indexes in ad id order, and their counts. */
interface Cells {
  ads: Int32Array;
  counts: Int32Array;
}

interface RolledMinute extends Cells {
  version: number;
  /** `${dim}\0${value}` → that value's cells. */
  byValue: Map<string, Cells>;
}

export interface RollupView {
  /** closed_through per partition, as read at the refresh. */
  progress: Map<number, number>;
  /** Completeness per partition, as read at the refresh (before progress: never ahead of it). */
  completeness: Map<number, StoredCompleteness>;
  /** Oldest minute held (ranges starting earlier are answered from the store). */
  windowFromMs: number;
  /** Bumped whenever any held minute or any progress changes. */
  generation: number;
  atMs: number;
}

export interface RollupOptions {
  partitions: number;
  /** Stored minutes held, counted back from the newest stored minute. */
  windowMinutes: number;
  /** Age after which a query triggers a background refresh. */
  refreshMs: number;
  /** Age after which a query waits for a refresh instead. */
  maxStaleMs: number;
}

const dimKey = (dim: string, value: string) => `${dim}\u0000${value}`;

function toCells(index: ValueIndex, rows: readonly (readonly [string, number])[]): Cells {
  const ads = new Int32Array(rows.length);
  const counts = new Int32Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i] as readonly [string, number];
    ads[i] = index.idOf(r[0]);
    counts[i] = r[1];
  }
  return { ads, counts };
}

export class StoreRollup {
  private readonly index = new ValueIndex();
  /** partition → minute → rolled minute. */
  private minutes = new Map<number, Map<number, RolledMinute>>();
  private current: RollupView = {
    progress: new Map(),
    completeness: new Map(),
    windowFromMs: Number.POSITIVE_INFINITY,
    generation: 0,
    atMs: 0,
  };
  private refreshing: Promise<void> | undefined;
  private readonly families = new Map<string, Family>();

  constructor(
    private readonly store: RollupSource,
    private readonly o: RollupOptions,
    private readonly now: () => number = Date.now,
  ) {}

  /** A view no older than maxStaleMs (refreshing in the background once past refreshMs). */
  async view(): Promise<RollupView> {
    const age = this.now() - this.current.atMs;
    if (age >= this.o.maxStaleMs) await this.refresh();
    else if (age >= this.o.refreshMs) void this.refresh().catch(() => {});
    return this.current;
  }

  /** One refresh at a time; callers share it. */
  refresh(): Promise<void> {
    this.refreshing ??= this.load().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  private async load(): Promise<void> {
    const startedAt = this.now();
    const completeness = await this.store.completeness();
    const progress = await this.store.progress();
    let newest = Number.NEGATIVE_INFINITY;
    for (const t of progress.values()) newest = Math.max(newest, t);
    if (!Number.isFinite(newest)) {
      this.current = { ...this.current, progress, completeness, atMs: startedAt };
      return;
    }
    const windowFromMs = newest - this.o.windowMinutes * ONE_MINUTE_MS;
    const next = new Map<number, Map<number, RolledMinute>>();
    let changed = false;
    const loads: { p: number; minute: number }[] = [];
    await Promise.all(
      Array.from({ length: this.o.partitions }, async (_, p) => {
        const through = progress.get(p) ?? Number.NEGATIVE_INFINITY;
        const held = new Map<number, RolledMinute>();
        next.set(p, held);
        if (through <= windowFromMs) return;
        const versions = await this.store.partitionMinuteVersions(p, windowFromMs, through);
        const old = this.minutes.get(p);
        for (const [minute, version] of versions) {
          const have = old?.get(minute);
          if (have && have.version === version) held.set(minute, have);
          else loads.push({ p, minute });
        }
        if ((old?.size ?? 0) !== held.size) changed = true;
      }),
    );
    let at = 0;
    const worker = async () => {
      while (at < loads.length) {
        const { p, minute } = loads[at++] as { p: number; minute: number };
        const pm = await this.store.partitionMinute(p, minute);
        if (!pm) continue;
        const byValue = new Map<string, Cells>();
        for (const [dim, rows] of Object.entries(pm.dimCounts)) {
          const perValue = new Map<string, [string, number][]>();
          for (const [adId, value, n] of rows ?? []) {
            const list = perValue.get(value);
            if (list) list.push([adId, n]);
            else perValue.set(value, [[adId, n]]);
          }
          for (const [value, list] of perValue)
            byValue.set(dimKey(dim, value), toCells(this.index, list));
        }
        (next.get(p) as Map<number, RolledMinute>).set(minute, {
          version: pm.version,
          ...toCells(this.index, pm.adCounts),
          byValue,
        });
      }
    };
    await Promise.all(Array.from({ length: Math.min(16, loads.length) }, worker));
    if (loads.length > 0) changed = true;
    for (const [p, t] of progress) if (this.current.progress.get(p) !== t) changed = true;
    // Commit synchronously: a query sees the old view or the new one, never a mix.
    this.minutes = next;
    this.current = {
      progress,
      completeness,
      windowFromMs,
      generation: this.current.generation + (changed ? 1 : 0),
      atMs: startedAt,
    };
  }

  /** Revisions of partition p's held minutes in [fromMs, toMs). */
  versions(p: number, fromMs: number, toMs: number): Map<number, number> {
    const out = new Map<number, number>();
    for (const [minute, rm] of this.minutes.get(p) ?? []) {
      if (minute >= fromMs && minute < toMs) out.set(minute, rm.version);
    }
    return out;
  }

  /** True when [fromMs, …) starts inside the held window of `view`. */
  covers(view: RollupView, fromMs: number): boolean {
    return fromMs >= view.windowFromMs;
  }

  /**
   * Per-minute clicks of `adId` in partition p over [fromMs, toMs) (minutes the store has:
   * the caller bounds toMs by progress), optionally of one dimension value.
   */
  series(
    p: number,
    adId: string,
    fromMs: number,
    toMs: number,
    filter?: { dim: string; value: string },
  ): Map<number, number> {
    const out = new Map<number, number>();
    const held = this.minutes.get(p);
    if (!held) return out;
    const key = filter ? dimKey(filter.dim, filter.value) : undefined;
    const names = this.index.values;
    for (let m = fromMs; m < toMs; m += ONE_MINUTE_MS) {
      const rm = held.get(m);
      if (!rm) continue;
      const cells = key === undefined ? rm : rm.byValue.get(key);
      if (!cells) continue;
      let lo = 0;
      let hi = cells.ads.length - 1;
      while (lo <= hi) {
        const mid = (lo + hi) >>> 1;
        const name = names[cells.ads[mid] as number] as string;
        if (name === adId) {
          out.set(m, cells.counts[mid] as number);
          break;
        }
        if (name < adId) lo = mid + 1;
        else hi = mid - 1;
      }
    }
    return out;
  }

  /**
   * Sums per ad over each partition's stored minutes in [fromMs, throughMs[p]), and their
   * top `k` (count desc, ad id asc; k ≥ the n asked for). Kept per family (filter × range
   * length) and brought up to date incrementally: a minute that entered the range (or a
   * corrected version) is added, one that left is subtracted, and the top k is re-ranked
   * among the old top k and the ads that grew — exact as long as that set still beats every
   * other ad (tracked as `bound`), else re-ranked over all ads.
   */
  rangeTop(
    view: RollupView,
    fromMs: number,
    throughMs: readonly number[],
    k: number,
    filter?: { dim: string; value: string },
    familyHint = 0,
  ): { top: TopEntry[]; storedCount: (adId: string) => number } {
    const fkey = filter ? dimKey(filter.dim, filter.value) : "";
    const famKey = `${fkey}|${familyHint}|${k}`;
    const target = this.cellsOf(fromMs, throughMs, fkey);
    let fam = this.families.get(famKey);
    if (fam) this.families.delete(famKey);
    else {
      fam = {
        sums: new Float64Array(0),
        included: new Map(),
        top: [],
        bound: null,
        exactFor: "",
        stamp: new Int32Array(0),
        epoch: 0,
      };
    }
    this.families.set(famKey, fam);
    while (this.families.size > MAX_FAMILIES)
      this.families.delete(this.families.keys().next().value as string);
    const exactFor = `${view.generation}|${fromMs}|${throughMs.join(",")}`;
    if (fam.exactFor !== exactFor) {
      this.update(fam, target, k);
      fam.exactFor = exactFor;
    }
    const sums = fam.sums;
    return {
      top: fam.top,
      storedCount: (adId: string) => {
        const a = this.index.find(adId);
        return a >= 0 && a < sums.length ? (sums[a] as number) : 0;
      },
    };
  }

  /** The cells a range covers: key (partition, minute) → that minute's cells (filtered). */
  private cellsOf(fromMs: number, throughMs: readonly number[], fkey: string): Map<number, Cells> {
    const out = new Map<number, Cells>();
    for (let p = 0; p < throughMs.length; p++) {
      const held = this.minutes.get(p);
      if (!held) continue;
      const to = throughMs[p] as number;
      for (const [minute, rm] of held) {
        if (minute < fromMs || minute >= to) continue;
        const cells = fkey ? rm.byValue.get(fkey) : rm;
        if (cells) out.set(p * 2 ** 41 + minute, cells);
      }
    }
    return out;
  }

  private update(fam: Family, target: Map<number, Cells>, k: number): void {
    const names = this.index.values;
    if (fam.sums.length < names.length) {
      const grown = new Float64Array(Math.max(names.length, Math.ceil(fam.sums.length * 1.5)));
      grown.set(fam.sums);
      fam.sums = grown;
    }
    const sums = fam.sums;
    const grew: number[] = [];
    for (const [key, cells] of fam.included) {
      if (target.get(key) === cells) continue;
      const { ads, counts } = cells;
      for (let i = 0; i < ads.length; i++) {
        const a = ads[i] as number;
        sums[a] = (sums[a] as number) - (counts[i] as number);
      }
    }
    const fresh = fam.included.size === 0;
    for (const [key, cells] of target) {
      if (fam.included.get(key) === cells) continue;
      const { ads, counts } = cells;
      for (let i = 0; i < ads.length; i++) {
        const a = ads[i] as number;
        sums[a] = (sums[a] as number) + (counts[i] as number);
        if (!fresh) grew.push(a);
      }
    }
    fam.included = target;
    if (fresh || grew.length > sums.length / 4) {
      this.rerankAll(fam, k);
      return;
    }
    // Re-rank the candidates: the old top k and every ad that grew (each once).
    if (fam.stamp.length < sums.length) {
      const grown = new Int32Array(sums.length);
      grown.set(fam.stamp);
      fam.stamp = grown;
    }
    const stamp = fam.stamp;
    const epoch = ++fam.epoch;
    const heap = new TopKHeap(k + 1);
    const offer = (a: number) => {
      if (a < 0 || stamp[a] === epoch) return;
      stamp[a] = epoch;
      const count = sums[a] as number;
      if (count > 0) heap.offer(names[a] as string, count);
    };
    for (const a of grew) offer(a);
    for (const e of fam.top) offer(this.index.find(e.adId));
    const ranked = heap.result();
    const rejected = ranked[k];
    let bound = fam.bound;
    if (rejected && (!bound || better(rejected.count, rejected.adId, bound))) {
      bound = { count: rejected.count, adId: rejected.adId };
    }
    const top = ranked.slice(0, k);
    const last = top[top.length - 1];
    // Exact when the k-th candidate beats every ad outside the candidates (bounded by `bound`),
    // or there are fewer than k candidates and no ad outside them has any clicks.
    const exact =
      bound === null ||
      (top.length === k && last !== undefined && better(last.count, last.adId, bound));
    if (exact) {
      fam.top = top;
      fam.bound = bound;
      return;
    }
    this.rerankAll(fam, k);
  }

  /** Re-ranks over every ad: the top k and, as the new bound, the best ad below it. */
  private rerankAll(fam: Family, k: number): void {
    const names = this.index.values;
    const sums = fam.sums;
    const heap = new TopKHeap(k + 1);
    for (let a = 0; a < sums.length; a++) {
      const count = sums[a] as number;
      if (count > 0) heap.offer(names[a] as string, count);
    }
    const all = heap.result();
    fam.top = all.slice(0, k);
    const below = all[k];
    fam.bound = below ? { count: below.count, adId: below.adId } : null;
  }
}

/** A family of ranges (same filter and length): running sums and their top k. */
interface Family {
  sums: Float64Array;
  /** The cells summed, by (partition, minute): the very objects, so a new version differs. */
  included: Map<number, Cells>;
  top: TopEntry[];
  /** Every ad outside `top` ranks at or below this (null: no such ad has clicks). */
  bound: { count: number; adId: string } | null;
  /** The view generation and range the sums are exact for. */
  exactFor: string;
  /** Per ad, the last re-ranking that looked at it (dedupes candidates without a Set). */
  stamp: Int32Array;
  epoch: number;
}

const MAX_FAMILIES = 6;

/** Does (count, adId) rank strictly before `b` (count desc, ad id asc)? */
function better(count: number, adId: string, b: { count: number; adId: string }): boolean {
  return count > b.count || (count === b.count && adId < b.adId);
}
