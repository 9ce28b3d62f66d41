import type { AdclickConfig } from "../config.js";
import { ensureLocalStack } from "../infra/local-stack.js";
import { serveMetrics } from "../metrics/registry.js";
import { connectNats } from "../nats/connect.js";
import { createCassandraClient, ensureKeyspace } from "../storage/cassandra-client.js";
import { ensureLayout } from "./layout.js";

export interface UpOptions {
  /** Exit after reporting healthy instead of staying in the foreground (used by scripts). */
  once: boolean;
}

/**
 * `adclick up`: the whole local stack in the foreground. Starts nats-server and Cassandra
 * where none answers at the configured addresses, applies the stream / KV / keyspace layout,
 * reports health, and on Ctrl-C stops what it started.
 */
export async function runUp(c: AdclickConfig, o: UpOptions): Promise<void> {
  const log = (m: string) => console.log(`[up] ${m}`);
  const stack = await ensureLocalStack(c, log);
  let closing = false;
  const shutdown = async (why: string) => {
    if (closing) return;
    closing = true;
    log(
      `${why}: stopping ${stack.started.length ? stack.started.join(", ") : "(nothing we started)"}`,
    );
    await nc.drain().catch(() => {});
    await cql.shutdown().catch(() => {});
    await metrics?.close();
    await stack.stop();
    log("stopped");
  };

  const nc = await connectNats({ servers: c.natsServers, name: "adclick-up" });
  const cql = createCassandraClient(c);
  let metrics: Awaited<ReturnType<typeof serveMetrics>> | undefined;
  try {
    const layout = await ensureLayout(nc, c);
    log(
      `JetStream layout: created [${layout.created.join(", ")}] updated [${layout.updated.join(", ")}] unchanged [${layout.unchanged.join(", ")}]`,
    );
    await ensureKeyspace(cql, c.cassandraKeyspace, c.cassandraReplicationFactor);
    const rs = await cql.execute("SELECT release_version FROM system.local");
    if (c.metricsPort > 0) metrics = await serveMetrics(c.metricsPort);
    log(
      `healthy: nats-server ${nc.info?.version} (JetStream ${nc.info?.jetstream ? "on" : "off"}) at ${nc.getServer()}, ` +
        `Cassandra ${rs.rows[0]?.get("release_version")} keyspace ${c.cassandraKeyspace}, ` +
        `${c.partitions} partitions${metrics ? `, metrics on :${metrics.port}/metrics` : ""}`,
    );
  } catch (err) {
    await shutdown("start-up failed");
    throw err;
  }
  if (o.once) {
    await shutdown("--once");
    return;
  }
  log("running; Ctrl-C stops");
  await new Promise<void>((resolve) => {
    const onSignal = (sig: string) => {
      void shutdown(sig).then(resolve);
    };
    process.once("SIGINT", () => onSignal("SIGINT"));
    process.once("SIGTERM", () => onSignal("SIGTERM"));
  });
}
