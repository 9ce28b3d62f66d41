/**
 * Heavy hitters of one partition over a sliding period of processing time: which ads take a
 * large share of the partition's clicks right now. Pure: no I/O, no clock, no randomness.
 * Processing time is the `nowMs` argument (in the product the JetStream message timestamp),
 * so every answer is a function of the log and a restore + replay gives the same answers.
 *
 * Structure:
 * - The period (`periodMs`, default 10 000) is split into `buckets` (default 5) buckets of
 *   `bucketMs = periodMs / buckets` by processing time: bucket index = floor(nowMs / bucketMs),
 *   so a time exactly at a multiple of bucketMs starts a new bucket.
 * - Each bucket has its own space-saving summary (Metwally, Agrawal, El Abbadi 2005; weighted
 *   updates) of `capacity` counters (default 64) and the exact total of its clicks.
 * - **The period is the last `buckets` closed buckets.** The bucket `nowMs` falls in is open:
 *   it fills and is in no answer until a later time closes it. Answers therefore change only
 *   when a bucket closes, and never cover a partly elapsed bucket.
 * - A period is **full** once all of it lies after the first observation; {@link coverageOf}
 *   says how much is covered. Decisions must wait for a full period.
 *
 * Space-saving guarantees, per bucket (N = the bucket's exact total, m = capacity): an ad
 * whose true count exceeds N/m holds a counter, and for a held ad
 * `count - error ≤ true ≤ count`; an ad without a counter has true ≤ the minimum count when
 * the summary is full, and 0 when it is not (nothing was ever evicted). Summed over the
 * period's buckets this gives {@link candidates}' lower/upper bounds, and an ad whose true
 * count over the period exceeds total/m exceeds N_b/m in some bucket b, so it is a candidate.
 *
 * Batching independence: offers are held per timestamp (summed per ad) and enter the
 * bucket's summary as one batch ({@link SpaceSaving.offerBatch}, whose result does not depend
 * on the batch's order) when time moves past that timestamp. So the same clicks offered as
 * one message or as many messages with the same timestamp, in any order, give the same
 * answers. Space-saving offered ad by ad depends on the order and grouping of the offers.
 *
 * Time going backwards (or a non-finite `nowMs`) never throws: the latest time seen stands,
 * and the offers join that time's. A gap longer than the period closes every bucket: the
 * period is then empty (zero clicks), still covered — no message means no clicks.
 *
 * Cost, measured once (a throwaway script, not kept; Node 20.20, the shared 2-core dev
 * machine at load average ~5 from a CI run, so on the slow side; medians of 5 runs; 5 000 ads
 * drawn Zipf(s = 1), capacity 64):
 * - 1M clicks as 1 000 messages of 1 000 clicks, summed per message (~467 distinct ads each:
 *   467k offers), through {@link offerBatch} with a timestamp per message: 91 ms. So ~9% of a
 *   core for a partition taking 1M clicks/s; 1.4M per-ad offers that way: 223 ms.
 * - 1M `SpaceSaving.offer` calls of weight 1, one by one: 194 ms (61% of them replace a
 *   counter). A linear scan for the minimum instead of the heap measured ~2× slower.
 */
import { ConfigError } from "../errors.js";

/** Defaults, stated once: a 10 s period in 5 buckets of 2 s, 64 counters per bucket. */
export const DEFAULT_PERIOD_MS = 10_000;
export const DEFAULT_BUCKETS = 5;
export const DEFAULT_CAPACITY = 64;

export interface HeavyHittersOptions {
  /** Length of the sliding period, ms (integer ≥ 1, a multiple of `buckets`). Default 10 000. */
  periodMs?: number;
  /** Buckets the period is split into (integer ≥ 1). Default 5. */
  buckets?: number;
  /** Space-saving counters per bucket (integer ≥ 1). Default 64. */
  capacity?: number;
}

export interface ResolvedHeavyHittersOptions {
  periodMs: number;
  buckets: number;
  capacity: number;
  bucketMs: number;
}

function intSetting(setting: string, v: unknown, min: number): number {
  if (typeof v !== "number" || !Number.isSafeInteger(v) || v < min) {
    throw new ConfigError(setting, `must be an integer >= ${min}, got ${String(v)}`);
  }
  return v;
}

