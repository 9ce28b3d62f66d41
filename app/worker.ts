import { createRequire } from "node:module";
import { hostname } from "node:os";
import { dirname, join } from "node:path";
import { adminServiceChild } from "../actors/admin-service.js";
import { aggregateWriterChild } from "../actors/aggregate-writer.js";
import { aggregatorChild, aggregatorLogic } from "../actors/aggregator.js";
import { consoleServerChild } from "../actors/console-server.js";
import { hotShardLogic } from "../actors/hot-shard.js";
import { hotShardPoolChild } from "../actors/hot-shard-pool.js";
import { lateRepairChild } from "../actors/late-repair.js";
import { liveServerChild } from "../actors/live-server.js";
import { mapChild } from "../actors/map.js";
import { rawWriterChild } from "../actors/raw-writer.js";
import { reducerChild } from "../actors/reducer.js";
import { resourceService } from "../actors/service.js";
import { LEASE_TTL_MS } from "../nats/layout.js";
import { aggregateWriterConsumer } from "../src/aggregate/aggregate-writer.js";
import {
  type AggregatorSnapshotState,
  aggregatorSnapshotKey,
} from "../src/aggregate/aggregator-core.js";
import { retryForMs } from "../src/backoff.js";
import { type AdclickConfig, envNameOf, isLoopbackHost, type WorkerRole } from "../src/config.js";
import type { HotDetectorOptions } from "../src/hot/hot-detector.js";
import { mapConsumer } from "../src/ingest/ingest-router.js";
import { rawWriterConsumer } from "../src/ingest/raw-writer.js";
import { LeaseBalance } from "../src/leases/lease-balance.js";
import { PartitionLeases } from "../src/leases/partition-lease.js";
import { ensureDurable } from "../src/nats/durable-consumer.js";
import type { QueryEngine } from "../src/query/engine.js";
import { startQueryService } from "../src/query/service.js";
import { lateRepairConsumer } from "../src/recalc/late-repair.js";
import { KvRecalcProgressStore } from "../src/recalc/progress.js";
import { parseRange } from "../src/recalc/range.js";
import { natsLateEvents, reconcileRange, startReconcileSchedule } from "../src/recalc/reconcile.js";
import { CassandraAggregateEraser, replayRange } from "../src/recalc/replay.js";
import { SnapshotStore } from "../src/snapshots/snapshot-store.js";
import { AggregateStore } from "../src/storage/aggregate-store.js";
import { applyRawRetention } from "../src/storage/raw-retention.js";
import { RawStore } from "../src/storage/raw-store.js";
import { type AggregatorOptions, checkRestorable } from "../src/windows/partition-aggregator.js";
import type { ChildSpec } from "../supervisor/supervisor.js";
import { type Connections, natsFor } from "./connections.js";
import { ensureConsolePassword } from "./infra/credentials.js";
import { projectRoot } from "./infra/paths.js";

export interface WorkerRoles {
  map: boolean;
  rawWriter: boolean;
  /** Partitions whose aggregators this worker runs. */
  partitions: number[];
  reducer: boolean;
  aggregateWriter: boolean;
  /** Recounts minutes with clicks past the amendment horizon (src/recalc/late-repair.ts). */
  lateRepair: boolean;
  /** Serves the query service (adclick.query.*). */
  query: boolean;
}

/** The roles of the configuration (ADCLICK_ROLES, ADCLICK_OWN_PARTITIONS). */
export function allRoles(c: AdclickConfig): WorkerRoles {
  const has = (r: WorkerRole) => c.roles.includes(r);
  return {
    map: has("map"),
    rawWriter: has("raw-writer"),
    partitions: has("aggregators")
      ? (c.ownPartitions ?? Array.from({ length: c.partitions }, (_, p) => p))
      : [],
    reducer: has("reducer"),
    aggregateWriter: has("aggregate-writer"),
    lateRepair: has("late-repair"),
    query: has("query"),
  };
}

