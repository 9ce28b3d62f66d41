import {
  appendFileSync,
  mkdtempSync,
  renameSync,
  rmSync,
  truncateSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, beforeEach, describe, expect, it } from "vitest";
import { mapChild } from "../../actors/map.js";
import { ensureLayout } from "../../app/cli/layout.js";
import { KV_BUCKETS, STREAMS, SUBJECTS } from "../../nats/layout.js";
import { loadConfig } from "../../src/config.js";
import { generateClickLog, type TruthLine } from "../../src/gen/click-log.js";
import { BatchPublisher } from "../../src/ingest/batch-publisher.js";
import { KvCheckpointStore } from "../../src/ingest/checkpoint-store.js";
import { ClickProducer } from "../../src/ingest/click-producer.js";
import { mapConsumer } from "../../src/ingest/ingest-router.js";
import { LogShipper } from "../../src/ingest/shipper.js";
import { ensureDurable } from "../../src/nats/durable-consumer.js";
import { useNatsServer } from "../harness/servers.js";
import { runActor } from "../support/actors.js";
import { clickKey, eventKey, sortedKeys, uniqueClicks } from "../support/oracle.js";
import { readStream, uniqueStreamEvents } from "../support/streams.js";

const PARTITIONS = 3;

async function until(check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline)
      throw new Error(`condition not met in time: ${check.toString().slice(0, 80)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe("ingest from a followed log, the ingest subject and the library call", () => {
  const nats = useNatsServer();
  const dir = mkdtempSync(join(tmpdir(), "adclick-follow-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  beforeEach(async () => {
    const { nc, server } = nats();
    const jsm = await jetstreamManager(nc);
    for (const s of [STREAMS.clicks, STREAMS.ingest, STREAMS.deadLetter])
      await jsm.streams.purge(s).catch(() => {});
    await ensureLayout(nc, loadConfig({}, { natsServers: [server.url], partitions: PARTITIONS }));
  });

  it("follows a log through appends, rotation and truncation, shipping every line once", async () => {
    const { nc } = nats();
    const js = jetstream(nc);
    const path = join(dir, "app.log");
    const parts = [1, 2, 3, 4, 5].map((seed) =>
      generateClickLog({ seed: 100 + seed, lines: 800, ads: 50 }),
    );
    const shipper = new LogShipper(
      {
        checkpoints: new KvCheckpointStore(await new Kvm(js).open(KV_BUCKETS.shipperCheckpoints)),
        clicks: new BatchPublisher(js, { label: "clicks" }),
        deadLetters: new BatchPublisher(js, { label: "dlq" }),
      },
      { source: "tail-host", partitions: PARTITIONS, pollIntervalMs: 50, chunkBytes: 8192 },
    );
    const shipped = (n: number) => async () =>
      shipper.summary.events + shipper.summary.malformed >= n;
    // Every line is either an event (duplicates included) or malformed.
    const count = (truths: TruthLine[][]) => truths.reduce((n, t) => n + t.length, 0);

    writeFileSync(path, parts[0]?.text ?? "");
    const following = shipper.follow([path]);
    await until(shipped(count([parts[0]?.truth ?? []])));
    // A line written in two pieces is shipped once, when complete.
    const [head, tail] = [parts[1]?.text.slice(0, 1000) ?? "", parts[1]?.text.slice(1000) ?? ""];
    appendFileSync(path, head);
    await new Promise((r) => setTimeout(r, 200));
    appendFileSync(path, tail);
    await until(shipped(count([parts[0]?.truth ?? [], parts[1]?.truth ?? []])));
    // Rotation: the old file gets one last write after the rename, then a new file appears.
    renameSync(path, `${path}.1`);
    appendFileSync(`${path}.1`, parts[2]?.text ?? "");
    writeFileSync(path, parts[3]?.text ?? "");
    await until(shipped(count(parts.slice(0, 4).map((p) => p.truth))));
    // copytruncate: the same inode starts again from zero.
    truncateSync(path, 0);
    appendFileSync(path, parts[4]?.text ?? "");
    await until(shipped(count(parts.map((p) => p.truth))));
    shipper.stop();
    await following;

    const stored = await uniqueStreamEvents(nc, js, STREAMS.clicks);
    const expected = uniqueClicks(parts.map((p) => p.truth));
    expect(sortedKeys(stored, eventKey)).toEqual(sortedKeys(expected, clickKey));
  });

  it("routes JSON clicks from ingest.clicks through the map actor, once, with malformed ones dead-lettered", async () => {
    const { nc } = nats();
    const js = jetstream(nc);
    await ensureDurable(await jetstreamManager(nc), mapConsumer());
    const good = [
      {
        ad_id: "ad1",
        timestamp: "2024-07-09 00:00:01",
        user_id: "u1",
        ip: "1.2.3.4",
        country: "USA",
        click_id: "k1",
      },
      {
        ad_id: "ad2",
        timestamp: "2024-07-09T00:00:02.500Z",
        user_id: "u2",
        ip: "::1",
        country: "KOR",
      },
    ];
    const bad = {
      ad_id: "ad3",
      timestamp: "yesterday",
      user_id: "u3",
      ip: "1.2.3.4",
      country: "USA",
    };
    await js.publish(SUBJECTS.ingest, JSON.stringify([...good, bad]), {
      msgID: "producer-batch-1",
    });
    // The producer retries the same batch: JetStream drops it (same Nats-Msg-Id).
    await js.publish(SUBJECTS.ingest, JSON.stringify([...good, bad]), {
      msgID: "producer-batch-1",
    });
    await js.publish(SUBJECTS.ingest, "{not json");

    const { actor } = runActor(
      mapChild(js, { id: "map-test", partitions: PARTITIONS, shutdownMs: 5000, now: Date.now }),
    );
    const jsm = await jetstreamManager(nc);
    await until(async () => {
      const info = await jsm.consumers.info(STREAMS.ingest, "map");
      return info.num_pending === 0 && info.num_ack_pending === 0;
    });
    actor.send({ type: "STOP" });

    const stored = await uniqueStreamEvents(nc, js, STREAMS.clicks);
    expect(stored.map((e) => `${e.adId}|${e.timestampMs}`).sort()).toEqual([
      `ad1|${Date.UTC(2024, 6, 9, 0, 0, 1)}`,
      `ad2|${Date.UTC(2024, 6, 9, 0, 0, 2, 500)}`,
    ]);
    expect(stored.find((e) => e.adId === "ad1")?.eventId).toBe("c:k1");
    const dead = (
      await readStream(nc, js, STREAMS.deadLetter, (d) => JSON.parse(new TextDecoder().decode(d)))
    ).flat();
    expect(dead.map((m: { code: string }) => m.code).sort()).toEqual([
      "BAD_TIMESTAMP",
      "FIELD_COUNT",
    ]);
  });

  it("stores a library send once when it is retried with the same idempotency key", async () => {
    const { nc } = nats();
    const js = jetstream(nc);
    const producer = new ClickProducer(js, { partitions: PARTITIONS, source: "checkout-service" });
    const clicks = Array.from({ length: 500 }, (_, i) => ({
      ad_id: `ad${i % 37}`,
      timestamp: Date.UTC(2024, 6, 9, 0, 1, i % 60),
      user_id: `u${i}`,
      ip: "10.0.0.1",
      country: "DEU",
    }));
    const first = await producer.send(
      [...clicks, { ...clicks[0], ip: "999.0.0.1" } as never],
      "order-42",
    );
    const retry = await producer.send(clicks, "order-42");
    expect(first.accepted).toBe(500);
    expect(first.rejected.map((r) => r.code)).toEqual(["BAD_IP"]);
    expect(retry.accepted).toBe(500);
    const stored = await uniqueStreamEvents(nc, js, STREAMS.clicks);
    expect(stored).toHaveLength(500);
    const rawMessages = await readStream(nc, js, STREAMS.clicks, (d) => d.length);
    expect(rawMessages.length).toBeLessThanOrEqual(PARTITIONS); // the retry's batches were duplicates
  });
});
