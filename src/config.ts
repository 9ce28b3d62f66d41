import { isIP } from "node:net";
import { ConfigError } from "./errors.js";
import type { Dimension } from "./model.js";
import {
  DEFAULT_AMEND_HORIZON_MS,
  DEFAULT_MAX_HOLD_MS,
  DEFAULT_MAX_OPEN_MINUTES,
  LATE_POLICIES,
  type LatePolicy,
} from "./windows/partition-aggregator.js";

/**
 * What an `adclick worker` process runs. Every role by default; a deployment splits them
 * over processes, e.g. aggregation workers without `query` and query-only processes, so the
 * query service's in-memory rollup never shares a process with the aggregators.
 */
export const WORKER_ROLES = [
  "map",
  "raw-writer",
  "aggregators",
  "reducer",
  "aggregate-writer",
  "late-repair",
  "query",
] as const;
export type WorkerRole = (typeof WORKER_ROLES)[number];

/**
 * Consistency levels AdClick may read and write at (one level for both). Not ANY (reads
 * cannot use it) nor SERIAL/LOCAL_SERIAL (lightweight transactions only).
 */
export const CASSANDRA_CONSISTENCIES = [
  "ONE",
  "TWO",
  "THREE",
  "QUORUM",
  "ALL",
  "LOCAL_ONE",
  "LOCAL_QUORUM",
  "EACH_QUORUM",
] as const;
export type CassandraConsistency = (typeof CASSANDRA_CONSISTENCIES)[number];

/**
 * AdClick's configuration, parsed and validated once at start-up. Every field names its
 * unit. Sources, later ones winning: defaults, environment (ADCLICK_*), command-line flags.
 */
