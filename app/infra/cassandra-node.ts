import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import cassandra from "cassandra-driver";
import { InfraError } from "../../src/errors.js";
import {
  type CassandraLogin,
  type InfraTls,
  infraSslOptions,
  secureCassandra,
} from "./cassandra-auth.js";
import { defaultCredentialsDir, ensureCredentials } from "./credentials.js";
import { freePort, isListening } from "./free-port.js";
import { ManagedProcess } from "./managed-process.js";
import { infraPaths } from "./paths.js";

export interface CassandraNodeOptions {
  /**
   * The loopback address the node listens on (listen_address and rpc_address), e.g.
   * 127.0.0.2: nodes of one local ring share their ports, one address each. 127.0.0.1 when
   * omitted.
   */
  host?: string;
  /** Seed addresses ("host" or "host:storagePort"); this node alone when omitted. */
  seeds?: string[];
  /** Nodes join only a ring of the same name. */
  clusterName?: string;
  /** The node's one token (num_tokens: 1), as a decimal string (Murmur3 tokens exceed 2^53). */
  initialToken?: string;
  /**
   * Milliseconds a starting node gives gossip to learn the ring (cassandra.ring_delay_ms). 0
   * for a single node: there is nothing to learn.
   */
  ringDelayMs?: number;
  /** CQL port; a free one when omitted. */
  nativePort?: number;
  /** Inter-node (storage) port; a free one when omitted. */
  storagePort?: number;
  /** Data, commit log, caches and logs; a fresh temporary folder (removed on stop) when omitted. */
  dataDir?: string;
  /** JVM heap. Small by default: our machines have 2 cores and are shared. */
  heapMb?: number;
  detached?: boolean;
  startTimeoutMs?: number;
  /** How long stop() waits after SIGTERM before SIGKILL; 4 s by default. */
  stopGraceMs?: number;
  /**
   * Password logins and role permissions (PasswordAuthenticator, CassandraAuthorizer). On by
   * default: secure by default. Off only for a throwaway node nothing else can reach.
   */
  auth?: boolean;
  /**
   * Where AdClick's credentials are (credentials.ts; created when missing): the node gets the
   * roles adclick_admin and adclick_app with those passwords. ADCLICK_CREDENTIALS_DIR (else
   * the default data folder's) when omitted.
   */
  credentialsDir?: string;
  /**
   * Whether start-up (and every start()) sets up AdClick's roles and disables the default
   * superuser (cassandra-auth.ts) once CQL answers; true by default with auth. A ring passes
   * false and does it once, for all its nodes.
   */
  secureRoles?: boolean;
  /** Client TLS: the node then accepts encrypted CQL connections only. */
  tls?: CassandraNodeTls;
}

export interface CassandraNodeTls {
  /** PEM: the node's private key (unencrypted PKCS#8) and its certificate, in one file. */
  keystoreFile: string;
  /** PEM: the CA(s) whose client certificates the node accepts (with requireClientAuth). */
  truststoreFile?: string;
  /** Mutual TLS: a client must present a certificate the truststore's CA signed. */
  requireClientAuth?: boolean;
  /**
   * PEM: the CA that signed the keystore's certificate. This module's own connections to the
   * node (readiness, role set-up) check the node against it; without it they encrypt without
   * checking (the node is a process just started here, on a loopback address).
   */
  caFile?: string;
}

export interface CassandraNodeHandle {
  /** The address the node listens on, e.g. "127.0.0.1". */
  host: string;
  /** "<host>:<port>" for cassandra-driver's contactPoints. */
  contactPoint: string;
  nativePort: number;
  storagePort: number;
  localDataCenter: string;
  dataDir: string;
  /** The running (or last) server process; a new one after each start(). */
  readonly process: ManagedProcess;
  /**
   * Milliseconds from spawn until CQL answered a query and, with authentication, AdClick's
   * roles were set up (of the latest start).
   */
  readonly startupMs: number;
  /** AdClick's two roles on this node; undefined for a node without authentication. */
  credentials: { admin: CassandraLogin; app: CassandraLogin } | undefined;
  /** The node's TLS files; undefined for plaintext CQL. */
  tls: CassandraNodeTls | undefined;
  /** TLS for AdClick's own infrastructure connections to the node (readiness, roles). */
  infraTls: InfraTls | undefined;
  /**
   * Orderly stop (SIGTERM; SIGKILL after the grace period, 4 s by default). The data stays and start() brings the node back,
   * except a node in a temporary folder of its own (no dataDir given): that folder is removed.
   */
  stop(): Promise<void>;
  /**
   * Starts the stopped (or killed: process.kill()) node again on the same folder, address and
   * ports, and waits until CQL answers. Its commit log is replayed.
   */
  start(): Promise<void>;
}

