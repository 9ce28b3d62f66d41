import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join, resolve } from "node:path";
import type { AdclickConfig } from "../../src/config.js";
import { InfraError } from "../../src/errors.js";
import { type CassandraNodeHandle, cqlAnswers, startCassandraNode } from "./cassandra-node.js";
import { credentialsDirOf } from "./credentials.js";
import { canBind, freePort, isListening } from "./free-port.js";
import { type NatsClusterHandle, startNatsCluster } from "./nats-cluster.js";
import { type NatsServerHandle, startNatsServer } from "./nats-server.js";
import { infraPaths, projectRoot } from "./paths.js";

export interface LocalStack {
  /** What this call started (and `stop()` will stop); empty when everything was already up. */
  started: string[];
  nats?: NatsServerHandle;
  /** With `natsCluster`: the 3-node cluster started. */
  natsCluster?: NatsClusterHandle;
  cassandra?: CassandraNodeHandle;
  stop(): Promise<void>;
  /** SIGKILLs what this call started, synchronously (a forced exit). */
  killNow(): void;
}

function hostPort(addr: string, defaultPort: number): { host: string; port: number } {
  const m = /^(?:[a-z]+:\/\/)?([^:/]+)(?::(\d+))?/.exec(addr);
  return { host: m?.[1] ?? "127.0.0.1", port: m?.[2] ? Number(m[2]) : defaultPort };
}

const LOCAL_HOSTS = new Set(["127.0.0.1", "localhost", "::1"]);

/**
 * Runs scripts/provision.sh when the servers are not installed yet, so that `adclick up` on a
 * fresh machine sets up everything it needs by itself (it is quiet and quick when done).
 */
function ensureProvisioned(log: (msg: string) => void): void {
  const paths = infraPaths();
  if (existsSync(paths.natsServerBin) && existsSync(join(paths.cassandraHome, ".complete"))) return;
  log("installing nats-server and Cassandra into .infra/ (first run only; takes a minute or two)");
  const r = spawnSync("bash", [join(projectRoot(), "scripts", "provision.sh")], {
    stdio: "inherit",
  });
  if (r.status !== 0) {
    throw new InfraError(
      "INFRA_NOT_PROVISIONED",
      `scripts/provision.sh failed (exit ${r.status}); see its output above`,
    );
  }
}

/**
 * Makes sure NATS and Cassandra answer at the configured addresses. Where nothing answers at
 * a local address, starts the project's own server there (data under .infra/data/);
 * a configured remote address is only checked, never started.
 */
export async function ensureLocalStack(
  c: AdclickConfig,
  log: (msg: string) => void = () => {},
  o: { natsCluster?: boolean } = {},
): Promise<LocalStack> {
  ensureProvisioned(log);
  const stack: LocalStack = {
    started: [],
    killNow() {
      stack.nats?.process.killNow();
      stack.natsCluster?.killNow();
      stack.cassandra?.process.killNow();
    },
    async stop() {
      await Promise.allSettled([
        stack.nats?.stop(),
        stack.natsCluster?.stop(),
        stack.cassandra?.stop(),
      ]);
    },
  };
  // Relative to the project (not the working directory), like .infra/ itself.
  const dataRoot = resolve(projectRoot(), c.localDataDir);
  const nats = hostPort(c.natsServers[0] ?? "", 4222);
  // Everything started here runs with AdClick's credentials (created on first use).
  const credentialsDir = credentialsDirOf(c);
  const auth = { credentialsDir };
  try {
    if (o.natsCluster) {
      stack.natsCluster = await startLocalCluster(nats, join(dataRoot, "nats-cluster"), log, auth);
      stack.started.push("a 3-node NATS cluster");
    } else if (await isListening(nats.host, nats.port)) {
      log(`NATS: using the server at ${nats.host}:${nats.port}`);
    } else if (LOCAL_HOSTS.has(nats.host)) {
      log(`NATS: nothing at ${nats.host}:${nats.port}, starting nats-server there`);
      stack.nats = await startNatsServer({
        port: nats.port,
        // The usual monitoring port where it is free (another local stack may hold it).
        ...((await canBind("127.0.0.1", 8222)) ? { httpPort: 8222 } : {}),
        storeDir: join(dataRoot, "nats"),
        auth,
      });
      stack.started.push("nats-server");
    } else {
      throw new Error(`NATS: no server answers at ${nats.host}:${nats.port} (ADCLICK_NATS_URL)`);
    }
    const cp = hostPort(c.cassandraContactPoints[0] ?? "", 9042);
    if (await cqlAnswers(`${cp.host}:${cp.port}`)) {
      log(`Cassandra: using the node at ${cp.host}:${cp.port}`);
    } else if (LOCAL_HOSTS.has(cp.host) && !(await isListening(cp.host, cp.port))) {
      log(`Cassandra: nothing at ${cp.host}:${cp.port}, starting a local node there (takes ~10 s)`);
      stack.cassandra = await startCassandraNode({
        nativePort: cp.port,
        storagePort: 7000,
        dataDir: join(dataRoot, "cassandra"),
        credentialsDir,
      });
      stack.started.push("cassandra");
      log(`Cassandra: answering CQL after ${(stack.cassandra.startupMs / 1000).toFixed(1)} s`);
    } else {
      throw new Error(`Cassandra: no CQL answer at ${cp.host}:${cp.port} (ADCLICK_CASSANDRA)`);
    }
  } catch (err) {
    await stack.stop();
    throw err;
  }
  if (stack.started.length > 0)
    log(
      `security: what started here asks for AdClick's credentials, kept in ${credentialsDir} (each adclick command uses its role's; README "Security")`,
    );
  return stack;
}

/**
 * `adclick up --nats-cluster`: three nats-server nodes on the configured NATS port and the two
 * after it (4222-4224 by default), stores under the data folder. Refuses when one of those
 * ports answers already: another cluster may be running on the same stores.
 */
async function startLocalCluster(
  nats: { host: string; port: number },
  storeRoot: string,
  log: (msg: string) => void,
  auth: { credentialsDir: string },
): Promise<NatsClusterHandle> {
  if (!LOCAL_HOSTS.has(nats.host))
    throw new Error(`--nats-cluster starts a local cluster; ADCLICK_NATS_URL names ${nats.host}`);
  const ports = [nats.port, nats.port + 1, nats.port + 2];
  for (const port of ports) {
    if (await isListening("127.0.0.1", port))
      throw new Error(
        `--nats-cluster: something answers at 127.0.0.1:${port} already (a running stack?); stop it or set ADCLICK_NATS_URL to another port`,
      );
  }
  // The usual monitoring and route ports where they are free.
  const orFree = async (want: number) => ((await canBind("127.0.0.1", want)) ? want : freePort());
  const httpPorts = [await orFree(8222), await orFree(8223), await orFree(8224)];
  const clusterPorts = [await orFree(6222), await orFree(6223), await orFree(6224)];
  log(`NATS: starting a 3-node cluster on 127.0.0.1:${ports.join(", ")} (stores in ${storeRoot})`);
  const cluster = await startNatsCluster({
    nodes: 3,
    storeRoot,
    ports,
    httpPorts,
    clusterPorts,
    auth,
  });
  log(
    `NATS: cluster ${cluster.name} up, meta leader ${await cluster.metaLeader()}; monitoring on :${httpPorts.join(", :")}`,
  );
  return cluster;
}