export interface AdclickConfig {
  /** NATS servers, comma separated in ADCLICK_NATS_URL. */
  natsServers: string[];
  /**
   * Where AdClick's own credentials live (ADCLICK_CREDENTIALS_DIR): one NATS nkey seed per role
   * and the Cassandra roles' passwords, generated on first use by the servers AdClick starts.
   * `<localDataDir>/credentials` when unset. The settings below take precedence over it.
   */
  credentialsDir?: string;
  /** A NATS nkey seed file for this process (ADCLICK_NATS_NKEY_FILE). */
  natsNkeyFile?: string;
  /** A NATS user credentials file, JWT and seed (ADCLICK_NATS_CREDS_FILE; decentralized auth). */
  natsCredsFile?: string;
  /** NATS user and password, for servers configured with passwords. */
  natsUser?: string;
  natsPassword?: string;
  /** TLS to NATS: the CA that signed the servers' certificates, and a client certificate. */
  natsTlsCaFile?: string;
  natsTlsCertFile?: string;
  natsTlsKeyFile?: string;
  /** Replicas for streams and KV buckets: 1 on one server, 3 on a 3-node cluster. */
  natsReplicas: number;
  /**
   * How often a NATS client pings its server. Two unanswered pings (a frozen server, a
   * connection dead without a close) and it moves to another server of the list.
   */
  natsPingIntervalMs: number;
  /** Cassandra contact points "host:port", comma separated in ADCLICK_CASSANDRA. */
  cassandraContactPoints: string[];
  cassandraLocalDataCenter: string;
  cassandraKeyspace: string;
  /** Replication factor used when AdClick creates its keyspace. */
  cassandraReplicationFactor: number;
  /**
   * Consistency of every read and write. LOCAL_QUORUM: with RF 3 a node may be down, and a
   * quorum read sees every quorum write.
   */
  cassandraConsistency: CassandraConsistency;
  /** Cassandra login; the password inline or (better) in a file only the owner reads. */
  cassandraUsername?: string;
  cassandraPassword?: string;
  cassandraPasswordFile?: string;
  /** TLS to Cassandra: the CA that signed the nodes' certificates, and a client certificate. */
  cassandraTlsCaFile?: string;
  cassandraTlsCertFile?: string;
  cassandraTlsKeyFile?: string;
  /**
   * Partitions of the raw-click stream. Fixed for the life of a deployment: the layout
   * records it and start-up refuses a different value (changing it would move ads between
   * partitions and their windows).
   */
  partitions: number;
  /** JetStream's duplicate window for publish retries (message IDs). */
  duplicateWindowMs: number;
  /** How long raw clicks stay in the raw-click stream (the raw store keeps them longer). */
  rawStreamMaxAgeMs: number;
  /** Event-time lateness accepted before a minute closes. Explicit, never hidden. */
  allowedLatenessMs: number;
  /**
   * Processing time without a click or heartbeat after which a source stops holding minutes
   * open (when no source holds any, every minute holding data closes).
   */
  idleTimeoutMs: number;
  /** Event time a slow source may hold a partition's minutes open behind the fastest one. */
  maxHoldMs: number;
  /** Open minutes holding data a partition keeps at most (memory bound). */
  maxOpenMinutes: number;
  /**
   * Clicks later than their minute's close: "amend" counts them into it (a new revision),
   * "drop" reports them without counting (CLICKS_LATE).
   */
  latePolicy: LatePolicy;
  /** Event time after its close during which a minute is amended live (past it: late repair). */
  amendHorizonMs: number;
  /** Star-schema dimensions counted per ad. */
  dimensions: Dimension[];
  /** Per-partition top-k kept per minute (≥ the largest N callers may ask for). */
  topK: number;
  /** Port of the Prometheus /metrics endpoint; 0 disables it. */
  metricsPort: number;
  /** Port of the web console, served where the query role runs; 0 disables it. */
  consolePort: number;
  /**
   * Address the web console listens on. Loopback (the default) needs no password; any other
   * address requires HTTP Basic auth as user `query` (app/infra/credentials.ts).
   */
  consoleHost: string;
  /**
   * This worker's name in partition leases. Unique per process (default host/pid); a stable
   * one (e.g. the pod name) lets a restarted worker take its leases back at once.
   */
  workerId?: string;
  /**
   * Partitions this worker offers to aggregate (default all). Each runs where its lease is
   * held; workers offering the same partition are hot standbys for each other.
   */
  ownPartitions?: number[];
  /** The roles this worker process runs (ADCLICK_ROLES; default all). */
  roles: WorkerRole[];
  /** Where `adclick up` keeps the data of the servers it starts itself. */
  localDataDir: string;
  /** Days raw events stay in the raw store's tables (a TTL; 0 keeps them forever). */
  rawRetentionDays: number;
  /** Period of the scheduled reconciliation in the running stack; 0 turns it off. */
  reconcileEveryMs: number;
  /** How far behind now the scheduled reconciliation stays (closed, stored minutes only). */
  reconcileLagMs: number;
  /** An aggregator snapshots at most this often while input flows (and on an orderly stop). */
  snapshotEveryMs: number;
  /** How long an actor's orderly stop may take before its supervisor stops it outright. */
  actorShutdownMs: number;
  /** How far back the reducer replays the aggregates stream when it starts (rebuilds its state). */
  reducerReplayMs: number;
  /**
   * The reducer emits a minute some partition never reported this long after the minute's
   * end plus the lateness and the idle timeout (a partition without clicks never reports).
   */
  reducerOverdueGraceMs: number;
  /** Longest range a query may ask for, in minutes. */
  queryMaxRangeMinutes: number;
  /**
   * Hot ads get shards of their own (docs/hot-ads.md): on by default; off under late policy
   * "drop". An ad is hot when, over the last `hotPeriodMs` of stream time, it draws at least
   * `hotShare` of its partition's clicks and `hotMinRatePerSec` clicks a second; it cools below
   * half of either. It gets one shard per `hotShardRatePerSec` (2..`hotMaxShards`).
   */
  hotSplit: boolean;
  hotShare: number;
  hotMinRatePerSec: number;
  hotShardRatePerSec: number;
  hotMaxShards: number;
  /** Hot ads per partition at most. */
  hotMaxAds: number;
  hotPeriodMs: number;
}

