/**
 * Per-event dedupe by identity (`ClickEvent.eventId`), scoped to a window: the ids of a
 * window are remembered while the window can still change (open, within lateness, or
 * retained for corrections) and forgotten when it is purged.
 *
 * Scope: a duplicate carries the same identity *and* the same event time as its original,
 * so it falls in the same window. An id reused with a timestamp in another window is
 * counted once per window (a producer bug this layer cannot tell from two clicks).
 *
 * Exact by design — no probabilistic structure, no false positive, ever. An {@link IdSet}
 * keeps every id *losslessly* in 16 bytes instead of a JS string in a `Set`:
 * - a derived id (`"o:"` + 16 base64url characters, 96 bits: see identity.ts) is decoded to
 *   its 96 bits;
 * - any other id of at most 16 characters, all in U+0001..U+007F (click ids such as
 *   `c:clk-7-1234567`), is packed 7 bits a character;
 * - anything longer (or non-ASCII) is kept as the string itself beside the table, and
 *   compared in full.
 * The 16-byte keys sit in one typed array in insertion order; an open-addressing table of
 * int32 indexes (load ≤ 1/2, linear probing) finds them. Per id that is ~16 bytes of key
 * (+ up to 2× growth slack) and 8 bytes of table, none of it a GC-traced object: the old
 * `Set<string>` took ~40 bytes of table entry plus the id string kept alive (~40–60 bytes),
 * and dominated the aggregator's garbage collection (see docs/benchmarks.md).
 *
 * Cost: one pass over the id's characters (pack and hash together) and one or two probes.
 */

/** Kept for API compatibility: the compact set has no per-chunk limit (V8's Set had 2^24). */
export const DEFAULT_ID_CHUNK_CAPACITY = 1 << 23;

// Tags in the top 4 bits of a key's first word.
const TAG_PACKED = 1 << 28;
const TAG_DERIVED = 2 << 28;
const TAG_LONG = 3 << 28;
const TAG_MASK = 0xf << 28;
const LOW28 = (1 << 28) - 1;

const B64URL = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
/** char code → base64url value, -1 when not in the alphabet. */
const B64_VALUE = new Int8Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64_VALUE[B64URL.charCodeAt(i)] = i;

/** True when typed arrays are little-endian here (snapshots of keys are little-endian). */
const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

// The key of the id being looked up (encoding is synchronous: module scratch is safe).
let k0 = 0;
let k1 = 0;
let k2 = 0;
let k3 = 0;
/** The table hash of the key last looked up. */
let lookupHash = 0;

/**
 * Encodes `id` into k0..k3. Returns false when it has no 16-byte form (long or non-ASCII).
 */
function encode(id: string): boolean {
  const n = id.length;
  if (n === 18 && id.charCodeAt(0) === 0x6f && id.charCodeAt(1) === 0x3a) {
    // "o:" + 16 base64url characters: 4 characters (24 bits) a word.
    let ok = true;
    let w0 = 0;
    let w1 = 0;
    let w2 = 0;
    let w3 = 0;
    for (let i = 0; i < 4; i++) {
      const a = id.charCodeAt(2 + i);
      const b = id.charCodeAt(6 + i);
      const c = id.charCodeAt(10 + i);
      const d = id.charCodeAt(14 + i);
      const va = a < 128 ? (B64_VALUE[a] as number) : -1;
      const vb = b < 128 ? (B64_VALUE[b] as number) : -1;
      const vc = c < 128 ? (B64_VALUE[c] as number) : -1;
      const vd = d < 128 ? (B64_VALUE[d] as number) : -1;
      if ((va | vb | vc | vd) < 0) {
        ok = false;
        break;
      }
      w0 = (w0 << 6) | va;
      w1 = (w1 << 6) | vb;
      w2 = (w2 << 6) | vc;
      w3 = (w3 << 6) | vd;
    }
    if (ok) {
      k0 = TAG_DERIVED | w0;
      k1 = w1;
      k2 = w2;
      k3 = w3;
      return true;
    }
    return false;
  }
  if (n > 16) return false;
  // 7 bits a character, 4 characters a word, zero-padded (no id character is U+0000).
  let w0 = 0;
  let w1 = 0;
  let w2 = 0;
  let w3 = 0;
  for (let i = 0; i < n; i++) {
    const c = id.charCodeAt(i);
    if (c === 0 || c > 127) return false;
    const w = i >> 2;
    if (w === 0) w0 = (w0 << 7) | c;
    else if (w === 1) w1 = (w1 << 7) | c;
    else if (w === 2) w2 = (w2 << 7) | c;
    else w3 = (w3 << 7) | c;
  }
  // Left-align each word's characters; the length is implied by the zero padding.
  k0 = TAG_PACKED | ((w0 << padBits(n)) & LOW28);
  k1 = w1 << padBits(n - 4);
  k2 = w2 << padBits(n - 8);
  k3 = w3 << padBits(n - 12);
  return true;
}