/**
 * Validates and completes the options.
 *
 * @throws ConfigError naming the first invalid option.
 */
export function resolveHeavyHittersOptions(
  opts: HeavyHittersOptions = {},
): ResolvedHeavyHittersOptions {
  const periodMs = intSetting("periodMs", opts.periodMs ?? DEFAULT_PERIOD_MS, 1);
  const buckets = intSetting("buckets", opts.buckets ?? DEFAULT_BUCKETS, 1);
  const capacity = intSetting("capacity", opts.capacity ?? DEFAULT_CAPACITY, 1);
  if (periodMs % buckets !== 0) {
    // Whole-millisecond buckets keep bucket indexes exact integers.
    throw new ConfigError(
      "periodMs",
      `must be a multiple of buckets (${buckets}), got ${String(periodMs)}`,
    );
  }
  return { periodMs, buckets, capacity, bucketMs: periodMs / buckets };
}

/** A counter of a space-saving summary. */
export interface Counter {
  adId: string;
  /** Overestimate of the ad's true weight: true ≤ count. */
  count: number;
  /** Bound on the overestimate: count - error ≤ true. */
  error: number;
}

/**
 * A weighted space-saving summary of at most `capacity` counters.
 *
 * Counters live in fixed slots (parallel arrays) with a Map from adId to slot. Which slot
 * holds which ad shows only in snapshots: no answer depends on it. A min-heap of slots, ordered by count then
 * adId, finds the counter to replace: (count, adId) is a total order, so the victim — the
 * smallest count, among equal counts the smallest adId — is unique and does not depend on
 * the heap's layout. An offer allocates nothing; it costs O(log capacity) compares (a linear
 * scan for the minimum measured ~2× slower on Zipf streams: many counters tie at the minimum
 * and every tie is a string compare).
 */
export class SpaceSaving {
  private readonly ids: string[] = [];
  private readonly counts: number[] = [];
  private readonly errors: number[] = [];
  private readonly slotOf = new Map<string, number>();
  /** heap[i] = a slot; the root holds the smallest (count, adId). */
  private readonly heap: Int32Array;
  /** posOf[slot] = the slot's position in heap. */
  private readonly posOf: Int32Array;
  /** Reused by offerBatch: the batch's ads without a counter. */
  private readonly absentIds: string[] = [];
  private readonly absentWeights: number[] = [];

  constructor(readonly capacity: number) {
    intSetting("capacity", capacity, 1);
    this.heap = new Int32Array(capacity);
    this.posOf = new Int32Array(capacity);
  }

  /** Counters held (≤ capacity). */
  get size(): number {
    return this.ids.length;
  }

  /** Whether every counter is in use: only then can an ad have been evicted. */
  get full(): boolean {
    return this.ids.length === this.capacity;
  }

  /** Heap order of two slots: smaller count first, then smaller adId. */
  private less(a: number, b: number): boolean {
    const ca = this.counts[a] as number;
    const cb = this.counts[b] as number;
    return ca < cb || (ca === cb && (this.ids[a] as string) < (this.ids[b] as string));
  }

  private place(pos: number, slot: number): void {
    this.heap[pos] = slot;
    this.posOf[slot] = pos;
  }

  private siftUp(pos: number): void {
    const heap = this.heap;
    const slot = heap[pos] as number;
    while (pos > 0) {
      const parent = (pos - 1) >> 1;
      const p = heap[parent] as number;
      if (!this.less(slot, p)) break;
      this.place(pos, p);
      pos = parent;
    }
    this.place(pos, slot);
  }

  private siftDown(pos: number): void {
    const heap = this.heap;
    const n = this.ids.length;
    const slot = heap[pos] as number;
    for (;;) {
      const l = 2 * pos + 1;
      if (l >= n) break;
      const r = l + 1;
      let child = heap[l] as number;
      let at = l;
      if (r < n && this.less(heap[r] as number, child)) {
        child = heap[r] as number;
        at = r;
      }
      if (!this.less(child, slot)) break;
      this.place(pos, child);
      pos = at;
    }
    this.place(pos, slot);
  }

