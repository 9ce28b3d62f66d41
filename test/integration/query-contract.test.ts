import { jetstream } from "@nats-io/jetstream";
import { ServiceErrorCodeHeader, ServiceErrorHeader } from "@nats-io/services";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { type Node, startNode } from "../../app/node.js";
import { allRoles } from "../../app/worker.js";
import { loadConfig } from "../../src/config.js";
import { ClickProducer } from "../../src/ingest/click-producer.js";
import { uniqueName, useNatsServer } from "../harness/servers.js";

const T0 = Date.UTC(2024, 6, 9, 8, 0, 0);
const at = (min: number, sec = 0) => T0 + min * 60_000 + sec * 1000;
const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");

// A small known input: ad "a" 3 clicks in minute 0 (2 USA), ad "b" 2 in minute 0 and 4 in
// minute 1, ad "c" 1 in minute 1 (user u9); a duplicate click_id; a late-enough click in
// minute 3 closes minutes 0–1 by the watermark.
const CLICKS = [
  { ad_id: "a", timestamp: at(0, 1), user_id: "u1", ip: "1.1.1.1", country: "USA", click_id: "k1" },
  { ad_id: "a", timestamp: at(0, 2), user_id: "u2", ip: "1.1.1.2", country: "USA", click_id: "k2" },
  { ad_id: "a", timestamp: at(0, 3), user_id: "u3", ip: "1.1.1.3", country: "KOR", click_id: "k3" },
  { ad_id: "a", timestamp: at(0, 3), user_id: "u3", ip: "1.1.1.3", country: "KOR", click_id: "k3" },
  {
    ad_id: "b",
    timestamp: at(0, 10),
    user_id: "u4",
    ip: "2.2.2.2",
    country: "DEU",
    click_id: "k4",
  },
  {
    ad_id: "b",
    timestamp: at(0, 11),
    user_id: "u4",
    ip: "2.2.2.2",
    country: "DEU",
    click_id: "k5",
  },
  ...[20, 21, 22, 23].map((s, i) => ({
    ad_id: "b",
    timestamp: at(1, s),
    user_id: "u5",
    ip: "3.3.3.3",
    country: "USA",
    click_id: `k6${i}`,
  })),
  {
    ad_id: "c",
    timestamp: at(1, 30),
    user_id: "u9",
    ip: "9.9.9.9",
    country: "JPN",
    click_id: "k7",
  },
  { ad_id: "z", timestamp: at(3, 0), user_id: "u0", ip: "4.4.4.4", country: "FRA", click_id: "k8" },
];

