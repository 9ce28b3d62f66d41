import { connect, type NatsConnection } from "@nats-io/transport-node";
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
}

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