export const DEFAULT_CONFIG: AdclickConfig = {
  natsServers: ["nats://127.0.0.1:4222"],
  natsReplicas: 1,
  // The client library's default is 2 minutes: far too long to sit on a frozen cluster node.
  natsPingIntervalMs: 2000,
  cassandraContactPoints: ["127.0.0.1:9042"],
  cassandraLocalDataCenter: "datacenter1",
  cassandraKeyspace: "adclick",
  cassandraReplicationFactor: 1,
  cassandraConsistency: "LOCAL_QUORUM",
  partitions: 16,
  duplicateWindowMs: 2 * 60_000,
  rawStreamMaxAgeMs: 7 * 24 * 3_600_000,
  allowedLatenessMs: 15_000,
  idleTimeoutMs: 10_000,
  maxHoldMs: DEFAULT_MAX_HOLD_MS,
  maxOpenMinutes: DEFAULT_MAX_OPEN_MINUTES,
  latePolicy: "amend",
  amendHorizonMs: DEFAULT_AMEND_HORIZON_MS,
  dimensions: ["country"],
  topK: 1000,
  metricsPort: 9464,
  consolePort: 8480,
  consoleHost: "127.0.0.1",
  roles: [...WORKER_ROLES],
  localDataDir: ".infra/data",
  rawRetentionDays: 30,
  reconcileEveryMs: 3_600_000,
  // Past the lateness and the amendment horizon: minutes still amended live are not compared.
  reconcileLagMs: 20 * 60_000,
  snapshotEveryMs: 10_000,
  // Under the process's own stop deadline (10 s), so that a hung actor is stopped outright first.
  actorShutdownMs: 5_000,
  reducerReplayMs: 3 * 3_600_000,
  reducerOverdueGraceMs: 30_000,
  queryMaxRangeMinutes: 7 * 24 * 60,
  hotSplit: true,
  hotShare: 0.3,
  hotMinRatePerSec: 5_000,
  hotShardRatePerSec: 20_000,
  hotMaxShards: 4,
  hotMaxAds: 4,
  hotPeriodMs: 10_000,
};

const DIMENSIONS: readonly Dimension[] = ["country", "ip", "userId"];

/** The environment variables AdClick reads, with the setting each one feeds. */
export const ENV_VARS = {
  ADCLICK_NATS_URL: "natsServers",
  ADCLICK_NATS_REPLICAS: "natsReplicas",
  ADCLICK_NATS_PING_MS: "natsPingIntervalMs",
  ADCLICK_CREDENTIALS_DIR: "credentialsDir",
  ADCLICK_NATS_NKEY_FILE: "natsNkeyFile",
  ADCLICK_NATS_CREDS_FILE: "natsCredsFile",
  ADCLICK_NATS_USER: "natsUser",
  ADCLICK_NATS_PASSWORD: "natsPassword",
  ADCLICK_NATS_TLS_CA: "natsTlsCaFile",
  ADCLICK_NATS_TLS_CERT: "natsTlsCertFile",
  ADCLICK_NATS_TLS_KEY: "natsTlsKeyFile",
  ADCLICK_CASSANDRA: "cassandraContactPoints",
  ADCLICK_CASSANDRA_DC: "cassandraLocalDataCenter",
  ADCLICK_KEYSPACE: "cassandraKeyspace",
  ADCLICK_CASSANDRA_RF: "cassandraReplicationFactor",
  ADCLICK_CASSANDRA_CONSISTENCY: "cassandraConsistency",
  ADCLICK_CASSANDRA_USER: "cassandraUsername",
  ADCLICK_CASSANDRA_PASSWORD: "cassandraPassword",
  ADCLICK_CASSANDRA_PASSWORD_FILE: "cassandraPasswordFile",
  ADCLICK_CASSANDRA_TLS_CA: "cassandraTlsCaFile",
  ADCLICK_CASSANDRA_TLS_CERT: "cassandraTlsCertFile",
  ADCLICK_CASSANDRA_TLS_KEY: "cassandraTlsKeyFile",
  ADCLICK_PARTITIONS: "partitions",
  ADCLICK_DUPLICATE_WINDOW_MS: "duplicateWindowMs",
  ADCLICK_RAW_STREAM_MAX_AGE_MS: "rawStreamMaxAgeMs",
  ADCLICK_ALLOWED_LATENESS_MS: "allowedLatenessMs",
  ADCLICK_IDLE_TIMEOUT_MS: "idleTimeoutMs",
  ADCLICK_MAX_HOLD_MS: "maxHoldMs",
  ADCLICK_MAX_OPEN_MINUTES: "maxOpenMinutes",
  ADCLICK_LATE_POLICY: "latePolicy",
  ADCLICK_AMEND_HORIZON_MS: "amendHorizonMs",
  ADCLICK_DIMENSIONS: "dimensions",
  ADCLICK_TOP_K: "topK",
  ADCLICK_METRICS_PORT: "metricsPort",
  ADCLICK_CONSOLE_PORT: "consolePort",
  ADCLICK_CONSOLE_HOST: "consoleHost",
  ADCLICK_DATA_DIR: "localDataDir",
  ADCLICK_WORKER_ID: "workerId",
  ADCLICK_OWN_PARTITIONS: "ownPartitions",
  ADCLICK_ROLES: "roles",
  ADCLICK_RAW_RETENTION_DAYS: "rawRetentionDays",
  ADCLICK_RECONCILE_EVERY_MS: "reconcileEveryMs",
  ADCLICK_RECONCILE_LAG_MS: "reconcileLagMs",
  ADCLICK_SNAPSHOT_EVERY_MS: "snapshotEveryMs",
  ADCLICK_ACTOR_SHUTDOWN_MS: "actorShutdownMs",
  ADCLICK_REDUCER_REPLAY_MS: "reducerReplayMs",
  ADCLICK_REDUCER_OVERDUE_GRACE_MS: "reducerOverdueGraceMs",
  ADCLICK_QUERY_MAX_RANGE_MINUTES: "queryMaxRangeMinutes",
  ADCLICK_HOT_SPLIT: "hotSplit",
  ADCLICK_HOT_SHARE: "hotShare",
  ADCLICK_HOT_MIN_RATE: "hotMinRatePerSec",
  ADCLICK_HOT_SHARD_RATE: "hotShardRatePerSec",
  ADCLICK_HOT_MAX_SHARDS: "hotMaxShards",
  ADCLICK_HOT_MAX_ADS: "hotMaxAds",
  ADCLICK_HOT_PERIOD_MS: "hotPeriodMs",
} as const satisfies Record<string, keyof AdclickConfig>;

