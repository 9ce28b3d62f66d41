import { startCassandraNode } from "../../app/infra/cassandra-node.js";
import { startNatsServer } from "../../app/infra/nats-server.js";
import type { InfraProvider, TestCassandra, TestNatsServer } from "./provider.js";
import { harnessNatsAuth } from "./servers.js";

/** Real servers as local processes, on free ports, with temporary storage. */
export class LocalProcessProvider implements InfraProvider {
  readonly name = "local" as const;

  async startNats(): Promise<TestNatsServer> {
    return startNatsServer({ auth: harnessNatsAuth() });
  }

  async startCassandra(): Promise<TestCassandra> {
    // Heap sized for a 2-core shared machine; tests write little.
    return startCassandraNode({ heapMb: 512 });
  }
}
