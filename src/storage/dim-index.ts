import type { ClickEvent } from "../model.js";
import { fnv1a32Utf8 } from "../partition.js";

/**
 * The raw store's ip / user_id index (table raw_dim_index, see raw-store.ts): pure layout,
 * encoding and decoding.
 *
 * Layout: PRIMARY KEY ((dim, period, shard), bucket, minute, first_seq, batch_tag)
 * - bucket = fnv1a32(value) mod INDEX_BUCKETS (4096): a filter reads 1/4096 of the minute;
 * - shard = bucket mod INDEX_SHARDS (32), period = the 10-minute span of the minute: one
 *   consumed batch's entries of a (dim, period, shard) are one single-partition unlogged
 *   batch (a few dozen requests a batch however many buckets it touches), and a partition
 *   holds 1/32 of ten minutes of one dimension (~45 MB at 3M clicks a minute);
 * - a query for one value over 60 minutes reads one bucket's slice of 6–7 partitions.
 *
 * A row's blob holds only what a filtered count needs, grouped by value so a reader skips
 * the other values of the bucket without decoding them:
 *   [1] then per value: varint len, value bytes, varint n, n × entry
 *   entry = varint len, ad id, varint len, country, varint len, event id, varint seq delta
 * (strings UTF-8, varints unsigned LEB128, seq delta = stream sequence − the row's first_seq).
 * The value itself is stored (exact match, no hash-only matching); the event id is kept for
 * dedupe, the stream sequence for the revision bound (see src/query/engine.ts).
 */
export const INDEX_BUCKETS = 4096;
export const INDEX_SHARDS = 32;
export const INDEX_PERIOD_MS = 10 * 60_000;
const INDEX_FORMAT = 1;

export function indexBucket(value: string, buckets = INDEX_BUCKETS): number {
  return fnv1a32Utf8(value) % buckets;
}

export function indexShard(bucket: number, shards = INDEX_SHARDS): number {
  return bucket % shards;
}

/** The start of the index period holding `minuteMs`. */
export function indexPeriod(minuteMs: number): number {
  return Math.floor(minuteMs / INDEX_PERIOD_MS) * INDEX_PERIOD_MS;
}

/** One event as the index holds it. */
export interface IndexEntry {
  value: string;
  event: ClickEvent;
  streamSeq: number;
}

/** A matching event read back from the index: what a filtered count or top N needs. */
export interface IndexedEvent {
  adId: string;
  country: string;
  eventId: string;
  minuteMs: number;
  /** The CLICKS stream sequence the event came in (the lowest of its copies). */
  streamSeq: number;
}

/**
 * Writes index blocks back to back into one growing buffer and hands out views of it (no
 * copy a row): the rows of one write share it until they are sent.
 */
