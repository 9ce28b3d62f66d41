import type { ActorRow } from "../../actors/admin-service.js";
import type { HotStatus } from "../../src/aggregate/aggregator-core.js";
import { mergeSourceSummaries, type SourceSummary } from "../../src/aggregate/source-metrics.js";
import type { AdclickConfig } from "../../src/config.js";
import { serviceErrorOf, serviceErrorText } from "../../src/wire/service-errors.js";
import { natsFor } from "../connections.js";

type Command = "status" | "actors" | "kill" | "pause" | "resume" | "snapshot";

/** Sends an admin command to every worker and prints what they answer; returns the exit code. */
export async function runAdmin(
  c: AdclickConfig,
  cmd: Command,
  id: string | undefined,
  json: boolean,
  worker?: string,
): Promise<number> {
  const nc = await natsFor(c, "adclick-admin-cli", "admin");
  try {
    const replies: unknown[] = [];
    const it = await nc.requestMany(
      `adclick.admin.${cmd}`,
      JSON.stringify(id ? { id, ...(worker ? { worker } : {}) } : {}),
      {
        maxWait: 2000,
      },
    );
    for await (const m of it) {
      const error = serviceErrorOf(m);
      if (error) {
        console.error(`adclick: ${serviceErrorText(error)}`);
        return 2;
      }
      if (m.data.length > 0) replies.push(m.json());
    }
    if (replies.length === 0) {
      console.error(
        id
          ? `adclick: no worker runs an actor "${id}" (see: adclick admin actors)`
          : "adclick: no worker answered",
      );
      return 2;
    }
    if (json) {
      console.log(JSON.stringify(cmd === "actors" ? replies.flat() : replies));
    } else if (cmd === "actors") {
      const rows = (replies.flat() as ActorRow[]).sort((a, b) => a.id.localeCompare(b.id));
      console.log(
        `${"id".padEnd(22)} ${"kind".padEnd(17)} ${"state".padEnd(11)} ${"restarts".padStart(8)}  detail`,
      );
      for (const r of rows) {
        const s = r.status ?? {};
        const detail = [
          (r.kind === "aggregator" || r.kind === "hot-shard") && s.lastSeq === undefined
            ? `standby${typeof s.standbyFor === "string" ? ` (${r.kind === "hot-shard" ? "counted" : "aggregated"} by ${s.standbyFor})` : ""}`
            : "",
          r.kind === "hot-shard"
            ? `ad ${String(s.adId)} shard ${Number(s.shard) + 1}/${String(s.shards)} of epoch ${String(s.epoch)}${s.merged ? " (merged back: keeps its minutes)" : ""}`
            : "",
          hotDetail(s.hot as HotStatus | undefined),
          s.lastSeq !== undefined ? `seq ${s.lastSeq}` : "",
          s.lagMessages !== undefined ? `lag ${s.lagMessages}` : "",
          typeof s.watermarkMs === "number" && Number.isFinite(s.watermarkMs)
            ? `watermark ${new Date(s.watermarkMs).toISOString()}`
            : "",
          typeof s.completeThroughMs === "number" &&
          typeof s.watermarkMs === "number" &&
          s.completeThroughMs < s.watermarkMs
            ? `complete through ${Number.isFinite(s.completeThroughMs) ? new Date(s.completeThroughMs).toISOString() : "-"}`
            : "",
          s.heldBy && typeof s.heldMs === "number" && s.heldMs > 0
            ? `held ${Math.round(s.heldMs / 1000)} s behind by ${(s.heldBy as { source: string }).source}`
            : "",
          typeof s.amendments === "number" && s.amendments > 0 ? `${s.amendments} amendments` : "",
          Array.isArray(s.configChanges) && s.configChanges.length > 0
            ? `configuration applied to its saved state: ${(
                s.configChanges as { option: string; stored: unknown; configured: unknown }[]
              )
                .map(
                  (c) =>
                    `${c.option} ${JSON.stringify(c.stored)} → ${JSON.stringify(c.configured)}`,
                )
                .join(", ")}`
            : "",
          typeof s.lastSnapshotAtMs === "number" && s.lastSnapshotAtMs > 0
            ? `snapshot ${Math.round((Date.now() - s.lastSnapshotAtMs) / 1000)}s ago`
            : "",
          r.lastError ? `last error: ${r.lastError}` : "",
        ].filter(Boolean);
        console.log(
          `${r.id.padEnd(22)} ${r.kind.padEnd(17)} ${r.state.padEnd(11)} ${String(r.restarts).padStart(8)}  ${detail.join(", ")}`,
        );
      }
    } else if (cmd === "status") {
      for (const line of formatStatus(replies as StatusReply[])) console.log(line);
    } else {
      for (const r of replies) console.log(JSON.stringify(r));
    }
    return 0;
  } finally {
    await nc.close();
  }
}