/** Bits to shift a word holding `count` 7-bit characters so that they are left-aligned. */
export function padBits(count: number): number {
  return count >= 4 || count <= 0 ? 0 : 7 * (4 - count);
}

/**
 * An open-addressing table of (hash, ref) int32 pairs (ref 0: an empty slot; linear probing)
 * rebuilt with `slots` slots, a power of two (IdSet, MinuteState).
 */
export function rehashPairs(old: Int32Array, slots: number): Int32Array<ArrayBuffer> {
  const table = new Int32Array(slots * 2);
  const mask = slots - 1;
  for (let i = 0; i < old.length; i += 2) {
    const ref = old[i + 1] as number;
    if (ref === 0) continue;
    const h = old[i] as number;
    let slot = h & mask;
    while (table[(slot << 1) + 1] !== 0) slot = (slot + 1) & mask;
    table[slot << 1] = h;
    table[(slot << 1) + 1] = ref;
  }
  return table;
}

/** The smallest table (a power of two, at least `initial` slots) holding `n` at load ≤ 3/4. */
export function compactSlots(n: number, initial: number): number {
  let slots = initial;
  while (slots * 3 < n * 4) slots *= 2;
  return slots;
}

/** The id of a packed (or derived) key; not for keys tagged long. */
export function decodeKey(w0: number, w1: number, w2: number, w3: number): string {
  const tag = w0 & TAG_MASK;
  if (tag === TAG_DERIVED) {
    let s = "o:";
    for (const w of [w0 & LOW28, w1, w2, w3]) {
      for (let shift = 18; shift >= 0; shift -= 6) s += B64URL[(w >>> shift) & 63];
    }
    return s;
  }
  let s = "";
  for (const w of [w0 & LOW28, w1, w2, w3]) {
    for (let shift = 21; shift >= 0; shift -= 7) {
      const c = (w >>> shift) & 127;
      if (c === 0) return s;
      s += String.fromCharCode(c);
    }
  }
  return s;
}

/** A well-mixed 32-bit hash of a 4-word key (MurmurHash3's mixing, fmix32 at the end). */
export function hashKey(a: number, b: number, c: number, d: number): number {
  let h = 0x9747b28c;
  h = mixWord(h, a);
  h = mixWord(h, b);
  h = mixWord(h, c);
  h = mixWord(h, d);
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h;
}

function mixWord(h: number, w: number): number {
  let k = Math.imul(w, 0xcc9e2d51);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, 0x1b873593);
  h ^= k;
  h = (h << 13) | (h >>> 19);
  return (Math.imul(h, 5) + 0xe6546b64) | 0;
}

/** FNV-1a over UTF-16 code units, finalised: the table hash of a long id. */
export function hashString(s: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193);
  return hashKey(h, s.length, 0, 0);
}

const INITIAL_KEYS = 16;

/** A set of event ids, exact, ~24–40 bytes an id (see the module comment). */
export class IdSet {
  /** 4 words per id, in insertion order. */
  private keys = new Int32Array(INITIAL_KEYS * 4);
  /**
   * Open addressing over slots of two words: [hash, index + 1 into `keys`] (0 = empty).
   * The hash beside the index means a probe touches `keys` only on a real match.
   */
  private table = new Int32Array(INITIAL_KEYS * 4);
  /** Slots - 1 (a power of two minus one). */
  private mask = INITIAL_KEYS * 2 - 1;
  private count = 0;
  /** Ids held before the table doubles: half its slots, 3/4 after {@link compact}. */
  private limit = INITIAL_KEYS;
  /** Ids without a 16-byte form, referenced from their keys. */
  private readonly long: string[] = [];

  /** @param chunkCapacity validated for compatibility; the compact set needs no chunks. */
  constructor(chunkCapacity: number = DEFAULT_ID_CHUNK_CAPACITY) {
    if (!Number.isSafeInteger(chunkCapacity) || chunkCapacity < 1) {
      throw new RangeError(`chunkCapacity must be a positive integer, got ${chunkCapacity}`);
    }
  }

  /** Number of distinct ids held. */
  get size(): number {
    return this.count;
  }

  /** Bytes of typed arrays held (keys and table; long ids' strings not included). */
  get bytes(): number {
    return this.keys.byteLength + this.table.byteLength;
  }

  has(id: string): boolean {
    return this.lookup(id) < 0;
  }

  /** Adds `id`; returns false (and changes nothing) when it was already present. */
  add(id: string): boolean {
    const slot = this.lookup(id);
    if (slot < 0) return false;
    if ((k0 & TAG_MASK) === TAG_LONG) {
      k1 = this.long.length;
      this.long.push(id);
    }
    this.append(slot);
    return true;
  }