/** The aggregators' options, from the configuration. */
export function aggregatorOptionsOf(c: AdclickConfig): Omit<AggregatorOptions, "partition"> {
  return {
    allowedLatenessMs: c.allowedLatenessMs,
    idleTimeoutMs: c.idleTimeoutMs,
    maxHoldMs: c.maxHoldMs,
    maxOpenMinutes: c.maxOpenMinutes,
    dimensions: c.dimensions,
    topK: c.topK,
    latePolicy: c.latePolicy,
    amendHorizonMs: c.amendHorizonMs,
  };
}

/** Hot-ad splitting's settings, from the configuration (null: off). */
export function hotOptionsOf(c: AdclickConfig): HotDetectorOptions | null {
  if (!c.hotSplit) return null;
  return {
    hotShare: c.hotShare,
    hotMinRatePerSec: c.hotMinRatePerSec,
    shardRatePerSec: c.hotShardRatePerSec,
    maxShards: c.hotMaxShards,
    maxHotAds: c.hotMaxAds,
    periodMs: c.hotPeriodMs,
  };
}

/** The stores of one process, built once. */
export interface Stores {
  raw: RawStore;
  aggregates: AggregateStore;
  eraser: CassandraAggregateEraser;
  snapshots: SnapshotStore;
  recalcVersions: KvRecalcProgressStore;
  leases: PartitionLeases;
}

/** The stores over a process's connections; leases balanced when `balance` is given. */
export function storesOf(conn: Connections, workerName: string, balance?: LeaseBalance): Stores {
  return {
    raw: new RawStore(conn.cql),
    aggregates: new AggregateStore(conn.cql),
    eraser: new CassandraAggregateEraser(conn.cql),
    snapshots: new SnapshotStore(conn.kv.snapshots),
    recalcVersions: new KvRecalcProgressStore(conn.kv.snapshots),
    leases: new PartitionLeases(conn.kv.leases, workerName, LEASE_TTL_MS, balance),
  };
}

/** Builds the stores and prepares what the roles need (schemas, durable consumers). */
export async function prepareStores(
  conn: Connections,
  c: AdclickConfig,
  roles: WorkerRoles,
  workerName: string,
  log: (m: string) => void = () => {},
): Promise<Stores> {
  // Workers that run aggregators share the partitions fairly (src/leases/lease-balance.ts).
  const balance =
    roles.partitions.length > 0
      ? new LeaseBalance(
          conn.kv.leases,
          workerName,
          {
            partitions: c.partitions,
            ...(c.ownPartitions ? { offers: roles.partitions } : {}),
            ttlMs: LEASE_TTL_MS,
          },
          log,
        )
      : undefined;
  const stores = storesOf(conn, workerName, balance);
  // Several workers starting at once against a busy ring can time out on schema changes
  // (and the lightweight transaction of the raw store's meta row): retried, not fatal.
  await retryForMs(
    async () => {
      await stores.raw.createSchema();
      if (c.rawRetentionDays > 0) await applyRawRetention(conn.cql, c.rawRetentionDays);
      await stores.aggregates.createSchema();
    },
    { forMs: 120_000 },
  );
  if (roles.map) await ensureDurable(conn.jsm, mapConsumer());
  if (roles.rawWriter) await ensureDurable(conn.jsm, rawWriterConsumer());
  if (roles.aggregateWriter) {
    await ensureDurable(conn.jsm, aggregateWriterConsumer("minutes"));
    await ensureDurable(conn.jsm, aggregateWriterConsumer("ad-rows"));
  }
  if (roles.lateRepair) await ensureDurable(conn.jsm, lateRepairConsumer());
  await checkSnapshots(stores.snapshots, roles.partitions, aggregatorOptionsOf(c));
  await balance?.start();
  return stores;
}

/**
 * The configuration is authoritative: before any actor starts, every saved aggregator state
 * of the partitions offered here is checked against it. What can be applied to a restored
 * state is (the aggregators say so in `admin actors`); what cannot refuses the start with one
 * message naming the setting, both values and how to migrate.
 */
