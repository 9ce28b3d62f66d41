import cassandra from "cassandra-driver";
import type { CassandraConsistency } from "../config.js";
import { SecurityError } from "../errors.js";

export type CassandraClient = cassandra.Client;

/** What a client needs to reach and log in to Cassandra. */
export interface CassandraClientSettings {
  cassandraContactPoints: string[];
  cassandraLocalDataCenter: string;
  cassandraConsistency?: CassandraConsistency;
  /** The role to log in as; none for a node without authentication. */
  login?: { username: string; password: string };
  /** TLS to the nodes, as PEM text (not paths): the CA to trust, and a client certificate. */
  tls?: { ca?: string; cert?: string; key?: string };
}

/** The driver's code for a consistency level named as in CQL ("LOCAL_QUORUM" → localQuorum). */
export function driverConsistency(level: CassandraConsistency): number {
  const key = level
    .toLowerCase()
    .replace(/_([a-z])/g, (_, ch: string) =>
      ch.toUpperCase(),
    ) as keyof typeof cassandra.types.consistencies;
  const code = cassandra.types.consistencies[key];
  if (code === undefined) throw new Error(`unknown consistency level ${level}`);
  return code;
}

/**
 * The driver's sslOptions for PEM settings. The driver itself would not check the node's
 * certificate (its default is rejectUnauthorized: false): we do, against the given CA (else
 * Node's trusted roots) and the node's address, as Node's checkServerIdentity does.
 */
export function driverSslOptions(tls: CassandraClientSettings["tls"]) {
  if (!tls) return undefined;
  return {
    rejectUnauthorized: true,
    ...(tls.ca !== undefined ? { ca: [tls.ca] } : {}),
    ...(tls.cert !== undefined ? { cert: tls.cert } : {}),
    ...(tls.key !== undefined ? { key: tls.key } : {}),
  };
}

/**
 * A cassandra-driver client for AdClick's settings. Without a keyspace it connects to the
 * cluster only (to create the keyspace); every statement we run is prepared.
 */
export function createCassandraClient(
  s: CassandraClientSettings,
  keyspace?: string,
): CassandraClient {
  return new cassandra.Client({
    contactPoints: s.cassandraContactPoints,
    localDataCenter: s.cassandraLocalDataCenter,
    keyspace,
    credentials: s.login ? { username: s.login.username, password: s.login.password } : undefined,
    sslOptions: driverSslOptions(s.tls),
    // Counts are bigint end to end: no precision loss, no Long objects leaking out.
    encoding: { useBigIntAsLong: true, useBigIntAsVarint: true },
    queryOptions: {
      prepare: true,
      consistency: driverConsistency(s.cassandraConsistency ?? "LOCAL_QUORUM"),
    },
    socketOptions: { connectTimeout: 5000, readTimeout: 20_000 },
    pooling: { coreConnectionsPerHost: { [cassandra.types.distance.local]: 2 } },
  });
}

const KEYSPACE_NAME = /^[a-z][a-z0-9_]{0,47}$/;
const ROLE_NAME = /^[a-z][a-z0-9_]{0,47}$/;

/**
 * Creates the keyspace if it does not exist. SimpleStrategy with the given replication
 * factor on one data center; NetworkTopologyStrategy when a data center is named.
 */
export async function ensureKeyspace(
  client: CassandraClient,
  keyspace: string,
  replicationFactor: number,
  dataCenter?: string,
): Promise<void> {
  if (!KEYSPACE_NAME.test(keyspace)) throw new Error(`invalid keyspace name ${keyspace}`);
  const replication = dataCenter
    ? `{'class': 'NetworkTopologyStrategy', '${dataCenter}': ${replicationFactor}}`
    : `{'class': 'SimpleStrategy', 'replication_factor': ${replicationFactor}}`;
  await client.execute(
    `CREATE KEYSPACE IF NOT EXISTS ${keyspace} WITH replication = ${replication} AND durable_writes = true`,
  );
}

/**
 * Whether the keyspace exists. Reads system_schema, which every logged-in role may: the app
 * role can tell "missing" (ask an administrator to create it) from "not allowed".
 */
export async function keyspaceExists(client: CassandraClient, keyspace: string): Promise<boolean> {
  const rs = await client.execute(
    "SELECT keyspace_name FROM system_schema.keyspaces WHERE keyspace_name = ?",
    [keyspace],
    { prepare: true },
  );
  return rs.rowLength > 0;
}

/** What AdClick does in its keyspace: read, write, and create or change its tables. */
const KEYSPACE_PERMISSIONS = ["SELECT", "MODIFY", "CREATE", "ALTER", "DROP"] as const;

/**
 * Lets `role` read, write and manage the tables of `keyspace`, nothing outside it. Run as a
 * superuser (or a role holding AUTHORIZE on the keyspace); granting twice changes nothing.
 */
