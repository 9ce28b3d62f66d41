/**
 * A deployment created by an earlier version keeps its data: its partition_minutes table gains
 * the through_seq column at start-up, and the rows written before read as "position unknown"
 * (a raw-store count over them keeps everything, as before); the ip / user_id blocks its raw
 * writer stored stay readable next to the new index until `legacy_until`.
 */
import { describe, expect, it } from "vitest";
import type { ClickEvent } from "../../src/model.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import type { CassandraClient } from "../../src/storage/cassandra-client.js";
import { LEGACY_OVERLAP_MS, legacyBucket, RawStore } from "../../src/storage/raw-store.js";
import { encodeBatch, encodeBlock } from "../../src/wire/batch-codec.js";
import { useKeyspace } from "../harness/servers.js";

describe("the aggregate store of an earlier version", () => {
  const cass = useKeyspace();

  it("gains the new column, and its old rows read without a position", async () => {
    const { client } = cass();
    await client.execute(
      `CREATE TABLE partition_minutes (
         partition int, day date, minute timestamp, version int, event_count bigint,
         ad_counts blob, dim_counts blob, top_k blob,
         PRIMARY KEY ((partition, day), minute))`,
    );
    const minute = Date.UTC(2024, 6, 9, 10, 0, 0);
    await client.execute(
      "INSERT INTO partition_minutes (partition, day, minute, version, event_count) VALUES (?, ?, ?, ?, ?)",
      [1, "2024-07-09", new Date(minute), 3, 7n],
      { prepare: true },
    );
    const store = new AggregateStore(client);
    await store.createSchema();
    await store.createSchema(); // idempotent: the column is there now
    expect(await store.partitionMinuteRevisions(1, minute, minute + 60_000)).toEqual(
      new Map([[minute, { version: 3, throughSeq: null }]]),
    );
    await store.writeMinute({
      partition: 1,
      minuteStartMs: minute + 60_000,
      version: 1,
      adCounts: [["a", 2]],
      dimCounts: {},
      topK: [{ adId: "a", count: 2 }],
      eventCount: 2,
      throughSeq: 41,
    });
    expect(
      (await store.partitionMinuteRevisions(1, minute + 60_000, minute + 120_000)).get(
        minute + 60_000,
      ),
    ).toEqual({ version: 1, throughSeq: 41 });
  });
});

const T0 = Date.UTC(2024, 6, 9, 10, 0, 0);
const click = (eventId: string, userId: string, adId = "ad1"): ClickEvent => ({
  adId,
  timestampMs: T0 + 1000,
  userId,
  ip: "10.0.0.1",
  country: "USA",
  eventId,
});

/** What an earlier version's raw writer left: a user_id block in raw_dim_blocks. */
async function legacyBlock(client: CassandraClient, events: ClickEvent[], seq: number) {
  await client.execute(
    `CREATE TABLE IF NOT EXISTS raw_dim_blocks (
       dim text, bucket int, minute timestamp, batch_id text, event_count int, events blob,
       PRIMARY KEY ((dim, bucket, minute), batch_id))`,
  );
  await client.execute(
    "INSERT INTO raw_dim_blocks (dim, bucket, minute, batch_id, event_count, events) VALUES (?, ?, ?, ?, ?, ?)",
    [
      "userId",
      legacyBucket("u1", 16),
      new Date(T0),
      "old",
      events.length,
      Buffer.from(
        encodeBlock(
          events,
          events.map(() => seq),
        ),
      ),
    ],
    { prepare: true },
  );
}

async function writeNew(store: RawStore, events: ClickEvent[], seq: number) {
  await store.write([
    { partition: 0, batchId: `m${seq}`, streamSeq: seq, events, payload: encodeBatch(events) },
  ]);
}

async function legacyUntil(client: CassandraClient): Promise<number | undefined> {
  const rs = await client.execute(
    "SELECT legacy_until FROM raw_index_meta WHERE name = 'dim_index'",
  );
  return (rs.rows[0]?.get("legacy_until") as Date | undefined)?.getTime();
}

describe("the raw store of an earlier version (raw_dim_blocks)", () => {
  const cass = useKeyspace();

  it("is still read, with the new index, for minutes before legacy_until", async () => {
    const { client } = cass();
    await legacyBlock(client, [click("c:1", "u1"), click("c:2", "u2")], 5);
    const store = new RawStore(client);
    const before = Date.now();
    await store.createSchema();
    await store.createSchema(); // the first start decides: the mark stays
    const until = (await legacyUntil(client)) ?? 0;
    expect(until).toBeGreaterThanOrEqual(before + LEGACY_OVERLAP_MS);
    expect(until).toBeLessThanOrEqual(Date.now() + LEGACY_OVERLAP_MS + 60_000);

    // c:1 again (a duplicate shipped later) and a new click of u1, in the new index.
    await writeNew(store, [click("c:1", "u1"), click("c:3", "u1", "ad2")], 9);
    const got = await store.readIndexed("userId", "u1", T0, T0 + 60_000);
    expect(got.map((e) => `${e.eventId}@${e.streamSeq}/${e.adId}`).sort()).toEqual([
      "c:1@5/ad1",
      "c:3@9/ad2",
    ]);
  });
});

describe("a new deployment's raw store", () => {
  const cass = useKeyspace();

  it("reads only the new index", async () => {
    const { client } = cass();
    const store = new RawStore(client);
    await store.createSchema();
    expect(await legacyUntil(client)).toBe(0);
    await legacyBlock(client, [click("c:1", "u1")], 5); // never written by this version
    await writeNew(store, [click("c:3", "u1")], 9);
    const got = await store.readIndexed("userId", "u1", T0 - 60_000, T0 + 120_000);
    expect(got).toEqual([
      { adId: "ad1", country: "USA", eventId: "c:3", minuteMs: T0, streamSeq: 9 },
    ]);
  });
});
