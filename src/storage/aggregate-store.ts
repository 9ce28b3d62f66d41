import cassandra from "cassandra-driver";
import { Packr } from "msgpackr";
import type { Dimension } from "../model.js";
import type { ClosedMinute } from "../windows/partition-aggregator.js";
import type { TopEntry } from "../windows/topk.js";
import type { CassandraClient } from "./cassandra-client.js";

/**
 * The aggregate store: absolute values written by idempotent upserts, never counters.
 * Every write carries `USING TIMESTAMP <version>`: Cassandra keeps the cell with the highest
 * timestamp, so a re-emitted or delayed older version can never overwrite a newer one
 * (fencing without lightweight transactions), and rewriting the same version is a no-op.
 *
 * The partition-minute row is the minute's record: one row per partition and minute holding
 * every count (ads, dimension values, top k), written first. The chapter's per-ad tables are
 * derived from it and written behind it by their own writer (see AggregateWriter's
 * `ad-rows` target): ~1M rows at the book's peak minute, they no longer stand between a
 * closed minute and `final`.
 *
 * Tables, by the query they serve:
 *  ad_minute_counts ((ad_id, day), minute)                 clicks of an ad over a minute range
 *  ad_minute_dim_counts ((ad_id, day), dim, value, minute) the same, filtered by a dimension value
 *  partition_minutes ((partition, day), minute)            a partition's whole minute (all ads,
 *                                                          all dimension values): exact top N over
 *                                                          any range, with or without a filter
 *  top_minutes ((day), minute)                             the reducer's global top N per minute
 *  partition_progress (partition)                          every minute ending at or before
 *                                                          closed_through is closed and its
 *                                                          partition_minutes row stored (what
 *                                                          `final` waits for); at or before
 *                                                          ad_rows_through, its per-ad rows too
 *  partition_completeness (partition)                      every minute ending at or before
 *                                                          complete_through has every active
 *                                                          source past it; the sources behind
 */
export const AGGREGATE_SCHEMA = [
  `CREATE TABLE IF NOT EXISTS ad_minute_counts (
     ad_id text, day date, minute timestamp, clicks bigint, version int,
     PRIMARY KEY ((ad_id, day), minute))`,
  `CREATE TABLE IF NOT EXISTS ad_minute_dim_counts (
     ad_id text, day date, dim text, value text, minute timestamp, clicks bigint, version int,
     PRIMARY KEY ((ad_id, day), dim, value, minute))`,
  `CREATE TABLE IF NOT EXISTS partition_minutes (
     partition int, day date, minute timestamp, version int, event_count bigint,
     ad_counts blob, dim_counts blob, top_k blob, through_seq bigint,
     PRIMARY KEY ((partition, day), minute))`,
  `CREATE TABLE IF NOT EXISTS partition_progress (
     partition int PRIMARY KEY, closed_through timestamp)`,
  `CREATE TABLE IF NOT EXISTS partition_completeness (
     partition int PRIMARY KEY, complete_through timestamp, behind blob, seq bigint)`,
  `CREATE TABLE IF NOT EXISTS top_minutes (
     day date, minute timestamp, version bigint, n int, ads blob,
     PRIMARY KEY ((day), minute))`,
] as const;

/** Columns added after a table was first created: added to existing deployments at start-up. */
const ADDED_COLUMNS = [
  ["partition_minutes", "through_seq", "bigint"],
  ["partition_progress", "ad_rows_through", "timestamp"],
] as const;

const packr = new Packr({ useRecords: false });
const DAY_MS = 86_400_000;

const AD_ROW =
  "INSERT INTO ad_minute_counts (ad_id, day, minute, clicks, version) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?";
const DIM_ROW =
  "INSERT INTO ad_minute_dim_counts (ad_id, day, dim, value, minute, clicks, version) VALUES (?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?";
/**
 * Deletes of one row, by table, with `USING TIMESTAMP <version>`: the tombstone shadows every
 * older cell (the live row, a buggy row) and loses to a later recalculation's writes, like the
 * upserts it accompanies. Parameters: version, partition key, day, clustering, minute.
 */
