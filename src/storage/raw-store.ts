import { type ClickEvent, ONE_MINUTE_MS } from "../model.js";
import { fnv1a32Utf8 } from "../partition.js";
import { decodeBlock, encodeBatch } from "../wire/batch-codec.js";
import type { CassandraClient } from "./cassandra-client.js";
import {
  INDEX_BUCKETS,
  INDEX_PERIOD_MS,
  INDEX_SHARDS,
  IndexBlockWriter,
  type IndexedEvent,
  indexBucket,
  indexPeriod,
  indexShard,
  scanIndexBlock,
} from "./dim-index.js";

/**
 * The raw store: every raw-click batch, kept for debugging, recalculation and
 * reconciliation, laid out for write throughput first.
 *
 * raw_blocks ((partition, minute), batch_id): one row per (stream message, event minute),
 *   holding that message's events of that minute as one msgpack blob. Writes cost one row
 *   per ~thousands of events instead of one per event (a shared 2-core Cassandra takes
 *   ~10–15k row writes/s), a time-range read is a handful of partition scans, and the key is
 *   the message's deterministic ID, so replaying the stream or a re-shipped batch rewrites
 *   the same rows (idempotent).
 *
 * raw_dim_index ((dim, period, shard), bucket, minute, first_seq, batch_tag): the ip / user_id
 *   index (layout and encoding in dim-index.ts). Per event and dimension an entry of what a
 *   filtered count needs (the value, ad id, country, event id, stream sequence), in one of
 *   4096 buckets by hash of the value; a consumed batch's entries of a (dim, period, shard)
 *   are one single-partition request, and a filter on one ip or user_id reads 1/4096 of each
 *   minute, one bucket's slice per 10-minute period.
 *
 * raw_dim_blocks ((dim, bucket, minute), batch_id): the index of earlier versions (the same
 *   events again, whole, in 16 buckets). No longer written; read only for minutes before
 *   `legacy_until` in raw_index_meta — set once, by the first process of this version to
 *   create the schema: 0 on a new deployment (nothing to read), else one hour after that
 *   start, so minutes older writers stored stay answerable (their writers must be gone by
 *   then). Both are read and deduplicated by event id for those minutes.
 *
 * A block is what arrived: two batches may hold the same event (same click_id shipped twice
 * past JetStream's duplicate window). Readers therefore deduplicate by event id, and the
 * store's unique events are what `readMinute` returns.
 */
export const RAW_SCHEMA = [
  `CREATE TABLE IF NOT EXISTS raw_blocks (
     partition int, minute timestamp, batch_id text,
     stream_seq bigint, event_count int, events blob,
     PRIMARY KEY ((partition, minute), batch_id)
   ) WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': 1}
     AND compression = {'class': 'LZ4Compressor'}`,
  `CREATE TABLE IF NOT EXISTS raw_dim_blocks (
     dim text, bucket int, minute timestamp, batch_id text,
     event_count int, events blob,
     PRIMARY KEY ((dim, bucket, minute), batch_id)
   ) WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': 1}
     AND compression = {'class': 'LZ4Compressor'}`,
  `CREATE TABLE IF NOT EXISTS raw_dim_index (
     dim text, period timestamp, shard int,
     bucket int, minute timestamp, first_seq bigint, batch_tag int,
     event_count int, data blob,
     PRIMARY KEY ((dim, period, shard), bucket, minute, first_seq, batch_tag)
   ) WITH compaction = {'class': 'TimeWindowCompactionStrategy', 'compaction_window_unit': 'HOURS', 'compaction_window_size': 1}
     AND compression = {'class': 'LZ4Compressor'}`,
] as const;

const META_SCHEMA = `CREATE TABLE IF NOT EXISTS raw_index_meta (
  name text PRIMARY KEY, legacy_until timestamp
)`;
/** How long after its first start this version still reads raw_dim_blocks for new minutes. */
export const LEGACY_OVERLAP_MS = 60 * 60_000;

const RAW_BLOCK_INSERT =
  "INSERT INTO raw_blocks (partition, minute, batch_id, stream_seq, event_count, events) VALUES (?, ?, ?, ?, ?, ?)";
