import { jetstream } from "@nats-io/jetstream";
import type { AdclickConfig } from "../src/config.js";
import { startLiveGenerator } from "../src/gen/live-generator.js";
import { registry } from "../src/metrics/registry.js";
import { parseTopRequest } from "../src/query/request.js";
import { ensureLocalStack } from "./infra/local-stack.js";
import { type Node, startNode } from "./node.js";
import { onShutdownSignals } from "./shutdown.js";
import { allRoles } from "./worker.js";

export interface UpOptions {
  /** Exit after reporting healthy instead of staying in the foreground. */
  once: boolean;
  /** Synthetic clicks per second (0: none). */
  generate: number;
  /** Seconds between live-view refreshes. */
  refreshSeconds: number;
  /** Start a local 3-node NATS cluster (streams and KV buckets at R3) instead of one server. */
  natsCluster?: boolean;
}

async function counterValue(name: string): Promise<number> {
  const m = registry.getSingleMetric(name);
  if (!m) return 0;
  return (await m.get()).values.reduce((n, v) => n + v.value, 0);
}

/** The live terminal view: top ads of the last minute, events/s, lag. */
async function liveView(
  node: Node,
  c: AdclickConfig,
  prev: { events: number; atMs: number },
): Promise<string> {
  const top = await node.engine.top(
    parseTopRequest({ n: 10, minutes: 1 }, Date.now(), { maxRangeMinutes: 60, maxN: 100 }),
  );
  const events = await counterValue("adclick_aggregator_events_total");
  const now = Date.now();
  const rate = ((events - prev.events) * 1000) / Math.max(1, now - prev.atMs);
  prev.events = events;
  prev.atMs = now;
  const rows = (await node.worker.status()).children.map((child) => child.status ?? {});
  const lag = rows.reduce(
    (n, s) => n + Number((s as { lagMessages?: number }).lagMessages ?? 0),
    0,
  );
  const lines = [
    `AdClick — ${new Date(now).toISOString()}  ${c.partitions} partitions  ${Math.round(rate)} events/s counted  raw-writer lag ${lag} msgs`,
    `top ads ${top.from} → ${top.to}${top.final ? " (final)" : " (live)"}:`,
    ...top.ads.map(
      (a, i) =>
        `  ${String(i + 1).padStart(2)}. ${a.ad_id.padEnd(20)} ${String(a.count).padStart(8)}`,
    ),
  ];
  if (top.ads.length === 0) lines.push("  (no clicks in the last whole minute yet)");
  return lines.join("\n");
}

/**
 * `adclick up`: the whole local stack in the foreground. Starts nats-server and Cassandra
 * where none answers at the configured addresses, runs every actor, the query and admin
 * services and /metrics; with --generate, synthetic clicks; a live view every few seconds.
 * Ctrl-C stops it all, and the servers it started.
 */
export async function runUp(config: AdclickConfig, o: UpOptions): Promise<void> {
  const log = (m: string) => console.log(`[up] ${m}`);
  const stack = await ensureLocalStack(config, log, { natsCluster: o.natsCluster ?? false });
  // On the cluster: every node's URL (clients move between them), every stream at R3.
  const c = stack.natsCluster
    ? { ...config, natsServers: stack.natsCluster.urls, natsReplicas: 3 }
    : config;
  if (stack.natsCluster)
    log(
      `NATS: ADCLICK_NATS_URL=${c.natsServers.join(",")} ADCLICK_NATS_REPLICAS=3 for other adclick commands`,
    );
  let node: Node | undefined;
  let generator: ReturnType<typeof startLiveGenerator> | undefined;
  let closing: Promise<void> | undefined;
  let view: ReturnType<typeof setInterval> | undefined;
  const shutdown = (why: string) => {
    closing ??= (async () => {
      log(`${why}: stopping`);
      clearInterval(view);
      await generator?.stop();
      await node?.stop();
      await stack.stop();
      log(`stopped${stack.started.length ? ` (and ${stack.started.join(", ")})` : ""}`);
    })();
    return closing;
  };
  // Ctrl-C or SIGTERM: the orderly stop above, bounded: whatever NATS and Cassandra do, the
  // process ends within 10 s, killing the servers it started if it must force its exit.
  const signals = onShutdownSignals(shutdown, {
    exit: (code) => {
      stack.killNow();
      process.exit(code);
    },
  });
  try {
    node = await startNode(c, allRoles(c), log);
  } catch (err) {
    await shutdown("start-up failed");
    signals.dispose();
    throw err;
  }
  const rs = await node.cql.execute("SELECT release_version FROM system.local");
  log(
    `healthy: nats-server ${node.nc.info?.version} at ${node.nc.getServer()}, Cassandra ${rs.rows[0]?.get("release_version")} ` +
      `keyspace ${c.cassandraKeyspace}, ${c.partitions} partitions, ${(await node.worker.status()).children.length} actors` +
      `${node.metrics ? `, metrics on :${node.metrics.port}/metrics` : ""}; query with: adclick query top --minutes 5`,
  );
  await logConsole(node, log);
  if (o.once) {
    await shutdown("--once");
    signals.dispose();
    return;
  }
  if (o.generate > 0) {
    generator = startLiveGenerator(jetstream(node.nc), {
      ratePerSecond: o.generate,
      partitions: c.partitions,
    });
    log(`generating ~${o.generate} clicks/s`);
  }
  const prev = { events: 0, atMs: Date.now() };
  view = setInterval(() => {
    if (!node) return;
    void liveView(node, c, prev)
      .then((text) => {
        if (process.stdout.isTTY) process.stdout.write(`\x1b[2J\x1b[H${text}\n\nCtrl-C stops.\n`);
        else console.log(text);
      })
      .catch((e) => log(`live view: ${e}`));
  }, o.refreshSeconds * 1000);
  void node.escalated.then((r) => {
    process.exitCode = 1;
    void signals.trigger(`supervisor escalation (${r})`);
  });
  await signals.requested;
  await shutdown("stop");
}

/** Says where the web console is served (where this process runs the query role), or why not. */
async function logConsole(node: Node, log: (m: string) => void): Promise<void> {
  const web = (await node.worker.status()).children.find((ch) => ch.id === "console-server");
  if (web?.status?.url) {
    log(
      `web console: ${String(web.status.url)}${web.status.login === "query" ? " (user query, the password in console.password of the credentials folder)" : ""}`,
    );
  } else if (web?.status?.error) log(`web console not served: ${String(web.status.error)}`);
}

/** `adclick worker`: actors and services only, against already running NATS and Cassandra. */
export async function runWorker(c: AdclickConfig): Promise<void> {
  const log = (m: string) => console.log(`[worker] ${m}`);
  const node = await startNode(c, allRoles(c), log);
  log(
    `running ${(await node.worker.status()).children.length} actors as ${node.worker.name} (roles: ${c.roles.join(",")})`,
  );
  await logConsole(node, log);
  const stop = (why: string) => {
    log(`${why}: stopping`);
    return node.stop();
  };
  const signals = onShutdownSignals(stop);
  void node.escalated.then((r) => {
    process.exitCode = 1;
    void signals.trigger(`supervisor escalation (${r})`);
  });
  await signals.requested;
  await node.stop();
  log("stopped");
}