const DELETES = {
  adMinute:
    "DELETE FROM ad_minute_counts USING TIMESTAMP ? WHERE ad_id = ? AND day = ? AND minute = ?",
  adDimMinute:
    "DELETE FROM ad_minute_dim_counts USING TIMESTAMP ? WHERE ad_id = ? AND day = ? AND dim = ? AND value = ? AND minute = ?",
  partitionMinute:
    "DELETE FROM partition_minutes USING TIMESTAMP ? WHERE partition = ? AND day = ? AND minute = ?",
  top: "DELETE FROM top_minutes USING TIMESTAMP ? WHERE day = ? AND minute = ?",
} as const;

/**
 * Statements per unlogged batch: at ~60 bytes a row a batch stays under stock Cassandra's
 * batch_size_warn_threshold (5 KiB). 80 rather than 48: the bench's backlog was final after
 * 54 s instead of 58–60 s, with ~10 % less worker CPU (fewer requests through the driver).
 */
const BATCH_STATEMENTS = 80;
const BATCHES_IN_FLIGHT = 32;

/** The `date` partition bucket of a minute (cassandra-driver takes 'YYYY-MM-DD'). */
export function dayOf(minuteMs: number): string {
  return new Date(Math.floor(minuteMs / DAY_MS) * DAY_MS).toISOString().slice(0, 10);
}

/** The days a [fromMs, toMs) range touches. */
export function daysOf(fromMs: number, toMs: number): string[] {
  const out: string[] = [];
  for (let d = Math.floor(fromMs / DAY_MS) * DAY_MS; d < toMs; d += DAY_MS) out.push(dayOf(d));
  return out;
}

const DIM_COLUMN: Record<Dimension, string> = { country: "country", ip: "ip", userId: "user_id" };

/** A partition's completeness as last stored (see ProgressReport). */
export interface StoredCompleteness {
  /** null: a lagging source has no progress at all (no minute is complete). */
  completeThroughMs: number | null;
  behind: { source: string; progressMs: number | null }[];
}

/** A stored minute's revision and the stream position it reflects (null: an older build's). */
export interface MinuteRevisionInfo {
  version: number;
  throughSeq: number | null;
}

export interface StoredPartitionMinute {
  partition: number;
  minuteStartMs: number;
  version: number;
  eventCount: number;
  adCounts: [string, number][];
  dimCounts: Partial<Record<Dimension, [string, string, number][]>>;
}

/** A partition_minutes row (minute, version, event_count, ad_counts, dim_counts) of partition p. */
function toStoredPartitionMinute(
  partition: number,
  row: cassandra.types.Row,
): StoredPartitionMinute {
  return {
    partition,
    minuteStartMs: (row.get("minute") as Date).getTime(),
    version: row.get("version") as number,
    eventCount: Number(row.get("event_count")),
    adCounts: packr.unpack(row.get("ad_counts") as Buffer),
    dimCounts: packr.unpack(row.get("dim_counts") as Buffer),
  };
}

export class AggregateStore {
  constructor(private readonly client: CassandraClient) {}

  async createSchema(): Promise<void> {
    for (const cql of AGGREGATE_SCHEMA) await this.client.execute(cql);
    for (const [table, column, type] of ADDED_COLUMNS) {
      if (await this.hasColumn(table, column)) continue;
      await this.client.execute(`ALTER TABLE ${table} ADD ${column} ${type}`).catch(async (err) => {
        // Another process may have added it meanwhile: then all is well (asked of the schema,
        // not read from the error's text).
        if (!(await this.hasColumn(table, column))) throw err;
      });
    }
  }

  private async hasColumn(table: string, column: string): Promise<boolean> {
    const rs = await this.client.execute(
      "SELECT column_name FROM system_schema.columns WHERE keyspace_name = ? AND table_name = ? AND column_name = ?",
      [this.client.keyspace, table, column],
      { prepare: true },
    );
    return rs.rows.length > 0;
  }

  /**
   * Upserts one closed minute of a partition — its partition-minute row and its per-ad rows —
   * at its version (recalculation, tests). The pipeline writes the two apart:
   * writePartitionMinute on the critical path, writeAdRows behind it.
   */
  async writeMinute(c: ClosedMinute & { throughSeq?: number }): Promise<number> {
    const [a, b] = await Promise.all([this.writePartitionMinute(c), this.writeAdRows(c)]);
    return a + b;
  }

