import cassandra from "cassandra-driver";
import { describe, expect, it } from "vitest";
import { allRoles } from "../../app/worker.js";
import {
  CASSANDRA_CONSISTENCIES,
  DEFAULT_CONFIG,
  isLoopbackHost,
  loadConfig,
} from "../../src/config.js";
import { ConfigError } from "../../src/errors.js";
import { driverConsistency } from "../../src/storage/cassandra-client.js";

describe("loadConfig", () => {
  it("gives the documented defaults when no variable is set", () => {
    expect(loadConfig({})).toEqual(DEFAULT_CONFIG);
    expect(loadConfig({}).allowedLatenessMs).toBe(15_000);
    // Late clicks amend their minute by default: no billable click is dropped.
    expect(loadConfig({}).latePolicy).toBe("amend");
    expect(loadConfig({}).amendHorizonMs).toBe(15 * 60_000);
    // Seconds, not the client library's 2 minutes: a frozen NATS node is left quickly.
    expect(loadConfig({}).natsPingIntervalMs).toBe(2000);
    expect(loadConfig({}).cassandraConsistency).toBe("LOCAL_QUORUM");
  });

  it("maps every consistency level to the driver's code of the same name", () => {
    const { consistencies } = cassandra.types;
    expect(CASSANDRA_CONSISTENCIES.map(driverConsistency)).toEqual([
      consistencies.one,
      consistencies.two,
      consistencies.three,
      consistencies.quorum,
      consistencies.all,
      consistencies.localOne,
      consistencies.localQuorum,
      consistencies.eachQuorum,
    ]);
  });

  it.each([
    [
      { ADCLICK_NATS_URL: "nats://a:4222, nats://b:4222" },
      "natsServers",
      ["nats://a:4222", "nats://b:4222"],
    ],
    [
      { ADCLICK_CASSANDRA: "10.0.0.1:9042,10.0.0.2" },
      "cassandraContactPoints",
      ["10.0.0.1:9042", "10.0.0.2"],
    ],
    [{ ADCLICK_PARTITIONS: "64" }, "partitions", 64],
    [{ ADCLICK_NATS_REPLICAS: "3" }, "natsReplicas", 3],
    [{ ADCLICK_NATS_PING_MS: "5000" }, "natsPingIntervalMs", 5000],
    [{ ADCLICK_ALLOWED_LATENESS_MS: "0" }, "allowedLatenessMs", 0],
    [{ ADCLICK_LATE_POLICY: "drop" }, "latePolicy", "drop"],
    [{ ADCLICK_LATE_POLICY: "amend" }, "latePolicy", "amend"],
    [{ ADCLICK_LATE_POLICY: "correct" }, "latePolicy", "amend"],
    [{ ADCLICK_AMEND_HORIZON_MS: "3600000" }, "amendHorizonMs", 3_600_000],
    [{ ADCLICK_MAX_HOLD_MS: "0" }, "maxHoldMs", 0],
    [{ ADCLICK_MAX_OPEN_MINUTES: "60" }, "maxOpenMinutes", 60],
    [{ ADCLICK_DIMENSIONS: "country,userId" }, "dimensions", ["country", "userId"]],
    [{ ADCLICK_KEYSPACE: "billing_eu" }, "cassandraKeyspace", "billing_eu"],
    [
      { ADCLICK_CASSANDRA: "127.0.0.1:9142,127.0.0.2:9142,127.0.0.3:9142" },
      "cassandraContactPoints",
      ["127.0.0.1:9142", "127.0.0.2:9142", "127.0.0.3:9142"],
    ],
    [{ ADCLICK_CASSANDRA_CONSISTENCY: "QUORUM" }, "cassandraConsistency", "QUORUM"],
    [{ ADCLICK_CASSANDRA_CONSISTENCY: "local_one" }, "cassandraConsistency", "LOCAL_ONE"],
    [{ ADCLICK_METRICS_PORT: "0" }, "metricsPort", 0],
    [{}, "consolePort", 8480],
    [{}, "consoleHost", "127.0.0.1"],
    [{ ADCLICK_CONSOLE_PORT: "0" }, "consolePort", 0],
    [{ ADCLICK_CONSOLE_HOST: "0.0.0.0" }, "consoleHost", "0.0.0.0"],
    [{ ADCLICK_CONSOLE_HOST: "::1" }, "consoleHost", "::1"],
    [{ ADCLICK_CONSOLE_HOST: "console.internal" }, "consoleHost", "console.internal"],
    [{ ADCLICK_OWN_PARTITIONS: "0-3, 7,9-10" }, "ownPartitions", [0, 1, 2, 3, 7, 9, 10]],
    [{ ADCLICK_OWN_PARTITIONS: "5,5,4" }, "ownPartitions", [4, 5]],
    [{ ADCLICK_WORKER_ID: "pod-7/eu-1" }, "workerId", "pod-7/eu-1"],
    [{ ADCLICK_RECONCILE_EVERY_MS: "0" }, "reconcileEveryMs", 0],
    [{ ADCLICK_ROLES: "query" }, "roles", ["query"]],
    [{ ADCLICK_ROLES: "aggregators, reducer,aggregators" }, "roles", ["aggregators", "reducer"]],
  ])("reads %o into %s", (env, key, value) => {
    expect(loadConfig(env)[key as keyof typeof DEFAULT_CONFIG]).toEqual(value);
  });

  it.each([
    [{ ADCLICK_PARTITIONS: "0" }, "ADCLICK_PARTITIONS", /outside 1\.\.4096/],
    [{ ADCLICK_PARTITIONS: "8.5" }, "ADCLICK_PARTITIONS", /not an integer/],
    [{ ADCLICK_PARTITIONS: "lots" }, "ADCLICK_PARTITIONS", /not an integer/],
    [{ ADCLICK_NATS_PING_MS: "50" }, "ADCLICK_NATS_PING_MS", /outside 100\.\./],
    [{ ADCLICK_NATS_PING_MS: "2s" }, "ADCLICK_NATS_PING_MS", /not an integer/],
    [{ ADCLICK_ALLOWED_LATENESS_MS: "-1" }, "ADCLICK_ALLOWED_LATENESS_MS", /outside/],
    [{ ADCLICK_LATE_POLICY: "ignore" }, "ADCLICK_LATE_POLICY", /not one of amend, drop/],
    [{ ADCLICK_MAX_OPEN_MINUTES: "1" }, "ADCLICK_MAX_OPEN_MINUTES", /outside 2\.\./],
    [{ ADCLICK_AMEND_HORIZON_MS: "-5" }, "ADCLICK_AMEND_HORIZON_MS", /outside 0\.\./],
    [{ ADCLICK_DIMENSIONS: "country,os" }, "ADCLICK_DIMENSIONS", /"os" is not one of/],
    [{ ADCLICK_KEYSPACE: "Bad-Name" }, "ADCLICK_KEYSPACE", /lower-case/],
    [{ ADCLICK_NATS_URL: "http://x" }, "ADCLICK_NATS_URL", /not nats:\/\/host:port/],
    [{ ADCLICK_CASSANDRA: "a b" }, "ADCLICK_CASSANDRA", /not host\[:port\]/],
    [
      { ADCLICK_CASSANDRA_CONSISTENCY: "MOST" },
      "ADCLICK_CASSANDRA_CONSISTENCY",
      /^ADCLICK_CASSANDRA_CONSISTENCY: "MOST" is not one of ONE, TWO, THREE, QUORUM, ALL, LOCAL_ONE, LOCAL_QUORUM, EACH_QUORUM$/,
    ],
    // Reads cannot use ANY; SERIAL is for lightweight transactions only.
    [{ ADCLICK_CASSANDRA_CONSISTENCY: "ANY" }, "ADCLICK_CASSANDRA_CONSISTENCY", /not one of/],
    [{ ADCLICK_CASSANDRA_CONSISTENCY: "SERIAL" }, "ADCLICK_CASSANDRA_CONSISTENCY", /not one of/],
    [{ ADCLICK_METRICS_PORT: "70000" }, "ADCLICK_METRICS_PORT", /outside/],
    [{ ADCLICK_CONSOLE_PORT: "70000" }, "ADCLICK_CONSOLE_PORT", /outside/],
    [{ ADCLICK_CONSOLE_PORT: "web" }, "ADCLICK_CONSOLE_PORT", /not an integer/],
    [{ ADCLICK_CONSOLE_HOST: "http://x" }, "ADCLICK_CONSOLE_HOST", /not an address to listen on/],
    [{ ADCLICK_OWN_PARTITIONS: "3-1" }, "ADCLICK_OWN_PARTITIONS", /empty range/],
    [{ ADCLICK_OWN_PARTITIONS: "a-b" }, "ADCLICK_OWN_PARTITIONS", /not a partition/],
    [{ ADCLICK_OWN_PARTITIONS: "15-16" }, "ADCLICK_OWN_PARTITIONS", /partition 16 does not exist/],
    [{ ADCLICK_WORKER_ID: "has space" }, "ADCLICK_WORKER_ID", /must be/],
    [{ ADCLICK_ROLES: "query,web" }, "ADCLICK_ROLES", /"web" is not one of map, raw-writer/],
    [{ ADCLICK_ROLES: " , " }, "ADCLICK_ROLES", /no role given/],
  ])("rejects %o naming the setting %s", (env, setting, message) => {
    let err: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).setting).toBe(setting);
    expect((err as ConfigError).code).toBe("CONFIG_INVALID");
    expect((err as ConfigError).message).toMatch(message);
  });

  it("lets typed overrides (command-line flags) win over the environment", () => {
    expect(loadConfig({ ADCLICK_PARTITIONS: "8" }, { partitions: 32 }).partitions).toBe(32);
  });
});

