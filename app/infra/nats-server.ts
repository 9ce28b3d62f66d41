import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ROLES, renderAuthorization } from "../../nats/permissions.js";
import { InfraError } from "../../src/errors.js";
import { defaultCredentialsDir, ensureCredentials } from "./credentials.js";
import { canBind, freePort } from "./free-port.js";
import { ManagedProcess } from "./managed-process.js";
import { infraPaths, projectRoot } from "./paths.js";

export interface NatsServerOptions {
  /** Client port; a free one when omitted. */
  port?: number;
  /** Monitoring (HTTP) port; a free one when omitted. */
  httpPort?: number;
  /** JetStream store; a fresh temporary folder (removed on stop) when omitted. */
  storeDir?: string;
  /** Config file; nats/server.conf when omitted. */
  configFile?: string;
  /** Detach so the server outlives this process. */
  detached?: boolean;
  startTimeoutMs?: number;
  /** server_name; the config file's when omitted. Unique per node of a cluster. */
  serverName?: string;
  /** Joins a cluster: its name, this node's route port (on 127.0.0.1) and the routes to solicit. */
  cluster?: { name: string; port: number; routes: string[] };
  /**
   * Per-role nkey users and permissions (nats/permissions.ts), from the credentials folder
   * (created on first use). On unless `false`: only a test of an open server turns it off.
   */
  auth?:
    | false
    | {
        credentialsDir?: string;
        /**
         * Users beside the roles with no limits: a test harness's own client, which sets up and
         * inspects what the processes under test (logged in as their roles) do.
         */
        unrestrictedNkeys?: string[];
      };
  /** Clients must use TLS: the server's certificate and key, and the CA for client certificates. */
  tls?: { certFile: string; keyFile: string; caFile?: string; verifyClients?: boolean };
}

/**
 * The server's configuration: the base file, then the role users and TLS. nats-server resolves
 * includes relative to the including file, so the pieces are composed into one file.
 */
export function composeNatsConfig(
  baseConfigFile: string,
  o: Pick<NatsServerOptions, "auth" | "tls">,
): string {
  const parts = [readFileSync(baseConfigFile, "utf8")];
  if (o.auth !== false) {
    const creds = ensureCredentials(o.auth?.credentialsDir ?? defaultCredentialsDir());
    parts.push(
      "# AdClick's roles (app/infra/credentials.ts): public keys only, the seeds stay with the clients.",
      renderAuthorization(
        ROLES.map((role) => ({ role, nkey: creds.nats[role].publicKey })),
        o.auth?.unrestrictedNkeys ?? [],
      ),
    );
  }
  if (o.tls) {
    parts.push(
      [
        "tls {",
        `  cert_file: ${JSON.stringify(o.tls.certFile)}`,
        `  key_file: ${JSON.stringify(o.tls.keyFile)}`,
        ...(o.tls.caFile ? [`  ca_file: ${JSON.stringify(o.tls.caFile)}`] : []),
        ...(o.tls.verifyClients ? ["  verify: true"] : []),
        "  timeout: 5",
        "}",
      ].join("\n"),
    );
  }
  return `${parts.join("\n")}\n`;
}

/** A nats-server we started, with JetStream enabled. */
export interface NatsServerHandle {
  url: string;
  port: number;
  httpPort: number;
  storeDir: string;
  process: ManagedProcess;
  /** Orderly stop; removes a temporary store. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL (a crash), keeping the store, then start again on the same ports and store. */
  restart(opts?: { crash?: boolean }): Promise<void>;
}

/**
 * Starts the project's nats-server (built by scripts/provision.sh) and waits until
 * JetStream reports healthy on the monitoring endpoint.
 */
export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const paths = infraPaths();
  const port = opts.port ?? (await freePort());
  let httpPort = opts.httpPort ?? (await freePort());
  const tempStore = opts.storeDir === undefined;
  const storeDir = opts.storeDir ?? mkdtempSync(join(tmpdir(), "adclick-nats-"));
  mkdirSync(storeDir, { recursive: true });
  const configFile = join(storeDir, "adclick-server.conf");
  writeFileSync(
    configFile,
    composeNatsConfig(opts.configFile ?? join(projectRoot(), "nats", "server.conf"), opts),
    { mode: 0o600 },
  );
  const timeoutMs = opts.startTimeoutMs ?? 30_000;

  const launch = async (): Promise<ManagedProcess> => {
    const proc = new ManagedProcess({
      name: "nats-server",
      command: paths.natsServerBin,
      args: [
        "-c",
        configFile,
        "-a",
        "127.0.0.1",
        "-p",
        String(port),
        "-m",
        String(httpPort),
        "-sd",
        storeDir,
        ...(opts.serverName ? ["--server_name", opts.serverName] : []),
        ...(opts.cluster
          ? [
              "--cluster_name",
              opts.cluster.name,
              "--cluster",
              `nats://127.0.0.1:${opts.cluster.port}`,
              "--routes",
              opts.cluster.routes.join(","),
            ]
          : []),
      ],
      logFile: join(storeDir, "..", `nats-server-${port}.log`),
      detached: opts.detached ?? false,
    });
    try {
      await proc.waitUntil(async () => {
        const res = await fetch(`http://127.0.0.1:${httpPort}/healthz?js-enabled-only=true`);
        return res.ok;
      }, timeoutMs);
    } catch (err) {
      await proc.kill(); // never two servers on one store
      throw err;
    }
    return proc;
  };

  if (!existsSync(paths.natsServerBin)) {
    throw new InfraError(
      "INFRA_NOT_PROVISIONED",
      `${paths.natsServerBin} is missing: run 'npm run provision' first`,
    );
  }
  let proc = await launch();

  let stopped = false;
  const handle: NatsServerHandle = {
    url: `nats://127.0.0.1:${port}`,
    port,
    get httpPort() {
      return httpPort;
    },
    storeDir,
    get process() {
      return proc;
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      await proc.stop();
      if (tempStore) rmSync(storeDir, { recursive: true, force: true });
    },
    async restart(r = {}) {
      if (r.crash === false) await proc.stop();
      else await proc.kill();
      // The same client port (clients reconnect to it) and store. Should a port be taken
      // meanwhile, the monitoring port moves to a free one; the client port is waited for.
      for (let attempt = 1; ; attempt++) {
        try {
          proc = await launch();
          return;
        } catch (err) {
          if (attempt >= 10) throw err;
          if (!(await canBind("127.0.0.1", httpPort))) httpPort = await freePort();
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    },
  };
  return handle;
}