export async function grantKeyspace(
  adminClient: CassandraClient,
  keyspace: string,
  role: string,
): Promise<void> {
  if (!KEYSPACE_NAME.test(keyspace)) throw new Error(`invalid keyspace name ${keyspace}`);
  if (!ROLE_NAME.test(role)) throw new Error(`invalid role name ${role}`);
  for (const permission of KEYSPACE_PERMISSIONS) {
    await adminClient.execute(`GRANT ${permission} ON KEYSPACE ${keyspace} TO ${role}`);
  }
}

/** The errors a failed call holds: a NoHostAvailableError's per-host errors, else itself. */
function errorsWithin(err: unknown): unknown[] {
  if (err instanceof cassandra.errors.NoHostAvailableError) {
    const inner = Object.values((err.innerErrors ?? {}) as Record<string, unknown>);
    return inner.length > 0 ? inner : [err];
  }
  return [err];
}

/** Node's TLS verification codes (X509_V_ERR_* names) and alt-name mismatch. */
const TLS_CERT_CODES = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "CERT_HAS_EXPIRED",
  "CERT_NOT_YET_VALID",
  "CERT_UNTRUSTED",
  "CERT_REJECTED",
  "CERT_SIGNATURE_FAILURE",
  "ERR_TLS_CERT_ALTNAME_INVALID",
]);

const TLS_HINT =
  "set ADCLICK_CASSANDRA_TLS_CA to the CA that signed the nodes' certificates (and ADCLICK_CASSANDRA_TLS_CERT/_KEY if the nodes require a client certificate)";

function tlsFailure(e: unknown, usedTls: boolean): string | undefined {
  if (!(e instanceof Error)) return undefined;
  // A driver ResponseError's code is a number: only Node's string codes are about sockets.
  const raw: unknown = (e as { code?: unknown }).code;
  const code = typeof raw === "string" ? raw : "";
  // OpenSSL's messages end in a newline and name source files: one line, no more.
  const why = oneLine(e.message);
  if (TLS_CERT_CODES.has(code)) return `the node's certificate was not accepted (${why})`;
  // The node's alert for a missing or unknown client certificate (mutual TLS).
  if (/alert (certificate required|bad certificate|unknown ca|certificate unknown)/i.test(why))
    return `the node refused our client certificate or its absence (${why})`;
  if (code.startsWith("ERR_SSL_") || code.startsWith("ERR_TLS_") || code === "EPROTO")
    return `the TLS handshake failed (${why})`;
  if (/secure TLS connection|SSL routines|handshake/i.test(why))
    return `the TLS handshake failed (${why})`;
  // A node that requires TLS drops a plaintext client's first frame: it sees a reset.
  if (code === "ECONNRESET" || /ECONNRESET|socket hang up/.test(why))
    return usedTls
      ? `the node closed the connection during the TLS handshake (${why})`
      : `the node closed the plaintext connection (${why}): it probably requires TLS`;
  return undefined;
}

/**
 * A one-line SecurityError for a Cassandra driver error that is about credentials, grants or
 * TLS; undefined for anything else (a node down, a timeout). `where` names the node(s), e.g.
 * the contact points; `loginSource` where the credentials came from (a setting, a file).
 * `usedTls` tells a reset under TLS from a plaintext client's reset by a TLS-only node.
 */
export function cassandraSecurityError(
  err: unknown,
  where: string,
  loginSource?: string,
  usedTls = false,
): SecurityError | undefined {
  for (const e of errorsWithin(err)) {
    if (e instanceof cassandra.errors.AuthenticationError) {
      // The driver's own errors when the node asks for a login and the client has none.
      if (/no authenticator found|provider not set/i.test(e.message)) {
        return new SecurityError(
          "AUTH_FAILED",
          `Cassandra at ${where} requires a login and none is configured: set ADCLICK_CASSANDRA_USER and ADCLICK_CASSANDRA_PASSWORD_FILE, or put AdClick's credentials folder (ADCLICK_CREDENTIALS_DIR) in place${loginSource ? ` (${loginSource})` : ""}`,
          { cause: err },
        );
      }
      const user = /username (\S+)/.exec(e.message)?.[1];
      return new SecurityError(
        "AUTH_FAILED",
        `Cassandra at ${where} refused the login${user ? ` ${user}` : ""}: ${oneLine(e.message)}${loginSource ? ` (credentials from ${loginSource})` : ""}`,
        { cause: err },
      );
    }
    if (
      e instanceof cassandra.errors.ResponseError &&
      e.code === cassandra.types.responseErrorCodes.unauthorized
    ) {
      return new SecurityError(
        "PERMISSION_DENIED",
        `Cassandra at ${where} refused: ${oneLine(e.message)}`,
        { cause: err },
      );
    }
  }
  for (const e of errorsWithin(err)) {
    const reason = tlsFailure(e, usedTls);
    if (reason)
      return new SecurityError(
        "TLS_FAILED",
        `TLS to Cassandra at ${where}: ${reason}; ${TLS_HINT}`,
        {
          cause: err,
        },
      );
  }
  return undefined;
}

const oneLine = (text: string) => text.replace(/\s+/g, " ").trim();