const RAW_INDEX_INSERT =
  "INSERT INTO raw_dim_index (dim, period, shard, bucket, minute, first_seq, batch_tag, event_count, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)";
/**
 * Largest single-partition batch, in blob bytes: below stock Cassandra's
 * batch_size_fail_threshold (50 KiB); a larger row goes alone.
 */
const BATCH_BYTES = 40 * 1024;

export type { IndexedEvent } from "./dim-index.js";

/** A raw event and the CLICKS stream sequence it came in (0: unknown, an older block). */
export type SequencedEvent = ClickEvent & { streamSeq: number };

export type RawDim = "ip" | "userId";
export const RAW_DIMS: readonly RawDim[] = ["ip", "userId"];

export interface RawBatch {
  partition: number;
  /** The JetStream message ID of the batch (deterministic). */
  batchId: string;
  streamSeq: number;
  events: ClickEvent[];
  /**
   * The message payload the events were decoded from (encodeBatch of exactly `events`), when
   * at hand: stored as is when all its events fall in one minute.
   */
  payload?: Uint8Array;
}

export interface RawStoreOptions {
  /** Buckets per dimension of the legacy raw_dim_blocks (read only). */
  dimBuckets: number;
  /** Buckets per dimension of raw_dim_index. Fixed once data is written. */
  indexBuckets: number;
  /** Partitions per (dim, period) of raw_dim_index. Fixed once data is written. */
  indexShards: number;
  /** Writes in flight at most. */
  concurrency: number;
}

/** The bucket of a value in the legacy raw_dim_blocks. */
export function legacyBucket(value: string, buckets: number): number {
  return fnv1a32Utf8(value) % buckets;
}

/** Index reads (partition slices, legacy minutes) in flight for one filtered read. */
const READS_IN_FLIGHT = 8;

function groupBy<K>(
  events: readonly ClickEvent[],
  key: (e: ClickEvent) => K,
): Map<K, ClickEvent[]> {
  const out = new Map<K, ClickEvent[]>();
  for (const e of events) {
    const k = key(e);
    const list = out.get(k);
    if (list) list.push(e);
    else out.set(k, [e]);
  }
  return out;
}

const minuteOf = (e: ClickEvent) => Math.floor(e.timestampMs / ONE_MINUTE_MS) * ONE_MINUTE_MS;

export class RawStore {
  readonly o: RawStoreOptions;

  constructor(
    private readonly client: CassandraClient,
    opts: Partial<RawStoreOptions> = {},
  ) {
    this.o = {
      dimBuckets: 16,
      indexBuckets: INDEX_BUCKETS,
      indexShards: INDEX_SHARDS,
      concurrency: 32,
      ...opts,
    };
  }

  /**
   * Creates the tables. The first process of this version to run it decides `legacy_until`:
   * 0 when raw_dim_blocks did not exist yet (a new deployment), else now + LEGACY_OVERLAP_MS.
   */
  async createSchema(): Promise<void> {
    const rs = await this.client.execute(
      "SELECT table_name FROM system_schema.tables WHERE keyspace_name = ? AND table_name = ?",
      [this.client.keyspace, "raw_dim_blocks"],
      { prepare: true },
    );
    const upgrade = rs.rows.length > 0;
    await this.client.execute(META_SCHEMA);
    const until = upgrade
      ? Math.ceil((Date.now() + LEGACY_OVERLAP_MS) / ONE_MINUTE_MS) * ONE_MINUTE_MS
      : 0;
    await this.client.execute(
      "INSERT INTO raw_index_meta (name, legacy_until) VALUES ('dim_index', ?) IF NOT EXISTS",
      [new Date(until)],
      { prepare: true },
    );
    for (const cql of RAW_SCHEMA) await this.client.execute(cql);
  }

  private legacy?: { untilMs: number; readAtMs: number };

  /** Minutes before this may hold events only raw_dim_blocks has (see the class comment). */
  private async legacyUntil(): Promise<number> {
    const now = Date.now();
    const have = this.legacy;
    if (have && (have.untilMs !== Number.POSITIVE_INFINITY || now - have.readAtMs < 10_000))
      return have.untilMs;
    const rs = await this.client.execute(
      "SELECT legacy_until FROM raw_index_meta WHERE name = 'dim_index'",
      [],
      { prepare: true },
    );
    const v = rs.rows[0]?.get("legacy_until") as Date | null | undefined;
    // No mark yet: no process of this version created the schema; older writers may be all.
    const untilMs = v ? v.getTime() : Number.POSITIVE_INFINITY;
    this.legacy = { untilMs, readAtMs: now };
    return untilMs;
  }

