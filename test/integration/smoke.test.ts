import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { headers, nanos } from "@nats-io/nats-core";
import { describe, expect, it } from "vitest";
import { jetStreamLayout, PARTITIONS_METADATA_KEY, STREAMS } from "../../nats/layout.js";
import { applyLayout } from "../../src/nats/apply-layout.js";
import { MIN_NATS_SERVER_VERSION, versionAtLeast } from "../../src/nats/connect.js";
import { uniqueName, useKeyspace, useNatsServer } from "../harness/servers.js";

describe("the real servers the tests start", () => {
  const nats = useNatsServer();
  const cass = useKeyspace();

  it("run a current nats-server with JetStream", () => {
    const { nc } = nats();
    expect(versionAtLeast(nc.info?.version ?? "0", MIN_NATS_SERVER_VERSION)).toBe(true);
    expect(nc.info?.jetstream).toBe(true);
  });

  it("store a publish repeated with the same message ID once", async () => {
    const { nc } = nats();
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const name = uniqueName("DUP");
    await jsm.streams.add({ name, subjects: [`${name}.>`], duplicate_window: nanos(60_000) });

    const first = await js.publish(`${name}.a`, "click-1", { msgID: "batch-0001" });
    const retry = await js.publish(`${name}.a`, "click-1", { msgID: "batch-0001" });
    const other = await js.publish(`${name}.a`, "click-2", { msgID: "batch-0002" });

    expect(first.duplicate).toBe(false);
    expect(retry.duplicate).toBe(true);
    expect(retry.seq).toBe(first.seq);
    expect(other.seq).toBe(first.seq + 1);
    expect((await jsm.streams.info(name)).state.messages).toBe(2);
  });

  it("redeliver a message the pull consumer did not acknowledge", async () => {
    const { nc } = nats();
    const jsm = await jetstreamManager(nc);
    const js = jetstream(nc);
    const name = uniqueName("REDELIVER");
    await jsm.streams.add({ name, subjects: [`${name}.>`] });
    await jsm.consumers.add(name, {
      durable_name: "worker",
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(1000),
    });
    const h = headers();
    h.set("test", "redelivery");
    await js.publish(`${name}.x`, "payload", { headers: h });

    const consumer = await js.consumers.get(name, "worker");
    const first = await consumer.next({ expires: 5000 });
    expect(first?.string()).toBe("payload");
    expect(first?.redelivered).toBe(false);
    // No ack: after ack_wait the server must hand the same message out again.
    const again = await consumer.next({ expires: 5000 });
    expect(again?.string()).toBe("payload");
    expect(again?.redelivered).toBe(true);
    expect(again?.info.deliveryCount).toBe(2);
    expect(again?.seq).toBe(first?.seq);
    again?.ack();
  });

  it("reject a KV compare-and-set on a stale revision", async () => {
    const { nc } = nats();
    const kv = await new Kvm(jetstream(nc)).create(uniqueName("cas"));
    const r1 = await kv.create("snapshot.p0", "state-1");
    const r2 = await kv.update("snapshot.p0", "state-2", r1);
    expect(r2).toBeGreaterThan(r1);
    // A stale writer still holding revision r1 must not overwrite state-2.
    await expect(kv.update("snapshot.p0", "stale", r1)).rejects.toThrow();
    expect((await kv.get("snapshot.p0"))?.string()).toBe("state-2");
    // create() is also a CAS: it fails once the key exists.
    await expect(kv.create("snapshot.p0", "again")).rejects.toThrow();
  });

  it("apply the AdClick JetStream layout idempotently and refuse a partition-count change", async () => {
    const { nc } = nats();
    const opts = {
      partitions: 8,
      replicas: 1,
      duplicateWindowMs: 120_000,
      rawStreamMaxAgeMs: 86_400_000,
    };
    const first = await applyLayout(nc, jetStreamLayout(opts));
    expect(first.created).toContain(STREAMS.clicks);
    const second = await applyLayout(nc, jetStreamLayout(opts));
    expect(second.created).toEqual([]);
    expect(second.updated).toEqual([]);

    const jsm = await jetstreamManager(nc);
    const clicks = await jsm.streams.info(STREAMS.clicks);
    expect(clicks.config.metadata?.[PARTITIONS_METADATA_KEY]).toBe("8");
    expect(clicks.config.duplicate_window).toBe(nanos(120_000));

    const changed = await applyLayout(nc, jetStreamLayout({ ...opts, duplicateWindowMs: 300_000 }));
    expect(changed.updated.join()).toContain("duplicate_window");
    await expect(
      applyLayout(nc, jetStreamLayout({ ...opts, partitions: 16 })),
    ).rejects.toMatchObject({
      code: "LAYOUT_CONFLICT",
    });
  });

  it("read back a row written through cassandra-driver", async () => {
    const { client } = cass();
    await client.execute(
      "CREATE TABLE IF NOT EXISTS smoke (ad_id text, minute timestamp, clicks bigint, PRIMARY KEY (ad_id, minute))",
    );
    const minute = new Date("2024-07-09T00:01:00Z");
    await client.execute(
      "INSERT INTO smoke (ad_id, minute, clicks) VALUES (?, ?, ?)",
      ["ad001", minute, 42n],
      {
        prepare: true,
      },
    );
    const rs = await client.execute(
      "SELECT clicks FROM smoke WHERE ad_id = ? AND minute = ?",
      ["ad001", minute],
      {
        prepare: true,
      },
    );
    expect(rs.rows).toHaveLength(1);
    expect(BigInt(rs.rows[0]?.get("clicks").toString())).toBe(42n);
  });
});
