import { mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { InfraError } from "../../src/errors.js";
import { freePort } from "./free-port.js";
import { type NatsServerHandle, type NatsServerOptions, startNatsServer } from "./nats-server.js";
import { projectRoot } from "./paths.js";

export interface NatsClusterOptions {
  /** Nodes; 3 (a majority survives one node's loss). */
  nodes?: number;
  /** Each node's store is `<storeRoot>/<node name>`; a temporary folder (removed on stop) when omitted. */
  storeRoot?: string;
  /** Client ports, one a node; free ones when omitted. */
  ports?: number[];
  /** Monitoring ports, one a node; free ones when omitted. */
  httpPorts?: number[];
  /** Route (cluster) ports, one a node; free ones when omitted. */
  clusterPorts?: number[];
  /** Cluster name; also the prefix of the node names (`<name>-n1`…). */
  name?: string;
  /** Until every node is up and the cluster has a JetStream meta leader. */
  startTimeoutMs?: number;
  /** The role users (startNatsServer's `auth`): on, from the default credentials folder, unless said. */
  auth?: NatsServerOptions["auth"];
}

/** One node of a cluster we started, for tests that fail nodes. */
export interface NatsClusterNode {
  /** Its server_name, e.g. adclick-n1. */
  name: string;
  url: string;
  port: number;
  readonly httpPort: number;
  clusterPort: number;
  storeDir: string;
  server: NatsServerHandle;
  /** A crash: SIGKILL, the store kept; down until `restart()`. */
  kill(): Promise<void>;
  /**
   * Stops it (SIGKILL by default, SIGTERM with `crash: false`; nothing if it is down), starts
   * it again on the same ports and store, and waits until it is healthy: caught up with the
   * cluster's meta state and with every stream and consumer it replicates.
   */
  restart(opts?: { crash?: boolean; timeoutMs?: number }): Promise<void>;
  /** Freezes it (SIGSTOP): its peers see silence, not a closed connection, like a long GC pause. */
  pause(): void;
  /** Thaws it (SIGCONT). */
  resume(): void;
  /** Between `pause()` and `resume()`. */
  readonly frozen: boolean;
  stop(): Promise<void>;
  /** /healthz: up, JetStream current with the cluster (false while down, frozen or catching up). */
  healthy(): Promise<boolean>;
}

export interface NatsClusterHandle {
  name: string;
  /** Every node's client URL (give them all to clients: ADCLICK_NATS_URL, comma separated). */
  urls: string[];
  nodes: NatsClusterNode[];
  /** The JetStream meta leader's server name, as the answering nodes see it. */
  metaLeader(): Promise<string | undefined>;
  /**
   * Each stream's leader (KV buckets are streams KV_<bucket>), as the first node up and not
   * frozen sees it on its monitoring port: no client connection (which may sit on a frozen node).
   */
  streamLeaders(): Promise<Map<string, string>>;
  /** Waits until every node is healthy and agrees on one meta leader of the full cluster size. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /** Stops every node (thawing frozen ones first); removes a temporary store root. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILLs every node now, synchronously (a process about to exit). */
  killNow(): void;
}

interface MetaCluster {
  leader?: string;
  cluster_size?: number;
  replicas?: { name: string; current: boolean; offline?: boolean }[];
}

async function getJson<T>(url: string, timeoutMs = 1000): Promise<T | undefined> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) }).catch(() => undefined);
  if (!res?.ok) return undefined;
  return (await res.json().catch(() => undefined)) as T | undefined;
}

/**
 * Starts a cluster of nats-server processes on loopback (nats/cluster/local.conf, JetStream on
 * each, routes between all of them) and waits until it has a JetStream meta leader with every
 * node a current peer. Streams and KV buckets get 3 replicas with ADCLICK_NATS_REPLICAS=3.
 */
