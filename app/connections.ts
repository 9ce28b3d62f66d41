import {
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KV_BUCKETS } from "../nats/layout.js";
import { retryForMs } from "../src/backoff.js";
import type { AdclickConfig } from "../src/config.js";
import { connectNats } from "../src/nats/connect.js";
import {
  type CassandraClient,
  createCassandraClient,
  ensureKeyspace,
} from "../src/storage/cassandra-client.js";
import { ensureLayout } from "./cli/layout.js";
import { withDeadline } from "./shutdown.js";

/** A NATS connection with the configuration's servers and credentials: the one way we connect. */
export function natsFor(c: AdclickConfig, name: string): Promise<NatsConnection> {
  return connectNats({
    servers: c.natsServers,
    name,
    user: c.natsUser,
    pass: c.natsPassword,
    pingIntervalMs: c.natsPingIntervalMs,
  });
}

/**
 * What one process connects to, built once: NATS (JetStream and its KV buckets) and
 * Cassandra (AdClick's keyspace). `close()` lets go of both, each within `withinMs`: a server
 * that is down or frozen must not keep the process from exiting.
 */
export interface Connections {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
  cql: CassandraClient;
  kv: { snapshots: KV; leases: KV; hot: KV };
  close(withinMs?: number): Promise<void>;
}

/**
 * Lets go of NATS (drained where the server answers, closed outright where it does not: a
 * failed drain leaves the client reconnecting forever) and of Cassandra, at once, each within
 * `withinMs`.
 */
export async function closeNats(nc: NatsConnection, withinMs = 1500): Promise<void> {
  await withDeadline(nc.drain(), withinMs, "draining the NATS connection").catch(() =>
    nc.close().catch(() => {}),
  );
}

async function closeBoth(nc: NatsConnection, cql: CassandraClient, withinMs: number) {
  await Promise.allSettled([
    closeNats(nc, withinMs),
    withDeadline(cql.shutdown(), withinMs, "closing the Cassandra client"),
  ]);
}

export async function openConnections(c: AdclickConfig, name: string): Promise<Connections> {
  const nc = await natsFor(c, name);
  let cql: CassandraClient | undefined;
  try {
    const admin = createCassandraClient(c);
    try {
      await retryForMs(
        () => ensureKeyspace(admin, c.cassandraKeyspace, c.cassandraReplicationFactor),
        { forMs: 60_000 },
      );
    } finally {
      await admin.shutdown().catch(() => {});
    }
    cql = createCassandraClient(c, c.cassandraKeyspace);
    // A NATS leader election (a node down) answers "no responders" for a few seconds.
    await retryForMs(() => ensureLayout(nc, c), { forMs: 60_000 });
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const kvm = new Kvm(js);
    const kv = {
      snapshots: await kvm.open(KV_BUCKETS.snapshots),
      leases: await kvm.open(KV_BUCKETS.leases),
      hot: await kvm.open(KV_BUCKETS.hot),
    };
    const client = cql;
    return {
      nc,
      js,
      jsm,
      cql: client,
      kv,
      close: (withinMs = 1500) => closeBoth(nc, client, withinMs),
    };
  } catch (err) {
    await cql?.shutdown().catch(() => {});
    await nc.close().catch(() => {});
    throw err;
  }
}