describe("credentials and TLS settings", () => {
  it.each([
    [{ ADCLICK_CREDENTIALS_DIR: "/etc/adclick" }, "credentialsDir", "/etc/adclick"],
    [{ ADCLICK_NATS_NKEY_FILE: "/run/q.nk" }, "natsNkeyFile", "/run/q.nk"],
    [{ ADCLICK_NATS_CREDS_FILE: "/run/q.creds" }, "natsCredsFile", "/run/q.creds"],
    [{ ADCLICK_NATS_USER: "q", ADCLICK_NATS_PASSWORD: "p" }, "natsPassword", "p"],
    [{ ADCLICK_NATS_TLS_CA: "/ca.pem" }, "natsTlsCaFile", "/ca.pem"],
    [
      { ADCLICK_CASSANDRA_USER: "u", ADCLICK_CASSANDRA_PASSWORD_FILE: "/pw" },
      "cassandraPasswordFile",
      "/pw",
    ],
    [{ ADCLICK_CASSANDRA_TLS_CA: "/ca.pem" }, "cassandraTlsCaFile", "/ca.pem"],
    [
      { ADCLICK_CASSANDRA_TLS_CERT: "/c.pem", ADCLICK_CASSANDRA_TLS_KEY: "/k.pem" },
      "cassandraTlsKeyFile",
      "/k.pem",
    ],
  ] as const)("reads %j into %s", (env, key, want) => {
    expect(loadConfig(env)[key]).toBe(want);
  });

  it("has no login of its own by default: the credentials folder provides it", () => {
    const c = loadConfig({});
    for (const key of ["natsNkeyFile", "natsCredsFile", "natsUser", "cassandraUsername"] as const)
      expect(c[key]).toBeUndefined();
  });

  it.each([
    [
      { ADCLICK_NATS_NKEY_FILE: "/a", ADCLICK_NATS_USER: "u" },
      "ADCLICK_NATS_USER: give one NATS login",
    ],
    [
      { ADCLICK_NATS_NKEY_FILE: "/a", ADCLICK_NATS_CREDS_FILE: "/b" },
      "ADCLICK_NATS_CREDS_FILE: give one NATS login",
    ],
    [{ ADCLICK_NATS_PASSWORD: "p" }, "ADCLICK_NATS_PASSWORD: needs ADCLICK_NATS_USER"],
    [
      { ADCLICK_CASSANDRA_PASSWORD: "p" },
      "ADCLICK_CASSANDRA_PASSWORD: needs ADCLICK_CASSANDRA_USER",
    ],
    [
      { ADCLICK_CASSANDRA_PASSWORD_FILE: "/p" },
      "ADCLICK_CASSANDRA_PASSWORD_FILE: needs ADCLICK_CASSANDRA_USER",
    ],
    [
      {
        ADCLICK_CASSANDRA_USER: "u",
        ADCLICK_CASSANDRA_PASSWORD: "p",
        ADCLICK_CASSANDRA_PASSWORD_FILE: "/p",
      },
      "ADCLICK_CASSANDRA_PASSWORD_FILE: give the password or its file, not both",
    ],
    [{ ADCLICK_NATS_TLS_CERT: "/c" }, "ADCLICK_NATS_TLS_KEY: a client certificate needs both"],
    [{ ADCLICK_NATS_TLS_KEY: "/k" }, "ADCLICK_NATS_TLS_CERT: a client certificate needs both"],
    [
      { ADCLICK_CASSANDRA_TLS_CERT: "/c" },
      "ADCLICK_CASSANDRA_TLS_KEY: a client certificate needs both",
    ],
  ])("refuses %j in one line", (env, message) => {
    expect(() => loadConfig(env)).toThrow(ConfigError);
    expect(() => loadConfig(env)).toThrow(message);
  });
});

