import { type Service, type ServiceMsg, Svcm } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { type AnyActorRef, type EventObject, fromCallback } from "xstate";
import { summarizeSources } from "../src/aggregate/source-metrics.js";
import { AdclickError } from "../src/errors.js";
import type { SourceView } from "../src/windows/partition-aggregator.js";
import { respondWithError } from "../src/wire/service-errors.js";
import type {
  ChildSpec,
  SupervisorEvent,
  SupervisorStatus,
  SupervisorStatusReply,
} from "../supervisor/supervisor.js";
import type { SnapshotDone } from "./aggregator.js";
import { serviceLogic } from "./service.js";

export const ADMIN_SERVICE = "adclick-admin";

export interface ActorRow {
  worker: string;
  id: string;
  kind: string;
  partition?: number;
  state: string;
  restarts: number;
  lastError?: string;
  status?: Record<string, unknown>;
}

/** One worker's actors, as `adclick admin actors` shows them. */
export function actorRows(worker: string, s: SupervisorStatus): ActorRow[] {
  return s.children.map((c) => ({
    worker,
    id: c.id,
    kind: c.kind,
    ...(c.partition !== undefined ? { partition: c.partition } : {}),
    state: c.state,
    restarts: c.restarts,
    ...(c.lastError ? { lastError: c.lastError } : {}),
    ...(c.status ? { status: c.status } : {}),
  }));
}

/** `adclick admin status` of one worker. */
export function workerSummary(worker: string, s: SupervisorStatus) {
  const rows = actorRows(worker, s);
  const partitions = rows.flatMap((r) =>
    r.kind === "aggregator" && Array.isArray(r.status?.sources)
      ? [
          {
            sources: r.status.sources as SourceView[],
            maxProgressMs: Number(r.status.maxProgressMs),
          },
        ]
      : [],
  );
  return {
    worker,
    supervisor: s.state,
    escalation: s.escalation,
    actors: rows.length,
    running: rows.filter((r) => r.state === "running").length,
    restarts: rows.reduce((n, r) => n + r.restarts, 0),
    uptimeSeconds: Math.round(process.uptime()),
    rssBytes: process.memoryUsage().rss,
    sources: summarizeSources(partitions),
  };
}

/** Runs a recalculation job (replay / reconcile) for `adclick.admin.replay|reconcile`. */
export type AdminJob = (
  kind: "replay" | "reconcile",
  body: Record<string, unknown>,
) => Promise<unknown>;

export interface AdminServiceOptions {
  id: string;
  /** This worker's name (host and pid). */
  worker: string;
  /** The supervised actors of this worker (commands naming others are not answered here). */
  actorIds: string[];
  /** Its aggregators (admin snapshot). */
  aggregatorIds: string[];
  job?: AdminJob;
  shutdownMs: number;
  /** How long a command waits for the actors' replies. */
  replyWithinMs?: number;
}

/**
 * The admin API, a NATS micro service: adclick.admin.{status, actors, kill, pause, resume,
 * snapshot, replay, reconcile}. Every worker serves it (no queue group): list commands are
 * answered by each worker (the CLI gathers the replies); commands naming an actor only by the
 * worker that runs it; replay and reconcile by one worker (a queue group), when done.
 *
 * Everything goes through events: status and actors ask the supervisor (STATUS, answered with
 * SUPERVISOR_STATUS to this actor); kill, pause and resume are supervisor commands; snapshot
 * sends SNAPSHOT_NOW to each aggregator through the supervisor and gathers SNAPSHOT_DONE.
 */
