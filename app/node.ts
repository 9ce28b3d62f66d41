import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { Service } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { Counter } from "prom-client";
import { KV_BUCKETS } from "../nats/layout.js";
import type { AdclickConfig } from "../src/config.js";
import { type MetricsServer, registry, serveMetrics } from "../src/metrics/registry.js";
import { connectNats } from "../src/nats/connect.js";
import { QueryEngine } from "../src/query/engine.js";
import { startQueryService } from "../src/query/service.js";
import { KvRecalcProgressStore } from "../src/recalc/progress.js";
import { natsLateEvents, reconcileRange, startReconcileSchedule } from "../src/recalc/reconcile.js";
import { CassandraAggregateEraser, replayRange } from "../src/recalc/replay.js";
import { AggregateStore } from "../src/storage/aggregate-store.js";
import {
  type CassandraClient,
  createCassandraClient,
  ensureKeyspace,
} from "../src/storage/cassandra-client.js";
import { RawStore } from "../src/storage/raw-store.js";
import { startAdminService } from "./admin-service.js";
import { ensureLayout } from "./cli/layout.js";
import { parseRange } from "./cli/replay.js";
import { startWorker, type Worker, type WorkerRoles } from "./worker.js";

const actorFailures = new Counter({
  name: "adclick_actor_failures_total",
  help: "Actor failures seen by the supervisor (each is followed by a restart unless it escalates)",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const actorRestarts = new Counter({
  name: "adclick_actor_restarts_total",
  help: "Actor restarts by the supervisor",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const escalations = new Counter({
  name: "adclick_supervisor_escalations_total",
  help: "Times the supervisor gave up (restart intensity exceeded) and stopped the worker",
  registers: [registry],
});

export interface Node {
  nc: NatsConnection;
  cql: CassandraClient;
  worker: Worker;
  engine: QueryEngine;
  metrics?: MetricsServer;
  /** Resolves when the supervisor gives up (escalation): the process should exit non-zero. */
  escalated: Promise<string>;
  /** Orderly shutdown: services, then actors in reverse order, then connections. Idempotent. */
  stop(): Promise<void>;
}

/**
 * One AdClick process: connects, applies the layout, starts the worker's actors under the
 * supervisor, the live view of its partitions, the query and admin services and /metrics.
 */
export async function startNode(
  c: AdclickConfig,
  roles: WorkerRoles,
  log: (m: string) => void,
): Promise<Node> {
  const nc = await connectNats({
    servers: c.natsServers,
    name: "adclick-node",
    user: c.natsUser,
    pass: c.natsPassword,
  });
  const admin = createCassandraClient(c);
  await ensureKeyspace(admin, c.cassandraKeyspace, c.cassandraReplicationFactor);
  await admin.shutdown();
  const cql = createCassandraClient(c, c.cassandraKeyspace);
  await ensureLayout(nc, c);
  let escalate: (why: string) => void = () => {};
  const escalated = new Promise<string>((resolve) => {
    escalate = resolve;
  });
  const worker = await startWorker(nc, cql, c, roles, (r) => {
    if (r.kind === "escalated") {
      escalations.inc();
      log(`supervisor gave up: ${r.reason}`);
      escalate(r.reason);
    } else if (r.kind === "child_failed") {
      actorFailures.inc({ actor: r.id });
      log(`actor ${r.id} failed (${r.error}); restarting in ${r.restartInMs} ms`);
    } else if (r.kind === "child_restarted") {
      actorRestarts.inc({ actor: r.id });
    }
  }).catch(async (err: unknown) => {
    // Refused to start (e.g. a saved state the configuration cannot apply to): let go of
    // the connections, then say why.
    await nc.close().catch(() => {});
    await cql.shutdown().catch(() => {});
    throw err;
  });
  // The engine exists in every process (admin and `adclick up` use it); it loads its rollup
  // of the stored minutes only when queried, i.e. only where the query role runs.
  const engine = new QueryEngine(
    { nc, aggregates: new AggregateStore(cql), raw: new RawStore(cql) },
    { partitions: c.partitions, dimensions: c.dimensions },
  );
  const services: Service[] = [
    ...(roles.query
      ? [await startQueryService(nc, engine, { maxRangeMinutes: 7 * 24 * 60, maxN: c.topK })]
      : []),
    await startAdminService(nc, worker, async (kind, body) => {
      const from = String(body.from ?? "");
      const to = String(body.to ?? "");
      const { fromMs, toMs } = parseRange(from, to);
      const common = {
        rawStore: new RawStore(cql),
        aggregateStore: new AggregateStore(cql),
        eraser: new CassandraAggregateEraser(cql),
        progressStore: new KvRecalcProgressStore(
          await new Kvm(jetstream(nc)).open(KV_BUCKETS.snapshots),
        ),
        partitions: c.partitions,
        dimensions: c.dimensions,
        topK: c.topK,
        fromMs,
        toMs,
      };
      log(`admin ${kind} ${from} → ${to}${body.apply || body.repair ? " (applying)" : ""}`);
      return kind === "replay"
        ? replayRange({ ...common, apply: body.apply === true })
        : reconcileRange({
            ...common,
            repair: body.repair === true,
            lateEvents: natsLateEvents(jetstream(nc), await jetstreamManager(nc)),
            mode: "manual",
          });
    }),
  ];
  // The services' subscriptions reach the server before the node counts as started: a
  // caller told "running" may send requests at once (without this, no responders).
  await nc.flush();
  // The scheduled reconciliation runs where the reducer runs (one per deployment).
  const reconcile =
    roles.reducer && c.reconcileEveryMs > 0
      ? startReconcileSchedule({
          rawStore: new RawStore(cql),
          aggregateStore: new AggregateStore(cql),
          eraser: new CassandraAggregateEraser(cql),
          lateEvents: natsLateEvents(jetstream(nc), await jetstreamManager(nc)),
          partitions: c.partitions,
          dimensions: c.dimensions,
          topK: c.topK,
          everyMs: c.reconcileEveryMs,
          lagMs: c.reconcileLagMs,
          onReport: (r) => {
            if (r.mismatchCount > 0) {
              log(
                `reconcile ${r.range.from} → ${r.range.to}: ${r.mismatchCount} mismatches (${JSON.stringify(r.byCause)})`,
              );
            }
          },
          onError: (e) => log(`reconcile failed: ${e}`),
        })
      : undefined;
  const metrics =
    c.metricsPort > 0 ? await serveMetrics(c.metricsPort).catch(() => undefined) : undefined;
  if (c.metricsPort > 0 && !metrics)
    log(`metrics port ${c.metricsPort} is taken: /metrics not served`);
  let stopping: Promise<void> | undefined;
  return {
    nc,
    cql,
    worker,
    engine,
    metrics,
    escalated,
    stop() {
      stopping ??= (async () => {
        await Promise.allSettled(services.map((s) => s.stop()));
        await reconcile?.close();
        await worker.stop();
        await metrics?.close();
        await nc.drain().catch(() => {});
        await cql.shutdown().catch(() => {});
      })();
      return stopping;
    },
  };
}