  /**
   * Adds `weight` to `adId`. The weight is not checked here (the callers check theirs): it
   * must be a positive integer. When all counters are taken, an absent ad takes over the
   * counter with the smallest count — among equal counts the smallest adId — and inherits
   * that count as its error.
   */
  offer(adId: string, weight: number): void {
    const slot = this.slotOf.get(adId);
    if (slot !== undefined) {
      this.counts[slot] = (this.counts[slot] as number) + weight;
      this.siftDown(this.posOf[slot] as number); // a count only grows: it moves leafwards
      return;
    }
    const ids = this.ids;
    if (ids.length < this.capacity) {
      const fresh = ids.length;
      this.slotOf.set(adId, fresh);
      ids.push(adId);
      this.counts.push(weight);
      this.errors.push(0);
      this.place(fresh, fresh);
      this.siftUp(fresh);
      return;
    }
    const victim = this.heap[0] as number;
    const min = this.counts[victim] as number;
    this.slotOf.delete(ids[victim] as string);
    this.slotOf.set(adId, victim);
    ids[victim] = adId;
    this.counts[victim] = min + weight;
    this.errors[victim] = min;
    this.siftDown(0);
  }

  /**
   * Adds a batch of distinct ads at once, in a way that does not depend on the batch's
   * order (what {@link offer} one by one cannot give). With min = the smallest count before
   * the batch (0 when not full):
   * 1. ads holding a counter add their weight;
   * 2. every other ad is a candidate with count min + weight and error min (its true count
   *    before the batch was ≤ min); the summary keeps the `capacity` largest (count, adId) of
   *    its counters and the candidates — a selection, so a function of the set alone.
   * The guarantees still hold: a candidate's count - error = its weight ≤ true ≤ count; an
   * ad left out has true ≤ its count ≤ the new minimum; and the counts sum to at most the
   * total (a candidate kept instead of an old counter adds min + weight and removes ≥ min),
   * so the minimum stays ≤ total/capacity.
   */
  offerBatch(batch: ReadonlyMap<string, number>): void {
    const min = this.minCount();
    const absentIds = this.absentIds;
    const absentWeights = this.absentWeights;
    for (const [adId, weight] of batch) {
      const slot = this.slotOf.get(adId);
      if (slot === undefined) {
        absentIds.push(adId);
        absentWeights.push(weight);
      } else {
        this.counts[slot] = (this.counts[slot] as number) + weight;
        this.siftDown(this.posOf[slot] as number);
      }
    }
    const ids = this.ids;
    for (let i = 0; i < absentIds.length; i++) {
      const adId = absentIds[i] as string;
      const count = min + (absentWeights[i] as number);
      if (ids.length < this.capacity) {
        const fresh = ids.length;
        this.slotOf.set(adId, fresh);
        ids.push(adId);
        this.counts.push(count);
        this.errors.push(min);
        this.place(fresh, fresh);
        this.siftUp(fresh);
        continue;
      }
      const root = this.heap[0] as number;
      const rootCount = this.counts[root] as number;
      if (count < rootCount || (count === rootCount && adId < (ids[root] as string))) continue;
      this.slotOf.delete(ids[root] as string);
      this.slotOf.set(adId, root);
      ids[root] = adId;
      this.counts[root] = count;
      this.errors[root] = min;
      this.siftDown(0);
    }
    absentIds.length = 0;
    absentWeights.length = 0;
  }

  /** The smallest count when full (an upper bound for any ad without a counter), else 0. */
  minCount(): number {
    return this.full ? (this.counts[this.heap[0] as number] as number) : 0;
  }

  /** The counter of `adId`, if it holds one. */
  counterOf(adId: string): Counter | undefined {
    const slot = this.slotOf.get(adId);
    if (slot === undefined) return undefined;
    return { adId, count: this.counts[slot] as number, error: this.errors[slot] as number };
  }

  /** Calls `fn` for every counter, in slot order. */
  forEachCounter(fn: (adId: string, count: number, error: number) => void): void {
    for (let i = 0; i < this.ids.length; i++) {
      fn(this.ids[i] as string, this.counts[i] as number, this.errors[i] as number);
    }
  }

