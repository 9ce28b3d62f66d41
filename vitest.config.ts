import { defineConfig } from "vitest/config";

// Two projects: pure unit tests (no servers), and integration tests that run against real
// nats-server and Cassandra processes (test/harness). `npm test` runs both.
export default defineConfig({
  test: {
    reporters: ["default", "./test/harness/summary-reporter.ts"],
    projects: [
      {
        test: {
          name: "unit",
          include: ["test/unit/**/*.test.ts"],
          // Property-style tests run thousands of cases: room for a busy shared machine.
          testTimeout: 30_000,
          sequence: { groupOrder: 0 },
        },
      },
      {
        test: {
          name: "integration",
          include: ["test/integration/**/*.test.ts"],
          globalSetup: ["test/harness/global-setup.ts"],
          // Generous: the machines are 2 shared cores; a slow run should not fail on time alone.
          testTimeout: 300_000,
          hookTimeout: 120_000,
          // Two cores, shared with nats-server and Cassandra: at most two suites at once.
          maxWorkers: 2,
          sequence: { groupOrder: 1 },
        },
      },
    ],
  },
});