/** An aggregator's hot ads, as `admin actors` shows them. */
function hotDetail(hot: HotStatus | undefined): string {
  if (!hot) return "";
  const ads = hot.ads.map(
    (a) =>
      `${a.adId} ${Math.round(a.ratePerSec)}/s (${Math.round(a.share * 100)} %) in ${a.shards} shards`,
  );
  const merged = hot.epochs.filter((e) => e.merged).length;
  const parts = [
    ads.length > 0 ? `hot: ${ads.join("; ")}` : "",
    hot.splits > 0 ? `${hot.splits} splits, ${hot.merges} merges` : "",
    merged > 0 ? `${merged} merged epochs keep their minutes` : "",
    hot.awaiting > 0 ? `${hot.awaiting} minutes at a barrier` : "",
  ].filter(Boolean);
  return parts.join(", ");
}

/** What one worker answers to `adclick.admin.status`. */
interface StatusReply {
  worker: string;
  supervisor: unknown;
  actors: number;
  running: number;
  restarts: number;
  uptimeSeconds: number;
  rssBytes: number;
  sources?: SourceSummary[];
}

/** An event time to the second (sources' progress: milliseconds are noise here). */
const isoOrDash = (ms: number | null) =>
  ms === null ? "(nothing yet)" : `${new Date(ms).toISOString().slice(0, 19)}Z`;

/** Every worker on a line, then every source with its progress, standing and lag. */
export function formatStatus(replies: readonly StatusReply[]): string[] {
  const lines: string[] = [];
  for (const r of [...replies].sort((a, b) => a.worker.localeCompare(b.worker))) {
    lines.push(
      `worker ${r.worker}: ${typeof r.supervisor === "string" ? r.supervisor : JSON.stringify(r.supervisor)}, ` +
        `${r.running}/${r.actors} actors running, ${r.restarts} restarts, up ${r.uptimeSeconds} s, ` +
        `${Math.round(r.rssBytes / 1_048_576)} MB`,
    );
  }
  const sources = mergeSourceSummaries(replies.map((r) => r.sources ?? []));
  if (sources.length === 0) {
    lines.push("sources: none heard from yet");
    return lines;
  }
  lines.push(
    "sources (event time each has reached; lag: how far behind the most advanced source of its partitions):",
  );
  const w = Math.max(6, ...sources.map((s) => s.source.length));
  lines.push(`  ${"source".padEnd(w)}  ${"standing".padEnd(9)}  ${"progress".padEnd(20)}  lag`);
  for (const s of sources) {
    lines.push(
      `  ${s.source.padEnd(w)}  ${s.standing.padEnd(9)}  ${isoOrDash(s.progressMs).padEnd(20)}  ${Math.round(s.lagMs / 1000)} s`,
    );
  }
  return lines;
}

/** `adclick admin replay|reconcile`: runs the job inside the cluster (one worker) and prints its report. */
export async function runAdminJob(
  c: AdclickConfig,
  kind: "replay" | "reconcile",
  body: Record<string, unknown>,
  timeoutMs: number,
): Promise<number> {
  const nc = await natsFor(c, "adclick-admin-cli", "admin");
  try {
    const m = await nc.request(`adclick.admin.${kind}`, JSON.stringify(body), {
      timeout: timeoutMs,
    });
    const error = serviceErrorOf(m);
    if (error) {
      console.error(`adclick: ${serviceErrorText(error)}`);
      return 2;
    }
    const report = m.json<Record<string, unknown>>();
    console.log(JSON.stringify(report, null, 2));
    return kind === "reconcile" && !body.repair && Number(report.mismatchCount ?? 0) > 0 ? 1 : 0;
  } finally {
    await nc.close();
  }
}
