/**
 * Where integration tests get their servers from. Two providers behind one interface:
 *  - "local" (default): the project's own nats-server and Cassandra, started as local
 *    processes from what scripts/provision.sh installed (our machines have no Docker);
 *  - "testcontainers": the same servers in Docker containers, for machines with a Docker
 *    engine. Select it with ADCLICK_TEST_PROVIDER=testcontainers.
 */
export interface TestNatsServer {
  url: string;
  /** A crash (SIGKILL or container kill) and a start on the same store; for chaos tests. */
  restart(opts?: { crash?: boolean }): Promise<void>;
  stop(): Promise<void>;
}

export interface TestCassandra {
  contactPoint: string;
  localDataCenter: string;
  startupMs: number;
  stop(): Promise<void>;
}

export interface InfraProvider {
  readonly name: "local" | "testcontainers";
  startNats(): Promise<TestNatsServer>;
  startCassandra(): Promise<TestCassandra>;
}

export async function infraProvider(): Promise<InfraProvider> {
  const which = process.env.ADCLICK_TEST_PROVIDER ?? "local";
  if (which === "testcontainers") {
    const { TestcontainersProvider } = await import("./testcontainers-provider.js");
    return new TestcontainersProvider();
  }
  if (which !== "local") {
    throw new Error(`ADCLICK_TEST_PROVIDER=${which}: expected "local" or "testcontainers"`);
  }
  const { LocalProcessProvider } = await import("./local-provider.js");
  return new LocalProcessProvider();
}