  /**
   * The rows a set of batches becomes (pure). raw_blocks gets one row per (batch, minute):
   * idempotent under any replay. raw_dim_index gets one row per (dim, bucket, minute) for the
   * whole set, keyed by the set's first stream sequence and a tag of its last sequence and
   * message ids: the same set (a redelivery grouped alike) rewrites the same rows; one grouped
   * differently stores its events again under other keys, which readers deduplicate by id.
   */
  rowsOf(batches: readonly RawBatch[]): { query: string; params: unknown[] }[] {
    const rows: { query: string; params: unknown[] }[] = [];
    const buckets = this.o.indexBuckets;
    let first: RawBatch | undefined;
    let last: RawBatch | undefined;
    for (const b of batches) {
      if (b.events.length === 0) continue;
      if (!first || b.streamSeq < first.streamSeq) first = b;
      if (!last || b.streamSeq >= last.streamSeq) last = b;
    }
    /** minute → events (and their sequences) by dim × buckets + bucket. */
    const index = new Map<number, ({ events: ClickEvent[]; seqs: number[] } | undefined)[]>();
    let indexed = 0;
    for (const b of batches) {
      const byMinute = groupBy(b.events, minuteOf);
      for (const [minute, evs] of byMinute) {
        // A message of one minute is stored as it arrived: its payload is already this
        // block's encoding (same codec, same events, same order), so no re-encoding.
        const blob =
          byMinute.size === 1 && b.payload
            ? Buffer.from(b.payload.buffer, b.payload.byteOffset, b.payload.byteLength)
            : Buffer.from(encodeBatch(evs));
        rows.push({
          query: RAW_BLOCK_INSERT,
          params: [b.partition, new Date(minute), b.batchId, BigInt(b.streamSeq), evs.length, blob],
        });
        let slots = index.get(minute);
        if (!slots) {
          slots = new Array(RAW_DIMS.length * buckets);
          index.set(minute, slots);
        }
        for (let d = 0; d < RAW_DIMS.length; d++) {
          const ip = RAW_DIMS[d] === "ip";
          for (const e of evs) {
            const slot = d * buckets + indexBucket(ip ? e.ip : e.userId, buckets);
            const g = slots[slot];
            if (g) {
              g.events.push(e);
              g.seqs.push(b.streamSeq);
            } else slots[slot] = { events: [e], seqs: [b.streamSeq] };
          }
        }
        indexed += evs.length;
      }
    }
    if (!first || !last) return rows;
    const firstSeq = BigInt(first.streamSeq);
    const tag = fnv1a32Utf8(`${last.streamSeq}|${first.batchId}|${last.batchId}`) | 0;
    const writer = new IndexBlockWriter(indexed * 2 * 56);
    const valueFn = [(e: ClickEvent) => e.ip, (e: ClickEvent) => e.userId];
    for (const [minute, slots] of index) {
      const period = new Date(indexPeriod(minute));
      const at = new Date(minute);
      for (let slot = 0; slot < slots.length; slot++) {
        const g = slots[slot];
        if (!g) continue;
        const bucket = slot % buckets;
        const d = Math.floor(slot / buckets);
        rows.push({
          query: RAW_INDEX_INSERT,
          params: [
            RAW_DIMS[d],
            period,
            indexShard(bucket, this.o.indexShards),
            bucket,
            at,
            firstSeq,
            tag,
            g.events.length,
            writer.block(
              g.events,
              g.seqs,
              valueFn[RAW_DIMS[d] === "ip" ? 0 : 1] as (e: ClickEvent) => string,
              first.streamSeq,
            ),
          ],
        });
      }
    }
    return rows;
  }