type RawSettings = Partial<Record<keyof AdclickConfig, string>>;

/** The environment variable that sets `key` (for messages that name a setting). */
export function envNameOf(key: keyof AdclickConfig): string {
  return Object.entries(ENV_VARS).find(([, k]) => k === key)?.[0] ?? key;
}

function int(setting: string, raw: string, min: number, max: number): number {
  if (!/^-?\d+$/.test(raw.trim())) throw new ConfigError(setting, `"${raw}" is not an integer`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(setting, `${n} is outside ${min}..${max}`);
  return n;
}

function fraction(setting: string, raw: string): number {
  const n = Number(raw.trim());
  if (!/^\s*(0|1)?(\.\d+)?\s*$/.test(raw) || !(n > 0 && n <= 1)) {
    throw new ConfigError(setting, `"${raw}" is not a number in (0, 1]`);
  }
  return n;
}

function onOff(setting: string, raw: string): boolean {
  const v = raw.trim().toLowerCase();
  if (["on", "true", "1", "yes"].includes(v)) return true;
  if (["off", "false", "0", "no"].includes(v)) return false;
  throw new ConfigError(setting, `"${raw}" is not on or off`);
}

function list(raw: string): string[] {
  return raw
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s.length > 0);
}

/**
 * Builds the configuration from defaults, then `env` (ADCLICK_* variables), then `overrides`
 * (already-typed values, e.g. from command-line flags). Throws ConfigError naming the first
 * invalid setting.
 */
