import { type ClickEvent, ONE_MINUTE_MS } from "../model.js";
import { fnv1a32Utf8 } from "../partition.js";
import { decodeBlock, encodeBatch, encodeBlock } from "../wire/batch-codec.js";
import type { CassandraClient } from "./cassandra-client.js";

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
 * raw_dim_blocks ((dim, bucket, minute), batch_id): the same events again, grouped by
 *   hash(ip) / hash(user_id) mod `dimBuckets`, so a filter on one ip or user_id over a
 *   minute range reads 1/dimBuckets of the minute instead of all of it. Each event keeps the
 *   CLICKS sequence it came in (a v3 block), as raw_blocks rows keep their message's.
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
] as const;

const RAW_BLOCK_INSERT =
  "INSERT INTO raw_blocks (partition, minute, batch_id, stream_seq, event_count, events) VALUES (?, ?, ?, ?, ?, ?)";
const RAW_DIM_INSERT =
  "INSERT INTO raw_dim_blocks (dim, bucket, minute, batch_id, event_count, events) VALUES (?, ?, ?, ?, ?, ?)";
/**
 * Largest single-partition batch, in blob bytes: below stock Cassandra's
 * batch_size_fail_threshold (50 KiB); a larger row goes alone.
 */
const BATCH_BYTES = 40 * 1024;

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

interface DimGroup {
  dim: RawDim;
  bucket: number;
  events: ClickEvent[];
  seqs: number[];
  first: string;
  last: string;
}

export interface RawStoreOptions {
  /** Buckets per dimension in raw_dim_blocks. Fixed once data is written. */
  dimBuckets: number;
  /** Writes in flight at most. */
  concurrency: number;
}

export function dimBucket(value: string, buckets: number): number {
  return fnv1a32Utf8(value) % buckets;
}

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
    this.o = { dimBuckets: 16, concurrency: 32, ...opts };
  }

  async createSchema(): Promise<void> {
    for (const cql of RAW_SCHEMA) await this.client.execute(cql);
  }

  /**
   * The rows a set of batches becomes (pure). raw_blocks gets one row per (batch, minute):
   * idempotent under any replay. raw_dim_blocks gets one row per (dim, bucket, minute) for
   * the whole set — a consumed batch of messages costs 2 × buckets rows per minute however
   * many messages it holds (per message it would be 32 rows for a few dozen events); its key
   * names the first and last batch, so a redelivery grouped differently may store an event
   * twice, which readers deduplicate by identity.
   */
  rowsOf(batches: readonly RawBatch[]): { query: string; params: unknown[] }[] {
    const rows: { query: string; params: unknown[] }[] = [];
    const buckets = this.o.dimBuckets;
    /** minute → groups indexed by dim × buckets + bucket (no per-event key strings). */
    const dimGroups = new Map<number, (DimGroup | undefined)[]>();
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
        let groups = dimGroups.get(minute);
        if (!groups) {
          groups = new Array(RAW_DIMS.length * buckets);
          dimGroups.set(minute, groups);
        }
        for (let d = 0; d < RAW_DIMS.length; d++) {
          const dim = RAW_DIMS[d] as RawDim;
          const ip = dim === "ip";
          for (const e of evs) {
            const slot = d * buckets + dimBucket(ip ? e.ip : e.userId, buckets);
            let g = groups[slot];
            if (!g) {
              g = {
                dim,
                bucket: slot - d * buckets,
                events: [],
                seqs: [],
                first: b.batchId,
                last: b.batchId,
              };
              groups[slot] = g;
            }
            g.events.push(e);
            g.seqs.push(b.streamSeq);
            g.last = b.batchId;
          }
        }
      }
    }
    for (const [minute, groups] of dimGroups) {
      for (const g of groups) {
        if (!g) continue;
        rows.push({
          query: RAW_DIM_INSERT,
          params: [
            g.dim,
            g.bucket,
            new Date(minute),
            g.first === g.last ? g.first : `${g.first}..${g.last}`,
            g.events.length,
            Buffer.from(encodeBlock(g.events, g.seqs)),
          ],
        });
      }
    }
    return rows;
  }

  /**
   * Writes batches (idempotent upserts). Resolves when every row is written; rejects on the
   * first failure. Rows of the same Cassandra partition (raw_blocks: partition + minute;
   * raw_dim_blocks: dim + bucket + minute) go together as single-partition unlogged batches
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
          : `d|${a}|${c}|${(d as Date).getTime()}`;
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
   * The unique events of a minute whose ip / user_id equals `value`, each with the sequence it
   * first came in.
   */
  async readByDimension(dim: RawDim, value: string, minuteMs: number): Promise<SequencedEvent[]> {
    const rs = await this.client.execute(
      "SELECT events FROM raw_dim_blocks WHERE dim = ? AND bucket = ? AND minute = ?",
      [dim, dimBucket(value, this.o.dimBuckets), new Date(minuteMs)],
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
