import cassandra from "cassandra-driver";
import type { AdclickConfig } from "../config.js";

export type CassandraClient = cassandra.Client;

/**
 * A cassandra-driver client for AdClick's configuration. Without a keyspace it connects to
 * the cluster only (to create the keyspace); every statement we run is prepared.
 */
export function createCassandraClient(
  c: Pick<
    AdclickConfig,
    | "cassandraContactPoints"
    | "cassandraLocalDataCenter"
    | "cassandraUsername"
    | "cassandraPassword"
  >,
  keyspace?: string,
): CassandraClient {
  return new cassandra.Client({
    contactPoints: c.cassandraContactPoints,
    localDataCenter: c.cassandraLocalDataCenter,
    keyspace,
    credentials:
      c.cassandraUsername !== undefined
        ? { username: c.cassandraUsername, password: c.cassandraPassword ?? "" }
        : undefined,
    // Counts are bigint end to end: no precision loss, no Long objects leaking out.
    encoding: { useBigIntAsLong: true, useBigIntAsVarint: true },
    queryOptions: { prepare: true, consistency: cassandra.types.consistencies.localQuorum },
    socketOptions: { connectTimeout: 5000, readTimeout: 20_000 },
    pooling: { coreConnectionsPerHost: { [cassandra.types.distance.local]: 2 } },
  });
}

/**
 * Creates the keyspace if it does not exist. SimpleStrategy with the given replication
 * factor on one data center; NetworkTopologyStrategy when a data center is named.
 */
export async function ensureKeyspace(
  client: CassandraClient,
  keyspace: string,
  replicationFactor: number,
  dataCenter?: string,
): Promise<void> {
  if (!/^[a-z][a-z0-9_]{0,47}$/.test(keyspace))
    throw new Error(`invalid keyspace name ${keyspace}`);
  const replication = dataCenter
    ? `{'class': 'NetworkTopologyStrategy', '${dataCenter}': ${replicationFactor}}`
    : `{'class': 'SimpleStrategy', 'replication_factor': ${replicationFactor}}`;
  await client.execute(
    `CREATE KEYSPACE IF NOT EXISTS ${keyspace} WITH replication = ${replication} AND durable_writes = true`,
  );
}