  /**
   * Upserts a closed minute's partition-minute row (every count of the partition's minute in
   * one row), at its version, with the stream position its counts reflect when known.
   */
  async writePartitionMinute(c: ClosedMinute & { throughSeq?: number }): Promise<number> {
    await this.client.execute(
      "INSERT INTO partition_minutes (partition, day, minute, version, event_count, ad_counts, dim_counts, top_k, through_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?) USING TIMESTAMP ?",
      [
        c.partition,
        cassandra.types.LocalDate.fromString(dayOf(c.minuteStartMs)),
        new Date(c.minuteStartMs),
        c.version,
        BigInt(c.eventCount),
        packr.pack(c.adCounts),
        packr.pack(c.dimCounts),
        packr.pack(c.topK),
        c.throughSeq !== undefined ? BigInt(c.throughSeq) : null,
        BigInt(c.version),
      ],
      { prepare: true },
    );
    return 1;
  }

  /**
   * Upserts a closed minute's per-ad rows (ad_minute_counts, ad_minute_dim_counts) at its
   * version, `batchesInFlight` unlogged batches at a time (default BATCHES_IN_FLIGHT).
   * Returns the rows written.
   */
  async writeAdRows(c: ClosedMinute, batchesInFlight = BATCHES_IN_FLIGHT): Promise<number> {
    // The date once, as the driver's type: a string would be parsed again for every row.
    const day = cassandra.types.LocalDate.fromString(dayOf(c.minuteStartMs));
    const minute = new Date(c.minuteStartMs);
    const ts = BigInt(c.version);
    // Per-ad rows grouped by ad (its count, then its dimension values: all under the same
    // partition key (ad_id, day), hence the same replicas), written as unlogged batches.
    const dims = Object.entries(c.dimCounts) as [Dimension, [string, string, number][]][];
    const cursors = dims.map(() => 0);
    const perAd: [string, unknown[]][] = [];
    for (const [adId, count] of c.adCounts) {
      perAd.push([AD_ROW, [adId, day, minute, BigInt(count), c.version, ts]]);
      for (let d = 0; d < dims.length; d++) {
        const [dim, list] = dims[d] as [Dimension, [string, string, number][]];
        let i = cursors[d] as number;
        // Both lists are sorted by adId: skip rows of ads without a count (there are none in
        // a well-formed minute) and take this ad's.
        while (i < list.length && (list[i] as [string, string, number])[0] < adId) i++;
        while (i < list.length && (list[i] as [string, string, number])[0] === adId) {
          const [, value, n] = list[i] as [string, string, number];
          perAd.push([
            DIM_ROW,
            [adId, day, DIM_COLUMN[dim], value, minute, BigInt(n), c.version, ts],
          ]);
          i++;
        }
        cursors[d] = i;
      }
    }
    // Dimension rows of ads absent from adCounts (the aggregator makes none; kept anyway).
    const dimRows = dims.reduce((n, [, list]) => n + list.length, 0);
    if (perAd.length !== c.adCounts.length + dimRows) {
      const counted = new Set(c.adCounts.map(([a]) => a));
      for (const [dim, list] of dims) {
        for (const [adId, value, n] of list) {
          if (counted.has(adId)) continue;
          perAd.push([
            DIM_ROW,
            [adId, day, DIM_COLUMN[dim], value, minute, BigInt(n), c.version, ts],
          ]);
        }
      }
    }
    await this.executeBatched(perAd, batchesInFlight);
    return perAd.length;
  }

  /** Upserts the global top N of a minute, at its version. */
  async writeTop(
    minuteStartMs: number,
    version: number,
    n: number,
    ads: TopEntry[],
  ): Promise<void> {
    await this.client.execute(
      "INSERT INTO top_minutes (day, minute, version, n, ads) VALUES (?, ?, ?, ?, ?) USING TIMESTAMP ?",
      [
        dayOf(minuteStartMs),
        new Date(minuteStartMs),
        BigInt(version),
        n,
        packr.pack(ads),
        BigInt(version),
      ],
      { prepare: true },
    );
  }

