/**
 * Bounded top-k by count: a min-heap of at most k entries whose root is the current worst
 * entry, so n offers cost O(n log k) time and O(k) memory.
 *
 * Order (total, so results are deterministic): count descending, then adId ascending in
 * code-unit order. "Worst" is the reverse: the lowest count, and among equal counts the
 * greatest adId.
 */
import { compareIds } from "./minute-state.js";

export interface TopEntry {
  adId: string;
  count: number;
}

function checkK(k: number): void {
  if (!Number.isSafeInteger(k) || k < 0) {
    throw new RangeError(`k must be a non-negative integer, got ${k}`);
  }
}

/** The result order: count desc, then adId asc. */
export function compareTop(a: TopEntry, b: TopEntry): number {
  return b.count - a.count || compareIds(a.adId, b.adId);
}

/**
 * Streaming bounded top-k. The heap lives in two parallel arrays (ids, counts), so an offer
 * allocates nothing.
 */
export class TopKHeap {
  private readonly ids: string[] = [];
  private readonly counts: number[] = [];

  constructor(readonly k: number) {
    checkK(k);
  }

  /** Entries held (≤ k). */
  get size(): number {
    return this.ids.length;
  }

  /** Heap order: is entry i worse than entry j? */
  private worse(i: number, j: number): boolean {
    const ci = this.counts[i] as number;
    const cj = this.counts[j] as number;
    return ci < cj || (ci === cj && (this.ids[i] as string) > (this.ids[j] as string));
  }

  private swap(i: number, j: number): void {
    const ids = this.ids;
    const counts = this.counts;
    const id = ids[i] as string;
    ids[i] = ids[j] as string;
    ids[j] = id;
    const c = counts[i] as number;
    counts[i] = counts[j] as number;
    counts[j] = c;
  }

  offer(adId: string, count: number): void {
    const ids = this.ids;
    const counts = this.counts;
    const n = ids.length;
    if (n < this.k) {
      ids.push(adId);
      counts.push(count);
      let i = n;
      while (i > 0) {
        const parent = (i - 1) >> 1;
        if (!this.worse(i, parent)) break;
        this.swap(i, parent);
        i = parent;
      }
      return;
    }
    if (n === 0) return; // k = 0
    const rootCount = counts[0] as number;
    // Better than the worst held entry?
    if (count < rootCount || (count === rootCount && adId >= (ids[0] as string))) return;
    ids[0] = adId;
    counts[0] = count;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const w = r < n && this.worse(r, l) ? r : l;
      if (!this.worse(w, i)) break;
      this.swap(w, i);
      i = w;
    }
  }

  /** The held entries in result order (count desc, adId asc). Does not consume the heap. */
  result(): TopEntry[] {
    const out: TopEntry[] = [];
    for (let i = 0; i < this.ids.length; i++) {
      out.push({ adId: this.ids[i] as string, count: this.counts[i] as number });
    }
    return out.sort(compareTop);
  }
}

/**
 * The k largest `[adId, count]` pairs, sorted by count desc then adId asc. adIds are assumed
 * distinct (they are keys of a count map).
 *
 * @throws RangeError when k is not a non-negative integer.
 */
export function topK(counts: Iterable<readonly [string, number]>, k: number): TopEntry[] {
  const heap = new TopKHeap(k);
  if (k === 0) return [];
  for (const [adId, count] of counts) heap.offer(adId, count);
  return heap.result();
}

/**
 * Merges per-partition top-k lists into the global top k. Exact because partitions are
 * disjoint by adId: an ad in the global top k is in its own partition's top k. The lists
 * need not be sorted.
 *
 * @throws RangeError when an adId appears in two lists (the partitions were not disjoint,
 *   so the merge would not be exact — sum split partial counts before ranking instead).
 */
export function mergeTopK(lists: Iterable<readonly TopEntry[]>, k: number): TopEntry[] {
  const heap = new TopKHeap(k);
  const seen = new Set<string>();
  for (const list of lists) {
    for (const e of list) {
      if (seen.has(e.adId)) {
        throw new RangeError(`adId ${JSON.stringify(e.adId)} appears in two top-k lists`);
      }
      seen.add(e.adId);
      heap.offer(e.adId, e.count);
    }
  }
  return heap.result();
}
