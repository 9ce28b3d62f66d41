import type { AdclickConfig } from "../../src/config.js";
import { serviceErrorOf, serviceErrorText } from "../../src/wire/service-errors.js";
import { natsFor } from "../connections.js";

export interface QueryCliOptions {
  ad?: string;
  n?: number;
  minutes?: number;
  from?: string;
  to?: string;
  country?: string;
  ip?: string;
  user?: string;
  json?: boolean;
  waitFinal?: boolean;
  timeout?: number;
}

/** The request body the query service expects, from CLI flags. */
export function requestBody(
  kind: "count" | "top" | "series",
  o: QueryCliOptions,
): Record<string, unknown> {
  const body: Record<string, unknown> = {};
  if (kind !== "top") body.ad_id = o.ad;
  if (kind === "top" && o.n !== undefined) body.n = o.n;
  if (o.from !== undefined || o.to !== undefined) {
    body.from = o.from;
    body.to = o.to;
  } else if (o.minutes !== undefined) body.minutes = o.minutes;
  const filter: Record<string, string> = {};
  if (o.country) filter.country = o.country;
  if (o.ip) filter.ip = o.ip;
  if (o.user) filter.user_id = o.user;
  if (Object.keys(filter).length > 0) body.filter = filter;
  return body;
}

/** How complete a reply is, in words: final or not, its revision, the sources behind. */
export function completionText(r: Record<string, unknown>): string {
  const revision = typeof r.revision === "number" ? `, revision ${r.revision}` : "";
  if (r.final) return `final${revision}`;
  const behind = (r.sources_behind ?? []) as { source: string; progress: string | null }[];
  const why =
    behind.length > 0
      ? `sources behind: ${behind.map((b) => `${b.source} at ${b.progress ?? "(nothing yet)"}`).join(", ")}`
      : "newest minutes still open or not stored yet";
  const through = r.complete_through ? `complete through ${String(r.complete_through)}; ` : "";
  return `not final${revision}: ${through}${why}`;
}

function table(kind: string, r: Record<string, unknown>): string {
  const lines = [`${String(r.from)} → ${String(r.to)}  (${completionText(r)})`];
  if (kind === "count") lines.push(`${String(r.ad_id)}: ${String(r.count)} clicks`);
  if (kind === "series") {
    for (const s of r.series as {
      minute: string;
      count: number;
      state: string;
      revision: number | null;
    }[])
      lines.push(
        `${s.minute}  ${String(s.count).padStart(10)}  ${s.state}${s.revision !== null && s.revision > 1 ? ` (revision ${s.revision})` : ""}`,
      );
  }
  if (kind === "top") {
    const ads = r.ads as { ad_id: string; count: number }[];
    lines.push(`${"rank".padStart(4)}  ${"ad_id".padEnd(24)} ${"clicks".padStart(10)}`);
    for (const [i, a] of ads.entries()) {
      lines.push(
        `${String(i + 1).padStart(4)}  ${a.ad_id.padEnd(24)} ${String(a.count).padStart(10)}`,
      );
    }
    if (ads.length === 0) lines.push("(no clicks)");
  }
  return lines.join("\n");
}

/** `adclick query count|top|series`: one request (or until final), printed; returns the exit code. */
export async function runQuery(
  c: AdclickConfig,
  kind: "count" | "top" | "series",
  o: QueryCliOptions,
): Promise<number> {
  const nc = await natsFor(c, "adclick-query-cli", "query");
  try {
    const body = JSON.stringify(requestBody(kind, o));
    const deadline = Date.now() + (o.timeout ?? 120) * 1000;
    for (;;) {
      const msg = await nc.request(`adclick.query.${kind}`, body, { timeout: 10_000 });
      const error = serviceErrorOf(msg);
      if (error) {
        console.error(`adclick: ${serviceErrorText(error)}`);
        return 2;
      }
      const reply = msg.json<Record<string, unknown>>();
      if (reply.final || !o.waitFinal || Date.now() > deadline) {
        console.log(o.json ? JSON.stringify(reply) : table(kind, reply));
        return reply.final || !o.waitFinal ? 0 : 3;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
  } finally {
    await nc.close();
  }
}
