import type { TestProject } from "vitest/node";
import { infraProvider } from "./provider.js";

/**
 * One Cassandra node for the whole test run, shared by every integration suite (each suite
 * works in a keyspace of its own). nats-server is started per suite (test/harness/servers.ts).
 */
export default async function setup(project: TestProject) {
  const provider = await infraProvider();
  const started = Date.now();
  console.log(`[harness] starting Cassandra (${provider.name} provider)`);
  const cassandra = await provider.startCassandra();
  console.log(
    `[harness] Cassandra answers CQL at ${cassandra.contactPoint} after ${((Date.now() - started) / 1000).toFixed(1)} s`,
  );
  project.provide("cassandra", {
    contactPoint: cassandra.contactPoint,
    localDataCenter: cassandra.localDataCenter,
  });
  return async () => {
    await cassandra.stop();
    console.log("[harness] Cassandra stopped");
  };
}

declare module "vitest" {
  export interface ProvidedContext {
    cassandra: { contactPoint: string; localDataCenter: string };
  }
}
