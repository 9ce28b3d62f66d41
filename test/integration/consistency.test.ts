/**
 * A count filtered by any dimension never exceeds the unfiltered count of the same ad and
 * range, at every revision: a user_id filter is counted from the raw store, which may already
 * hold clicks the aggregates have not counted yet (here: an aggregator paused while the raw
 * writer goes on). The raw-store count keeps only what the minute's stored revision has seen.
 */
import { jetstream } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type Node, startNode } from "../../app/node.js";
import { allRoles } from "../../app/worker.js";
import { loadConfig } from "../../src/config.js";
import { ClickProducer } from "../../src/ingest/click-producer.js";
import { partitionOf } from "../../src/partition.js";
import { RawStore } from "../../src/storage/raw-store.js";
import { uniqueName, useNatsServer } from "../harness/servers.js";
import { until } from "../support/chaos.js";

const PARTITIONS = 2;
const T0 = Date.UTC(2024, 6, 9, 8, 0, 0);
const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");
const click = (id: string, t: number, ad = "a") => ({
  ad_id: ad,
  timestamp: t,
  user_id: "u1",
  ip: "1.1.1.1",
  country: "USA",
  click_id: id,
});

describe("filtered and unfiltered answers agree at every revision", () => {
  const nats = useNatsServer();
  let node: Node;

  beforeAll(async () => {
    const { server } = nats();
    const { contactPoint } = inject("cassandra");
    const c = loadConfig(
      {},
      {
        natsServers: [server.url],
        cassandraContactPoints: [contactPoint],
        cassandraKeyspace: uniqueName("agree"),
        partitions: PARTITIONS,
        metricsPort: 0,
      },
    );
    node = await startNode(c, allRoles(c), () => {});
  }, 120_000);
  afterAll(async () => {
    await node?.stop();
  }, 60_000);
  const ask = async (endpoint: string, body: unknown) =>
    (
      await nats().nc.request(`adclick.query.${endpoint}`, JSON.stringify(body), {
        timeout: 10_000,
      })
    ).json<Record<string, unknown>>();

  it("a user_id count never includes clicks the revision has not counted", async () => {
    const producer = new ClickProducer(jetstream(node.nc), {
      partitions: PARTITIONS,
      source: "app",
    });
    const range = { ad_id: "a", from: iso(T0), to: iso(T0 + 60_000) };
    const byUser = { ...range, filter: { user_id: "u1" } };
    // Minute 0 gets one click, and closes (a click three minutes later moves the watermark).
    await producer.send([click("c1", T0 + 1000), click("z1", T0 + 180_000, "z")], "first");
    await until(
      "minute 0 final",
      async () => (await ask("count", range)).final === true,
      60_000,
      200,
    );
    expect(await ask("count", range)).toMatchObject({ count: 1, revision: 1 });
    expect((await ask("count", byUser)).count).toBe(1);

    // The aggregator of ad a's partition stops reading; a late click of minute 0 reaches the
    // raw store all the same.
    const id = `aggregator-${partitionOf("a", PARTITIONS)}`;
    node.worker.supervisor.send({ type: "PAUSE", id });
    await producer.send([click("c2", T0 + 2000)], "second");
    const raw = new RawStore(node.cql);
    await until(
      "the raw store to hold the late click",
      async () => (await raw.readByDimension("userId", "u1", T0)).length === 2,
      60_000,
      200,
    );
    // Both answers are revision 1's: one click.
    expect(await ask("count", range)).toMatchObject({ count: 1, revision: 1, final: true });
    expect((await ask("count", byUser)).count).toBe(1);
    expect(
      (await ask("top", { n: 5, from: range.from, to: range.to, filter: { user_id: "u1" } }))
        .ads as unknown[],
    ).toEqual([{ ad_id: "a", count: 1 }]);

    // Resumed, the aggregator amends minute 0: revision 2 says two clicks, filtered or not.
    node.worker.supervisor.send({ type: "RESUME", id });
    await until(
      "minute 0 amended",
      async () => (await ask("count", range)).revision === 2,
      60_000,
      200,
    );
    expect(await ask("count", range)).toMatchObject({ count: 2, revision: 2, final: true });
    expect((await ask("count", byUser)).count).toBe(2);
    await producer.close();
  });

  it("a click past the amendment horizon is still counted: the late repair recounts its minute", async () => {
    const producer = new ClickProducer(jetstream(node.nc), {
      partitions: PARTITIONS,
      source: "app-2",
    });
    const T1 = T0 + 3_600_000;
    const range = { ad_id: "b", from: iso(T1), to: iso(T1 + 60_000) };
    // Minute T1 gets two clicks; clicks 20 minutes later take it past the (default 15-minute)
    // amendment horizon of both partitions.
    await producer.send(
      [
        click("h1", T1 + 1000, "b"),
        click("h2", T1 + 2000, "b"),
        click("y1", T1 + 20 * 60_000, "y"),
        click("x1", T1 + 20 * 60_000, "x"),
      ],
      "h-first",
    );
    await until(
      "minute T1 final",
      async () => (await ask("count", range)).final === true,
      60_000,
      200,
    );
    expect(await ask("count", range)).toMatchObject({ count: 2, revision: 1 });
    // A click of that minute now: no aggregator may amend it any more.
    await producer.send([click("h3", T1 + 3000, "b")], "h-late");
    await until(
      "the late repair",
      async () => ((await ask("count", range)).revision as number) > 1_000_000_000,
      60_000,
      200,
    );
    expect(await ask("count", range)).toMatchObject({ count: 3, final: true });
    expect((await ask("count", { ...range, filter: { user_id: "u1" } })).count).toBe(3);
    expect((await ask("count", { ...range, filter: { country: "USA" } })).count).toBe(3);
    await producer.close();
  });
});