describe("hot-ad settings", () => {
  it("gives the documented defaults", () => {
    const c = loadConfig({});
    expect({
      hotSplit: c.hotSplit,
      hotShare: c.hotShare,
      hotMinRatePerSec: c.hotMinRatePerSec,
      hotShardRatePerSec: c.hotShardRatePerSec,
      hotMaxShards: c.hotMaxShards,
      hotMaxAds: c.hotMaxAds,
      hotPeriodMs: c.hotPeriodMs,
    }).toEqual({
      hotSplit: true,
      hotShare: 0.3,
      hotMinRatePerSec: 5000,
      hotShardRatePerSec: 20_000,
      hotMaxShards: 4,
      hotMaxAds: 4,
      hotPeriodMs: 10_000,
    });
  });

  it.each([
    [{ ADCLICK_HOT_SPLIT: "" }, "hotSplit", true],
    [{ ADCLICK_HOT_SPLIT: "off" }, "hotSplit", false],
    [{ ADCLICK_HOT_SPLIT: " OFF " }, "hotSplit", false],
    [{ ADCLICK_HOT_SPLIT: "false" }, "hotSplit", false],
    [{ ADCLICK_HOT_SPLIT: "0" }, "hotSplit", false],
    [{ ADCLICK_HOT_SPLIT: "no" }, "hotSplit", false],
    [{ ADCLICK_HOT_SPLIT: "on" }, "hotSplit", true],
    [{ ADCLICK_HOT_SPLIT: "Yes" }, "hotSplit", true],
    [{ ADCLICK_HOT_SPLIT: "1" }, "hotSplit", true],
    [{ ADCLICK_HOT_SHARE: "1" }, "hotShare", 1],
    [{ ADCLICK_HOT_SHARE: "1.0" }, "hotShare", 1],
    [{ ADCLICK_HOT_SHARE: "0.5" }, "hotShare", 0.5],
    [{ ADCLICK_HOT_SHARE: ".25" }, "hotShare", 0.25],
    [{ ADCLICK_HOT_SHARE: " 0.05 " }, "hotShare", 0.05],
    [{ ADCLICK_HOT_SHARE: "0.0001" }, "hotShare", 0.0001],
    [{ ADCLICK_HOT_MIN_RATE: "1" }, "hotMinRatePerSec", 1],
    [{ ADCLICK_HOT_MIN_RATE: "100000000" }, "hotMinRatePerSec", 100_000_000],
    [{ ADCLICK_HOT_SHARD_RATE: "1" }, "hotShardRatePerSec", 1],
    [{ ADCLICK_HOT_SHARD_RATE: "50000" }, "hotShardRatePerSec", 50_000],
    [{ ADCLICK_HOT_MAX_SHARDS: "2" }, "hotMaxShards", 2],
    [{ ADCLICK_HOT_MAX_SHARDS: "64" }, "hotMaxShards", 64],
    [{ ADCLICK_HOT_MAX_ADS: "1" }, "hotMaxAds", 1],
    [{ ADCLICK_HOT_MAX_ADS: "64" }, "hotMaxAds", 64],
    [{ ADCLICK_HOT_PERIOD_MS: "1000" }, "hotPeriodMs", 1000],
    [{ ADCLICK_HOT_PERIOD_MS: "1005" }, "hotPeriodMs", 1005],
    [{ ADCLICK_HOT_PERIOD_MS: "30000" }, "hotPeriodMs", 30_000],
    [{ ADCLICK_HOT_PERIOD_MS: "3600000" }, "hotPeriodMs", 3_600_000],
  ])("reads %o into %s", (env, key, value) => {
    expect(loadConfig(env)[key as keyof typeof DEFAULT_CONFIG]).toEqual(value);
  });

  it.each([
    [{ ADCLICK_HOT_SPLIT: "maybe" }, "ADCLICK_HOT_SPLIT", /"maybe" is not on or off/],
    [{ ADCLICK_HOT_SPLIT: "enabled" }, "ADCLICK_HOT_SPLIT", /not on or off/],
    [{ ADCLICK_HOT_SHARE: "0" }, "ADCLICK_HOT_SHARE", /not a number in \(0, 1\]/],
    [{ ADCLICK_HOT_SHARE: "0.0" }, "ADCLICK_HOT_SHARE", /not a number in \(0, 1\]/],
    [{ ADCLICK_HOT_SHARE: "1.5" }, "ADCLICK_HOT_SHARE", /not a number in \(0, 1\]/],
    [{ ADCLICK_HOT_SHARE: "1.0001" }, "ADCLICK_HOT_SHARE", /not a number/],
    [{ ADCLICK_HOT_SHARE: "abc" }, "ADCLICK_HOT_SHARE", /"abc" is not a number/],
    [{ ADCLICK_HOT_SHARE: "-0.5" }, "ADCLICK_HOT_SHARE", /not a number/],
    [{ ADCLICK_HOT_SHARE: "2" }, "ADCLICK_HOT_SHARE", /not a number/],
    [{ ADCLICK_HOT_SHARE: "3e-1" }, "ADCLICK_HOT_SHARE", /not a number/],
    [{ ADCLICK_HOT_SHARE: "30%" }, "ADCLICK_HOT_SHARE", /not a number/],
    [{ ADCLICK_HOT_SHARE: "NaN" }, "ADCLICK_HOT_SHARE", /not a number/],
    [{ ADCLICK_HOT_SHARE: " " }, "ADCLICK_HOT_SHARE", /not a number/],
    [{ ADCLICK_HOT_MIN_RATE: "0" }, "ADCLICK_HOT_MIN_RATE", /outside 1\.\./],
    [{ ADCLICK_HOT_MIN_RATE: "2.5" }, "ADCLICK_HOT_MIN_RATE", /not an integer/],
    [{ ADCLICK_HOT_MIN_RATE: "5k" }, "ADCLICK_HOT_MIN_RATE", /not an integer/],
    [{ ADCLICK_HOT_SHARD_RATE: "-1" }, "ADCLICK_HOT_SHARD_RATE", /outside 1\.\./],
    [{ ADCLICK_HOT_SHARD_RATE: "100000001" }, "ADCLICK_HOT_SHARD_RATE", /outside/],
    [{ ADCLICK_HOT_MAX_SHARDS: "1" }, "ADCLICK_HOT_MAX_SHARDS", /1 is outside 2\.\.64/],
    [{ ADCLICK_HOT_MAX_SHARDS: "65" }, "ADCLICK_HOT_MAX_SHARDS", /65 is outside 2\.\.64/],
    [{ ADCLICK_HOT_MAX_SHARDS: "4.0" }, "ADCLICK_HOT_MAX_SHARDS", /not an integer/],
    [{ ADCLICK_HOT_MAX_ADS: "0" }, "ADCLICK_HOT_MAX_ADS", /0 is outside 1\.\.64/],
    [{ ADCLICK_HOT_MAX_ADS: "65" }, "ADCLICK_HOT_MAX_ADS", /outside 1\.\.64/],
    [{ ADCLICK_HOT_PERIOD_MS: "1001" }, "ADCLICK_HOT_PERIOD_MS", /1001 is not a multiple of 5/],
    [{ ADCLICK_HOT_PERIOD_MS: "9999" }, "ADCLICK_HOT_PERIOD_MS", /not a multiple of 5/],
    [{ ADCLICK_HOT_PERIOD_MS: "995" }, "ADCLICK_HOT_PERIOD_MS", /outside 1000\.\.3600000/],
    [{ ADCLICK_HOT_PERIOD_MS: "3600005" }, "ADCLICK_HOT_PERIOD_MS", /outside 1000\.\.3600000/],
    [{ ADCLICK_HOT_PERIOD_MS: "10s" }, "ADCLICK_HOT_PERIOD_MS", /not an integer/],
  ])("rejects %o naming the setting %s", (env, setting, message) => {
    let err: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).setting).toBe(setting);
    expect((err as ConfigError).code).toBe("CONFIG_INVALID");
    expect((err as ConfigError).message).toMatch(message);
  });

  it("reads every hot setting together", () => {
    const c = loadConfig({
      ADCLICK_HOT_SPLIT: "off",
      ADCLICK_HOT_SHARE: "0.6",
      ADCLICK_HOT_MIN_RATE: "100",
      ADCLICK_HOT_SHARD_RATE: "200",
      ADCLICK_HOT_MAX_SHARDS: "8",
      ADCLICK_HOT_MAX_ADS: "2",
      ADCLICK_HOT_PERIOD_MS: "20000",
    });
    expect(c).toMatchObject({
      hotSplit: false,
      hotShare: 0.6,
      hotMinRatePerSec: 100,
      hotShardRatePerSec: 200,
      hotMaxShards: 8,
      hotMaxAds: 2,
      hotPeriodMs: 20_000,
    });
  });
});

