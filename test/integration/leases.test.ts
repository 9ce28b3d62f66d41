import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, describe, expect, inject, it } from "vitest";
import { type Node, startNode } from "../../app/node.js";
import { allRoles } from "../../app/worker.js";
import { KV_BUCKETS } from "../../nats/layout.js";
import { loadConfig } from "../../src/config.js";
import { ClickProducer } from "../../src/ingest/click-producer.js";
import { leaseKey } from "../../src/leases/partition-lease.js";
import type { ClickObject } from "../../src/parse/click-line.js";
import { parseCountRequest, parseTopRequest } from "../../src/query/request.js";
import { uniqueName, useNatsServer } from "../harness/servers.js";
import { runningAggregators } from "../support/actors.js";

const T0 = Date.UTC(2024, 6, 9, 9, 0, 0);
const PARTITIONS = 3;
const limits = { maxRangeMinutes: 1000, maxN: 100 };
const iso = (ms: number) => new Date(ms).toISOString();

function clicks(fromMinute: number, minutes: number, tag: string): ClickObject[] {
  const out: ClickObject[] = [];
  for (let m = fromMinute; m < fromMinute + minutes; m++) {
    for (let i = 0; i < 200; i++) {
      out.push({
        ad_id: `ad${i % 23}`,
        timestamp: T0 + m * 60_000 + (i % 59) * 1000,
        user_id: `u${i}`,
        ip: "10.0.0.1",
        country: "USA",
        click_id: `${tag}-${m}-${i}`,
      });
    }
  }
  return out;
}

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 180_000) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("partition leases: two workers offering the same partitions share them", () => {
  const nats = useNatsServer();
  const nodes: Node[] = [];
  afterAll(async () => {
    for (const n of nodes) await n.stop();
  }, 60_000);

  it("runs each partition on one worker, and the other takes over exactly when the holder stops", async () => {
    const { server } = nats();
    const base = loadConfig(
      {},
      {
        natsServers: [server.url],
        cassandraContactPoints: [inject("cassandra").contactPoint],
        cassandraKeyspace: uniqueName("lease"),
        partitions: PARTITIONS,
        idleTimeoutMs: 1000,
        metricsPort: 0,
        reconcileEveryMs: 0,
      },
    );
    const a = await startNode({ ...base, workerId: "worker-a" }, allRoles(base), () => {});
    nodes.push(a);
    const { nc } = nats(); // the test's own connection outlives both workers
    const kv = await new Kvm(jetstream(nc)).open(KV_BUCKETS.leases);
    const holders = async () =>
      Promise.all(
        Array.from({ length: PARTITIONS }, async (_, p) => (await kv.get(leaseKey(p)))?.string()),
      );
    await until("worker-a holds every lease", async () =>
      (await holders()).every((h) => h === "worker-a"),
    );
    const b = await startNode({ ...base, workerId: "worker-b" }, allRoles(base), () => {});
    nodes.push(b);
    // worker-b joins: its fair share (1 of 3; worker-a, holding more, keeps the extra one)
    // is handed over — worker-a's aggregator saves a final snapshot and stands by.
    const share = async () => {
      const h = await holders();
      return {
        a: h.filter((x) => x === "worker-a").length,
        b: h.filter((x) => x === "worker-b").length,
      };
    };
    await until("worker-b holds its share", async () => {
      const s = await share();
      return s.a === 2 && s.b === 1;
    });
    const aggregatingOn = async (node: Node) =>
      runningAggregators(await node.worker.status())
        .map((x) => x.partition)
        .sort();
    await until("each partition aggregated on its holder alone", async () => {
      const [onA, onB] = [await aggregatingOn(a), await aggregatingOn(b)];
      return onA.length === 2 && onB.length === 1 && !onA.some((p) => onB.includes(p));
    });

    const producer = new ClickProducer(jetstream(nc), {
      partitions: PARTITIONS,
      source: "lease-test",
    });
    await producer.send(clicks(0, 2, "first"), "first");
    const finalThrough = async (node: Node, toMinute: number) =>
      (
        await node.engine.top(
          parseTopRequest({ from: iso(T0), to: iso(T0 + toMinute * 60_000) }, Date.now(), limits),
        )
      ).final;
    await producer.send(clicks(5, 1, "closer1"), "closer1"); // moves the watermarks past minutes 0-1
    await until("minutes 0-1 final", () => finalThrough(b, 2));

    // worker-a stops in order (final snapshots, leases released); worker-b takes over.
    await a.stop();
    nodes.splice(nodes.indexOf(a), 1);
    await until(
      "worker-b holds every lease",
      async () => (await holders()).every((h) => h === "worker-b"),
      30_000,
    );
    // Minutes 6-7 after the hand-over (2-4 would be late: the watermark is past them).
    await producer.send(clicks(6, 2, "second"), "second");
    await producer.send(clicks(11, 1, "closer2"), "closer2");
    await until("minutes 0-7 final", () => finalThrough(b, 8));

    // Every click counted once across the hand-over: 200 per minute, 23 ads.
    for (const m of [0, 1, 5, 6, 7]) {
      const range = { n: 100, from: iso(T0 + m * 60_000), to: iso(T0 + (m + 1) * 60_000) };
      const top = await b.engine.top(parseTopRequest(range, Date.now(), limits));
      const total = top.ads.reduce((n, x) => n + x.count, 0);
      expect({ m, total, final: top.final }).toEqual({ m, total: 200, final: true });
      expect(top.ads).toHaveLength(23);
    }
    const range = { ad_id: "ad0", from: iso(T0), to: iso(T0 + 8 * 60_000) };
    const ad0 = await b.engine.count(parseCountRequest(range, Date.now(), limits));
    // ad0 is i % 23 === 0: 9 of every minute's 200 clicks, in 5 minutes.
    expect(ad0).toMatchObject({ count: 5 * 9, final: true });
  });
});