  /** The counters, by count desc then adId asc. */
  counters(): Counter[] {
    const out: Counter[] = [];
    this.forEachCounter((adId, count, error) => out.push({ adId, count, error }));
    return out.sort((a, b) => b.count - a.count || (a.adId < b.adId ? -1 : 1));
  }

  clear(): void {
    this.ids.length = 0;
    this.counts.length = 0;
    this.errors.length = 0;
    this.slotOf.clear();
  }

  /** Plain data in slot order (the heap is rebuilt on load: its layout changes no result). */
  snapshot(): SpaceSavingSnapshot {
    return { ids: this.ids.slice(), counts: this.counts.slice(), errors: this.errors.slice() };
  }

  /** Replaces the counters with a snapshot's. */
  load(snap: SpaceSavingSnapshot): void {
    const n = snap.ids.length;
    if (n > this.capacity || snap.counts.length !== n || snap.errors.length !== n) {
      throw new RangeError(
        `space-saving snapshot does not fit: ${n} ids, ${snap.counts.length} counts, ` +
          `${snap.errors.length} errors, capacity ${this.capacity}`,
      );
    }
    this.clear();
    for (let i = 0; i < n; i++) {
      const adId = snap.ids[i] as string;
      this.slotOf.set(adId, i);
      this.ids.push(adId);
      this.counts.push(snap.counts[i] as number);
      this.errors.push(snap.errors[i] as number);
      this.place(i, i);
    }
    for (let i = (n >> 1) - 1; i >= 0; i--) this.siftDown(i);
  }
}

export interface SpaceSavingSnapshot {
  ids: string[];
  counts: number[];
  errors: number[];
}

/** One bucket of processing time: its summary and exact total. */
interface Bucket {
  /** floor(time / bucketMs) of the times it holds. */
  index: number;
  total: number;
  summary: SpaceSaving;
}

/** The sketch of one partition. Mutated in place by {@link observe} and {@link offerBatch}. */
export interface HeavyHittersState {
  readonly options: ResolvedHeavyHittersOptions;
  /** The first valid time observed; null before any. */
  firstMs: number | null;
  /** The latest time observed; null before any. */
  lastMs: number | null;
  /** Index of the open bucket (the one lastMs is in). */
  openIndex: number;
  /** buckets + 1 slots: the open bucket and the period's closed ones; slot = index mod length. */
  readonly slots: Bucket[];
  /** Clicks offered at lastMs, summed per ad, not yet in the open bucket's summary. */
  readonly pending: Map<string, number>;
  pendingTotal: number;
}

/**
 * A fresh, empty sketch.
 *
 * @throws ConfigError naming the first invalid option.
 */
export function createHeavyHitters(opts: HeavyHittersOptions = {}): HeavyHittersState {
  const options = resolveHeavyHittersOptions(opts);
  const slots: Bucket[] = [];
  for (let i = 0; i <= options.buckets; i++) {
    slots.push({ index: i, total: 0, summary: new SpaceSaving(options.capacity) });
  }
  return {
    options,
    firstMs: null,
    lastMs: null,
    openIndex: 0,
    slots,
    pending: new Map(),
    pendingTotal: 0,
  };
}

function slotFor(s: HeavyHittersState, index: number): Bucket {
  const n = s.slots.length;
  return s.slots[((index % n) + n) % n] as Bucket;
}

function resetSlot(s: HeavyHittersState, index: number): void {
  const b = slotFor(s, index);
  b.index = index;
  b.total = 0;
  b.summary.clear();
}

/** Moves the clicks held for lastMs into the open bucket, as one order-free batch. */
function flushPending(s: HeavyHittersState): void {
  if (s.pending.size === 0) return;
  const b = slotFor(s, s.openIndex);
  b.summary.offerBatch(s.pending);
  b.total += s.pendingTotal;
  s.pending.clear();
  s.pendingTotal = 0;
}

/**
 * Advances processing time to `nowMs`. Returns how many buckets this closed (0 when `nowMs`
 * is in the open bucket). A time not after the latest one (going backwards, equal) or not
 * finite changes nothing and returns 0: the latest time stands. Never throws.
 */