async function checkSnapshots(
  snapshots: SnapshotStore,
  partitions: readonly number[],
  aggregator: Omit<AggregatorOptions, "partition">,
): Promise<void> {
  for (const p of partitions) {
    const stored = await snapshots.load<AggregatorSnapshotState>(aggregatorSnapshotKey(p));
    if (!stored) continue;
    checkRestorable(stored.snapshot.state.agg, { ...aggregator, partition: p }, (option) =>
      envNameOf(option as keyof AdclickConfig),
    );
  }
}

/** This worker's name in leases and admin replies. */
export function workerNameOf(c: AdclickConfig): string {
  return c.workerId ?? `${hostname()}/${process.pid}`;
}

/**
 * The children of one worker process for its roles, in start order: sinks first, sources
 * last (the supervisor stops them all at once; unfinished input is redelivered or replayed).
 * Every tuning value comes from the configuration; every effect from `conn` and `stores`.
 */
export function workerChildren(
  conn: Connections,
  stores: Stores,
  c: AdclickConfig,
  roles: WorkerRoles,
  o: {
    workerName: string;
    engine: QueryEngine;
    now: () => number;
    log: (m: string) => void;
  },
): ChildSpec[] {
  const { js, nc } = conn;
  const base = { shutdownMs: c.actorShutdownMs, now: o.now };
  const specs: ChildSpec[] = [];
  if (roles.aggregateWriter) {
    const deps = { js, store: stores.aggregates };
    specs.push(
      aggregateWriterChild(deps, { ...base, id: "aggregate-writer" }),
      aggregateWriterChild(deps, { ...base, id: "ad-rows-writer", target: "ad-rows" }),
    );
  }
  if (roles.reducer) {
    specs.push(
      reducerChild(js, {
        ...base,
        id: "reducer",
        partitions: c.partitions,
        n: c.topK,
        replayMs: c.reducerReplayMs,
        overdueAfterMs: c.allowedLatenessMs + c.idleTimeoutMs + c.reducerOverdueGraceMs,
      }),
    );
  }
  const aggregator = aggregatorOptionsOf(c);
  const hot = hotOptionsOf(c);
  const logic = aggregatorLogic({
    js,
    snapshots: stores.snapshots,
    leases: stores.leases,
    hot: { partials: conn.kv.hot, epochs: conn.kv.snapshots },
  });
  for (const p of roles.partitions) {
    specs.push(
      aggregatorChild(logic, {
        ...base,
        id: `aggregator-${p}`,
        partition: p,
        aggregator,
        snapshotEveryMs: c.snapshotEveryMs,
        hot,
      }),
    );
  }
  // Hot ads' shards run in any worker with aggregators (their leases pick one), started and
  // stopped by the pool as the partitions' aggregators split and merge ads.
  if (roles.partitions.length > 0) {
    specs.push(
      hotShardPoolChild({
        id: "hot-shard-pool",
        epochsKv: conn.kv.snapshots,
        logic: hotShardLogic({
          js,
          snapshots: stores.snapshots,
          partials: conn.kv.hot,
          leases: stores.leases,
        }),
        dimensions: c.dimensions,
        snapshotEveryMs: c.snapshotEveryMs,
        shutdownMs: c.actorShutdownMs,
        now: o.now,
        log: o.log,
      }),
    );
  }
  if (roles.lateRepair) {
    specs.push(
      lateRepairChild(
        { js, raw: stores.raw, aggregates: stores.aggregates, versions: stores.recalcVersions },
        {
          ...base,
          id: "late-repair",
          partitions: c.partitions,
          dimensions: c.dimensions,
          topK: c.topK,
        },
      ),
    );
  }
  if (roles.rawWriter)
    specs.push(rawWriterChild({ js, store: stores.raw }, { ...base, id: "raw-writer" }));
  if (roles.map) specs.push(mapChild(js, { ...base, id: "map", partitions: c.partitions }));

  // The services: live minutes of this worker's aggregators, queries, admin commands, and
  // the scheduled reconciliation (where the reducer runs: one per deployment).
  if (roles.partitions.length > 0)
    specs.push(
      liveServerChild(nc, {
        id: "live-server",
        partitions: roles.partitions,
        shutdownMs: c.actorShutdownMs,
      }),
    );
  if (roles.query) {
    specs.push(
      serviceChild("query-service", "service", c, () =>
        startQueryService(
          nc,
          o.engine,
          { maxRangeMinutes: c.queryMaxRangeMinutes, maxN: c.topK },
          o.now,
        ),
      ),
    );
  }
  // The web console: its own NATS connection as the query role, asking only what any query
  // client may ask (adclick.query.*, adclick.admin.status / actors). Beyond loopback it asks
  // for the query login (console.password in the credentials folder, made on first use).
  if (roles.query && c.consolePort > 0) {
    specs.push(
      consoleServerChild({
        id: "console-server",
        shutdownMs: c.actorShutdownMs,
        host: c.consoleHost,
        port: c.consolePort,
        staticDir: join(projectRoot(), "console"),
        uplotDir: join(
          dirname(createRequire(import.meta.url).resolve("uplot/package.json")),
          "dist",
        ),
        connect: () => natsFor(c, "adclick-console", "query"),
        ...(isLoopbackHost(c.consoleHost)
          ? {}
          : { password: () => ensureConsolePassword(c).password }),
        log: o.log,
      }),
    );
  }
  const recalc = {
    rawStore: stores.raw,
    aggregateStore: stores.aggregates,
    eraser: stores.eraser,
    partitions: c.partitions,
    dimensions: c.dimensions,
    topK: c.topK,
  };
  const lateEvents = natsLateEvents(js, conn.jsm);
  if (roles.reducer && c.reconcileEveryMs > 0) {
    specs.push(
      serviceChild(
        "reconcile-schedule",
        "schedule",
        c,
        async (report) =>
          startReconcileSchedule({
            ...recalc,
            lateEvents,
            everyMs: c.reconcileEveryMs,
            lagMs: c.reconcileLagMs,
            now: o.now,
            onReport: (r) => {
              // The last run's result in this actor's status: `admin actors`, the web console.
              report({
                lastReport: {
                  from: r.range.from,
                  to: r.range.to,
                  atMs: o.now(),
                  events: r.events,
                  cellsCompared: r.cellsCompared,
                  mismatchCount: r.mismatchCount,
                  topMismatches: r.topMismatches.length,
                  byCause: r.byCause,
                },
                lastError: null,
              });
              if (r.mismatchCount > 0)
                o.log(
                  `reconcile ${r.range.from} → ${r.range.to}: ${r.mismatchCount} mismatches (${JSON.stringify(r.byCause)})`,
                );
            },
            onError: (e) => {
              report({ lastError: String(e) });
              o.log(`reconcile failed: ${e}`);
            },
          }),
        (s) => s.close(),
      ),
    );
  }
  const actorIds = specs.map((s) => s.id);
  specs.push(
    adminServiceChild(nc, {
      id: "admin-service",
      worker: o.workerName,
      actorIds: [...actorIds, "admin-service"],
      aggregatorIds: roles.partitions.map((p) => `aggregator-${p}`),
      shutdownMs: c.actorShutdownMs,
      job: async (kind, body) => {
        const from = String(body.from ?? "");
        const to = String(body.to ?? "");
        const { fromMs, toMs } = parseRange(from, to);
        const common = { ...recalc, progressStore: stores.recalcVersions, fromMs, toMs };
        o.log(`admin ${kind} ${from} → ${to}${body.apply || body.repair ? " (applying)" : ""}`);
        return kind === "replay"
          ? replayRange({ ...common, apply: body.apply === true })
          : reconcileRange({ ...common, repair: body.repair === true, lateEvents, mode: "manual" });
      },
    }),
  );
  return specs;
}

/** A supervised service: started by `start`, stopped by `stop` (a NATS micro service, a schedule). */
function serviceChild<R>(
  id: string,
  kind: string,
  c: AdclickConfig,
  start: (report: (status: Record<string, unknown>) => void) => Promise<R>,
  stop: (resource: R) => Promise<unknown> | unknown = (r) =>
    (r as { stop(): Promise<unknown> }).stop(),
): ChildSpec {
  return {
    id,
    kind,
    restart: "permanent",
    shutdownMs: c.actorShutdownMs,
    logic: resourceService(start, stop),
    input: { id },
  };
}
