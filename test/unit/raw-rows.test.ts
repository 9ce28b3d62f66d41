import { describe, expect, it } from "vitest";
import type { ClickEvent } from "../../src/model.js";
import type { CassandraClient } from "../../src/storage/cassandra-client.js";
import { dimBucket, type RawBatch, RawStore } from "../../src/storage/raw-store.js";
import { decodeBatch, decodeBlock, encodeBatch } from "../../src/wire/batch-codec.js";

const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9, 10);

// rowsOf is pure: the client is never touched.
const store = new RawStore({} as CassandraClient, { dimBuckets: 4 });

let n = 0;
function ev(timestampMs: number, userId = `user-${n % 5}`, ip = `10.0.0.${n % 7}`): ClickEvent {
  n++;
  return { adId: `ad${n % 3}`, timestampMs, userId, ip, country: "USA", eventId: `c:${n}` };
}

function batch(id: string, seq: number, events: ClickEvent[], payload = true): RawBatch {
  return {
    partition: 2,
    batchId: id,
    streamSeq: seq,
    events,
    ...(payload ? { payload: encodeBatch(events) } : {}),
  };
}

type Row = { query: string; params: unknown[] };
const blocks = (rows: Row[]) => rows.filter((r) => r.query.includes("INTO raw_blocks "));
const dimRows = (rows: Row[]) => rows.filter((r) => r.query.includes("INTO raw_dim_blocks "));

describe("RawStore.rowsOf", () => {
  it.each([
    { why: "one minute, payload at hand", minutes: [0, 0, 0], payload: true, blocks: 1 },
    { why: "one minute, no payload", minutes: [0, 0], payload: false, blocks: 1 },
    { why: "two minutes: split and re-encoded", minutes: [0, 1, 0, 1], payload: true, blocks: 2 },
    { why: "three minutes", minutes: [2, 0, 1], payload: true, blocks: 3 },
  ])("stores every event once per layout ($why)", ({ minutes, payload, blocks: nBlocks }) => {
    const events = minutes.map((m, i) => ev(T0 + m * MIN + i));
    const b = batch("s:f:0-100:2.0", 7, events, payload);
    const rows = store.rowsOf([b]);

    const bl = blocks(rows);
    expect(bl).toHaveLength(nBlocks);
    const fromBlocks: ClickEvent[] = [];
    for (const r of bl) {
      const [partition, minute, batchId, seq, count, blob] = r.params as [
        number,
        Date,
        string,
        bigint,
        number,
        Buffer,
      ];
      expect([partition, batchId, seq]).toEqual([2, "s:f:0-100:2.0", 7n]);
      const decoded = decodeBatch(blob);
      expect(decoded).toHaveLength(count);
      for (const e of decoded) expect(Math.floor(e.timestampMs / MIN) * MIN).toBe(minute.getTime());
      fromBlocks.push(...decoded);
    }
    const byId = (a: ClickEvent, z: ClickEvent) => a.eventId.localeCompare(z.eventId);
    expect(fromBlocks.sort(byId)).toEqual([...events].sort(byId));

    // raw_dim_blocks: every event once per dimension, in the bucket of its value and minute.
    for (const dim of ["ip", "userId"] as const) {
      const seen: ClickEvent[] = [];
      for (const r of dimRows(rows)) {
        const [d, bucket, minute, , count, blob] = r.params as [
          string,
          number,
          Date,
          string,
          number,
          Buffer,
        ];
        if (d !== dim) continue;
        const decoded = decodeBatch(blob);
        expect(decoded).toHaveLength(count);
        for (const e of decoded) {
          expect(dimBucket(dim === "ip" ? e.ip : e.userId, 4)).toBe(bucket);
          expect(Math.floor(e.timestampMs / MIN) * MIN).toBe(minute.getTime());
        }
        seen.push(...decoded);
      }
      expect(seen.sort(byId)).toEqual([...events].sort(byId));
    }
  });

  it("stores a one-minute message's payload as it arrived, without re-encoding", () => {
    const b = batch("m1", 1, [ev(T0), ev(T0 + 5)]);
    const [row] = blocks(store.rowsOf([b]));
    const blob = row?.params[5] as Buffer;
    expect(Buffer.compare(blob, Buffer.from(b.payload as Uint8Array))).toBe(0);
  });

  it("names the first and last message of a dimension block, and one message alone", () => {
    const rows = store.rowsOf([
      batch("m1", 1, [ev(T0, "u", "1.1.1.1")]),
      batch("m2", 2, [ev(T0 + 1, "u", "1.1.1.1")]),
      batch("m3", 3, [ev(T0 + MIN, "u", "1.1.1.1")]),
    ]);
    const ids = dimRows(rows).map(
      (r) => `${r.params[0]}@${(r.params[2] as Date).getTime() - T0}:${r.params[3]}`,
    );
    expect(ids.sort()).toEqual([
      "ip@0:m1..m2",
      "ip@60000:m3",
      "userId@0:m1..m2",
      "userId@60000:m3",
    ]);
  });

  it("keeps, in a dimension block, the stream sequence each event came in", () => {
    const rows = store.rowsOf([
      batch("m1", 11, [ev(T0, "u", "1.1.1.1")]),
      batch("m2", 12, [ev(T0 + 1, "u", "1.1.1.1"), ev(T0 + 2, "u", "1.1.1.1")]),
    ]);
    for (const r of dimRows(rows)) {
      const { events, streamSeqs } = decodeBlock(r.params[5] as Buffer);
      expect(events).toHaveLength(3);
      expect(streamSeqs).toEqual([11, 12, 12]);
    }
  });

  it("is deterministic: the same batches give the same rows", () => {
    const events = [ev(T0), ev(T0 + MIN), ev(T0 + 2)];
    const a = store.rowsOf([batch("x", 9, events)]);
    const b = store.rowsOf([batch("x", 9, events)]);
    expect(a).toEqual(b);
  });
});
