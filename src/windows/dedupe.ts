/**
 * Per-event dedupe by identity (`ClickEvent.eventId`), scoped to a window: the ids of a
 * window are remembered while the window can still change (open, within lateness, or
 * retained for corrections) and forgotten when it is purged.
 *
 * Scope: a duplicate carries the same identity *and* the same event time as its original,
 * so it falls in the same window. An id reused with a timestamp in another window is
 * counted once per window (a producer bug this layer cannot tell from two clicks).
 *
 * Cost: `has`/`add` are O(1) expected (V8 hash set; a string's hash is computed once and
 * cached in the string). Memory is O(ids in live windows): about 30–40 bytes of table entry
 * per id, plus the id string itself (shared with the decoded event, so the set only keeps
 * it alive longer). At 50 000 events/s and 75 s of window + lateness that is ~4M ids,
 * ~0.3 GB with 40-character ids. V8 caps a Set at 2^24 entries, so an {@link IdSet} spreads
 * its ids over chunks of at most `chunkCapacity` ids (a lookup probes each chunk: one probe
 * in the common case).
 */

/** Largest number of ids one Set chunk holds (V8's hard limit for a Set is 2^24). */
export const DEFAULT_ID_CHUNK_CAPACITY = 1 << 23;

/** A set of event ids that may grow past a single V8 Set's limit. */
export class IdSet {
  private readonly chunks: Set<string>[] = [new Set()];
  private last: Set<string>;
  private total = 0;

  constructor(private readonly chunkCapacity: number = DEFAULT_ID_CHUNK_CAPACITY) {
    if (!Number.isSafeInteger(chunkCapacity) || chunkCapacity < 1) {
      throw new RangeError(`chunkCapacity must be a positive integer, got ${chunkCapacity}`);
    }
    this.last = this.chunks[0] as Set<string>;
  }

  /** Number of distinct ids held. */
  get size(): number {
    return this.total;
  }

  has(id: string): boolean {
    if (this.last.has(id)) return true;
    const chunks = this.chunks;
    for (let i = chunks.length - 2; i >= 0; i--) {
      if ((chunks[i] as Set<string>).has(id)) return true;
    }
    return false;
  }

  /** Adds `id`; returns false (and changes nothing) when it was already present. */
  add(id: string): boolean {
    const chunks = this.chunks;
    for (let i = 0, n = chunks.length - 1; i < n; i++) {
      if ((chunks[i] as Set<string>).has(id)) return false;
    }
    let last = this.last;
    let before = last.size;
    if (before >= this.chunkCapacity) {
      if (last.has(id)) return false;
      last = new Set();
      chunks.push(last);
      this.last = last;
      before = 0;
    }
    // One hash operation instead of has + add: a Set that did not grow already held the id.
    last.add(id);
    if (last.size === before) return false;
    this.total++;
    return true;
  }

  /** The ids, oldest first (for snapshots). */
  *values(): IterableIterator<string> {
    for (const chunk of this.chunks) yield* chunk;
  }
}

/** Event ids per window, keyed by window start. */
export class WindowDedupe {
  private readonly windows = new Map<number, IdSet>();

  constructor(private readonly chunkCapacity: number = DEFAULT_ID_CHUNK_CAPACITY) {}

  /**
   * The id set of the window starting at `windowStartMs`, created on first use. Hot paths
   * fetch it once per window and call {@link IdSet.add} on it directly.
   */
  idsFor(windowStartMs: number): IdSet {
    let ids = this.windows.get(windowStartMs);
    if (ids === undefined) {
      ids = new IdSet(this.chunkCapacity);
      this.windows.set(windowStartMs, ids);
    }
    return ids;
  }

  /**
   * Remembers `eventId` in the window; returns true when it is new (count the event), false
   * when it is a duplicate.
   */
  firstSeen(windowStartMs: number, eventId: string): boolean {
    return this.idsFor(windowStartMs).add(eventId);
  }

  /** Forgets the ids of one purged window. */
  forget(windowStartMs: number): void {
    this.windows.delete(windowStartMs);
  }

  /** Windows currently remembered. */
  get windowCount(): number {
    return this.windows.size;
  }

  /** Ids remembered over all windows. */
  get idCount(): number {
    let n = 0;
    for (const ids of this.windows.values()) n += ids.size;
    return n;
  }
}
