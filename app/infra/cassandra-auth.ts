import { randomBytes } from "node:crypto";
import type { ConnectionOptions } from "node:tls";
import cassandra from "cassandra-driver";
import { SecurityError } from "../../src/errors.js";
import { cassandraSecurityError } from "../../src/storage/cassandra-client.js";

export interface CassandraLogin {
  username: string;
  password: string;
}

/**
 * TLS for the connections this module and cassandra-node.ts make to a node AdClick started:
 * PEM text. `verify: false` encrypts without checking the node's certificate, for a node on a
 * loopback address whose CA we were not given; checked by default.
 */
export interface InfraTls {
  ca?: string;
  cert?: string;
  key?: string;
  verify?: boolean;
}

/** The driver's sslOptions (a tls.connect options object) for InfraTls. */
export function infraSslOptions(tls: InfraTls | undefined): ConnectionOptions | undefined {
  if (!tls) return undefined;
  return {
    // The driver's own default is not to check; we check unless told otherwise.
    rejectUnauthorized: tls.verify ?? true,
    ...(tls.ca !== undefined ? { ca: [tls.ca] } : {}),
    ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
    ...(tls.key !== undefined ? { key: tls.key } : {}),
  };
}

/** Cassandra's built-in superuser, created on a node whose system_auth holds no role yet. */
export const DEFAULT_SUPERUSER: CassandraLogin = { username: "cassandra", password: "cassandra" };

export interface SecureCassandraOptions {
  contactPoints: string[];
  localDataCenter: string;
  /** AdClick's superuser, created (through the default superuser) when it cannot log in. */
  admin: CassandraLogin;
  /** The role AdClick runs as: logs in, is no superuser; its grants are per keyspace. */
  app: CassandraLogin;
  /** Replicas of system_auth: the node count of a ring, so that a login survives a node down. */
  systemAuthReplication?: number;
  tls?: InfraTls;
  /** How long to keep trying (the default superuser appears a moment after CQL answers). */
  timeoutMs?: number;
}

/** A single-quoted CQL string literal (role options take no bind markers). */
const cqlString = (text: string) => `'${text.replace(/'/g, "''")}'`;

function clientFor(o: SecureCassandraOptions, login: CassandraLogin): cassandra.Client {
  return new cassandra.Client({
    contactPoints: o.contactPoints,
    localDataCenter: o.localDataCenter,
    credentials: login,
    sslOptions: infraSslOptions(o.tls),
    socketOptions: { connectTimeout: 5000, readTimeout: 20_000 },
  });
}

/** A connected client logged in as `login`, or the error that refused it. */
async function logIn(
  o: SecureCassandraOptions,
  login: CassandraLogin,
): Promise<{ client: cassandra.Client } | { refused: unknown }> {
  const client = clientFor(o, login);
  try {
    await client.connect();
    return { client };
  } catch (err) {
    await client.shutdown().catch(() => {});
    return { refused: err };
  }
}

function describe(err: unknown, o: SecureCassandraOptions): string {
  const where = o.contactPoints.join(",");
  const known = cassandraSecurityError(err, where, undefined, o.tls !== undefined);
  return (
    (known ?? (err instanceof Error ? err : new Error(String(err)))).message.split("\n")[0] ?? ""
  );
}

/** Creates (or resets the password of) AdClick's superuser, logged in as the default one. */
async function createAdmin(client: cassandra.Client, o: SecureCassandraOptions): Promise<void> {
  // system_auth first: roles created after this are written to every replica at once.
  if (o.systemAuthReplication) await replicateSystemAuth(client, o.systemAuthReplication);
  await upsertLoginRole(client, o.admin, true);
}

/**
 * Creates a role that logs in with `login`'s password, or brings an existing one to it (a
 * role left by an earlier run with another password file: the file wins).
 */
async function upsertLoginRole(
  client: cassandra.Client,
  login: CassandraLogin,
  superuser: boolean,
): Promise<void> {
  const options = `PASSWORD = ${cqlString(login.password)} AND LOGIN = true AND SUPERUSER = ${superuser}`;
  await client.execute(`CREATE ROLE IF NOT EXISTS ${login.username} WITH ${options}`);
  await client.execute(`ALTER ROLE ${login.username} WITH ${options}`);
}

async function replicateSystemAuth(client: cassandra.Client, replicas: number): Promise<void> {
  await client.execute(
    `ALTER KEYSPACE system_auth WITH replication = {'class': 'SimpleStrategy', 'replication_factor': ${replicas}}`,
  );
}

/** As AdClick's superuser: the app role, system_auth's replicas, the default superuser off. */
async function setUpRoles(client: cassandra.Client, o: SecureCassandraOptions): Promise<void> {
  if (o.systemAuthReplication) await replicateSystemAuth(client, o.systemAuthReplication);
  await upsertLoginRole(client, o.app, false);
  const defaultRole = (
    await client.execute("SELECT is_superuser, can_login FROM system_auth.roles WHERE role = ?", [
      DEFAULT_SUPERUSER.username,
    ])
  ).first();
  if (defaultRole && (defaultRole.get("is_superuser") || defaultRole.get("can_login"))) {
    // A well-known password must not open the cluster: a random one nobody keeps, no login.
    await client.execute(
      `ALTER ROLE ${DEFAULT_SUPERUSER.username} WITH PASSWORD = ${cqlString(randomBytes(24).toString("base64url"))} AND SUPERUSER = false AND LOGIN = false`,
    );
  }
}

/**
 * Makes a node (or ring) with authentication on ready for AdClick, idempotently: AdClick's
 * superuser `admin` (created through the default cassandra/cassandra superuser if it cannot
 * log in yet), the app role `app` with the given password, system_auth replicated as asked, and
 * the default superuser disabled. Retries for `timeoutMs` (90 s): the default superuser
 * appears only a moment after CQL answers, later in a ring. Throws a SecurityError naming both
 * refusals when neither AdClick's superuser nor the default one can log in by then (the node's
 * roles were made with other passwords).
 */
export async function secureCassandra(o: SecureCassandraOptions): Promise<void> {
  const timeoutMs = o.timeoutMs ?? 90_000;
  const deadline = Date.now() + timeoutMs;
  let lastProblem = "";
  for (let attempt = 1; ; attempt++) {
    try {
      const asAdmin = await logIn(o, o.admin);
      if ("client" in asAdmin) {
        try {
          await setUpRoles(asAdmin.client, o);
          return;
        } finally {
          await asAdmin.client.shutdown().catch(() => {});
        }
      }
      const asDefault = await logIn(o, DEFAULT_SUPERUSER);
      if ("client" in asDefault) {
        try {
          await createAdmin(asDefault.client, o);
        } finally {
          await asDefault.client.shutdown().catch(() => {});
        }
        lastProblem = `${o.admin.username} was created but could not log in yet`;
      } else {
        lastProblem = `${o.admin.username}: ${describe(asAdmin.refused, o)}; ${DEFAULT_SUPERUSER.username}: ${describe(asDefault.refused, o)}`;
      }
    } catch (err) {
      lastProblem = describe(err, o);
    }
    if (Date.now() > deadline) {
      throw new SecurityError(
        "AUTH_FAILED",
        `could not set up AdClick's Cassandra roles at ${o.contactPoints.join(",")} in ${timeoutMs} ms (${attempt} attempts); last: ${lastProblem}. If the node's roles were made with other passwords, restore the credentials folder they came from or start the node on fresh data`,
      );
    }
    await new Promise((r) => setTimeout(r, Math.min(2000, 250 * attempt)));
  }
}
