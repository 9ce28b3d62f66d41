import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import cassandra from "cassandra-driver";
import { InfraError } from "../../src/errors.js";
import { type CassandraLogin, infraSslOptions, secureCassandra } from "./cassandra-auth.js";
import {
  type CassandraNodeHandle,
  LOCAL_DATA_CENTER,
  startCassandraNode,
} from "./cassandra-node.js";
import { canBind, freePort } from "./free-port.js";

export interface CassandraRingOptions {
  /** Nodes on 127.0.0.1, 127.0.0.2, …; 3 by default. */
  nodes?: number;
  /** JVM heap of each node. */
  heapMb?: number;
  /** Every node's folder goes under it (node1, node2, …); a temporary one (removed on stop) when omitted. */
  dataDir?: string;
  /** CQL port of every node (one address each); a port free on all the addresses when omitted. */
  nativePort?: number;
  /** Inter-node port of every node; a port free on all the addresses when omitted. */
  storagePort?: number;
  /** How long the ring may take to form, in milliseconds. */
  startTimeoutMs?: number;
  /** Password logins and permissions on every node (as startCassandraNode); on by default. */
  auth?: boolean;
  /** AdClick's credentials folder (as startCassandraNode); the environment's when omitted. */
  credentialsDir?: string;
}

export interface CassandraRing {
  /**
   * The nodes, the seed first; each can be stopped (or its process killed) and started again.
   * A node other than the seed starts only while the seed runs ("Unable to gossip with any
   * peers" otherwise): bring the seed back first.
   */
  nodes: CassandraNodeHandle[];
  /** "127.0.0.N:port" of every node, for ADCLICK_CASSANDRA (comma separated). */
  contactPoints: string[];
  localDataCenter: string;
  /** AdClick's two roles on the ring; undefined without authentication. */
  credentials: { admin: CassandraLogin; app: CassandraLogin } | undefined;
  /** Stops every node (and removes the temporary folder, if the ring made one). */
  stop(): Promise<void>;
}

/**
 * The Murmur3 partitioner's token range (−2^63 … 2^63−1) split evenly: node i owns the slice
 * starting at −2^63 + i·2^64/n. For 3 nodes: −9223372036854775808, −3074457345618258603,
 * 3074457345618258602.
 */
export function evenMurmur3Tokens(nodes: number): string[] {
  const min = -(2n ** 63n);
  const span = 2n ** 64n;
  return Array.from({ length: nodes }, (_, i) =>
    (min + (span * BigInt(i)) / BigInt(nodes)).toString(),
  );
}

/** A port free on every one of `hosts`. */
async function portFreeOnAll(hosts: string[]): Promise<number> {
  for (let i = 0; i < 50; i++) {
    const port = await freePort(hosts[0]);
    let all = true;
    for (const h of hosts.slice(1)) if (!(await canBind(h, port))) all = false;
    if (all) return port;
  }
  throw new InfraError("INFRA_START_FAILED", `no port free on all of ${hosts.join(", ")}`);
}

/**
 * A client that talks to `node` only (no other coordinator), logged in as AdClick's superuser
 * (infrastructure checks: gossip views, the probe keyspace) on a node with authentication.
 */
export function singleNodeClient(node: CassandraNodeHandle, keyspace?: string): cassandra.Client {
  const { policies } = cassandra;
  return new cassandra.Client({
    contactPoints: [node.contactPoint],
    localDataCenter: node.localDataCenter,
    keyspace,
    credentials: node.credentials?.admin,
    sslOptions: infraSslOptions(node.infraTls),
    policies: {
      loadBalancing: new policies.loadBalancing.AllowListPolicy(
        new policies.loadBalancing.DCAwareRoundRobinPolicy(node.localDataCenter),
        [node.contactPoint],
      ),
    },
    encoding: { useBigIntAsLong: true, useBigIntAsVarint: true },
    socketOptions: { connectTimeout: 3000, readTimeout: 10_000 },
  });
}

