/**
 * Query latency under concurrent load: `concurrency` clients send one query class at a time
 * to the query service over NATS request-reply, for `seconds` each; every reply over final
 * data is checked against the recount (a wrong answer fails the benchmark like a wrong
 * count in the store).
 */
import type { NatsConnection } from "@nats-io/transport-node";
import { ONE_MINUTE_MS } from "../../src/model.js";
import { adIdOf, type Truth } from "./book.js";

export interface QueryClassResult {
  name: string;
  requests: number;
  errors: number;
  wrong: number;
  p50Ms: number;
  p99Ms: number;
  maxMs: number;
  perSec: number;
}

export function percentile(sorted: readonly number[], q: number): number {
  if (sorted.length === 0) return Number.NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[i] as number;
}

const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");

interface QueryClass {
  name: string;
  subject: string;
  /** The i-th request body and, over final data, the reply it must get. */
  make(i: number): { body: unknown; expect?: (reply: Record<string, unknown>) => boolean };
}

/** The query classes: count and top-100, M = 1, 5, 60, without filter, by country, by user. */
export function queryClasses(
  truth: Truth | undefined,
  toMs: number | undefined,
  hotRanks: readonly number[],
): QueryClass[] {
  const out: QueryClass[] = [];
  const country = truth?.countries[0] ?? "USA";
  for (const M of [1, 5, 60]) {
    const range = (): Record<string, unknown> =>
      toMs === undefined ? { minutes: M } : { from: iso(toMs - M * ONE_MINUTE_MS), to: iso(toMs) };
    const fromMs = toMs === undefined ? 0 : toMs - M * ONE_MINUTE_MS;
    for (const filter of ["none", "country", "user"] as const) {
      const user = (i: number) => i % 8;
      out.push({
        name: `count M=${M}${filter === "none" ? "" : ` ${filter}`}`,
        subject: "adclick.query.count",
        make(i) {
          let rank = hotRanks[i % hotRanks.length] as number;
          if (filter === "user" && truth) {
            const clicks = truth.userClicks.get(user(i)) ?? [];
            const c = clicks.find(([, m]) => m >= fromMs && m < (toMs as number));
            if (c) rank = c[0];
          }
          const body = {
            ad_id: adIdOf(rank),
            ...range(),
            ...(filter === "country" ? { filter: { country } } : {}),
            ...(filter === "user" ? { filter: { user_id: `user-${user(i)}` } } : {}),
          };
          if (!truth || toMs === undefined) return { body };
          const want =
            filter === "user"
              ? truth.userCount(user(i), fromMs, toMs, rank)
              : truth.count(rank, fromMs, toMs, filter === "country" ? 0 : undefined);
          return { body, expect: (r) => r.count === want && r.final === true };
        },
      });
      const wantCache = new Map<string, string>();
      out.push({
        name: `top-100 M=${M}${filter === "none" ? "" : ` ${filter}`}`,
        subject: "adclick.query.top",
        make(i) {
          const body = {
            n: 100,
            ...range(),
            ...(filter === "country" ? { filter: { country } } : {}),
            ...(filter === "user" ? { filter: { user_id: `user-${user(i)}` } } : {}),
          };
          if (!truth || toMs === undefined) return { body };
          const key = JSON.stringify(body);
          let wantText = wantCache.get(key);
          if (wantText === undefined) {
            const want =
              filter === "user"
                ? truth.userTop(user(i), 100, fromMs, toMs)
                : truth.top(100, fromMs, toMs, filter === "country" ? 0 : undefined);
            wantText = JSON.stringify(want.map(([ad_id, count]) => ({ ad_id, count })));
            wantCache.set(key, wantText);
          }
          return {
            body,
            expect: (r) => r.final === true && JSON.stringify(r.ads) === wantText,
          };
        },
      });
    }
  }
  return out;
}

/**
 * Runs every class for `seconds` with `concurrency` clients in flight; returns latency
 * percentiles per class. Expected replies are computed once per distinct body.
 */
export async function runQueryLoad(
  nc: NatsConnection,
  classes: QueryClass[],
  o: { concurrency: number; seconds: number; timeoutMs: number },
  log: (m: string) => void,
): Promise<QueryClassResult[]> {
  const results: QueryClassResult[] = [];
  for (const qc of classes) {
    const lat: number[] = [];
    let errors = 0;
    let wrong = 0;
    let firstWrong = "";
    const prepared = Array.from({ length: 16 }, (_, i) => {
      const q = qc.make(i);
      return { text: JSON.stringify(q.body), expect: q.expect };
    });
    const deadline = performance.now() + o.seconds * 1000;
    let next = 0;
    const started = performance.now();
    const client = async () => {
      while (performance.now() < deadline) {
        const q = prepared[next++ % prepared.length] as (typeof prepared)[number];
        const t0 = performance.now();
        try {
          const msg = await nc.request(qc.subject, q.text, { timeout: o.timeoutMs });
          const ms = performance.now() - t0;
          if (msg.headers?.get("Nats-Service-Error-Code")) {
            errors++;
            continue;
          }
          lat.push(ms);
          if (q.expect) {
            const reply = msg.json<Record<string, unknown>>();
            if (!q.expect(reply)) {
              wrong++;
              if (!firstWrong) firstWrong = `${q.text} → ${msg.string().slice(0, 300)}`;
            }
          }
        } catch {
          errors++;
        }
      }
    };
    await Promise.all(Array.from({ length: o.concurrency }, client));
    const elapsed = (performance.now() - started) / 1000;
    lat.sort((a, b) => a - b);
    const r: QueryClassResult = {
      name: qc.name,
      requests: lat.length,
      errors,
      wrong,
      p50Ms: round(percentile(lat, 0.5)),
      p99Ms: round(percentile(lat, 0.99)),
      maxMs: round(lat[lat.length - 1] ?? Number.NaN),
      perSec: Math.round(lat.length / elapsed),
    };
    results.push(r);
    log(
      `  ${qc.name.padEnd(24)} ${String(r.requests).padStart(6)} req  p50 ${r.p50Ms} ms  p99 ${r.p99Ms} ms  max ${r.maxMs} ms${errors ? `  ${errors} errors` : ""}${wrong ? `  ${wrong} WRONG: ${firstWrong}` : ""}`,
    );
  }
  return results;
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}