describe("the query service contract (adclick.query.*)", () => {
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
        cassandraKeyspace: uniqueName("q"),
        partitions: 2,
        idleTimeoutMs: 1000,
        metricsPort: 0,
        reconcileEveryMs: 0,
      },
    );
    node = await startNode(c, allRoles(c), () => {});
    await new ClickProducer(jetstream(node.nc), { partitions: 2, source: "contract" }).send(
      CLICKS,
      "batch-1",
    );
    // Wait until minutes 0 and 1 are final.
    for (let i = 0; i < 150; i++) {
      const r = await ask("top", { from: iso(at(0)), to: iso(at(2)) });
      if (r.body.final) break;
      await new Promise((res) => setTimeout(res, 200));
    }
  }, 120_000);
  afterAll(async () => {
    await node?.stop();
  }, 60_000);

  async function ask(
    endpoint: string,
    body: unknown,
  ): Promise<{ body: Record<string, unknown>; code?: string; error?: string }> {
    const payload = typeof body === "string" ? body : JSON.stringify(body);
    const m = await nats().nc.request(`adclick.query.${endpoint}`, payload, { timeout: 5000 });
    const text = m.string();
    return {
      body: text ? (JSON.parse(text) as Record<string, unknown>) : {},
      code: m.headers?.get(ServiceErrorCodeHeader) || undefined,
      error: m.headers?.get(ServiceErrorHeader) || undefined,
    };
  }

  it("counts an ad over a range, final once its minutes are closed and stored", async () => {
    expect((await ask("count", { ad_id: "a", from: iso(at(0)), to: iso(at(2)) })).body).toEqual({
      ad_id: "a",
      from: iso(at(0)),
      to: iso(at(2)),
      count: 3,
      final: true,
      revision: 1,
      complete_through: expect.stringMatching(/^2024-07-09T08:0[2-4]:00Z$/),
      sources_behind: [],
    });
    expect((await ask("count", { ad_id: "b", from: iso(at(1)), to: iso(at(2)) })).body.count).toBe(
      4,
    );
  });

  it.each([
    [{ country: "usa" }, "a", 2],
    [{ country: "KOR" }, "a", 1],
    [{ ip: "2.2.2.2" }, "b", 2],
    [{ user_id: "u5" }, "b", 4],
    [{ country: "USA", user_id: "u5" }, "b", 4],
    [{ country: "DEU", user_id: "u5" }, "b", 0],
  ])("counts with filter %o", async (filter, ad, count) => {
    const r = await ask("count", { ad_id: ad, from: iso(at(0)), to: iso(at(2)), filter });
    expect(r.code).toBeUndefined();
    expect(r.body.count).toBe(count);
  });

  it("ranks the top N by count, then ad_id, over a range and with a filter", async () => {
    expect((await ask("top", { n: 2, from: iso(at(0)), to: iso(at(2)) })).body).toEqual({
      from: iso(at(0)),
      to: iso(at(2)),
      n: 2,
      ads: [
        { ad_id: "b", count: 6 },
        { ad_id: "a", count: 3 },
      ],
      final: true,
      revision: 1,
      complete_through: expect.stringMatching(/^2024-07-09T08:0[2-4]:00Z$/),
      sources_behind: [],
    });
    expect(
      (await ask("top", { from: iso(at(0)), to: iso(at(1)), filter: { country: "USA" } })).body.ads,
    ).toEqual([{ ad_id: "a", count: 2 }]);
    expect(
      (await ask("top", { from: iso(at(1)), to: iso(at(2)), filter: { user_id: "u9" } })).body.ads,
    ).toEqual([{ ad_id: "c", count: 1 }]);
  });

  it("gives a per-minute series", async () => {
    expect(
      (await ask("series", { ad_id: "b", from: iso(at(0)), to: iso(at(2)) })).body.series,
    ).toEqual([
      { minute: iso(at(0)), count: 2, state: "final", revision: 1 },
      { minute: iso(at(1)), count: 4, state: "final", revision: 1 },
    ]);
  });

  it("says how complete a range reaching past the stored minutes is, minute by minute", async () => {
    const r = await ask("series", { ad_id: "z", from: iso(at(3)), to: iso(at(6)) });
    expect(r.body.final).toBe(false);
    const states = (r.body.series as { state: string }[]).map((x) => x.state);
    // Minute 3 holds the newest click: closed or final; later minutes have nothing yet.
    expect(states[0]).toMatch(/^(closed|final)$/);
    expect(states.slice(1)).toEqual(["open", "open"]);
    expect(r.body.complete_through).toMatch(/^2024-07-09T08:0[2-4]:00Z$/);
  });

  it.each([
    ["count", "{not json", /not JSON/],
    ["count", [1, 2], /JSON object/],
    ["count", { ad_id: "a", minutes: 1, extra: true }, /unknown field "extra"/],
    ["count", { minutes: 1 }, /ad_id/],
    ["count", { ad_id: "a", from: "2024-07-09T08:00:30Z", to: iso(at(2)) }, /minute boundary/],
    ["count", { ad_id: "a", from: iso(at(2)), to: iso(at(0)) }, /after/],
    ["count", { ad_id: "a", minutes: 99_999 }, /at most/],
    ["top", { n: 0 }, /"n"/],
    ["top", { n: 5000 }, /"n"/],
    ["top", { filter: { ip: "300.1.1.1" } }, /filter.ip/],
    ["series", { ad_id: "a", filter: { os: "ios" } }, /unknown field "os"/],
  ])(
    "answers a bad %s request %j with a 400 service error saying what to fix",
    async (endpoint, body, message) => {
      const r = await ask(endpoint, body);
      expect(r.code).toBe("400");
      expect(r.error).toMatch(message);
      expect((r.body.error as { message: string }).message).toMatch(message);
    },
  );

  it("is discoverable as the NATS micro service 'adclick'", async () => {
    const m = await nats().nc.request("$SRV.INFO.adclick", "", { timeout: 5000 });
    const info = m.json<{ name: string; endpoints: { subject: string }[] }>();
    expect(info.name).toBe("adclick");
    expect(info.endpoints.map((e) => e.subject).sort()).toEqual([
      "adclick.query.count",
      "adclick.query.series",
      "adclick.query.top",
    ]);
    const ping = await nats().nc.request("$SRV.PING.adclick", "", { timeout: 5000 });
    expect(ping.json<{ name: string }>().name).toBe("adclick");
  });

  it("comes back when its actor is killed: the supervisor restarts the query service and the live server", async () => {
    const before = await ask("count", { ad_id: "b", from: iso(at(0)), to: iso(at(2)) });
    for (const id of ["query-service", "live-server"]) {
      const restarts = async () =>
        (await node.worker.status()).children.find((c) => c.id === id)?.restarts ?? 0;
      const was = await restarts();
      const m = await nats().nc.request("adclick.admin.kill", JSON.stringify({ id }), {
        timeout: 5000,
      });
      expect(m.json<{ done: string }>().done).toBe("kill");
      for (let i = 0; i < 300; i++) {
        const c = (await node.worker.status()).children.find((x) => x.id === id);
        if (c?.state === "running" && c.restarts > was && (c.status as { ready?: boolean })?.ready)
          break;
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await restarts()).toBe(was + 1);
    }
    // Answers again, the same (the live minutes come through the restarted live server).
    let after = await ask("count", { ad_id: "b", from: iso(at(0)), to: iso(at(2)) }).catch(
      () => undefined,
    );
    for (let i = 0; i < 50 && after?.body.count === undefined; i++) {
      await new Promise((r) => setTimeout(r, 100));
      after = await ask("count", { ad_id: "b", from: iso(at(0)), to: iso(at(2)) }).catch(
        () => undefined,
      );
    }
    const { complete_through: _a, ...same } = before.body;
    expect(after?.body).toMatchObject(same);
    // And equal to a recount of the input: ad "b"'s distinct clicks in minutes 0–1.
    const recount = new Set(
      CLICKS.filter((k) => k.ad_id === "b" && k.timestamp < at(2)).map((k) => k.click_id),
    ).size;
    expect(after?.body.count).toBe(recount);
    const live = await ask("count", { ad_id: "z", from: iso(at(3)), to: iso(at(4)) });
    expect(live.body.count).toBe(1); // minute 3: live from its aggregator, or stored once closed
  });
});
