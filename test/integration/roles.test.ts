import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type Node, startNode } from "../../app/node.js";
import { allRoles } from "../../app/worker.js";
import { type AdclickConfig, loadConfig } from "../../src/config.js";
import { ClickProducer } from "../../src/ingest/click-producer.js";
import { uniqueName, useNatsServer } from "../harness/servers.js";

const T0 = Date.UTC(2024, 6, 9, 9, 0, 0);
const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");

// Ad "a": 3 clicks in minute 0, "b": 2; a click in minute 2 closes minute 0 by the watermark.
const CLICKS = [
  ...[1, 2, 3].map((s) => ({ ad_id: "a", timestamp: T0 + s * 1000, click_id: `a${s}` })),
  ...[4, 5].map((s) => ({ ad_id: "b", timestamp: T0 + s * 1000, click_id: `b${s}` })),
  { ad_id: "z", timestamp: T0 + 120_000, click_id: "z1" },
].map((c) => ({ ...c, user_id: "u1", ip: "1.1.1.1", country: "USA" }));

describe("worker roles (ADCLICK_ROLES): aggregation workers and a query-only process", () => {
  const nats = useNatsServer();
  const nodes: Node[] = [];
  /** Settings every process of the test shares (roles come from ADCLICK_ROLES). */
  let base: Partial<AdclickConfig>;

  beforeAll(async () => {
    const { server } = nats();
    const { contactPoint } = inject("cassandra");
    base = {
      natsServers: [server.url],
      cassandraContactPoints: [contactPoint],
      cassandraKeyspace: uniqueName("roles"),
      partitions: 2,
      idleTimeoutMs: 1000,
      metricsPort: 0,
      reconcileEveryMs: 0,
    };
  }, 60_000);
  afterAll(async () => {
    for (const n of nodes.reverse()) await n.stop();
  }, 60_000);

  const ask = async (endpoint: string, body: unknown) =>
    nats().nc.request(`adclick.query.${endpoint}`, JSON.stringify(body), { timeout: 5000 });

  it("runs the actors without a query service, then answers from a process that only queries", async () => {
    const aggRoles = loadConfig(
      { ADCLICK_ROLES: "map,raw-writer,aggregators,reducer,aggregate-writer" },
      base,
    );
    const worker = await startNode(aggRoles, allRoles(aggRoles), () => {});
    nodes.push(worker);
    expect(worker.worker.partitions).toHaveLength(2);
    // No query role anywhere yet: nobody answers adclick.query.*.
    await expect(ask("top", { minutes: 1 })).rejects.toThrow();

    await new ClickProducer(jetstream(worker.nc), { partitions: 2, source: "roles" }).send(
      CLICKS,
      "roles-1",
    );

    const queryOnly = loadConfig({ ADCLICK_ROLES: "query" }, base);
    const query = await startNode(queryOnly, allRoles(queryOnly), () => {});
    nodes.push(query);
    expect(query.worker.partitions).toHaveLength(0);

    let body: Record<string, unknown> = {};
    for (let i = 0; i < 150 && body.final !== true; i++) {
      body = (await ask("top", { n: 5, from: iso(T0), to: iso(T0 + 60_000) })).json();
      if (body.final !== true) await new Promise((r) => setTimeout(r, 200));
    }
    expect(body).toEqual({
      from: iso(T0),
      to: iso(T0 + 60_000),
      n: 5,
      ads: [
        { ad_id: "a", count: 3 },
        { ad_id: "b", count: 2 },
      ],
      final: true,
      revision: 1,
      complete_through: expect.any(String),
      sources_behind: [],
    });
    const count = (await ask("count", { ad_id: "a", from: iso(T0), to: iso(T0 + 60_000) })).json();
    expect(count).toMatchObject({ count: 3, final: true });
  });
});
