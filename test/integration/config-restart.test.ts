/**
 * The configuration is authoritative over saved aggregator state: restarted with a changed
 * lateness (and late policy), a worker applies the new values to the restored state and says
 * so; restarted with changed star-schema dimensions while minutes counted without them are
 * held, it refuses to start, with one message naming the setting, both values and the way out.
 */
import { jetstream } from "@nats-io/jetstream";
import { afterAll, describe, expect, inject, it } from "vitest";
import { type Node, startNode } from "../../app/node.js";
import { allRoles } from "../../app/worker.js";
import { type AdclickConfig, loadConfig } from "../../src/config.js";
import { ConfigError } from "../../src/errors.js";
import { ClickProducer } from "../../src/ingest/click-producer.js";
import { uniqueName, useNatsServer } from "../harness/servers.js";
import { runningAggregators } from "../support/actors.js";
import { until } from "../support/chaos.js";

const T0 = Date.UTC(2024, 6, 9, 8, 0, 0);

describe("restarting with a changed configuration", () => {
  const nats = useNatsServer();
  const nodes: Node[] = [];
  afterAll(async () => {
    for (const n of nodes) await n.stop();
  }, 60_000);

  it("applies what it can to the saved state, and refuses what it cannot", async () => {
    const { server } = nats();
    const { contactPoint } = inject("cassandra");
    const base: Partial<AdclickConfig> = {
      natsServers: [server.url],
      cassandraContactPoints: [contactPoint],
      cassandraKeyspace: uniqueName("cfg"),
      partitions: 2,
      metricsPort: 0,
    };
    const start = async (env: Record<string, string>) => {
      const c = loadConfig(env, base);
      const n = await startNode(c, allRoles(c), () => {});
      nodes.push(n);
      return n;
    };
    const first = await start({});
    await new ClickProducer(jetstream(first.nc), { partitions: 2, source: "app" }).send(
      [0, 1, 2].map((i) => ({
        ad_id: `ad${i}`,
        timestamp: T0 + i * 1000,
        user_id: "u",
        ip: "1.1.1.1",
        country: "USA",
        click_id: `c${i}`,
      })),
      "one",
    );
    await until(
      "every click counted",
      async () =>
        runningAggregators(await first.worker.status()).reduce((n, s) => n + s.events, 0) === 3,
      60_000,
      100,
    );
    await first.stop(); // orderly: every aggregator saves its state (open minutes in it)
    nodes.pop();

    // Changed dimensions: the open minutes were counted by country only.
    let refused: unknown;
    await start({ ADCLICK_DIMENSIONS: "country,ip" }).catch((e: unknown) => {
      refused = e;
    });
    expect(refused).toBeInstanceOf(ConfigError);
    expect((refused as ConfigError).setting).toBe("ADCLICK_DIMENSIONS");
    expect((refused as Error).message).toMatch(
      /counts "country" but the configuration says "country,ip"/,
    );
    expect((refused as Error).message).toMatch(/Start with ADCLICK_DIMENSIONS=country/);

    // Changed lateness and policy: applied to the restored state, and said so.
    const second = await start({
      ADCLICK_ALLOWED_LATENESS_MS: "30000",
      ADCLICK_LATE_POLICY: "drop",
    });
    await until(
      "every aggregator restored",
      async () => runningAggregators(await second.worker.status()).length === 2,
      60_000,
      100,
    );
    for (const s of runningAggregators(await second.worker.status())) {
      expect(s?.configChanges.map((c) => c.option).sort()).toEqual([
        "allowedLatenessMs",
        "latePolicy",
      ]);
      expect(s?.configChanges.find((c) => c.option === "allowedLatenessMs")).toEqual({
        option: "allowedLatenessMs",
        stored: 15_000,
        configured: 30_000,
      });
    }
  });
});
