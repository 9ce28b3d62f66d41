/**
 * A deployment created by an earlier version keeps its data: its partition_minutes table gains
 * the through_seq column at start-up, and the rows written before read as "position unknown"
 * (a raw-store count over them keeps everything, as before).
 */
import { describe, expect, it } from "vitest";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
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
