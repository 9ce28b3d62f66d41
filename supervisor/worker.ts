import { hostname } from "node:os";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { createActor } from "xstate";
import { aggregateWriterChild } from "../actors/aggregate-writer.js";
import { aggregatorChild } from "../actors/aggregator.js";
import type { ChildSpec } from "../actors/loop-machine.js";
import { mapChild } from "../actors/map.js";
import { rawWriterChild } from "../actors/raw-writer.js";
import { reducerChild } from "../actors/reducer.js";
import { KV_BUCKETS, LEASE_TTL_MS } from "../nats/layout.js";
import { aggregateWriterConsumer } from "../src/aggregate/aggregate-writer.js";
import type { AggregatorRunner } from "../src/aggregate/aggregator-runner.js";
import type { AdclickConfig, WorkerRole } from "../src/config.js";
import { mapConsumer } from "../src/ingest/ingest-router.js";
import { rawWriterConsumer } from "../src/ingest/raw-writer.js";
import { PartitionLeases } from "../src/leases/partition-lease.js";
import { ensureDurable } from "../src/nats/durable-consumer.js";
import { serveLive } from "../src/query/live.js";
import { SnapshotStore } from "../src/snapshots/snapshot-store.js";
import { AggregateStore } from "../src/storage/aggregate-store.js";
import type { CassandraClient } from "../src/storage/cassandra-client.js";
import { applyRawRetention } from "../src/storage/raw-retention.js";
import { RawStore } from "../src/storage/raw-store.js";
import { type SupervisorReport, supervisorMachine } from "./supervisor.js";

export interface WorkerRoles {
  map: boolean;
  rawWriter: boolean;
  /** Partitions whose aggregators this worker runs. */
  partitions: number[];
  reducer: boolean;
  aggregateWriter: boolean;
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
    query: has("query"),
  };
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
  for (const p of roles.partitions) {
    const spec = aggregatorChild(
      { js, snapshots, leases },
      {
        id: `aggregator-${p}`,
        partition: p,
        aggregator: {
          allowedLatenessMs: c.allowedLatenessMs,
          idleTimeoutMs: c.idleTimeoutMs,
          dimensions: c.dimensions,
          topK: c.topK,
          latePolicy: c.latePolicy,
        },
      },
    );
    aggregators.set(p, spec.current);
    specs.push(spec);
  }
  if (roles.rawWriter) specs.push(rawWriterChild({ js, store: rawStore }, { id: "raw-writer" }));
  if (roles.map) specs.push(mapChild(js, { id: "map", partitions: c.partitions }));

  const supervisor = createActor(supervisorMachine, { input: { specs, report } });
  supervisor.start();
  const live = serveLive(nc, roles.partitions, (p, fromMs, toMs) =>
    aggregators.get(p)?.()?.liveMinutes(fromMs, toMs),
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