  /**
   * Encodes `id` into k0..k3 and probes for it: -1 when present, else the free slot where
   * it would go.
   */
  private lookup(id: string): number {
    const packed = encode(id);
    let h: number;
    if (packed) h = hashKey(k0, k1, k2, k3);
    else {
      h = hashString(id);
      k0 = TAG_LONG;
      k1 = -1;
      k2 = h;
      k3 = 0;
    }
    lookupHash = h;
    const table = this.table;
    const keys = this.keys;
    const mask = this.mask;
    let slot = h & mask;
    for (;;) {
      const ref = table[(slot << 1) + 1] as number;
      if (ref === 0) break;
      const at = (ref - 1) << 2;
      if (table[slot << 1] === h && keys[at] === k0) {
        if (packed) {
          if (keys[at + 1] === k1 && keys[at + 2] === k2 && keys[at + 3] === k3) return -1;
        } else if (keys[at + 2] === k2 && this.long[keys[at + 1] as number] === id) {
          return -1;
        }
      }
      slot = (slot + 1) & mask;
    }
    return slot;
  }

  /** Appends k0..k3 as a new id whose free table slot is `slot`. */
  private append(slot: number): void {
    let keys = this.keys;
    const at = this.count << 2;
    if (at + 4 > keys.length) {
      const grown = new Int32Array(keys.length * 2);
      grown.set(keys);
      this.keys = keys = grown;
    }
    keys[at] = k0;
    keys[at + 1] = k1;
    keys[at + 2] = k2;
    keys[at + 3] = k3;
    this.count++;
    this.table[slot << 1] = lookupHash;
    this.table[(slot << 1) + 1] = this.count;
    // Load at most 1/2 (3/4 once compacted).
    if (this.count > this.limit) this.rehash((this.mask + 1) * 2);
  }

  private rehash(slots: number): void {
    this.table = rehashPairs(this.table, slots);
    this.mask = slots - 1;
    this.limit = slots >> 1;
  }

  /**
   * Gives back the growth slack of a set that will get few more ids (a closed minute kept for
   * amendments): the keys trimmed to their count, the table rebuilt at a load of at most 3/4.
   * The ids, their order and every answer stay the same; a later add grows it as before.
   */
  compact(): void {
    const used = this.count * 4;
    if (used < this.keys.length) this.keys = this.keys.slice(0, Math.max(used, 4));
    const slots = compactSlots(this.count, INITIAL_KEYS * 2);
    if (slots < this.mask + 1) {
      this.rehash(slots);
      this.limit = (slots * 3) >> 2;
    }
  }

  /** The ids, in insertion order (exactly as added). */
  *values(): IterableIterator<string> {
    const keys = this.keys;
    for (let i = 0; i < this.count; i++) {
      const at = i << 2;
      const w0 = keys[at] as number;
      yield (w0 & TAG_MASK) === TAG_LONG
        ? (this.long[keys[at + 1] as number] as string)
        : decodeKey(w0, keys[at + 1] as number, keys[at + 2] as number, keys[at + 3] as number);
    }
  }

  /**
   * The ids as compact plain data: the 16-byte keys base64-encoded (little-endian words),
   * and the long ids as they are. `restore` takes it back; JSON- and msgpack-safe.
   */
  toCompact(): CompactIds {
    if (!LITTLE_ENDIAN) return { keys: "", long: [...this.values()] };
    const keep = new Int32Array(this.count * 4);
    let n = 0;
    const keys = this.keys;
    for (let i = 0; i < this.count; i++) {
      const at = i << 2;
      if (((keys[at] as number) & TAG_MASK) === TAG_LONG) continue;
      keep[n++] = keys[at] as number;
      keep[n++] = keys[at + 1] as number;
      keep[n++] = keys[at + 2] as number;
      keep[n++] = keys[at + 3] as number;
    }
    return {
      keys: Buffer.from(keep.buffer, 0, n * 4).toString("base64"),
      long: [...this.long],
    };
  }

  /** Adds the ids of a {@link toCompact} result. */
  addCompact(c: CompactIds): void {
    if (c.keys) {
      const buf = Buffer.from(c.keys, "base64");
      const words = new Int32Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length));
      for (let at = 0; at + 3 < words.length; at += 4) {
        k0 = words[at] as number;
        k1 = words[at + 1] as number;
        k2 = words[at + 2] as number;
        k3 = words[at + 3] as number;
        this.insertKey();
      }
    }
    for (const id of c.long) this.add(id);
  }

  /** Inserts the packed key k0..k3 unless present. */
  private insertKey(): void {
    const h = hashKey(k0, k1, k2, k3);
    lookupHash = h;
    const keys = this.keys;
    let slot = h & this.mask;
    for (;;) {
      const ref = this.table[(slot << 1) + 1] as number;
      if (ref === 0) break;
      const at = (ref - 1) << 2;
      if (
        this.table[slot << 1] === h &&
        keys[at] === k0 &&
        keys[at + 1] === k1 &&
        keys[at + 2] === k2 &&
        keys[at + 3] === k3
      )
        return;
      slot = (slot + 1) & this.mask;
    }
    this.append(slot);
  }
}

/** An IdSet as plain data (snapshots). */
export interface CompactIds {
  /** base64 of the 16-byte keys (little-endian int32 words). */
  keys: string;
  /** Ids kept as strings (longer than 16 characters, or not ASCII). */
  long: string[];
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
