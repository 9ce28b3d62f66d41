import { type Service, type ServiceMsg, Svcm } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { summarizeSources } from "../src/aggregate/source-metrics.js";
import type { SourceView } from "../src/windows/partition-aggregator.js";
import type { Worker } from "./worker.js";

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
export function actorRows(w: Worker): ActorRow[] {
  const ctx = w.supervisor.getSnapshot().context;
  return Object.values(ctx.info).map((i) => ({
    worker: w.name,
    id: i.id,
    kind: i.kind,
    partition: i.partition,
    state: i.state,
    restarts: i.restarts,
    lastError: i.lastError,
    status: ctx.work[i.id]?.status?.(),
  }));
}

/**
 * The admin API, a second NATS micro service: adclick.admin.{status, actors, kill, pause,
 * resume, snapshot}. Every worker serves it (no queue group): list commands are answered by
 * each worker (the CLI gathers the replies); commands naming an actor are answered only by
 * the worker that runs it. Once security lands, these subjects are for the admin user only.
 */
/** Runs a recalculation job (replay / reconcile) for `adclick.admin.replay|reconcile`. */
export type AdminJob = (
  kind: "replay" | "reconcile",
  body: Record<string, unknown>,
) => Promise<unknown>;

export async function startAdminService(
  nc: NatsConnection,
  w: Worker,
  job?: AdminJob,
): Promise<Service> {
  const service = await new Svcm(nc).add({
    name: ADMIN_SERVICE,
    version: "0.1.0",
    description: "AdClick supervisor admin commands",
    queue: "",
  });
  const group = service.addGroup("adclick.admin");
  const owns = (id: unknown): id is string =>
    typeof id === "string" && w.supervisor.getSnapshot().context.info[id] !== undefined;
  const handle = (
    name: string,
    fn: (body: Record<string, unknown>, msg: ServiceMsg) => unknown,
  ) => {
    group.addEndpoint(name, (err, msg) => {
      if (err) return;
      let body: Record<string, unknown> = {};
      try {
        const text = msg.string();
        body = text.trim() ? (JSON.parse(text) as Record<string, unknown>) : {};
      } catch {
        msg.respondError(
          400,
          "the request is not JSON",
          JSON.stringify({ error: { code: "BAD_REQUEST" } }),
        );
        return;
      }
      try {
        const reply = fn(body, msg);
        if (reply !== undefined) msg.respond(JSON.stringify(reply));
      } catch (e) {
        msg.respondError(500, String(e));
      }
    });
  };
  handle("status", () => {
    const snap = w.supervisor.getSnapshot();
    const rows = actorRows(w);
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
      worker: w.name,
      supervisor: snap.value,
      escalation: snap.context.escalation,
      actors: rows.length,
      running: rows.filter((r) => r.state === "running").length,
      restarts: rows.reduce((n, r) => n + r.restarts, 0),
      uptimeSeconds: Math.round(process.uptime()),
      rssBytes: process.memoryUsage().rss,
      sources: summarizeSources(partitions),
    };
  });
  handle("actors", () => actorRows(w));
  for (const command of ["kill", "pause", "resume"] as const) {
    handle(command, (body) => {
      if (!owns(body.id)) return undefined; // another worker's actor (or none): stay silent
      w.supervisor.send({
        type: command.toUpperCase() as "KILL" | "PAUSE" | "RESUME",
        id: body.id,
      });
      return { worker: w.name, id: body.id, done: command };
    });
  }
  handle("snapshot", (body, msg) => {
    const ids = [...w.aggregators.entries()]
      .filter(([p]) => body.id === undefined || body.id === `aggregator-${p}`)
      .map(([p, runner]) => [`aggregator-${p}`, runner()] as const);
    if (ids.length === 0) return undefined;
    void Promise.allSettled(ids.map(([, r]) => r?.snapshotNow())).then((results) => {
      msg.respond(
        JSON.stringify({
          worker: w.name,
          snapshots: ids.map(([id], i) => ({ id, ok: results[i]?.status === "fulfilled" })),
        }),
      );
    });
    return undefined;
  });
  // Long jobs run on one worker only (a queue group), and answer when done.
  if (job) {
    for (const kind of ["replay", "reconcile"] as const) {
      group.addEndpoint(kind, {
        queue: "adclick-admin-jobs",
        handler: (err, msg) => {
          if (err) return;
          let body: Record<string, unknown>;
          try {
            body = JSON.parse(msg.string() || "{}") as Record<string, unknown>;
          } catch {
            msg.respondError(400, "the request is not JSON");
            return;
          }
          job(kind, body).then(
            (r) => msg.respond(JSON.stringify(r)),
            (e) => msg.respondError(400, e instanceof Error ? e.message : String(e)),
          );
        },
      });
    }
  }
  return service;
}