export function loadConfig(
  env: NodeJS.ProcessEnv = process.env,
  overrides: Partial<AdclickConfig> = {},
): AdclickConfig {
  const raw: RawSettings = {};
  for (const [name, key] of Object.entries(ENV_VARS)) {
    const v = env[name];
    if (v !== undefined && v !== "") raw[key] = v;
  }
  const c: AdclickConfig = { ...DEFAULT_CONFIG };
  const s = envNameOf;

  if (raw.natsServers) c.natsServers = list(raw.natsServers);
  for (const key of [
    "credentialsDir",
    "natsNkeyFile",
    "natsCredsFile",
    "natsUser",
    "natsPassword",
    "natsTlsCaFile",
    "natsTlsCertFile",
    "natsTlsKeyFile",
    "cassandraUsername",
    "cassandraPassword",
    "cassandraPasswordFile",
    "cassandraTlsCaFile",
    "cassandraTlsCertFile",
    "cassandraTlsKeyFile",
  ] as const) {
    if (raw[key]) c[key] = raw[key];
  }
  if (raw.natsReplicas) c.natsReplicas = int(s("natsReplicas"), raw.natsReplicas, 1, 5);
  if (raw.natsPingIntervalMs)
    c.natsPingIntervalMs = int(s("natsPingIntervalMs"), raw.natsPingIntervalMs, 100, 600_000);
  if (raw.cassandraContactPoints) c.cassandraContactPoints = list(raw.cassandraContactPoints);
  if (raw.cassandraLocalDataCenter) c.cassandraLocalDataCenter = raw.cassandraLocalDataCenter;
  if (raw.cassandraKeyspace) c.cassandraKeyspace = raw.cassandraKeyspace;
  if (raw.cassandraReplicationFactor)
    c.cassandraReplicationFactor = int(
      s("cassandraReplicationFactor"),
      raw.cassandraReplicationFactor,
      1,
      9,
    );
  if (raw.cassandraConsistency) {
    const level = raw.cassandraConsistency.trim().toUpperCase();
    if (!(CASSANDRA_CONSISTENCIES as readonly string[]).includes(level)) {
      throw new ConfigError(
        s("cassandraConsistency"),
        `"${raw.cassandraConsistency}" is not one of ${CASSANDRA_CONSISTENCIES.join(", ")}`,
      );
    }
    c.cassandraConsistency = level as CassandraConsistency;
  }
  if (raw.partitions) c.partitions = int(s("partitions"), raw.partitions, 1, 4096);
  if (raw.duplicateWindowMs)
    c.duplicateWindowMs = int(s("duplicateWindowMs"), raw.duplicateWindowMs, 1000, 7 * 86_400_000);
  if (raw.rawStreamMaxAgeMs)
    c.rawStreamMaxAgeMs = int(
      s("rawStreamMaxAgeMs"),
      raw.rawStreamMaxAgeMs,
      60_000,
      3650 * 86_400_000,
    );
  if (raw.allowedLatenessMs)
    c.allowedLatenessMs = int(s("allowedLatenessMs"), raw.allowedLatenessMs, 0, 3_600_000);
  if (raw.idleTimeoutMs)
    c.idleTimeoutMs = int(s("idleTimeoutMs"), raw.idleTimeoutMs, 100, 3_600_000);
  if (raw.maxHoldMs) c.maxHoldMs = int(s("maxHoldMs"), raw.maxHoldMs, 0, 7 * 86_400_000);
  if (raw.maxOpenMinutes)
    c.maxOpenMinutes = int(s("maxOpenMinutes"), raw.maxOpenMinutes, 2, 10_080);
  if (raw.latePolicy) {
    // "correct" is what earlier versions called amending; deployments may still set it.
    const policy = raw.latePolicy === "correct" ? "amend" : raw.latePolicy;
    if (!(LATE_POLICIES as readonly string[]).includes(policy)) {
      throw new ConfigError(
        s("latePolicy"),
        `"${raw.latePolicy}" is not one of ${LATE_POLICIES.join(", ")}`,
      );
    }
    c.latePolicy = policy as LatePolicy;
  }
  if (raw.amendHorizonMs)
    c.amendHorizonMs = int(s("amendHorizonMs"), raw.amendHorizonMs, 0, 7 * 86_400_000);
  if (raw.dimensions) {
    const dims = list(raw.dimensions);
    for (const d of dims) {
      if (!DIMENSIONS.includes(d as Dimension)) {
        throw new ConfigError(s("dimensions"), `"${d}" is not one of ${DIMENSIONS.join(", ")}`);
      }
    }
    c.dimensions = dims as Dimension[];
  }
  if (raw.topK) c.topK = int(s("topK"), raw.topK, 1, 100_000);
  if (raw.metricsPort) c.metricsPort = int(s("metricsPort"), raw.metricsPort, 0, 65_535);
  if (raw.consolePort) c.consolePort = int(s("consolePort"), raw.consolePort, 0, 65_535);
  if (raw.consoleHost) c.consoleHost = raw.consoleHost.trim();
  if (raw.localDataDir) c.localDataDir = raw.localDataDir;
  if (raw.workerId) {
    if (!/^[A-Za-z0-9_./:-]{1,128}$/.test(raw.workerId)) {
      throw new ConfigError(
        s("workerId"),
        `"${raw.workerId}" must be 1-128 of A-Z a-z 0-9 _ . / : -`,
      );
    }
    c.workerId = raw.workerId;
  }
  if (raw.ownPartitions)
    c.ownPartitions = parsePartitionList(s("ownPartitions"), raw.ownPartitions);
  if (raw.roles) {
    const roles = list(raw.roles);
    if (roles.length === 0) throw new ConfigError(s("roles"), "no role given");
    for (const r of roles) {
      if (!(WORKER_ROLES as readonly string[]).includes(r)) {
        throw new ConfigError(s("roles"), `"${r}" is not one of ${WORKER_ROLES.join(", ")}`);
      }
    }
    c.roles = [...new Set(roles)] as WorkerRole[];
  }
  if (raw.rawRetentionDays)
    c.rawRetentionDays = int(s("rawRetentionDays"), raw.rawRetentionDays, 0, 3650);
  if (raw.reconcileEveryMs)
    c.reconcileEveryMs = int(s("reconcileEveryMs"), raw.reconcileEveryMs, 0, 7 * 86_400_000);
  if (raw.reconcileLagMs)
    c.reconcileLagMs = int(s("reconcileLagMs"), raw.reconcileLagMs, 60_000, 7 * 86_400_000);
  if (raw.snapshotEveryMs)
    c.snapshotEveryMs = int(s("snapshotEveryMs"), raw.snapshotEveryMs, 0, 3_600_000);
  if (raw.actorShutdownMs)
    c.actorShutdownMs = int(s("actorShutdownMs"), raw.actorShutdownMs, 100, 600_000);
  if (raw.reducerReplayMs)
    c.reducerReplayMs = int(s("reducerReplayMs"), raw.reducerReplayMs, 60_000, 7 * 86_400_000);
  if (raw.reducerOverdueGraceMs)
    c.reducerOverdueGraceMs = int(
      s("reducerOverdueGraceMs"),
      raw.reducerOverdueGraceMs,
      0,
      86_400_000,
    );
  if (raw.queryMaxRangeMinutes)
    c.queryMaxRangeMinutes = int(
      s("queryMaxRangeMinutes"),
      raw.queryMaxRangeMinutes,
      1,
      366 * 24 * 60,
    );

  if (raw.hotSplit) c.hotSplit = onOff(s("hotSplit"), raw.hotSplit);
  if (raw.hotShare) c.hotShare = fraction(s("hotShare"), raw.hotShare);
  if (raw.hotMinRatePerSec)
    c.hotMinRatePerSec = int(s("hotMinRatePerSec"), raw.hotMinRatePerSec, 1, 100_000_000);
  if (raw.hotShardRatePerSec)
    c.hotShardRatePerSec = int(s("hotShardRatePerSec"), raw.hotShardRatePerSec, 1, 100_000_000);
  if (raw.hotMaxShards) c.hotMaxShards = int(s("hotMaxShards"), raw.hotMaxShards, 2, 64);
  if (raw.hotMaxAds) c.hotMaxAds = int(s("hotMaxAds"), raw.hotMaxAds, 1, 64);
  if (raw.hotPeriodMs) {
    c.hotPeriodMs = int(s("hotPeriodMs"), raw.hotPeriodMs, 1_000, 3_600_000);
    // Judged in 5 buckets of equal length (src/hot/heavy-hitters.ts).
    if (c.hotPeriodMs % 5 !== 0)
      throw new ConfigError(s("hotPeriodMs"), `${c.hotPeriodMs} is not a multiple of 5`);
  }

  Object.assign(c, overrides);
  validate(c);
  return c;
}