export class IndexBlockWriter {
  private buf: Buffer;
  private pos = 0;
  constructor(sizeHint = 64 * 1024) {
    this.buf = Buffer.allocUnsafe(Math.max(64, sizeHint));
  }
  private room(n: number): void {
    if (this.pos + n <= this.buf.length) return;
    // Earlier views keep the old buffer alive; the new one only receives what follows.
    this.buf = Buffer.allocUnsafe(Math.max(this.buf.length * 2, n + 1024));
    this.pos = 0;
  }
  private varint(v: number): void {
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 0x80) | 0x80;
      v = Math.floor(v / 0x80);
    }
    this.buf[this.pos++] = v;
  }
  private str(s: string): void {
    const n = s.length;
    // ASCII (ids, ips, countries): one byte a char, no intermediate buffer.
    if (n < 0x80) {
      const start = this.pos;
      let i = 0;
      for (; i < n; i++) {
        const c = s.charCodeAt(i);
        if (c >= 0x80) break;
        this.buf[start + 1 + i] = c;
      }
      if (i === n) {
        this.buf[start] = n;
        this.pos = start + 1 + n;
        return;
      }
    }
    const bytes = Buffer.from(s, "utf8");
    this.varint(bytes.length);
    bytes.copy(this.buf, this.pos);
    this.pos += bytes.length;
  }
  /** Room for one entry or value header: its strings' UTF-8 bound plus the varints. */
  private static bound(...strings: string[]): number {
    let n = 40;
    for (const s of strings) n += 3 * s.length;
    return n;
  }

  /**
   * One index row's blob: `events[i]` (value `valueFn(events[i])`) came in stream sequence
   * `seqs[i]` ≥ `baseSeq` (the row's first_seq). Entries of a value keep their order.
   */
  block(
    events: readonly ClickEvent[],
    seqs: readonly number[],
    valueFn: (e: ClickEvent) => string,
    baseSeq: number,
  ): Buffer {
    const n = events.length;
    let size = 8;
    for (let i = 0; i < n; i++) {
      const e = events[i] as ClickEvent;
      size += IndexBlockWriter.bound(valueFn(e), e.adId, e.country, e.eventId);
    }
    this.room(size);
    const start = this.pos;
    this.varint(INDEX_FORMAT);
    const entry = (i: number) => {
      const e = events[i] as ClickEvent;
      const seq = seqs[i] as number;
      if (!(seq >= baseSeq)) throw new RangeError(`sequence ${seq} below ${baseSeq}`);
      this.str(e.adId);
      this.str(e.country);
      this.str(e.eventId);
      this.varint(seq - baseSeq);
    };
    if (n <= 32) {
      // Few entries (the usual row): group equal values by scanning, no map.
      const done: boolean[] = new Array(n).fill(false);
      for (let i = 0; i < n; i++) {
        if (done[i]) continue;
        const value = valueFn(events[i] as ClickEvent);
        let count = 1;
        for (let j = i + 1; j < n; j++)
          if (!done[j] && valueFn(events[j] as ClickEvent) === value) count++;
        this.str(value);
        this.varint(count);
        entry(i);
        for (let j = i + 1; j < n; j++) {
          if (!done[j] && valueFn(events[j] as ClickEvent) === value) {
            done[j] = true;
            entry(j);
          }
        }
      }
    } else {
      const byValue = new Map<string, number[]>();
      for (let i = 0; i < n; i++) {
        const value = valueFn(events[i] as ClickEvent);
        const list = byValue.get(value);
        if (list) list.push(i);
        else byValue.set(value, [i]);
      }
      for (const [value, list] of byValue) {
        this.str(value);
        this.varint(list.length);
        for (const i of list) entry(i);
      }
    }
    return this.buf.subarray(start, this.pos);
  }
}

/**
 * Encodes the entries of one index row; `baseSeq` is the row's first_seq (≤ every entry's
 * sequence). Entries of a value keep their order.
 */
export function encodeIndexBlock(entries: readonly IndexEntry[], baseSeq: number): Buffer {
  const values = new Map<ClickEvent, string>();
  for (const x of entries) values.set(x.event, x.value);
  return new IndexBlockWriter(entries.length * 64).block(
    entries.map((x) => x.event),
    entries.map((x) => x.streamSeq),
    (e) => values.get(e) as string,
    baseSeq,
  );
}

/** Thrown on a blob this version cannot read. */
export class IndexDecodeError extends Error {}

/**
 * Calls `found` for every entry of `value` in an index row (value given as its UTF-8 bytes);
 * every other value is skipped without decoding its strings.
 */
export function scanIndexBlock(
  blob: Uint8Array,
  value: Uint8Array,
  baseSeq: number,
  found: (adId: string, country: string, eventId: string, streamSeq: number) => void,
): void {
  const buf = Buffer.isBuffer(blob) ? blob : Buffer.from(blob.buffer, blob.byteOffset, blob.length);
  const end = buf.length;
  let pos = 0;
  const varint = (): number => {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (pos >= end) throw new IndexDecodeError("truncated index block");
      const b = buf[pos++] as number;
      v += (b & 0x7f) * mul;
      if (b < 0x80) return v;
      mul *= 0x80;
    }
  };
  const skip = (): void => {
    const n = varint();
    pos += n;
    if (pos > end) throw new IndexDecodeError("truncated index block");
  };
  const str = (): string => {
    const n = varint();
    const s = pos;
    pos += n;
    if (pos > end) throw new IndexDecodeError("truncated index block");
    return buf.toString("utf8", s, pos);
  };
  if (varint() !== INDEX_FORMAT) throw new IndexDecodeError("unknown index block format");
  const vlen = value.length;
  while (pos < end) {
    const n = varint();
    let same = n === vlen && pos + n <= end;
    if (same) {
      for (let i = 0; i < n; i++) {
        if (buf[pos + i] !== value[i]) {
          same = false;
          break;
        }
      }
    }
    pos += n;
    const count = varint();
    if (same) {
      for (let i = 0; i < count; i++) {
        const adId = str();
        const country = str();
        const eventId = str();
        found(adId, country, eventId, baseSeq + varint());
      }
    } else {
      for (let i = 0; i < count; i++) {
        skip();
        skip();
        skip();
        varint();
      }
    }
  }
}
