import { hostname } from "node:os";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { createActor } from "xstate";
import { aggregateWriterChild } from "../actors/aggregate-writer.js";
import { aggregatorChild } from "../actors/aggregator.js";
import { lateRepairChild } from "../actors/late-repair.js";
import type { ChildSpec } from "../actors/loop-machine.js";
import { mapChild } from "../actors/map.js";
import { rawWriterChild } from "../actors/raw-writer.js";
import { reducerChild } from "../actors/reducer.js";
import { KV_BUCKETS, LEASE_TTL_MS } from "../nats/layout.js";
import { aggregateWriterConsumer } from "../src/aggregate/aggregate-writer.js";
import {
  type AggregatorRunner,
  aggregatorSnapshotKey,
} from "../src/aggregate/aggregator-runner.js";
import { type AdclickConfig, envNameOf, type WorkerRole } from "../src/config.js";
import { mapConsumer } from "../src/ingest/ingest-router.js";
import { rawWriterConsumer } from "../src/ingest/raw-writer.js";
import { PartitionLeases } from "../src/leases/partition-lease.js";
import { ensureDurable } from "../src/nats/durable-consumer.js";
import { serveLive } from "../src/query/live.js";
import { lateRepairConsumer } from "../src/recalc/late-repair.js";
import { KvRecalcProgressStore } from "../src/recalc/progress.js";
import { SnapshotStore } from "../src/snapshots/snapshot-store.js";
import { AggregateStore } from "../src/storage/aggregate-store.js";
import type { CassandraClient } from "../src/storage/cassandra-client.js";
import { applyRawRetention } from "../src/storage/raw-retention.js";
import { RawStore } from "../src/storage/raw-store.js";
import {
  type AggregatorOptions,
  type AggregatorSnapshot,
  checkRestorable,
} from "../src/windows/partition-aggregator.js";
import { type SupervisorReport, supervisorMachine } from "../supervisor/supervisor.js";

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
    const stored = await snapshots.load<{ agg: AggregatorSnapshot }>(aggregatorSnapshotKey(p));
    if (!stored) continue;
    checkRestorable(stored.snapshot.state.agg, { ...aggregator, partition: p }, (option) =>
      envNameOf(option as keyof AdclickConfig),
    );
  }
}

export interface Worker {
  /** This worker's name (host and pid), shown by admin commands. */
  name: string;
  supervisor: ReturnType<typeof createActor<typeof supervisorMachine>>;
  /** The live aggregator of each partition this worker runs (queries read open minutes). */
  aggregators: Map<number, () => AggregatorRunner | undefined>;
  /** Stops every actor in reverse order (each finishes its batch; aggregators snapshot). */
  stop(): Promise<void>;
}

/**
 * The composition root of one worker process: builds the stores and the actors' child specs
 * for the roles it plays, and starts them under a supervisor.
 */
export async function startWorker(
  nc: NatsConnection,
  cql: CassandraClient,
  c: AdclickConfig,
  roles: WorkerRoles,
  report: (r: SupervisorReport) => void = () => {},
): Promise<Worker> {
  const js = jetstream(nc);
  const jsm = await jetstreamManager(nc);
  const rawStore = new RawStore(cql);
  const aggregateStore = new AggregateStore(cql);
  await rawStore.createSchema();
  if (c.rawRetentionDays > 0) await applyRawRetention(cql, c.rawRetentionDays);
  await aggregateStore.createSchema();
  if (roles.map) await ensureDurable(jsm, mapConsumer());
  if (roles.rawWriter) await ensureDurable(jsm, rawWriterConsumer());
  if (roles.aggregateWriter) await ensureDurable(jsm, aggregateWriterConsumer());
  if (roles.lateRepair) await ensureDurable(jsm, lateRepairConsumer());
  const snapshots = new SnapshotStore(await new Kvm(js).open(KV_BUCKETS.snapshots));
  const workerName = c.workerId ?? `${hostname()}/${process.pid}`;
  const leases = new PartitionLeases(
    await new Kvm(js).open(KV_BUCKETS.leases),
    workerName,
    LEASE_TTL_MS,
  );

  // Start order: sinks first, sources last (stop runs in reverse: sources stop first).
  const specs: ChildSpec[] = [];
  if (roles.aggregateWriter)
    specs.push(aggregateWriterChild({ js, store: aggregateStore }, { id: "aggregate-writer" }));
  if (roles.reducer) {
    specs.push(
      reducerChild(js, {
        id: "reducer",
        partitions: c.partitions,
        n: c.topK,
        replayMs: 3 * 3_600_000,
        overdueAfterMs: c.allowedLatenessMs + c.idleTimeoutMs + 30_000,
      }),
    );
  }
  const aggregators = new Map<number, () => AggregatorRunner | undefined>();
  const aggregator = aggregatorOptionsOf(c);
  await checkSnapshots(snapshots, roles.partitions, aggregator);
  for (const p of roles.partitions) {
    const spec = aggregatorChild(
      { js, snapshots, leases },
      { id: `aggregator-${p}`, partition: p, aggregator },
    );
    aggregators.set(p, spec.current);
    specs.push(spec);
  }
  if (roles.lateRepair) {
    specs.push(
      lateRepairChild(
        {
          js,
          raw: rawStore,
          aggregates: aggregateStore,
          versions: new KvRecalcProgressStore(await new Kvm(js).open(KV_BUCKETS.snapshots)),
        },
        { id: "late-repair", partitions: c.partitions, dimensions: c.dimensions, topK: c.topK },
      ),
    );
  }
  if (roles.rawWriter) specs.push(rawWriterChild({ js, store: rawStore }, { id: "raw-writer" }));
  if (roles.map) specs.push(mapChild(js, { id: "map", partitions: c.partitions }));

  const supervisor = createActor(supervisorMachine, { input: { specs, report } });
  supervisor.start();
  const live = serveLive(nc, roles.partitions, (p, fromMs, toMs) =>
    aggregators.get(p)?.()?.liveView(fromMs, toMs),
  );
  return {
    name: workerName,
    supervisor,
    aggregators,
    async stop() {
      live.close();
      supervisor.send({ type: "STOP" });
      await new Promise<void>((resolve) => {
        if (supervisor.getSnapshot().status === "done") return resolve();
        const sub = supervisor.subscribe({
          next: (s) => {
            if (s.status === "done") {
              sub.unsubscribe();
              resolve();
            }
          },
          complete: () => resolve(),
        });
      });
    },
  };
}