export async function startNatsCluster(opts: NatsClusterOptions = {}): Promise<NatsClusterHandle> {
  const n = opts.nodes ?? 3;
  const name = opts.name ?? "adclick";
  const tempRoot = opts.storeRoot === undefined;
  const storeRoot = opts.storeRoot ?? mkdtempSync(join(tmpdir(), "adclick-nats-cluster-"));
  mkdirSync(storeRoot, { recursive: true });
  const configFile = join(projectRoot(), "nats", "cluster", "local.conf");
  const pick = async (given: number[] | undefined, i: number) => given?.[i] ?? (await freePort());
  const specs: { name: string; port: number; httpPort: number; clusterPort: number }[] = [];
  for (let i = 0; i < n; i++) {
    specs.push({
      name: `${name}-n${i + 1}`,
      port: await pick(opts.ports, i),
      httpPort: await pick(opts.httpPorts, i),
      clusterPort: await pick(opts.clusterPorts, i),
    });
  }
  const routes = specs.map((s) => `nats://127.0.0.1:${s.clusterPort}`);
  const servers: NatsServerHandle[] = [];
  const stopAll = async () => {
    for (const s of servers) s.process.resume(); // a frozen process ignores SIGTERM
    await Promise.allSettled(servers.map((s) => s.stop()));
    if (tempRoot) rmSync(storeRoot, { recursive: true, force: true });
  };
  try {
    // All at once: a node waits for JetStream only, which each enables by itself.
    servers.push(
      ...(await Promise.all(
        specs.map((s) =>
          startNatsServer({
            port: s.port,
            httpPort: s.httpPort,
            storeDir: join(storeRoot, s.name),
            configFile,
            serverName: s.name,
            cluster: { name, port: s.clusterPort, routes },
            ...(opts.auth !== undefined ? { auth: opts.auth } : {}),
            ...(opts.startTimeoutMs ? { startTimeoutMs: opts.startTimeoutMs } : {}),
          }),
        ),
      )),
    );
  } catch (err) {
    await stopAll();
    throw err;
  }

  const healthyAt = async (httpPort: number) =>
    (await fetch(`http://127.0.0.1:${httpPort}/healthz`, { signal: AbortSignal.timeout(1000) })
      .then((r) => r.ok)
      .catch(() => false)) === true;
  const waitFor = async (what: string, check: () => Promise<boolean>, timeoutMs: number) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await check().catch(() => false))) {
      if (Date.now() > deadline)
        throw new InfraError("INFRA_START_FAILED", `NATS cluster: ${what} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 200));
    }
  };

  const nodes: NatsClusterNode[] = specs.map((s, i) => {
    const server = servers[i] as NatsServerHandle;
    let frozen = false;
    const node: NatsClusterNode = {
      name: s.name,
      url: server.url,
      port: s.port,
      get httpPort() {
        return server.httpPort;
      },
      clusterPort: s.clusterPort,
      storeDir: server.storeDir,
      server,
      kill: () => server.process.kill(),
      async restart(r = {}) {
        node.resume(); // SIGTERM does not reach a frozen process
        await server.restart({ crash: r.crash ?? true });
        await waitFor(`${s.name} healthy after its restart`, node.healthy, r.timeoutMs ?? 60_000);
      },
      pause() {
        frozen = true;
        server.process.pause();
      },
      resume() {
        frozen = false;
        server.process.resume();
      },
      get frozen() {
        return frozen;
      },
      stop: () => {
        node.resume();
        return server.stop();
      },
      healthy: async () => server.process.running && (await healthyAt(server.httpPort)),
    };
    return node;
  });

  const metaOf = async (node: NatsClusterNode) =>
    (await getJson<{ meta_cluster?: MetaCluster }>(`http://127.0.0.1:${node.httpPort}/jsz`))
      ?.meta_cluster;
  let stopped = false;
  const handle: NatsClusterHandle = {
    name,
    urls: nodes.map((x) => x.url),
    nodes,
    async metaLeader() {
      for (const node of nodes) {
        if (!node.server.process.running || node.frozen) continue;
        const leader = (await metaOf(node))?.leader;
        if (leader) return leader;
      }
      return undefined;
    },
    async streamLeaders() {
      const leaders = new Map<string, string>();
      const from = nodes.find((x) => x.server.process.running && !x.frozen);
      if (!from) return leaders;
      const jsz = await getJson<{
        account_details?: { stream_detail?: { name: string; cluster?: { leader?: string } }[] }[];
      }>(`http://127.0.0.1:${from.httpPort}/jsz?accounts=true&streams=true`);
      for (const acc of jsz?.account_details ?? [])
        for (const st of acc.stream_detail ?? [])
          if (st.cluster?.leader) leaders.set(st.name, st.cluster.leader);
      return leaders;
    },
    async waitHealthy(timeoutMs = 60_000) {
      await waitFor(
        `no meta leader with ${n} current peers and every node healthy`,
        async () => {
          const metas = await Promise.all(nodes.map(metaOf));
          const leader = metas[0]?.leader;
          if (!leader || metas.some((m) => m?.leader !== leader || m?.cluster_size !== n))
            return false;
          // The leader lists its followers: each current, none offline.
          const fromLeader = metas[nodes.findIndex((x) => x.name === leader)];
          const followers = fromLeader?.replicas ?? [];
          if (followers.length !== n - 1 || followers.some((r) => !r.current || r.offline))
            return false;
          return (await Promise.all(nodes.map((x) => x.healthy()))).every(Boolean);
        },
        timeoutMs,
      );
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await stopAll();
    },
    killNow() {
      for (const s of servers) s.process.killNow();
    },
  };
  try {
    await handle.waitHealthy(opts.startTimeoutMs ?? 60_000);
  } catch (err) {
    await handle.stop();
    throw err;
  }
  return handle;
}
