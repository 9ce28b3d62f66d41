import { type Service, type ServiceMsg, Svcm } from "@nats-io/services";
import type { NatsConnection } from "@nats-io/transport-node";
import { Counter } from "prom-client";
import { AdclickError, messageOf } from "../errors.js";
import { registry } from "../metrics/registry.js";
import { respondWithError } from "../wire/service-errors.js";
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
 * {"error": {"code", "message"}} saying what to fix (src/wire/service-errors.ts); nothing a
 * client sends crashes it.
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
            // A catalogue error answers with its code; anything else (Cassandra, NATS) means
            // the query cannot be answered now.
            const err =
              e instanceof AdclickError
                ? e
                : new QueryError(
                    "UNAVAILABLE",
                    `the query could not be answered: ${messageOf(e)}`,
                    { cause: e },
                  );
            const { code } = respondWithError(msg, err);
            queryErrors.inc({ endpoint: name, code });
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