export function observe(s: HeavyHittersState, nowMs: number): number {
  if (!Number.isFinite(nowMs)) return 0;
  const bucketMs = s.options.bucketMs;
  if (s.lastMs === null) {
    const index = Math.floor(nowMs / bucketMs);
    for (let k = index - s.options.buckets; k <= index; k++) resetSlot(s, k);
    s.firstMs = nowMs;
    s.lastMs = nowMs;
    s.openIndex = index;
    return 0;
  }
  if (!(nowMs > s.lastMs)) return 0;
  flushPending(s);
  s.lastMs = nowMs;
  const index = Math.floor(nowMs / bucketMs);
  const from = s.openIndex;
  if (index === from) return 0;
  // Every index passed gets a fresh bucket; past buckets + 1 of them, all slots are reset.
  for (let k = Math.max(from + 1, index - s.options.buckets); k <= index; k++) resetSlot(s, k);
  s.openIndex = index;
  return index - from;
}

function checkWeight(adId: string, weight: number): void {
  if (!Number.isSafeInteger(weight) || weight <= 0) {
    throw new RangeError(
      `weight of ad ${JSON.stringify(adId)} must be a positive integer, got ${weight}`,
    );
  }
}

/** One message's clicks, already summed per ad. */
export type AdCounts = ReadonlyMap<string, number> | readonly (readonly [string, number])[];

/**
 * Offers one message's clicks (summed per ad by the caller) at `nowMs`: advances time as
 * {@link observe} does, then adds the counts to the open bucket. Returns the number of
 * buckets the time advance closed. Before any valid time has been observed, the clicks are
 * dropped (there is no bucket to put them in).
 *
 * @throws RangeError, before changing anything, when a count is not a positive integer.
 */
export function offerBatch(s: HeavyHittersState, counts: AdCounts, nowMs: number): number {
  for (const [adId, n] of counts) checkWeight(adId, n);
  const closed = observe(s, nowMs);
  if (s.lastMs === null) return closed;
  const pending = s.pending;
  let total = 0;
  for (const [adId, n] of counts) {
    pending.set(adId, (pending.get(adId) ?? 0) + n);
    total += n;
  }
  s.pendingTotal += total;
  return closed;
}

/** {@link offerBatch} for a single ad. */
export function offer(s: HeavyHittersState, adId: string, weight: number, nowMs: number): number {
  return offerBatch(s, [[adId, weight]], nowMs);
}

function isInPeriod(s: HeavyHittersState, b: Bucket): boolean {
  return b.index < s.openIndex && b.index >= s.openIndex - s.options.buckets;
}

/** The exact number of clicks in the period (the last `buckets` closed buckets). */
export function totalOf(s: HeavyHittersState): number {
  let total = 0;
  for (const b of s.slots) if (isInPeriod(s, b)) total += b.total;
  return total;
}

export interface Coverage {
  /** The period: [startMs, endMs), endMs = start of the open bucket. */
  startMs: number;
  endMs: number;
  /** How much of the period lies after the first observation, ms (0..periodMs). */
  coveredMs: number;
  /** coveredMs === periodMs: only then may decisions be made on the period. */
  full: boolean;
}

/** Where the period lies and how much of it the sketch has seen. */
export function coverageOf(s: HeavyHittersState): Coverage {
  const { bucketMs, periodMs } = s.options;
  const endMs = s.openIndex * bucketMs;
  const startMs = endMs - periodMs;
  const coveredMs =
    s.firstMs === null ? 0 : Math.min(periodMs, Math.max(0, endMs - Math.max(startMs, s.firstMs)));
  return { startMs, endMs, coveredMs, full: coveredMs === periodMs };
}

/** Bounds on an ad's true clicks over the period: lower ≤ true ≤ upper. */
export interface Estimate {
  adId: string;
  lower: number;
  upper: number;
}

/** Bounds for one ad, held in a summary or not. */
export function estimate(s: HeavyHittersState, adId: string): Estimate {
  let lower = 0;
  let upper = 0;
  for (const b of s.slots) {
    if (!isInPeriod(s, b)) continue;
    const c = b.summary.counterOf(adId);
    if (c === undefined) upper += b.summary.minCount();
    else {
      lower += c.count - c.error;
      upper += c.count;
    }
  }
  return { adId, lower, upper };
}