export function adminServiceChild(nc: NatsConnection, o: AdminServiceOptions): ChildSpec {
  const replyWithinMs = o.replyWithinMs ?? 10_000;
  const serve = fromCallback<EventObject, { id: string }>(({ system, self, receive, sendBack }) => {
    const supervisor = () => system.get("supervisor") as AnyActorRef | undefined;
    const send = (e: SupervisorEvent) => supervisor()?.send(e);
    const waiting = new Map<string, (e: EventObject) => void>();
    let next = 0;
    receive((e) => {
      const id = (e as { requestId?: string }).requestId;
      if (id !== undefined) waiting.get(id)?.(e);
    });
    /** Asks the supervisor for its status; rejects if it does not answer in time. */
    const askStatus = () =>
      new Promise<SupervisorStatus>((resolve, reject) => {
        const requestId = `s${++next}`;
        const timer = setTimeout(() => {
          waiting.delete(requestId);
          reject(new AdclickError("UNAVAILABLE", "the supervisor did not answer"));
        }, replyWithinMs);
        waiting.set(requestId, (e) => {
          waiting.delete(requestId);
          clearTimeout(timer);
          resolve((e as SupervisorStatusReply).status);
        });
        send({ type: "STATUS", replyTo: self, requestId });
      });
    /** Takes a snapshot of each aggregator; ok false for one that did not answer in time. */
    const snapshots = (ids: string[]) =>
      Promise.all(
        ids.map(
          (id) =>
            new Promise<{ id: string; ok: boolean; error?: string }>((resolve) => {
              const requestId = `n${++next}`;
              const timer = setTimeout(() => {
                waiting.delete(requestId);
                resolve({ id, ok: false, error: "no answer in time" });
              }, replyWithinMs);
              waiting.set(requestId, (e) => {
                waiting.delete(requestId);
                clearTimeout(timer);
                const d = e as SnapshotDone;
                resolve({ id, ok: d.ok, ...(d.error ? { error: d.error } : {}) });
              });
              send({
                type: "FORWARD",
                id,
                event: { type: "SNAPSHOT_NOW", replyTo: self, requestId },
              });
            }),
        ),
      );

    let service: Service | undefined;
    let stopped = false;
    start().then(
      (s) => {
        if (stopped) void s.stop().catch(() => {});
        else {
          service = s;
          sendBack({ type: "SERVICE_READY" });
        }
      },
      (error: unknown) => sendBack({ type: "SERVICE_FAILED", error }),
    );

    async function start(): Promise<Service> {
      const s = await new Svcm(nc).add({
        name: ADMIN_SERVICE,
        version: "0.1.0",
        description: "AdClick supervisor admin commands",
        queue: "",
      });
      const group = s.addGroup("adclick.admin");
      const parse = (msg: ServiceMsg): Record<string, unknown> | undefined => {
        try {
          const text = msg.string();
          return text.trim() ? (JSON.parse(text) as Record<string, unknown>) : {};
        } catch {
          respondWithError(msg, new AdclickError("BAD_REQUEST", "the request is not JSON"));
          return undefined;
        }
      };
      /** `fn` answers (a value), stays silent (undefined), or fails (an error reply with its code). */
      const handle = (
        name: string,
        fn: (body: Record<string, unknown>) => Promise<unknown> | unknown,
      ) => {
        group.addEndpoint(name, (err, msg) => {
          if (err) return;
          const body = parse(msg);
          if (!body) return;
          Promise.resolve()
            .then(() => fn(body))
            .then(
              (reply) => {
                if (reply !== undefined) msg.respond(JSON.stringify(reply));
              },
              (e: unknown) => respondWithError(msg, e),
            );
        });
      };
      // Hot-ad shards come and go (docs/hot-ads.md): every worker with aggregators may run one.
      const owns = (id: unknown): id is string =>
        typeof id === "string" &&
        (o.actorIds.includes(id) || (o.aggregatorIds.length > 0 && id.startsWith("hot-shard-")));
      handle("status", async () => workerSummary(o.worker, await askStatus()));
      handle("actors", async () => actorRows(o.worker, await askStatus()));
      for (const command of ["kill", "pause", "resume"] as const) {
        handle(command, (body) => {
          if (!owns(body.id)) return undefined; // another worker's actor (or none): stay silent
          // Several workers run an actor of that id (each offers every aggregator; all but
          // the lease holder stand by): `worker` picks one of them.
          if (body.worker !== undefined && body.worker !== o.worker) return undefined;
          send({ type: command.toUpperCase() as "KILL" | "PAUSE" | "RESUME", id: body.id });
          return { worker: o.worker, id: body.id, done: command };
        });
      }
      handle("snapshot", async (body) => {
        const ids = o.aggregatorIds.filter((id) => body.id === undefined || body.id === id);
        if (ids.length === 0) return undefined;
        return { worker: o.worker, snapshots: await snapshots(ids) };
      });
      // Long jobs run on one worker only (a queue group), and answer when done.
      const job = o.job;
      if (job) {
        for (const kind of ["replay", "reconcile"] as const) {
          group.addEndpoint(kind, {
            queue: "adclick-admin-jobs",
            handler: (err, msg) => {
              if (err) return;
              const body = parse(msg);
              if (!body) return;
              job(kind, body).then(
                (r) => msg.respond(JSON.stringify(r)),
                (e) => respondWithError(msg, e),
              );
            },
          });
        }
      }
      return s;
    }

    return () => {
      stopped = true;
      if (service) void service.stop().catch(() => {});
    };
  });
  return {
    id: o.id,
    kind: "admin-service",
    restart: "permanent",
    shutdownMs: o.shutdownMs,
    logic: serviceLogic(serve),
    input: { id: o.id },
  };
}
