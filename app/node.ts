import { Counter } from "prom-client";
import { type Actor, createActor, fromCallback } from "xstate";
import type { AdclickConfig } from "../src/config.js";
import { AdclickError } from "../src/errors.js";
import { type MetricsServer, registry, serveMetrics } from "../src/metrics/registry.js";
import { QueryEngine } from "../src/query/engine.js";
import {
  type SupervisorStatus,
  type SupervisorStatusReply,
  supervisorMachine,
} from "../supervisor/supervisor.js";
import { type Connections, openConnections } from "./connections.js";
import { withDeadline } from "./shutdown.js";
import { prepareStores, type WorkerRoles, workerChildren, workerNameOf } from "./worker.js";

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
const actorKills = new Counter({
  name: "adclick_actor_shutdown_kills_total",
  help: "Actors stopped outright because their orderly stop took longer than their shutdown time",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const escalations = new Counter({
  name: "adclick_supervisor_escalations_total",
  help: "Times the supervisor gave up (restart intensity exceeded) and stopped the worker",
  registers: [registry],
});

export interface Worker {
  /** This worker's name (host and pid), shown by admin commands. */
  name: string;
  supervisor: Actor<typeof supervisorMachine>;
  /** The partitions whose aggregators this worker offers (it runs those whose lease it holds). */
  partitions: number[];
  /** The supervisor's status, asked by event (STATUS → SUPERVISOR_STATUS). */
  status(): Promise<SupervisorStatus>;
}

export interface Node {
  nc: Connections["nc"];
  cql: Connections["cql"];
  worker: Worker;
  engine: QueryEngine;
  metrics?: MetricsServer;
  /** Resolves when the supervisor gives up (escalation): the process should exit non-zero. */
  escalated: Promise<string>;
  /**
   * Orderly shutdown: every actor (each within the configured shutdown time), then the
   * connections (each within a few seconds). Idempotent; bounded whatever the servers do.
   */
  stop(): Promise<void>;
}

/** Asks a supervisor for its status (a stopped one: from its last state). */
export function askStatus(
  supervisor: Actor<typeof supervisorMachine>,
  ms = 5000,
): Promise<SupervisorStatus> {
  const snap = supervisor.getSnapshot();
  if (snap.status !== "active") {
    return Promise.resolve({
      state: snap.value === "escalated" ? "escalated" : "stopped",
      ...(snap.context.escalation ? { escalation: snap.context.escalation } : {}),
      children: Object.values(snap.context.children).map(({ history: _h, ...i }) => i),
    });
  }
  return new Promise((resolve, reject) => {
    const inbox = createActor(
      fromCallback(({ receive }) => {
        receive((e) => {
          clearTimeout(timer);
          queueMicrotask(() => inbox.stop());
          resolve((e as SupervisorStatusReply).status);
        });
      }),
    ).start();
    const timer = setTimeout(() => {
      inbox.stop();
      reject(new AdclickError("UNAVAILABLE", "the supervisor did not answer"));
    }, ms);
    supervisor.send({ type: "STATUS", replyTo: inbox, requestId: "status" });
  });
}

/**
 * The composition root of one AdClick process: connects once (NATS, Cassandra), builds the
 * stores once, turns the roles into child specs (app/worker.ts) and starts them under one
 * supervisor — the stage actors, the live server, the query and admin services, the
 * reconciliation schedule — plus /metrics.
 */
export async function startNode(
  c: AdclickConfig,
  roles: WorkerRoles,
  log: (m: string) => void,
  now: () => number = Date.now,
): Promise<Node> {
  const conn = await openConnections(c, "adclick-node");
  const name = workerNameOf(c);
  let stores: Awaited<ReturnType<typeof prepareStores>>;
  try {
    stores = await prepareStores(conn, c, roles, name, log);
  } catch (err) {
    // Refused to start (e.g. a saved state the configuration cannot apply to): let go of
    // the connections, then say why.
    await conn.close(2000);
    throw err;
  }
  // The engine exists in every process (admin and `adclick up` use it); it loads its rollup
  // of the stored minutes only when queried, i.e. only where the query role runs.
  const engine = new QueryEngine(
    { nc: conn.nc, aggregates: stores.aggregates, raw: stores.raw },
    { partitions: c.partitions, dimensions: c.dimensions },
  );
  const specs = workerChildren(conn, stores, c, roles, { workerName: name, engine, now, log });
  const supervisor = createActor(supervisorMachine, {
    systemId: "supervisor",
    input: { specs, now },
  });
  let escalate: (why: string) => void = () => {};
  const escalated = new Promise<string>((resolve) => {
    escalate = resolve;
  });
  supervisor.on("*", (r) => {
    switch (r.type) {
      case "escalated":
        escalations.inc();
        log(`supervisor gave up: ${r.reason}`);
        escalate(r.reason);
        break;
      case "child_failed":
        actorFailures.inc({ actor: r.id });
        log(`actor ${r.id} failed (${r.error}); restarting in ${r.restartInMs} ms`);
        break;
      case "child_restarted":
        actorRestarts.inc({ actor: r.id });
        break;
      case "child_killed":
        actorKills.inc({ actor: r.id });
        log(`actor ${r.id} did not stop within ${r.afterMs} ms: stopped outright`);
        break;
    }
  });
  supervisor.start();
  // The services' subscriptions reach the server before the node counts as started: a
  // caller told "running" may send requests at once (without this, no responders).
  await servicesReady(conn, supervisor);
  const metrics =
    c.metricsPort > 0 ? await serveMetrics(c.metricsPort).catch(() => undefined) : undefined;
  if (c.metricsPort > 0 && !metrics)
    log(`metrics port ${c.metricsPort} is taken: /metrics not served`);
  const worker: Worker = {
    name,
    supervisor,
    partitions: roles.partitions,
    status: () => askStatus(supervisor),
  };
  let stopping: Promise<void> | undefined;
  return {
    nc: conn.nc,
    cql: conn.cql,
    worker,
    engine,
    metrics,
    escalated,
    stop() {
      stopping ??= (async () => {
        // Leave the balance first: the others count this worker out and wait for its
        // partitions, which the aggregators release after their final snapshots.
        await withDeadline(
          stores.leases.balance?.leave() ?? Promise.resolve(),
          1000,
          "leaving the lease balance",
        ).catch(() => {});
        supervisor.send({ type: "STOP" });
        // The supervisor stops every child within its shutdown time; this bound only guards
        // against the supervisor itself.
        await withDeadline(
          stopped(supervisor),
          c.actorShutdownMs + 1000,
          "stopping the actors",
        ).catch((e: unknown) => log(String(e)));
        supervisor.stop();
        await metrics?.close();
        await conn.close();
      })();
      return stopping;
    },
  };
}

function stopped(supervisor: Actor<typeof supervisorMachine>): Promise<void> {
  return new Promise<void>((resolve) => {
    if (supervisor.getSnapshot().status !== "active") return resolve();
    const sub = supervisor.subscribe({
      next: (s) => {
        if (s.status !== "active") {
          sub.unsubscribe();
          resolve();
        }
      },
      complete: () => resolve(),
      error: () => resolve(),
    });
  });
}

/**
 * Waits (at most 10 s) until every service child has its NATS endpoints up (SERVICE_READY),
 * then flushes: a caller told "running" may send requests at once.
 */
async function servicesReady(
  conn: Connections,
  supervisor: Actor<typeof supervisorMachine>,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  const ready = () =>
    Object.values(supervisor.getSnapshot().children).every((child) => {
      const ctx = (
        child as { getSnapshot(): { context?: { status?: { ready?: boolean } } } }
      ).getSnapshot().context;
      return ctx?.status?.ready !== false;
    });
  while (!ready() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
  await conn.nc.flush();
}