/** Waits, bounded, until `node` accepts AdClick's superuser (its auth caches caught up). */
async function waitForLogin(node: CassandraNodeHandle, withinMs: number): Promise<void> {
  const deadline = Date.now() + withinMs;
  for (;;) {
    const client = singleNodeClient(node);
    try {
      await client.execute("SELECT release_version FROM system.local");
      return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    } finally {
      await client.shutdown().catch(() => {});
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/**
 * What `node`'s gossip says of every member: "host status" lines (status_with_port: NORMAL, LEAVING, …; the older status column is filled only for the node itself)
 * and whether its failure detector holds each one alive. Reads system_views.gossip_info, and
 * probes liveness with a read at consistency ALL on a keyspace replicated to every node, which
 * the coordinator refuses (Unavailable) while it holds any replica down.
 */
export async function ringAsSeenBy(
  node: CassandraNodeHandle,
): Promise<{ normal: string[]; allUp: boolean }> {
  const client = singleNodeClient(node);
  try {
    const rows = (
      await client.execute("SELECT address, status_with_port FROM system_views.gossip_info")
    ).rows;
    const normal = rows
      .filter((r) => String(r.get("status_with_port") ?? "").startsWith("NORMAL"))
      .map((r) => String(r.get("address")))
      .sort();
    let allUp = true;
    try {
      // system_auth is replicated to one node by default; a ring's probe keyspace to all.
      await client.execute("SELECT key FROM adclick_ring_probe.probe WHERE key = 0", [], {
        consistency: cassandra.types.consistencies.all,
        prepare: true,
      });
    } catch {
      allUp = false;
    }
    return { normal, allUp };
  } finally {
    await client.shutdown().catch(() => {});
  }
}

/**
 * Waits until every one of `nodes` sees all of them NORMAL and alive: after a start, and
 * after a stopped node came back (so that hints are on their way and reads at ONE on it are
 * meaningful once they are delivered). Nodes of a ring startCassandraRing started (it creates
 * the keyspace the liveness probe reads).
 */
export async function waitForRing(nodes: CassandraNodeHandle[], timeoutMs = 120_000) {
  const want = nodes.map((n) => n.host).sort();
  const deadline = Date.now() + timeoutMs;
  let last = "";
  for (;;) {
    let ok = true;
    for (const n of nodes) {
      const seen = await ringAsSeenBy(n).catch((e: unknown) => ({
        normal: [],
        allUp: false,
        error: String(e),
      }));
      // The error too: a node that cannot be asked at all says why (a login refused, a timeout).
      last = `${n.host} sees NORMAL ${seen.normal.join(",")}, all alive: ${seen.allUp}${"error" in seen ? ` (${seen.error})` : ""}`;
      if (JSON.stringify(seen.normal) !== JSON.stringify(want) || !seen.allUp) {
        ok = false;
        break;
      }
    }
    if (ok) return;
    if (Date.now() > deadline)
      throw new InfraError(
        "INFRA_START_FAILED",
        `the Cassandra ring did not form in ${timeoutMs} ms: ${last}`,
      );
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** Cassandra's own default ring delay. */
const NON_SEED_RING_DELAY_MS = 30_000;

/**
 * A local Cassandra ring: node i on 127.0.0.i (all of 127.0.0.0/8 is the loopback interface
 * on Linux), all on the same CQL and storage ports, one evenly spaced token each, node 1 the
 * seed. Starts the seed, then the others together, and waits until each node sees every node NORMAL and alive.
 */
export async function startCassandraRing(opts: CassandraRingOptions = {}): Promise<CassandraRing> {
  const count = opts.nodes ?? 3;
  const hosts = Array.from({ length: count }, (_, i) => `127.0.0.${i + 1}`);
  const tempDir = opts.dataDir === undefined;
  const dir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "adclick-ring-"));
  const nativePort = opts.nativePort ?? (await portFreeOnAll(hosts));
  let storagePort = opts.storagePort ?? (await portFreeOnAll(hosts));
  while (storagePort === nativePort) storagePort = await portFreeOnAll(hosts);
  const tokens = evenMurmur3Tokens(count);
  const nodes: CassandraNodeHandle[] = [];
  const stop = async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    if (tempDir) rmSync(dir, { recursive: true, force: true });
  };
  const startNode = (i: number) =>
    startCassandraNode({
      host: hosts[i],
      seeds: [hosts[0] as string],
      clusterName: "adclick-ring",
      initialToken: tokens[i],
      // A node other than the seed first asks the seed for the ring (gossip's shadow round) and
      // gives up after ring_delay: 0 left it one second, too little for a seed on a loaded
      // machine ("Unable to gossip with any peers"). The round ends as soon as the seed answers,
      // and without bootstrap nothing else at start-up waits for ring_delay.
      ringDelayMs: i === 0 ? undefined : NON_SEED_RING_DELAY_MS,
      heapMb: opts.heapMb,
      dataDir: join(dir, `node${i + 1}`),
      nativePort,
      storagePort,
      startTimeoutMs: opts.startTimeoutMs,
      // An orderly stop announces the shutdown to the other nodes and flushes: give it time.
      stopGraceMs: 20_000,
      auth: opts.auth,
      credentialsDir: opts.credentialsDir,
      // Once for the ring, below: the roles are the ring's, not a node's.
      secureRoles: false,
    });
  try {
    nodes.push(await startNode(0));
    // The others at once: with their tokens given and no bootstrap (no streaming), joining
    // together is safe, and it saves a start on a slow machine.
    const others = await Promise.allSettled(hosts.slice(1).map((_, i) => startNode(i + 1)));
    for (const o of others) if (o.status === "fulfilled") nodes.push(o.value);
    for (const o of others) if (o.status === "rejected") throw o.reason;
    const seed = nodes[0] as CassandraNodeHandle;
    if (seed.credentials) {
      // Every node up first: system_auth goes to all of them, so a login (and a node's
      // restart) does not depend on the one node that held it.
      await secureCassandra({
        contactPoints: nodes.map((n) => n.contactPoint),
        localDataCenter: LOCAL_DATA_CENTER,
        admin: seed.credentials.admin,
        app: seed.credentials.app,
        systemAuthReplication: count,
        tls: seed.infraTls,
      });
      // A node that refused AdClick's superuser before it existed keeps that answer in its
      // roles cache for a while ("… is not permitted to log in", ~2 s by default): the ring
      // is ready when every node lets it in.
      for (const node of nodes) await waitForLogin(node, opts.startTimeoutMs ?? 60_000);
    }
    const admin = singleNodeClient(nodes[0] as CassandraNodeHandle);
    try {
      await admin.execute(
        `CREATE KEYSPACE IF NOT EXISTS adclick_ring_probe WITH replication = {'class': 'SimpleStrategy', 'replication_factor': ${count}}`,
      );
      await admin.execute(
        "CREATE TABLE IF NOT EXISTS adclick_ring_probe.probe (key int PRIMARY KEY)",
      );
    } finally {
      await admin.shutdown().catch(() => {});
    }
    await waitForRing(nodes, opts.startTimeoutMs);
  } catch (err) {
    await stop();
    throw err;
  }
  return {
    nodes,
    contactPoints: nodes.map((n) => n.contactPoint),
    localDataCenter: LOCAL_DATA_CENTER,
    credentials: nodes[0]?.credentials,
    stop,
  };
}