export const LOCAL_DATA_CENTER = "datacenter1";

/**
 * The JVM flags Cassandra 5.0 needs on Java 17 (module access for its off-heap and
 * instrumentation code) plus a small-heap G1 setup. Mirrors what the distribution's
 * conf/jvm*-server.options and cassandra-env.sh would assemble.
 */
function jvmArgs(
  home: string,
  lib: string,
  heapMb: number,
  confDir: string,
  ringDelayMs: number,
  auth: boolean,
): string[] {
  const exportsList = [
    "java.base/jdk.internal.misc",
    "java.management.rmi/com.sun.jmx.remote.internal.rmi",
    "java.rmi/sun.rmi.registry",
    "java.rmi/sun.rmi.server",
    "java.sql/java.sql",
    "java.base/java.lang.ref",
    "jdk.unsupported/sun.misc",
    "jdk.compiler/com.sun.tools.javac.file",
    "jdk.attach/sun.tools.attach",
  ];
  const opensList = [
    "java.base/java.lang.module",
    "java.base/jdk.internal.loader",
    "java.base/jdk.internal.ref",
    "java.base/jdk.internal.reflect",
    "java.base/jdk.internal.math",
    "java.base/jdk.internal.module",
    "java.base/jdk.internal.util.jar",
    "jdk.management/com.sun.management.internal",
    "java.base/sun.nio.ch",
    "java.base/java.io",
    "java.base/java.lang.reflect",
    "jdk.compiler/com.sun.tools.javac",
    "java.base/java.lang",
    "java.base/java.util",
  ];
  const jamm = readdirSync(lib).find((f) => /^jamm-.*\.jar$/.test(f));
  return [
    `-Xms${heapMb}m`,
    `-Xmx${heapMb}m`,
    "-Xss256k",
    "-XX:+UseG1GC",
    "-XX:+ParallelRefProcEnabled",
    "-XX:MaxTenuringThreshold=1",
    "-XX:+ExitOnOutOfMemoryError",
    // Few GC/compiler threads: a 2-core machine shared with NATS and the workers.
    "-XX:ParallelGCThreads=2",
    "-XX:ConcGCThreads=1",
    "-XX:CICompilerCount=2",
    "-XX:MaxDirectMemorySize=512m",
    "-ea",
    "-da:net.openhft...",
    "-Djava.net.preferIPv4Stack=true",
    "-Djdk.attach.allowAttachSelf=true",
    ...(jamm ? [`-javaagent:${join(lib, jamm)}`] : []),
    ...exportsList.flatMap((m) => ["--add-exports", `${m}=ALL-UNNAMED`]),
    ...opensList.flatMap((m) => ["--add-opens", `${m}=ALL-UNNAMED`]),
    "-Dio.netty.tryReflectionSetAccessible=true",
    `-Dcassandra.config=file://${join(confDir, "cassandra.yaml")}`,
    `-Dlogback.configurationFile=${join(confDir, "logback.xml")}`,
    `-Dcassandra.logdir=${join(confDir, "..", "logs")}`,
    `-Dcassandra.storagedir=${join(confDir, "..")}`,
    `-Dcassandra-foreground=yes`,
    // Do not wait for gossip to settle: a single node has nothing to gossip with; in a local
    // ring every token is set (initial_token, no bootstrap), so there is nothing to settle.
    "-Dcassandra.skip_wait_for_gossip_to_settle=0",
    `-Dcassandra.ring_delay_ms=${ringDelayMs}`,
    // The default superuser appears 10 s after start otherwise: the role set-up waits for it.
    ...(auth ? ["-Dcassandra.superuser_setup_delay_ms=0"] : []),
    `-Dcassandra.home=${home}`,
    "-cp",
    `${lib}/*`,
    "org.apache.cassandra.service.CassandraDaemon",
  ];
}

interface YamlSettings {
  host: string;
  seeds: string[];
  clusterName: string;
  initialToken: string;
  nativePort: number;
  storagePort: number;
  auth: boolean;
  tls: CassandraNodeTls | undefined;
}

/** The client_encryption_options block: PEM files, no Java keystore needed (Cassandra 5.0). */
function clientEncryptionYaml(tls: CassandraNodeTls | undefined): string {
  if (!tls) return "";
  return `client_encryption_options:
  enabled: true
  optional: false
  ssl_context_factory:
    class_name: org.apache.cassandra.security.PEMBasedSslContextFactory
  keystore: ${tls.keystoreFile}
  require_client_auth: ${tls.requireClientAuth ?? false}
${tls.truststoreFile ? `  truststore: ${tls.truststoreFile}\n` : ""}`;
}

