import { ServiceErrorHeader } from "@nats-io/services";
import type { AdclickConfig } from "../src/config.js";
import { connectNats } from "../src/nats/connect.js";
import type { ActorRow } from "./admin.js";

type Command = "status" | "actors" | "kill" | "pause" | "resume" | "snapshot";

/** Sends an admin command to every worker and prints what they answer; returns the exit code. */
export async function runAdmin(
  c: AdclickConfig,
  cmd: Command,
  id: string | undefined,
  json: boolean,
): Promise<number> {
  const nc = await connectNats({
    servers: c.natsServers,
    name: "adclick-admin-cli",
    user: c.natsUser,
    pass: c.natsPassword,
  });
  try {
    const replies: unknown[] = [];
    const it = await nc.requestMany(`adclick.admin.${cmd}`, JSON.stringify(id ? { id } : {}), {
      maxWait: 2000,
    });
    for await (const m of it) {
      if (m.headers?.get(ServiceErrorHeader)) {
        console.error(`adclick: ${m.headers.get(ServiceErrorHeader)}`);
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
        `${"id".padEnd(20)} ${"kind".padEnd(17)} ${"state".padEnd(11)} ${"restarts".padStart(8)}  detail`,
      );
      for (const r of rows) {
        const s = r.status ?? {};
        const detail = [
          s.lastSeq !== undefined ? `seq ${s.lastSeq}` : "",
          s.lagMessages !== undefined ? `lag ${s.lagMessages}` : "",
          typeof s.watermarkMs === "number" && Number.isFinite(s.watermarkMs)
            ? `watermark ${new Date(s.watermarkMs).toISOString()}`
            : "",
          typeof s.lastSnapshotAtMs === "number" && s.lastSnapshotAtMs > 0
            ? `snapshot ${Math.round((Date.now() - s.lastSnapshotAtMs) / 1000)}s ago`
            : "",
          r.lastError ? `last error: ${r.lastError}` : "",
        ].filter(Boolean);
        console.log(
          `${r.id.padEnd(20)} ${r.kind.padEnd(17)} ${r.state.padEnd(11)} ${String(r.restarts).padStart(8)}  ${detail.join(", ")}`,
        );
      }
    } else {
      for (const r of replies) console.log(JSON.stringify(r));
    }
    return 0;
  } finally {
    await nc.close();
  }
}

/** `adclick admin replay|reconcile`: runs the job inside the cluster (one worker) and prints its report. */
export async function runAdminJob(
  c: AdclickConfig,
  kind: "replay" | "reconcile",
  body: Record<string, unknown>,
  timeoutMs: number,
): Promise<number> {
  const nc = await connectNats({
    servers: c.natsServers,
    name: "adclick-admin-cli",
    user: c.natsUser,
    pass: c.natsPassword,
  });
  try {
    const m = await nc.request(`adclick.admin.${kind}`, JSON.stringify(body), {
      timeout: timeoutMs,
    });
    if (m.headers?.get(ServiceErrorHeader)) {
      console.error(`adclick: ${m.headers.get(ServiceErrorHeader)}`);
      return 2;
    }
    const report = m.json<Record<string, unknown>>();
    console.log(JSON.stringify(report, null, 2));
    return kind === "reconcile" && !body.repair && Number(report.mismatchCount ?? 0) > 0 ? 1 : 0;
  } finally {
    await nc.close();
  }
}
