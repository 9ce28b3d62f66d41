import { readFileSync } from "node:fs";
import {
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import {
  credsAuthenticator,
  type NatsConnection,
  nkeyAuthenticator,
  type TlsOptions,
} from "@nats-io/transport-node";
import { KV_BUCKETS } from "../nats/layout.js";
import { inboxPrefixOf, type Role } from "../nats/permissions.js";
import { retryForMs } from "../src/backoff.js";
import type { AdclickConfig } from "../src/config.js";
import { SecurityError } from "../src/errors.js";
import { connectNats, type NatsConnectOptions, natsPermissionError } from "../src/nats/connect.js";
import {
  type CassandraClient,
  type CassandraClientSettings,
  cassandraSecurityError,
  createCassandraClient,
  ensureKeyspace,
  grantKeyspace,
  keyspaceExists,
} from "../src/storage/cassandra-client.js";
import { ensureLayout } from "./cli/layout.js";
import {
  CASSANDRA_APP_ROLE,
  cassandraAdminLoginFor,
  cassandraLoginFor,
  natsLoginFor,
} from "./infra/credentials.js";
import { withDeadline } from "./shutdown.js";

/** A TLS file a setting names, read now: a missing one is a one-line error naming the setting. */
function tlsFile(setting: string, file: string): string {
  try {
    return readFileSync(file, "utf8");
  } catch (err) {
    throw new SecurityError(
      "TLS_FAILED",
      `${setting}=${file} cannot be read: ${(err as Error).message}`,
    );
  }
}

/** How a process acting as `role` logs in to NATS, from the configuration and the credentials folder. */
export function natsLoginOptions(
  c: AdclickConfig,
  role: Role,
): Pick<
  NatsConnectOptions,
  "user" | "pass" | "authenticator" | "inboxPrefix" | "tls" | "loginSource"
> {
  const login = natsLoginFor(c, role);
  const enc = new TextEncoder();
  let tls: TlsOptions | undefined;
  if (c.natsTlsCaFile || c.natsTlsCertFile) {
    tls = {};
    if (c.natsTlsCaFile) tls.ca = tlsFile("ADCLICK_NATS_TLS_CA", c.natsTlsCaFile);
    if (c.natsTlsCertFile && c.natsTlsKeyFile) {
      tls.cert = tlsFile("ADCLICK_NATS_TLS_CERT", c.natsTlsCertFile);
      tls.key = tlsFile("ADCLICK_NATS_TLS_KEY", c.natsTlsKeyFile);
    }
  }
  return {
    // An nkey user's replies come to inboxes named after its key: the only ones AdClick's
    // permissions let it read (nats/permissions.ts). Other logins keep the usual _INBOX.
    ...(login.kind === "nkey" ? { inboxPrefix: inboxPrefixOf(login.publicKey) } : {}),
    loginSource: login.source,
    ...(tls ? { tls } : {}),
    ...(login.kind === "nkey" ? { authenticator: nkeyAuthenticator(enc.encode(login.seed)) } : {}),
    ...(login.kind === "creds"
      ? { authenticator: credsAuthenticator(enc.encode(login.creds)) }
      : {}),
    ...(login.kind === "password" ? { user: login.user, pass: login.pass } : {}),
  };
}

/**
 * A NATS connection with the configuration's servers, as `role` (its credentials, its inbox,
 * TLS where configured): the one way we connect.
 */
export function natsFor(c: AdclickConfig, name: string, role: Role): Promise<NatsConnection> {
  return connectNats({
    servers: c.natsServers,
    name,
    pingIntervalMs: c.natsPingIntervalMs,
    ...natsLoginOptions(c, role),
  });
}

/** How AdClick reaches Cassandra: contact points, its login, TLS where configured. */
export function cassandraSettingsFor(c: AdclickConfig): CassandraClientSettings {
  const login = cassandraLoginFor(c);
  const tls =
    c.cassandraTlsCaFile || c.cassandraTlsCertFile
      ? {
          ...(c.cassandraTlsCaFile
            ? { ca: tlsFile("ADCLICK_CASSANDRA_TLS_CA", c.cassandraTlsCaFile) }
            : {}),
          ...(c.cassandraTlsCertFile && c.cassandraTlsKeyFile
            ? {
                cert: tlsFile("ADCLICK_CASSANDRA_TLS_CERT", c.cassandraTlsCertFile),
                key: tlsFile("ADCLICK_CASSANDRA_TLS_KEY", c.cassandraTlsKeyFile),
              }
            : {}),
        }
      : undefined;
  return {
    cassandraContactPoints: c.cassandraContactPoints,
    cassandraLocalDataCenter: c.cassandraLocalDataCenter,
    cassandraConsistency: c.cassandraConsistency,
    ...(login ? { login: { username: login.username, password: login.password } } : {}),
    ...(tls ? { tls } : {}),
  };
}

/**
 * Makes sure AdClick's keyspace exists and its role may use it. Where this machine holds
 * AdClick's Cassandra superuser (a node `adclick up` or the tests started), that role creates
 * the keyspace and grants it to the app role; elsewhere the keyspace is created only when the
 * configured login may (the operator usually creates it: README "Security").
 */
export async function ensureAppKeyspace(c: AdclickConfig): Promise<void> {
  const settings = cassandraSettingsFor(c);
  const where = c.cassandraContactPoints.join(",");
  const admin = cassandraAdminLoginFor(c);
  const client = createCassandraClient(admin ? { ...settings, login: admin } : settings);
  try {
    await retryForMs(
      async () => {
        try {
          if (admin) {
            await ensureKeyspace(client, c.cassandraKeyspace, c.cassandraReplicationFactor);
            await grantKeyspace(client, c.cassandraKeyspace, CASSANDRA_APP_ROLE);
          } else if (!(await keyspaceExists(client, c.cassandraKeyspace))) {
            await ensureKeyspace(client, c.cassandraKeyspace, c.cassandraReplicationFactor);
          }
        } catch (err) {
          throw (
            cassandraSecurityError(
              err,
              where,
              admin ? "the credentials folder (adclick_admin)" : cassandraLoginFor(c)?.source,
              settings.tls !== undefined,
            ) ?? err
          );
        }
      },
      { forMs: 60_000 },
    );
  } finally {
    await client.shutdown().catch(() => {});
  }
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

/**
 * NATS and Cassandra for a process of `role` (the worker's, or an operator's for replay and
 * reconcile): the keyspace and the stream layout are made sure of first.
 */
export async function openConnections(
  c: AdclickConfig,
  name: string,
  role: Role = "worker",
): Promise<Connections> {
  const nc = await natsFor(c, name, role);
  let cql: CassandraClient | undefined;
  try {
    await ensureAppKeyspace(c);
    const settings = cassandraSettingsFor(c);
    cql = createCassandraClient(settings, c.cassandraKeyspace);
    // Logged in now: a refused login is one line at start-up, not an actor failing later.
    await cql.connect().catch((err: unknown) => {
      throw (
        cassandraSecurityError(
          err,
          c.cassandraContactPoints.join(","),
          cassandraLoginFor(c)?.source,
          settings.tls !== undefined,
        ) ?? err
      );
    });
    // A NATS leader election (a node down) answers "no responders" for a few seconds.
    await retryForMs(
      () =>
        ensureLayout(nc, c).catch((err: unknown) => {
          throw natsPermissionError(err, `${name} (${role}) applying the stream layout`) ?? err;
        }),
      { forMs: 60_000 },
    );
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