function cassandraYaml(dir: string, y: YamlSettings): string {
  const seeds = y.seeds.map((s) => (s.includes(":") ? s : `${s}:${y.storagePort}`)).join(",");
  return `# Generated by app/infra/cassandra-node.ts: a local node for AdClick.
cluster_name: ${y.clusterName}
num_tokens: 1
initial_token: ${y.initialToken}
partitioner: org.apache.cassandra.dht.Murmur3Partitioner
data_file_directories: [${join(dir, "data")}]
commitlog_directory: ${join(dir, "commitlog")}
saved_caches_directory: ${join(dir, "saved_caches")}
hints_directory: ${join(dir, "hints")}
cdc_raw_directory: ${join(dir, "cdc_raw")}
commitlog_sync: periodic
commitlog_sync_period: 10000ms
seed_provider:
  - class_name: org.apache.cassandra.locator.SimpleSeedProvider
    parameters:
      - seeds: "${seeds}"
listen_address: ${y.host}
rpc_address: ${y.host}
storage_port: ${y.storagePort}
native_transport_port: ${y.nativePort}
start_native_transport: true
endpoint_snitch: SimpleSnitch
auto_bootstrap: false
${
  y.auth
    ? `authenticator: PasswordAuthenticator
authorizer: CassandraAuthorizer
role_manager: CassandraRoleManager
# A ring replicates system_auth to every node (cassandra-ring.ts): a login reads the local
# copy, so it works while the other nodes are down (the default LOCAL_QUORUM would not).
auth_read_consistency_level: LOCAL_ONE
# …so every copy must have every role: roles are written to all replicas (AdClick writes them
# only while the whole ring is up), never to a quorum that may leave one node without them.
auth_write_consistency_level: ALL
`
    : `authenticator: AllowAllAuthenticator
authorizer: AllowAllAuthorizer
`
}${clientEncryptionYaml(y.tls)}# Our raw-block rows are large (a whole published batch); allow them without warnings.
batch_size_warn_threshold: 256KiB
batch_size_fail_threshold: 4MiB
concurrent_reads: 8
concurrent_writes: 16
# Trie memtables (Cassandra 5.0) with their cells off the heap: far less allocation and GC
# per write than the skip-list default, which on 2 shared cores is where a write-heavy node's
# CPU goes. Sized against the small heap: the data lives off-heap.
memtable:
  configurations:
    skiplist:
      class_name: SkipListMemtable
    trie:
      class_name: TrieMemtable
    default:
      inherits: trie
memtable_allocation_type: offheap_objects
memtable_heap_space: 128MiB
memtable_offheap_space: 384MiB
`;
}

const LOGBACK = (logDir: string) => `<configuration>
  <appender name="FILE" class="ch.qos.logback.core.FileAppender">
    <file>${join(logDir, "system.log")}</file>
    <encoder><pattern>%-5level [%thread] %date{ISO8601} %F:%L - %msg%n</pattern></encoder>
  </appender>
  <root level="INFO"><appender-ref ref="FILE"/></root>
</configuration>
`;

/**
 * Connects with cassandra-driver and runs one query: the real readiness test. A node that
 * refuses the login (none given, or not accepted yet) answers too: CQL is up, and it is the
 * role set-up's business to log in. With `tls`, connects over TLS.
 */
export async function cqlAnswers(
  contactPoint: string,
  timeoutMs = 3000,
  o: { tls?: InfraTls; login?: CassandraLogin } = {},
): Promise<boolean> {
  const client = new cassandra.Client({
    contactPoints: [contactPoint],
    localDataCenter: LOCAL_DATA_CENTER,
    credentials: o.login,
    sslOptions: infraSslOptions(o.tls),
    socketOptions: { connectTimeout: timeoutMs, readTimeout: timeoutMs },
  });
  try {
    await client.execute("SELECT release_version FROM system.local");
    return true;
  } catch (err) {
    return refusedLogin(err);
  } finally {
    await client.shutdown().catch(() => {});
  }
}

/** Whether a failed connection was refused at the login (the node answered CQL). */
function refusedLogin(err: unknown): boolean {
  const inner =
    err instanceof cassandra.errors.NoHostAvailableError
      ? Object.values((err.innerErrors ?? {}) as Record<string, unknown>)
      : [err];
  return inner.some((e) => e instanceof cassandra.errors.AuthenticationError);
}