  /** Records that partition p's minutes ending at or before `closedThroughMs` are stored (only ever moves forward). */
  async writeProgress(partition: number, closedThroughMs: number): Promise<void> {
    await this.client.execute(
      "INSERT INTO partition_progress (partition, closed_through) VALUES (?, ?) USING TIMESTAMP ?",
      [partition, new Date(closedThroughMs), BigInt(closedThroughMs)],
      { prepare: true },
    );
  }

  /**
   * Records that partition p's per-ad rows of every minute ending at or before `throughMs`
   * are stored (only ever moves forward; a column of its own, so independent of
   * closed_through's writes).
   */
  async writeAdRowsProgress(partition: number, throughMs: number): Promise<void> {
    await this.client.execute(
      "UPDATE partition_progress USING TIMESTAMP ? SET ad_rows_through = ? WHERE partition = ?",
      [BigInt(throughMs), new Date(throughMs), partition],
      { prepare: true },
    );
  }

  /**
   * Records partition p's completeness (a report made at CLICKS sequence `seq`: a later
   * report always wins, whatever the arrival order).
   */
  async writeCompleteness(partition: number, c: StoredCompleteness, seq: number): Promise<void> {
    await this.client.execute(
      "INSERT INTO partition_completeness (partition, complete_through, behind, seq) VALUES (?, ?, ?, ?) USING TIMESTAMP ?",
      [
        partition,
        c.completeThroughMs === null ? null : new Date(c.completeThroughMs),
        packr.pack(c.behind),
        BigInt(seq),
        BigInt(seq),
      ],
      { prepare: true },
    );
  }

  // ---- deletes (recalculation: rows the recount does not have) ----

  /** Deletes one ad's minute row, at a version. */
  deleteAdMinute(adId: string, minuteMs: number, version: number): Promise<void> {
    return this.tombstone(DELETES.adMinute, version, [adId], minuteMs);
  }

  /** Deletes one ad's minute row for a dimension value, at a version. */
  deleteAdDimMinute(
    adId: string,
    dim: Dimension,
    value: string,
    minuteMs: number,
    version: number,
  ): Promise<void> {
    return this.tombstone(DELETES.adDimMinute, version, [adId], minuteMs, [DIM_COLUMN[dim], value]);
  }

  /** Deletes one partition-minute, at a version. */
  deletePartitionMinute(partition: number, minuteMs: number, version: number): Promise<void> {
    return this.tombstone(DELETES.partitionMinute, version, [partition], minuteMs);
  }

  /** Deletes the global top N of a minute, at a version. */
  deleteTop(minuteMs: number, version: number): Promise<void> {
    return this.tombstone(DELETES.top, version, [], minuteMs);
  }

  /**
   * Runs one of DELETES: the row keyed by `key`, the minute's day, `clustering` and the minute,
   * at timestamp `version`.
   */
  private async tombstone(
    cql: string,
    version: number,
    key: unknown[],
    minuteMs: number,
    clustering: unknown[] = [],
  ): Promise<void> {
    await this.client.execute(
      cql,
      [BigInt(version), ...key, dayOf(minuteMs), ...clustering, new Date(minuteMs)],
      { prepare: true },
    );
  }

  /** Completeness per partition (partitions that never reported are absent). */
  async completeness(): Promise<Map<number, StoredCompleteness>> {
    const rs = await this.client.execute(
      "SELECT partition, complete_through, behind FROM partition_completeness",
      [],
      { prepare: true },
    );
    return new Map(
      rs.rows.map((r) => {
        const t = r.get("complete_through") as Date | null;
        const behind = r.get("behind") as Buffer | null;
        return [
          r.get("partition") as number,
          {
            completeThroughMs: t === null ? null : t.getTime(),
            behind: behind ? packr.unpack(behind) : [],
          },
        ];
      }),
    );
  }