  /**
   * Writes batches (idempotent upserts). Resolves when every row is written; rejects on the
   * first failure. Rows of the same Cassandra partition (raw_blocks: partition + minute;
   * raw_dim_index: dim + period + shard) go together as single-partition unlogged batches
   * of at most BATCH_BYTES: one request and one mutation instead of one per row, with nothing
   * fanned out to other replicas. Returns the rows written.
   */
  async write(batches: readonly RawBatch[]): Promise<number> {
    const groups = new Map<string, { query: string; params: unknown[]; bytes: number }[]>();
    let rows = 0;
    for (const r of this.rowsOf(batches)) {
      const [a, c, d] = r.params as [unknown, unknown, unknown];
      const key =
        r.query === RAW_BLOCK_INSERT
          ? `b|${a}|${(c as Date).getTime()}`
          : `i|${a}|${(c as Date).getTime()}|${d}`;
      const blob = r.params[r.params.length - 1] as Buffer;
      let g = groups.get(key);
      if (!g) {
        g = [];
        groups.set(key, g);
      }
      g.push({ query: r.query, params: r.params, bytes: blob.length + 64 });
      rows++;
    }
    const requests: { query: string; params: unknown[] }[][] = [];
    for (const g of groups.values()) {
      let cur: { query: string; params: unknown[] }[] = [];
      let bytes = 0;
      for (const r of g) {
        if (cur.length > 0 && bytes + r.bytes > BATCH_BYTES) {
          requests.push(cur);
          cur = [];
          bytes = 0;
        }
        cur.push({ query: r.query, params: r.params });
        bytes += r.bytes;
      }
      if (cur.length > 0) requests.push(cur);
    }
    let next = 0;
    const worker = async () => {
      while (next < requests.length) {
        const req = requests[next++] as { query: string; params: unknown[] }[];
        if (req.length === 1) {
          const only = req[0] as { query: string; params: unknown[] };
          await this.client.execute(only.query, only.params, { prepare: true });
        } else {
          await this.client.batch(req, { prepare: true, logged: false });
        }
      }
    };
    await Promise.all(
      Array.from({ length: Math.min(this.o.concurrency, requests.length) }, worker),
    );
    return rows;
  }

  /** The unique events (by event id) of one partition's minute. */
  async readMinute(partition: number, minuteMs: number): Promise<ClickEvent[]> {
    return this.readMinuteSequenced(partition, minuteMs);
  }

  /** The unique events of one partition's minute, each with the sequence it first came in. */
  async readMinuteSequenced(partition: number, minuteMs: number): Promise<SequencedEvent[]> {
    const rs = await this.client.execute(
      "SELECT stream_seq, events FROM raw_blocks WHERE partition = ? AND minute = ?",
      [partition, new Date(minuteMs)],
      { prepare: true, fetchSize: 500 },
    );
    const blobs: { blob: Buffer; seq: number }[] = [];
    for await (const row of rs) {
      const seq = row.get("stream_seq") as bigint | null;
      blobs.push({ blob: row.get("events") as Buffer, seq: seq === null ? 0 : Number(seq) });
    }
    return uniqueEvents(blobs);
  }