/** Result order: lower desc, then adId asc (code units). */
export function compareEstimates(a: Estimate, b: Estimate): number {
  return b.lower - a.lower || (a.adId < b.adId ? -1 : a.adId > b.adId ? 1 : 0);
}

/**
 * Every ad holding a counter in some bucket of the period, with its bounds over the period,
 * sorted by lower bound desc then adId asc. Includes every ad with more than total/capacity
 * clicks over the period. O(buckets × capacity); meant for bucket boundaries, not per offer.
 */
export function candidates(s: HeavyHittersState): Estimate[] {
  // upper = Σ_b (held in b ? count_b : min_b) = Σ_b min_b + Σ_{b holding it} (count_b - min_b)
  let absentUpper = 0;
  const byAd = new Map<string, Estimate>();
  for (const b of s.slots) {
    if (!isInPeriod(s, b)) continue;
    const min = b.summary.minCount();
    absentUpper += min;
    b.summary.forEachCounter((adId, count, error) => {
      let e = byAd.get(adId);
      if (e === undefined) {
        e = { adId, lower: 0, upper: 0 };
        byAd.set(adId, e);
      }
      e.lower += count - error;
      e.upper += count - min;
    });
  }
  const out = [...byAd.values()];
  for (const e of out) e.upper += absentUpper;
  return out.sort(compareEstimates);
}

/** Plain data (no Map, no Infinity, no undefined): JSON- and msgpack-safe. */
export interface HeavyHittersSnapshot {
  v: 1;
  periodMs: number;
  buckets: number;
  capacity: number;
  firstMs: number | null;
  lastMs: number | null;
  openIndex: number;
  /** In slot order. */
  slots: { index: number; total: number; counters: SpaceSavingSnapshot }[];
  /** Clicks held for lastMs: parallel arrays. */
  pendingIds: string[];
  pendingCounts: number[];
}

export function snapshotHeavyHitters(s: HeavyHittersState): HeavyHittersSnapshot {
  return {
    v: 1,
    periodMs: s.options.periodMs,
    buckets: s.options.buckets,
    capacity: s.options.capacity,
    firstMs: s.firstMs,
    lastMs: s.lastMs,
    openIndex: s.openIndex,
    slots: s.slots.map((b) => ({
      index: b.index,
      total: b.total,
      counters: b.summary.snapshot(),
    })),
    pendingIds: [...s.pending.keys()],
    pendingCounts: [...s.pending.values()],
  };
}

/**
 * A sketch that continues exactly as the snapshotted one would have. When `opts` give the
 * sketch another shape (periodMs, buckets or capacity changed), the snapshot cannot be
 * reused and the result is a fresh sketch: its period fills again from the next observation.
 *
 * @throws ConfigError for invalid options; RangeError for a snapshot that is not one.
 */
export function restoreHeavyHitters(
  snap: HeavyHittersSnapshot,
  opts: HeavyHittersOptions = {},
): HeavyHittersState {
  const s = createHeavyHitters(opts);
  if (snap.v !== 1) throw new RangeError(`unknown heavy-hitters snapshot version ${snap.v}`);
  const o = s.options;
  if (snap.periodMs !== o.periodMs || snap.buckets !== o.buckets || snap.capacity !== o.capacity) {
    return s;
  }
  if (
    snap.slots.length !== s.slots.length ||
    snap.pendingIds.length !== snap.pendingCounts.length
  ) {
    throw new RangeError("heavy-hitters snapshot does not match its own shape");
  }
  s.firstMs = snap.firstMs;
  s.lastMs = snap.lastMs;
  s.openIndex = snap.openIndex;
  snap.slots.forEach((b, i) => {
    const slot = s.slots[i] as Bucket;
    slot.index = b.index;
    slot.total = b.total;
    slot.summary.load(b.counters);
  });
  let pendingTotal = 0;
  snap.pendingIds.forEach((adId, i) => {
    const n = snap.pendingCounts[i] as number;
    s.pending.set(adId, n);
    pendingTotal += n;
  });
  s.pendingTotal = pendingTotal;
  return s;
}