  /** closed_through per partition (partitions without any are absent). */
  async progress(): Promise<Map<number, number>> {
    const rs = await this.client.execute(
      "SELECT partition, closed_through FROM partition_progress",
      [],
      { prepare: true },
    );
    const out = new Map<number, number>();
    for (const r of rs.rows) {
      // A row the per-ad writer made before any minute was closed has no closed_through.
      const t = r.get("closed_through") as Date | null;
      if (t !== null) out.set(r.get("partition") as number, t.getTime());
    }
    return out;
  }

  /** ad_rows_through per partition (partitions whose per-ad rows were never written are absent). */
  async adRowsProgress(): Promise<Map<number, number>> {
    const rs = await this.client.execute(
      "SELECT partition, ad_rows_through FROM partition_progress",
      [],
      { prepare: true },
    );
    const out = new Map<number, number>();
    for (const r of rs.rows) {
      const t = r.get("ad_rows_through") as Date | null;
      if (t !== null) out.set(r.get("partition") as number, t.getTime());
    }
    return out;
  }

  /**
   * Small rows as unlogged batches of at most BATCH_STATEMENTS, BATCHES_IN_FLIGHT at a time:
   * one request (and one commit-log append per partition) instead of one per row — the
   * single biggest cost of the aggregate writer was Cassandra's per-request work. Each
   * statement keeps its own USING TIMESTAMP, so the upserts stay versioned and idempotent;
   * a failed batch fails the write (the caller retries the whole minute).
   */
  private async executeBatched(rows: [string, unknown[]][], inFlight: number): Promise<void> {
    let next = 0;
    const worker = async () => {
      while (next < rows.length) {
        const chunk = rows.slice(next, next + BATCH_STATEMENTS);
        next += chunk.length;
        await this.client.batch(
          chunk.map(([query, params]) => ({ query, params })),
          { prepare: true, logged: false },
        );
      }
    };
    const lanes = Math.min(inFlight, Math.ceil(rows.length / BATCH_STATEMENTS));
    await Promise.all(Array.from({ length: lanes }, worker));
  }

  // ---- reads (queries, reconciliation, tests) ----

  /** Per-minute clicks of one ad in [fromMs, toMs), optionally for one dimension value. */
  async adSeries(
    adId: string,
    fromMs: number,
    toMs: number,
    filter?: { dim: Dimension; value: string },
  ): Promise<Map<number, number>> {
    const out = new Map<number, number>();
    for (const day of daysOf(fromMs, toMs)) {
      const rs = filter
        ? await this.client.execute(
            "SELECT minute, clicks FROM ad_minute_dim_counts WHERE ad_id = ? AND day = ? AND dim = ? AND value = ? AND minute >= ? AND minute < ?",
            [adId, day, DIM_COLUMN[filter.dim], filter.value, new Date(fromMs), new Date(toMs)],
            { prepare: true },
          )
        : await this.client.execute(
            "SELECT minute, clicks FROM ad_minute_counts WHERE ad_id = ? AND day = ? AND minute >= ? AND minute < ?",
            [adId, day, new Date(fromMs), new Date(toMs)],
            { prepare: true },
          );
      for (const row of rs.rows)
        out.set((row.get("minute") as Date).getTime(), Number(row.get("clicks")));
    }
    return out;
  }

  /** Every stored partition-minute in [fromMs, toMs) of the given partitions. */
  async partitionMinutes(
    partitions: number,
    fromMs: number,
    toMs: number,
  ): Promise<StoredPartitionMinute[]> {
    const out: StoredPartitionMinute[] = [];
    for (const day of daysOf(fromMs, toMs)) {
      for (let p = 0; p < partitions; p++)
        for await (const pm of this.partitionDayMinutes(p, day, fromMs, toMs)) out.push(pm);
    }
    return out;
  }

  /**
   * Partition p's stored minutes in [fromMs, toMs), one at a time: rows are fetched
   * `fetchSize` at a time (default: the driver's page size), so a large range is never held
   * in memory at once.
   */
  async *eachPartitionMinute(
    partition: number,
    fromMs: number,
    toMs: number,
    fetchSize?: number,
  ): AsyncGenerator<StoredPartitionMinute> {
    for (const day of daysOf(fromMs, toMs))
      yield* this.partitionDayMinutes(partition, day, fromMs, toMs, fetchSize);
  }