/** TLS for this module's own connections to a node with `tls`. */
function infraTlsOf(tls: CassandraNodeTls | undefined): InfraTls | undefined {
  if (!tls) return undefined;
  const keystore = tls.requireClientAuth ? readFileSync(tls.keystoreFile, "utf8") : undefined;
  return {
    ...(tls.caFile ? { ca: readFileSync(tls.caFile, "utf8"), verify: true } : { verify: false }),
    // Mutual TLS: the node's own key and certificate serve as our client certificate (the
    // truststore's CA must have signed it, as it signs AdClick's).
    ...(keystore ? { cert: keystore, key: keystore } : {}),
  };
}

/**
 * Starts one Apache Cassandra node from the jars scripts/provision.sh fetched, with a
 * generated config, and waits until CQL answers a query.
 */
export async function startCassandraNode(
  opts: CassandraNodeOptions = {},
): Promise<CassandraNodeHandle> {
  const paths = infraPaths();
  if (!existsSync(join(paths.cassandraHome, ".complete"))) {
    throw new InfraError(
      "INFRA_NOT_PROVISIONED",
      `Cassandra ${paths.versions.cassandra} is not installed in ${paths.cassandraHome}: run 'npm run provision' first`,
    );
  }
  const auth = opts.auth ?? true;
  const credentials = auth
    ? (() => {
        const all = ensureCredentials(opts.credentialsDir ?? defaultCredentialsDir()).cassandra;
        return {
          admin: { username: all.admin.username, password: all.admin.password },
          app: { username: all.app.username, password: all.app.password },
        };
      })()
    : undefined;
  const infraTls = infraTlsOf(opts.tls);
  const host = opts.host ?? "127.0.0.1";
  const nativePort = opts.nativePort ?? (await freePort(host));
  const storagePort = opts.storagePort ?? (await freePort(host));
  const tempDir = opts.dataDir === undefined;
  const dir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "adclick-cassandra-"));
  const confDir = join(dir, "conf");
  const logDir = join(dir, "logs");
  for (const d of [confDir, logDir, join(dir, "data")]) mkdirSync(d, { recursive: true });
  writeFileSync(
    join(confDir, "cassandra.yaml"),
    cassandraYaml(dir, {
      host,
      seeds: opts.seeds ?? [host],
      clusterName: opts.clusterName ?? "adclick-local",
      initialToken: opts.initialToken ?? "0",
      nativePort,
      storagePort,
      auth,
      tls: opts.tls,
    }),
  );
  writeFileSync(join(confDir, "logback.xml"), LOGBACK(logDir));
  const args = jvmArgs(
    paths.cassandraHome,
    paths.cassandraLib,
    opts.heapMb ?? 512,
    confDir,
    opts.ringDelayMs ?? 0,
    auth,
  );

  const contactPoint = `${host}:${nativePort}`;
  const spawnAndWait = async () => {
    const started = Date.now();
    const p = new ManagedProcess({
      name: `cassandra ${host}`,
      command: "java",
      args,
      logFile: join(logDir, "stdout.log"),
      detached: opts.detached ?? false,
    });
    try {
      await p.waitUntil(
        async () =>
          (await isListening(host, nativePort)) &&
          cqlAnswers(contactPoint, 3000, { tls: infraTls }),
        opts.startTimeoutMs ?? 120_000,
        250,
      );
      if (credentials && (opts.secureRoles ?? true)) {
        await secureCassandra({
          contactPoints: [contactPoint],
          localDataCenter: LOCAL_DATA_CENTER,
          admin: credentials.admin,
          app: credentials.app,
          tls: infraTls,
        });
      }
    } catch (err) {
      await p.kill();
      throw err;
    }
    return { p, ms: Date.now() - started };
  };
  let { p: proc, ms: startupMs } = await spawnAndWait();

  let removed = false;
  return {
    host,
    contactPoint,
    nativePort,
    storagePort,
    localDataCenter: LOCAL_DATA_CENTER,
    dataDir: dir,
    credentials,
    tls: opts.tls,
    infraTls,
    get process() {
      return proc;
    },
    get startupMs() {
      return startupMs;
    },
    async stop() {
      // Within the 10 s a stopping `adclick up` has; its commit log is replayed on start.
      await proc.stop(opts.stopGraceMs ?? 4_000);
      if (tempDir && !removed) {
        removed = true;
        rmSync(dir, { recursive: true, force: true });
      }
    },
    async start() {
      if (proc.running) throw new Error(`Cassandra at ${contactPoint} is running`);
      if (removed) throw new Error(`Cassandra at ${contactPoint} was removed with its folder`);
      ({ p: proc, ms: startupMs } = await spawnAndWait());
    },
  };
}