  /**
   * The unique events (by event id, each with the lowest sequence any copy came in) with
   * fromMs <= minute < toMs whose ip / user_id equals `value`: one bucket's slice of each
   * index period in the range, read in parallel, plus raw_dim_blocks for minutes before
   * `legacy_until`.
   */
  async readIndexed(
    dim: RawDim,
    value: string,
    fromMs: number,
    toMs: number,
  ): Promise<IndexedEvent[]> {
    const byId = new Map<string, IndexedEvent>();
    const add = (e: IndexedEvent) => {
      const have = byId.get(e.eventId);
      if (have === undefined) byId.set(e.eventId, e);
      else if (e.streamSeq < have.streamSeq) have.streamSeq = e.streamSeq;
    };
    const bucket = indexBucket(value, this.o.indexBuckets);
    const shard = indexShard(bucket, this.o.indexShards);
    const valueBytes = Buffer.from(value, "utf8");
    const reads: (() => Promise<void>)[] = [];
    for (let p = indexPeriod(fromMs); p < toMs; p += INDEX_PERIOD_MS) {
      reads.push(async () => {
        const rs = await this.client.execute(
          "SELECT minute, first_seq, data FROM raw_dim_index WHERE dim = ? AND period = ? AND shard = ? AND bucket = ? AND minute >= ? AND minute < ?",
          [dim, new Date(p), shard, bucket, new Date(Math.max(p, fromMs)), new Date(toMs)],
          { prepare: true, fetchSize: 5000 },
        );
        for await (const row of rs) {
          const minuteMs = (row.get("minute") as Date).getTime();
          const base = Number(row.get("first_seq") as bigint);
          scanIndexBlock(row.get("data") as Buffer, valueBytes, base, (adId, country, id, seq) =>
            add({ adId, country, eventId: id, minuteMs, streamSeq: seq }),
          );
        }
      });
    }
    const legacyUntil = await this.legacyUntil();
    for (let m = fromMs; m < Math.min(toMs, legacyUntil); m += ONE_MINUTE_MS) {
      reads.push(async () => {
        for (const e of await this.readLegacy(dim, value, m))
          add({
            adId: e.adId,
            country: e.country,
            eventId: e.eventId,
            minuteMs: m,
            streamSeq: e.streamSeq,
          });
      });
    }
    let next = 0;
    const worker = async () => {
      while (next < reads.length) await (reads[next++] as () => Promise<void>)();
    };
    await Promise.all(Array.from({ length: Math.min(READS_IN_FLIGHT, reads.length) }, worker));
    return [...byId.values()];
  }

  /** The unique events of one minute whose ip / user_id equals `value` (see readIndexed). */
  async readByDimension(dim: RawDim, value: string, minuteMs: number): Promise<IndexedEvent[]> {
    return this.readIndexed(dim, value, minuteMs, minuteMs + ONE_MINUTE_MS);
  }

  /** raw_dim_blocks (earlier versions' index): a minute's unique events of `value`. */
  private async readLegacy(
    dim: RawDim,
    value: string,
    minuteMs: number,
  ): Promise<SequencedEvent[]> {
    const rs = await this.client.execute(
      "SELECT events FROM raw_dim_blocks WHERE dim = ? AND bucket = ? AND minute = ?",
      [dim, legacyBucket(value, this.o.dimBuckets), new Date(minuteMs)],
      { prepare: true, fetchSize: 500 },
    );
    const blobs: { blob: Buffer; seq: number }[] = [];
    for await (const row of rs) blobs.push({ blob: row.get("events") as Buffer, seq: 0 });
    // Matching first: a bucket holds 1/dimBuckets of the minute, and only the few events of
    // this value need the dedupe set.
    return uniqueEvents(blobs, dim === "ip" ? (e) => e.ip === value : (e) => e.userId === value);
  }

  /**
   * Every unique event with fromMs <= minute < toMs, partition by partition, minute by
   * minute (the unit of recalculation and reconciliation).
   */
  async *readRange(
    fromMs: number,
    toMs: number,
    partitions: number,
  ): AsyncGenerator<{ partition: number; minuteMs: number; events: ClickEvent[] }> {
    for (let m = fromMs; m < toMs; m += ONE_MINUTE_MS) {
      for (let p = 0; p < partitions; p++) {
        yield { partition: p, minuteMs: m, events: await this.readMinute(p, m) };
      }
    }
  }
}

/**
 * The unique events of some blocks: one per event id, with the lowest sequence any copy came
 * in (the copy the aggregator counted). A block's own sequences win over the row's `seq`.
 */
function uniqueEvents(
  blobs: readonly { blob: Buffer; seq: number }[],
  keep: (e: ClickEvent) => boolean = () => true,
): SequencedEvent[] {
  const byId = new Map<string, SequencedEvent>();
  for (const { blob, seq } of blobs) {
    const { events, streamSeqs } = decodeBlock(blob);
    for (let i = 0; i < events.length; i++) {
      const e = events[i] as ClickEvent;
      if (!keep(e)) continue;
      const s = streamSeqs ? (streamSeqs[i] as number) : seq;
      const have = byId.get(e.eventId);
      if (have === undefined) {
        // Decoded objects are ours: tag them rather than copy them.
        (e as SequencedEvent).streamSeq = s;
        byId.set(e.eventId, e as SequencedEvent);
      } else if (s < have.streamSeq) have.streamSeq = s;
    }
  }
  return [...byId.values()];
}
