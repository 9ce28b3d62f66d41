import type { InfraProvider, TestCassandra, TestNatsServer } from "./provider.js";

/**
 * The same servers in Docker containers, for machines with a Docker engine. It cannot run on
 * our own machines (no Docker engine), so it is kept small; the local provider is the one CI
 * exercises. testcontainers is imported lazily so that it is never loaded without Docker.
 */
export class TestcontainersProvider implements InfraProvider {
  readonly name = "testcontainers" as const;

  async startNats(): Promise<TestNatsServer> {
    const { GenericContainer, Wait } = await import("testcontainers");
    const container = await new GenericContainer("nats:2.12-alpine")
      .withCommand(["-js", "-sd", "/data", "-m", "8222"])
      .withExposedPorts(4222, 8222)
      .withWaitStrategy(Wait.forHttp("/healthz?js-enabled-only=true", 8222))
      .start();
    return {
      get url() {
        return `nats://${container.getHost()}:${container.getMappedPort(4222)}`;
      },
      async restart() {
        await container.restart();
      },
      async stop() {
        await container.stop();
      },
    };
  }

  async startCassandra(): Promise<TestCassandra> {
    const { GenericContainer, Wait } = await import("testcontainers");
    const started = Date.now();
    const container = await new GenericContainer("cassandra:5.0")
      .withEnvironment({ MAX_HEAP_SIZE: "512M", HEAP_NEWSIZE: "128M" })
      .withExposedPorts(9042)
      .withWaitStrategy(Wait.forLogMessage(/Starting listening for CQL clients/))
      .withStartupTimeout(180_000)
      .start();
    return {
      contactPoint: `${container.getHost()}:${container.getMappedPort(9042)}`,
      localDataCenter: "datacenter1",
      startupMs: Date.now() - started,
      async stop() {
        await container.stop();
      },
    };
  }
}
