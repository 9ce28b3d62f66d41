import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { type NatsConnection, nkeyAuthenticator } from "@nats-io/transport-node";
import { afterAll, beforeAll, inject } from "vitest";
import { natsLoginOptions } from "../../app/connections.js";
import {
  defaultCredentialsDir,
  ensureCredentials,
  ensureNkeySeed,
} from "../../app/infra/credentials.js";
import type { Role } from "../../nats/permissions.js";
import { DEFAULT_CONFIG } from "../../src/config.js";
import { connectNats, type NatsConnectOptions } from "../../src/nats/connect.js";
import {
  type CassandraClient,
  type CassandraClientSettings,
  createCassandraClient,
  ensureKeyspace,
  grantKeyspace,
} from "../../src/storage/cassandra-client.js";
import { infraProvider, type TestNatsServer } from "./provider.js";

/** A short unique suffix for stream, bucket and keyspace names. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString("hex")}`;
}

/**
 * The test harness's own NATS user: beside AdClick's roles, with no limits, because a test sets
 * up and inspects streams and buckets of its own. The processes under test log in as their
 * roles, as everywhere AdClick runs.
 */
function harnessSeed() {
  return ensureNkeySeed(join(defaultCredentialsDir(), "test-harness.nk"));
}

/** What a harness starts a nats-server with: AdClick's roles, and the harness's own user. */
export function harnessNatsAuth() {
  ensureCredentials(defaultCredentialsDir());
  return { credentialsDir: defaultCredentialsDir(), unrestrictedNkeys: [harnessSeed().publicKey] };
}

/**
 * How a test's own client logs in to the servers the harness starts: as the harness, or as one
 * of AdClick's roles when the test says which.
 */
export function natsLogin(role?: Role): Partial<NatsConnectOptions> {
  if (role) {
    return natsLoginOptions({ ...DEFAULT_CONFIG, credentialsDir: defaultCredentialsDir() }, role);
  }
  return {
    authenticator: nkeyAuthenticator(new TextEncoder().encode(harnessSeed().seed)),
    loginSource: "the test harness",
  };
}

/** A test's Cassandra settings: AdClick's own superuser (to set up keyspaces) or its app role. */
export function cassandraTestSettings(
  contactPoint: string,
  localDataCenter: string,
  as: "admin" | "app" = "admin",
): CassandraClientSettings {
  const creds = ensureCredentials(defaultCredentialsDir()).cassandra[as];
  return {
    cassandraContactPoints: [contactPoint],
    cassandraLocalDataCenter: localDataCenter,
    login: { username: creds.username, password: creds.password },
  };
}

export interface NatsFixture {
  server: TestNatsServer;
  nc: NatsConnection;
}

/**
 * A fresh nats-server (JetStream, temporary store, free port) for this suite, and a
 * connection to it; both are gone after the suite.
 */
export function useNatsServer(): () => NatsFixture {
  let fixture: NatsFixture | undefined;
  beforeAll(async () => {
    const server = await (await infraProvider()).startNats();
    const nc = await connectNats({ servers: [server.url], name: "adclick-test", ...natsLogin() });
    fixture = { server, nc };
  }, 60_000);
  afterAll(async () => {
    await fixture?.nc.close().catch(() => {});
    await fixture?.server.stop();
  }, 60_000);
  return () => {
    if (!fixture) throw new Error("useNatsServer: the suite's server is not started yet");
    return fixture;
  };
}

export interface CassandraFixture {
  keyspace: string;
  contactPoint: string;
  localDataCenter: string;
  client: CassandraClient;
}

/** A keyspace of this suite's own in the test run's shared Cassandra node; dropped after. */
export function useKeyspace(): () => CassandraFixture {
  let fixture: CassandraFixture | undefined;
  beforeAll(async () => {
    const { contactPoint, localDataCenter } = inject("cassandra");
    const keyspace = uniqueName("t");
    const admin = createCassandraClient(cassandraTestSettings(contactPoint, localDataCenter));
    await ensureKeyspace(admin, keyspace, 1);
    await grantKeyspace(
      admin,
      keyspace,
      ensureCredentials(defaultCredentialsDir()).cassandra.app.username,
    );
    await admin.shutdown();
    fixture = {
      keyspace,
      contactPoint,
      localDataCenter,
      // What AdClick runs as: its app role, granted this keyspace only.
      client: createCassandraClient(
        cassandraTestSettings(contactPoint, localDataCenter, "app"),
        keyspace,
      ),
    };
  }, 60_000);
  afterAll(async () => {
    if (!fixture) return;
    await fixture.client.shutdown();
    const admin = createCassandraClient(
      cassandraTestSettings(fixture.contactPoint, fixture.localDataCenter),
    );
    await admin.execute(`DROP KEYSPACE IF EXISTS ${fixture.keyspace}`).catch(() => {});
    await admin.shutdown();
  }, 60_000);
  return () => {
    if (!fixture) throw new Error("useKeyspace: the suite's keyspace is not created yet");
    return fixture;
  };
}
