import { type Service, type ServiceMsg, Svcm } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { Counter } from "prom-client";
import { registry } from "../metrics/registry.js";
import type { QueryEngine } from "./engine.js";
import {
  parseCountRequest,
  parseJsonBody,
  parseSeriesRequest,
  parseTopRequest,
  QueryError,
  type QueryLimits,
} from "./request.js";

const queryErrors = new Counter({
  name: "adclick_query_errors_total",
  help: "Query requests answered with an error, by endpoint and code",
  labelNames: ["endpoint", "code"] as const,
  registers: [registry],
});

export const QUERY_SERVICE = "adclick";

/**
 * The query API as a NATS micro service (`$SRV.PING/INFO/STATS` discovery works):
 * adclick.query.count, adclick.query.top, adclick.query.series — JSON in, JSON out.
 * Errors are service errors (Nats-Service-Error-Code 400 / 503 headers) with a JSON body
 * {"error": {"code", "message"}} saying what to fix; nothing a client sends crashes it.
 */
export async function startQueryService(
  nc: NatsConnection,
  engine: QueryEngine,
  limits: QueryLimits,
  now: () => number = Date.now,
): Promise<Service> {
  const service = await new Svcm(nc).add({
    name: QUERY_SERVICE,
    version: "0.1.0",
    description: "AdClick queries: clicks of an ad, top N ads, per-minute series; exact",
    queue: "adclick-query",
  });
  const group = service.addGroup("adclick.query");
  const endpoint = (name: string, answer: (body: unknown) => Promise<unknown>) => {
    group.addEndpoint(name, {
      handler: (err: Error | null, msg: ServiceMsg) => {
        if (err) return;
        void (async () => {
          try {
            const reply = await answer(parseJsonBody(msg.data));
            msg.respond(JSON.stringify(reply));
          } catch (e) {
            const qe =
              e instanceof QueryError
                ? e
                : new QueryError(
                    "UNAVAILABLE",
                    `the query could not be answered: ${(e as Error).message ?? e}`,
                  );
            queryErrors.inc({ endpoint: name, code: qe.queryCode });
            msg.respondError(
              qe.status,
              qe.message,
              JSON.stringify({ error: { code: qe.queryCode, message: qe.message } }),
            );
          }
        })();
      },
      metadata: { description: `adclick.query.${name}` },
    });
  };
  endpoint("count", (b) => engine.count(parseCountRequest(b, now(), limits)));
  endpoint("top", (b) => engine.top(parseTopRequest(b, now(), limits)));
  endpoint("series", (b) => engine.series(parseSeriesRequest(b, now(), limits)));
  return service;
}
