/**
 * Retention of the raw store: raw events leave the hot tables after `rawRetentionDays`.
 *
 * How: a table-level `default_time_to_live` on raw_blocks, raw_dim_index and the legacy
 * raw_dim_blocks. The tables use TimeWindowCompactionStrategy with one-hour windows, and rows
 * are written once, in time order, never updated: each SSTable holds one hour of writes, all expiring together, so
 * Cassandra drops a fully expired SSTable whole (no compaction rewrite, no per-row tombstone
 * scans). That is the cheap way to age out time series; deleting old partitions instead
 * would write tombstones across every partition-minute.
 *
 * Consequences, on purpose:
 * - the default TTL applies to rows written after the change; rows written before keep
 *   theirs (none) — alter early, or let them go with a one-off cleanup;
 * - replay and reconcile read only what is still there: choose a retention longer than any
 *   range you may have to recalculate (billing disputes, audits). A minute whose raw data
 *   expired reconciles as "aggregate without any raw data" — the aggregates themselves have
 *   no TTL and stay.
 * - 0 turns the TTL off (keep forever).
 *
 * Kept apart from raw-store.ts's schema (another component's file): applied at start-up
 * after the schema exists, idempotently.
 */
import { ConfigError } from "../errors.js";
import type { CassandraClient } from "./cassandra-client.js";

export const DEFAULT_RAW_RETENTION_DAYS = 30;
/** Cassandra's ceiling for a TTL: 20 years. */
export const MAX_RAW_RETENTION_DAYS = 7300;
export const RAW_TABLES = ["raw_blocks", "raw_dim_blocks", "raw_dim_index"] as const;

/** Days → seconds of TTL, validated (0 = no TTL). */
export function rawRetentionSeconds(days: number): number {
  if (!Number.isSafeInteger(days) || days < 0 || days > MAX_RAW_RETENTION_DAYS) {
    throw new ConfigError(
      "rawRetentionDays",
      `must be a whole number of days 0..${MAX_RAW_RETENTION_DAYS} (0: keep forever), got ${days}`,
    );
  }
  return days * 86_400;
}

/** Parses ADCLICK_RAW_RETENTION_DAYS (default 30) until the setting joins AdclickConfig. */
export function rawRetentionDaysFromEnv(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env.ADCLICK_RAW_RETENTION_DAYS;
  if (raw === undefined || raw.trim() === "") return DEFAULT_RAW_RETENTION_DAYS;
  if (!/^\d+$/.test(raw.trim())) {
    throw new ConfigError("ADCLICK_RAW_RETENTION_DAYS", `"${raw}" is not a whole number of days`);
  }
  const days = Number(raw.trim());
  rawRetentionSeconds(days);
  return days;
}

/**
 * Sets the raw tables' default TTL where it differs (a schema change only when needed). The
 * tables must exist in the client's keyspace. Returns the tables altered.
 */
export async function applyRawRetention(client: CassandraClient, days: number): Promise<string[]> {
  const seconds = rawRetentionSeconds(days);
  const current = await rawRetention(client, client.keyspace);
  const altered: string[] = [];
  for (const table of RAW_TABLES) {
    if (current.get(table) === seconds) continue;
    // DDL takes no bind markers; `seconds` is a validated integer, the table a constant.
    await client.execute(`ALTER TABLE ${table} WITH default_time_to_live = ${seconds}`);
    altered.push(table);
  }
  return altered;
}

/** The raw tables' current default TTL in seconds, per table (absent: table missing). */
export async function rawRetention(
  client: CassandraClient,
  keyspace: string,
): Promise<Map<string, number>> {
  const rs = await client.execute(
    "SELECT table_name, default_time_to_live FROM system_schema.tables WHERE keyspace_name = ?",
    [keyspace],
    { prepare: true },
  );
  const out = new Map<string, number>();
  for (const row of rs.rows) {
    const name = row.get("table_name") as string;
    if ((RAW_TABLES as readonly string[]).includes(name)) {
      out.set(name, Number(row.get("default_time_to_live")));
    }
  }
  return out;
}