/** "0-3,7,9-10" → [0, 1, 2, 3, 7, 9, 10]. */
export function parsePartitionList(setting: string, raw: string): number[] {
  const out = new Set<number>();
  for (const part of list(raw)) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) throw new ConfigError(setting, `"${part}" is not a partition or a range like 0-7`);
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    if (to < from) throw new ConfigError(setting, `"${part}" is an empty range`);
    for (let p = from; p <= to; p++) out.add(p);
  }
  return [...out].sort((a, b) => a - b);
}

function validate(c: AdclickConfig): void {
  if (c.natsServers.length === 0) throw new ConfigError("ADCLICK_NATS_URL", "no server given");
  for (const u of c.natsServers) {
    if (!/^(nats|tls|ws|wss):\/\/[^\s/]+$/.test(u) && !/^[^\s/:]+:\d+$/.test(u)) {
      throw new ConfigError("ADCLICK_NATS_URL", `"${u}" is not nats://host:port`);
    }
  }
  const natsLogins = (["natsNkeyFile", "natsCredsFile", "natsUser"] as const).filter((k) => c[k]);
  if (natsLogins.length > 1)
    throw new ConfigError(
      envNameOf(natsLogins[1] as keyof AdclickConfig),
      `give one NATS login, not ${natsLogins.map((k) => envNameOf(k)).join(" and ")}`,
    );
  if (c.natsPassword && !c.natsUser)
    throw new ConfigError("ADCLICK_NATS_PASSWORD", "needs ADCLICK_NATS_USER");
  if (c.cassandraPassword && c.cassandraPasswordFile)
    throw new ConfigError(
      "ADCLICK_CASSANDRA_PASSWORD_FILE",
      "give the password or its file, not both",
    );
  if ((c.cassandraPassword || c.cassandraPasswordFile) && !c.cassandraUsername)
    throw new ConfigError(
      c.cassandraPassword ? "ADCLICK_CASSANDRA_PASSWORD" : "ADCLICK_CASSANDRA_PASSWORD_FILE",
      "needs ADCLICK_CASSANDRA_USER",
    );
  for (const [cert, key] of [
    ["natsTlsCertFile", "natsTlsKeyFile"],
    ["cassandraTlsCertFile", "cassandraTlsKeyFile"],
  ] as const) {
    if (Boolean(c[cert]) !== Boolean(c[key]))
      throw new ConfigError(
        envNameOf(c[cert] ? key : cert),
        `a client certificate needs both ${envNameOf(cert)} and ${envNameOf(key)}`,
      );
  }
  if (c.cassandraContactPoints.length === 0)
    throw new ConfigError("ADCLICK_CASSANDRA", "no contact point given");
  for (const cp of c.cassandraContactPoints) {
    if (!/^[^\s:]+(:\d{1,5})?$/.test(cp))
      throw new ConfigError("ADCLICK_CASSANDRA", `"${cp}" is not host[:port]`);
  }
  for (const p of c.ownPartitions ?? []) {
    if (p >= c.partitions)
      throw new ConfigError(
        "ADCLICK_OWN_PARTITIONS",
        `partition ${p} does not exist (0..${c.partitions - 1})`,
      );
  }
  if (!isListenHost(c.consoleHost))
    throw new ConfigError(
      "ADCLICK_CONSOLE_HOST",
      `"${c.consoleHost}" is not an address to listen on (e.g. 127.0.0.1, ::1, 0.0.0.0, a host name)`,
    );
  if (!/^[a-z][a-z0-9_]{0,47}$/.test(c.cassandraKeyspace)) {
    throw new ConfigError(
      "ADCLICK_KEYSPACE",
      `"${c.cassandraKeyspace}" must be lower-case letters, digits, _ (≤48)`,
    );
  }
}

/** An IPv4 or IPv6 address or a host name (what node:http's listen takes). */
function isListenHost(h: string): boolean {
  if (isIP(h) !== 0) return true;
  return /^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$/.test(
    h,
  );
}

/** Whether a listen address is loopback only (the web console then asks no password). */
export function isLoopbackHost(h: string): boolean {
  if (h === "localhost" || h === "::1") return true;
  return isIP(h) === 4 && h.startsWith("127.");
}
