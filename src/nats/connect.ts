import {
  type Authenticator,
  connect,
  errors,
  type NatsConnection,
  type TlsOptions,
} from "@nats-io/transport-node";
import { DEFAULT_CONFIG } from "../config.js";
import { InfraError, SecurityError } from "../errors.js";

/** The oldest nats-server AdClick runs on (sync_interval, atomic batch publish, Jepsen fixes). */
export const MIN_NATS_SERVER_VERSION = "2.12.0";

export interface NatsConnectOptions {
  servers: string[];
  name: string;
  user?: string;
  pass?: string;
  /** An nkey or creds authenticator (src/nats/connect.ts leaves reading the secret to the caller). */
  authenticator?: Authenticator;
  /** Where the server's reply permissions let this role receive answers (`_INBOX_<role>`). */
  inboxPrefix?: string;
  /** TLS: the CA file and, for mutual TLS, a client certificate and key. */
  tls?: TlsOptions;
  /** Where the credentials came from, for the message of a refused login. */
  loginSource?: string;
  /** Allow an older server (tests of the Debian fallback); logs a warning instead. */
  allowOldServer?: boolean;
  /** Ping interval (ADCLICK_NATS_PING_MS); the configuration's default when omitted. */
  pingIntervalMs?: number;
}

/** Unanswered pings after which the client drops the connection (the library's default). */
const MAX_PINGS_OUT = 2;

function versionAtLeast(have: string, want: string): boolean {
  const a = have.split(/[.-]/).map((x) => Number.parseInt(x, 10) || 0);
  const b = want.split(".").map((x) => Number.parseInt(x, 10) || 0);
  for (let i = 0; i < 3; i++) {
    if ((a[i] ?? 0) !== (b[i] ?? 0)) return (a[i] ?? 0) > (b[i] ?? 0);
  }
  return true;
}

/**
 * Connects to NATS and checks the server version: several client features fail silently
 * against older servers (see SPEC "Known pitfalls"), so we refuse them up front.
 */
export async function connectNats(o: NatsConnectOptions): Promise<NatsConnection> {
  const pingMs = o.pingIntervalMs ?? DEFAULT_CONFIG.natsPingIntervalMs;
  const nc = await connect({
    servers: o.servers,
    name: o.name,
    user: o.user,
    pass: o.pass,
    ...(o.authenticator ? { authenticator: o.authenticator } : {}),
    ...(o.inboxPrefix ? { inboxPrefix: o.inboxPrefix } : {}),
    ...(o.tls ? { tls: o.tls } : {}),
    // The JS client records an async stack trace per request unless told not to; with it
    // off, publishing costs about half the CPU.
    noAsyncTraces: true,
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    // A frozen server (SIGSTOP, a stalled VM) keeps its connections open and answers nothing:
    // only unanswered pings reveal it, within (MAX_PINGS_OUT + 1) intervals; the client then
    // moves to another server of the list. A frozen server also accepts TCP connections (the
    // kernel does) but never greets: a connection attempt gives up after as long.
    pingInterval: pingMs,
    maxPingOut: MAX_PINGS_OUT,
    timeout: Math.max(2000, (MAX_PINGS_OUT + 1) * pingMs),
  }).catch((err: unknown) => {
    throw natsConnectError(err, o) ?? err;
  });
  const version = nc.info?.version ?? "0.0.0";
  if (!versionAtLeast(version, MIN_NATS_SERVER_VERSION) && !o.allowOldServer) {
    await nc.close();
    throw new InfraError(
      "NATS_SERVER_TOO_OLD",
      `nats-server ${version} is older than ${MIN_NATS_SERVER_VERSION}; run 'npm run provision' for a current one`,
    );
  }
  return nc;
}

/**
 * A refused connection as one line that says what to fix: the login (and where it came from),
 * or TLS. Undefined for anything else (a server that is down keeps its own error).
 */
export function natsConnectError(
  err: unknown,
  o: Pick<NatsConnectOptions, "servers" | "name" | "loginSource" | "tls">,
): SecurityError | undefined {
  const where = o.servers.join(",");
  const msg = err instanceof Error ? err.message : String(err);
  if (
    err instanceof errors.AuthorizationError ||
    /authorization violation|authentication/i.test(msg)
  ) {
    return new SecurityError(
      "AUTH_FAILED",
      `NATS at ${where} refused ${o.name}: ${msg}${o.loginSource ? ` (credentials: ${o.loginSource})` : ""}`,
      { cause: err },
    );
  }
  if (/certificate|self[- ]signed|tls|ssl|wrong version number|handshake/i.test(msg)) {
    return new SecurityError(
      "TLS_FAILED",
      `TLS to NATS at ${where} failed for ${o.name}: ${msg}${o.tls?.caFile ? "" : " (set ADCLICK_NATS_TLS_CA to the CA that signed the server's certificate)"}`,
      { cause: err },
    );
  }
  return undefined;
}

/**
 * A request the server refused to this role (a JetStream or KV call, a service request) as a
 * SecurityError naming what was refused; undefined for any other error.
 */
export function natsPermissionError(err: unknown, doing: string): SecurityError | undefined {
  const denied =
    err instanceof errors.PermissionViolationError
      ? err
      : (err as { cause?: unknown } | undefined)?.cause instanceof errors.PermissionViolationError
        ? (err as { cause: InstanceType<typeof errors.PermissionViolationError> }).cause
        : undefined;
  if (!denied) return undefined;
  return new SecurityError(
    "PERMISSION_DENIED",
    `NATS refused ${doing}: no permission to ${denied.operation} "${denied.subject}"`,
    { cause: err },
  );
}

export { versionAtLeast };