describe("worker roles", () => {
  it.each([
    [
      undefined,
      { map: true, rawWriter: true, aggregators: 4, reducer: true, writer: true, query: true },
    ],
    [
      "query",
      { map: false, rawWriter: false, aggregators: 0, reducer: false, writer: false, query: true },
    ],
    [
      "map,raw-writer,aggregators,reducer,aggregate-writer",
      { map: true, rawWriter: true, aggregators: 4, reducer: true, writer: true, query: false },
    ],
    [
      "aggregators",
      { map: false, rawWriter: false, aggregators: 4, reducer: false, writer: false, query: false },
    ],
  ])("ADCLICK_ROLES=%s runs what it names", (roles, want) => {
    const c = loadConfig({ ADCLICK_PARTITIONS: "4", ...(roles ? { ADCLICK_ROLES: roles } : {}) });
    const r = allRoles(c);
    expect({
      map: r.map,
      rawWriter: r.rawWriter,
      aggregators: r.partitions.length,
      reducer: r.reducer,
      writer: r.aggregateWriter,
      query: r.query,
    }).toEqual(want);
  });

  it("offers only ADCLICK_OWN_PARTITIONS to aggregate, and none without the aggregators role", () => {
    expect(allRoles(loadConfig({ ADCLICK_OWN_PARTITIONS: "1,3" })).partitions).toEqual([1, 3]);
    expect(
      allRoles(loadConfig({ ADCLICK_OWN_PARTITIONS: "1,3", ADCLICK_ROLES: "query" })).partitions,
    ).toEqual([]);
  });
});

describe("the web console's listen address", () => {
  it.each([
    ["127.0.0.1", true],
    ["127.4.5.6", true],
    ["::1", true],
    ["localhost", true],
    ["0.0.0.0", false],
    ["::", false],
    ["10.0.0.7", false],
    ["console.internal", false],
  ])("%s is loopback: %s", (host, loopback) => {
    expect(isLoopbackHost(host)).toBe(loopback);
  });
});
