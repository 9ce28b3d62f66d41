import { randomBytes } from "node:crypto";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, inject } from "vitest";
import { connectNats } from "../../src/nats/connect.js";
import {
  type CassandraClient,
  createCassandraClient,
  ensureKeyspace,
} from "../../src/storage/cassandra-client.js";
import { infraProvider, type TestNatsServer } from "./provider.js";

/** A short unique suffix for stream, bucket and keyspace names. */
export function uniqueName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString("hex")}`;
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
    const nc = await connectNats({ servers: [server.url], name: "adclick-test" });
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
    const settings = {
      cassandraContactPoints: [contactPoint],
      cassandraLocalDataCenter: localDataCenter,
    };
    const admin = createCassandraClient(settings);
    await ensureKeyspace(admin, keyspace, 1);
    await admin.shutdown();
    fixture = {
      keyspace,
      contactPoint,
      localDataCenter,
      client: createCassandraClient(settings, keyspace),
    };
  }, 60_000);
  afterAll(async () => {
    if (!fixture) return;
    await fixture.client.execute(`DROP KEYSPACE IF EXISTS ${fixture.keyspace}`).catch(() => {});
    await fixture.client.shutdown();
  }, 60_000);
  return () => {
    if (!fixture) throw new Error("useKeyspace: the suite's keyspace is not created yet");
    return fixture;
  };
}
