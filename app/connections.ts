import {
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KV_BUCKETS } from "../nats/layout.js";
import type { AdclickConfig } from "../src/config.js";
import { AdclickError } from "../src/errors.js";
import { connectNats } from "../src/nats/connect.js";
import {
  type CassandraClient,
  createCassandraClient,
  ensureKeyspace,
} from "../src/storage/cassandra-client.js";
import { ensureLayout } from "./cli/layout.js";

/** A NATS connection with the configuration's servers and credentials: the one way we connect. */
export function natsFor(c: AdclickConfig, name: string): Promise<NatsConnection> {
  return connectNats({ servers: c.natsServers, name, user: c.natsUser, pass: c.natsPassword });
}

/** Resolves `p`, or rejects with SHUTDOWN_TIMEOUT after `ms` (the work itself is left behind). */
export function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new AdclickError("SHUTDOWN_TIMEOUT", `${what} did not finish within ${ms} ms`)),
      ms,
    );
    timer.unref?.();
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
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
  kv: { snapshots: KV; leases: KV };
  close(withinMs?: number): Promise<void>;
}

export async function openConnections(c: AdclickConfig, name: string): Promise<Connections> {
  const nc = await natsFor(c, name);
  let cql: CassandraClient | undefined;
  try {
    const admin = createCassandraClient(c);
    try {
      await ensureKeyspace(admin, c.cassandraKeyspace, c.cassandraReplicationFactor);
    } finally {
      await admin.shutdown().catch(() => {});
    }
    cql = createCassandraClient(c, c.cassandraKeyspace);
    await ensureLayout(nc, c);
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const kvm = new Kvm(js);
    const kv = {
      snapshots: await kvm.open(KV_BUCKETS.snapshots),
      leases: await kvm.open(KV_BUCKETS.leases),
    };
    const client = cql;
    return {
      nc,
      js,
      jsm,
      cql: client,
      kv,
      async close(withinMs = 3000) {
        // Drain where the server answers; close outright where it does not.
        await within(nc.drain(), withinMs, "draining the NATS connection").catch(() =>
          nc.close().catch(() => {}),
        );
        await within(client.shutdown(), withinMs, "closing the Cassandra client").catch(() => {});
      },
    };
  } catch (err) {
    await cql?.shutdown().catch(() => {});
    await nc.close().catch(() => {});
    throw err;
  }
}