  private async *partitionDayMinutes(
    partition: number,
    day: string,
    fromMs: number,
    toMs: number,
    fetchSize?: number,
  ): AsyncGenerator<StoredPartitionMinute> {
    const rs = await this.client.execute(
      "SELECT minute, version, event_count, ad_counts, dim_counts FROM partition_minutes WHERE partition = ? AND day = ? AND minute >= ? AND minute < ?",
      [partition, day, new Date(fromMs), new Date(toMs)],
      { prepare: true, ...(fetchSize !== undefined ? { fetchSize } : {}) },
    );
    for await (const row of rs) yield toStoredPartitionMinute(partition, row);
  }

  /**
   * minute → revision and stream position of partition p's stored minutes in [fromMs, toMs)
   * (no blobs: cheap).
   */
  async partitionMinuteRevisions(
    partition: number,
    fromMs: number,
    toMs: number,
  ): Promise<Map<number, MinuteRevisionInfo>> {
    return this.minuteColumns(partition, fromMs, toMs, "version, through_seq", (row) => {
      const seq = row.get("through_seq") as bigint | null;
      return {
        version: row.get("version") as number,
        throughSeq: seq === null ? null : Number(seq),
      };
    });
  }

  /** minute → version of partition p's stored minutes in [fromMs, toMs) (no blobs: cheap). */
  async partitionMinuteVersions(
    partition: number,
    fromMs: number,
    toMs: number,
  ): Promise<Map<number, number>> {
    return this.minuteColumns(
      partition,
      fromMs,
      toMs,
      "version",
      (row) => row.get("version") as number,
    );
  }

  /** minute → event count of partition p's stored minutes in [fromMs, toMs) (no blobs: cheap). */
  async partitionMinuteEventCounts(
    partition: number,
    fromMs: number,
    toMs: number,
  ): Promise<Map<number, number>> {
    return this.minuteColumns(partition, fromMs, toMs, "event_count", (row) =>
      Number(row.get("event_count")),
    );
  }

  /** minute → `read(row)` of partition p's stored minutes in [fromMs, toMs), selecting `columns`. */
  private async minuteColumns<T>(
    partition: number,
    fromMs: number,
    toMs: number,
    columns: "version" | "version, through_seq" | "event_count",
    read: (row: cassandra.types.Row) => T,
  ): Promise<Map<number, T>> {
    const out = new Map<number, T>();
    for (const day of daysOf(fromMs, toMs)) {
      const rs = await this.client.execute(
        `SELECT minute, ${columns} FROM partition_minutes WHERE partition = ? AND day = ? AND minute >= ? AND minute < ?`,
        [partition, day, new Date(fromMs), new Date(toMs)],
        { prepare: true },
      );
      for (const row of rs.rows) out.set((row.get("minute") as Date).getTime(), read(row));
    }
    return out;
  }

  /** One stored partition-minute (all ads and dimension values), or undefined. */
  async partitionMinute(
    partition: number,
    minuteMs: number,
  ): Promise<StoredPartitionMinute | undefined> {
    const rs = await this.client.execute(
      "SELECT minute, version, event_count, ad_counts, dim_counts FROM partition_minutes WHERE partition = ? AND day = ? AND minute = ?",
      [partition, dayOf(minuteMs), new Date(minuteMs)],
      { prepare: true },
    );
    const row = rs.rows[0];
    return row && toStoredPartitionMinute(partition, row);
  }

  /** The stored global top N of each minute in [fromMs, toMs). */
  async topMinutes(
    fromMs: number,
    toMs: number,
  ): Promise<Map<number, { version: number; ads: TopEntry[] }>> {
    const out = new Map<number, { version: number; ads: TopEntry[] }>();
    for (const day of daysOf(fromMs, toMs)) {
      const rs = await this.client.execute(
        "SELECT minute, version, ads FROM top_minutes WHERE day = ? AND minute >= ? AND minute < ?",
        [day, new Date(fromMs), new Date(toMs)],
        { prepare: true },
      );
      for (const row of rs.rows) {
        out.set((row.get("minute") as Date).getTime(), {
          version: Number(row.get("version")),
          ads: packr.unpack(row.get("ads") as Buffer),
        });
      }
    }
    return out;
  }
}
