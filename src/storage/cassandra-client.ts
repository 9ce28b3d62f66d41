import cassandra from "cassandra-driver";
import type { AdclickConfig, CassandraConsistency } from "../config.js";

export type CassandraClient = cassandra.Client;

/** The driver's code for a consistency level named as in CQL ("LOCAL_QUORUM" → localQuorum). */
export function driverConsistency(level: CassandraConsistency): number {
  const key = level
    .toLowerCase()
    .replace(/_([a-z])/g, (_, ch: string) =>
      ch.toUpperCase(),
    ) as keyof typeof cassandra.types.consistencies;
  const code = cassandra.types.consistencies[key];
  if (code === undefined) throw new Error(`unknown consistency level ${level}`);
  return code;
}

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
  > &
    Partial<Pick<AdclickConfig, "cassandraConsistency">>,
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
    queryOptions: {
      prepare: true,
      consistency: driverConsistency(c.cassandraConsistency ?? "LOCAL_QUORUM"),
    },
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
