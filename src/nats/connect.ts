import { connect, type NatsConnection } from "@nats-io/transport-node";
import { DEFAULT_CONFIG } from "../config.js";
import { InfraError } from "../errors.js";

/** The oldest nats-server AdClick runs on (sync_interval, atomic batch publish, Jepsen fixes). */
export const MIN_NATS_SERVER_VERSION = "2.12.0";

export interface NatsConnectOptions {
  servers: string[];
  name: string;
  user?: string;
  pass?: string;
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

export { versionAtLeast };
