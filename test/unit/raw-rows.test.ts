import { describe, expect, it } from "vitest";
import type { ClickEvent } from "../../src/model.js";
import type { CassandraClient } from "../../src/storage/cassandra-client.js";
import {
  INDEX_PERIOD_MS,
  indexBucket,
  indexShard,
  scanIndexBlock,
} from "../../src/storage/dim-index.js";
import { type RawBatch, RawStore } from "../../src/storage/raw-store.js";
import { decodeBatch, encodeBatch } from "../../src/wire/batch-codec.js";

const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9, 10);

// rowsOf is pure: the client is never touched.
const store = new RawStore({} as CassandraClient, { indexBuckets: 8, indexShards: 2 });

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
const dimRows = (rows: Row[]) => rows.filter((r) => r.query.includes("INTO raw_dim_index "));
type IndexRow = [string, Date, number, number, Date, bigint, number, number, Buffer];
/** The entries of `value` in an index row, as "ad/country/id@seq". */
function entriesOf(r: Row, value: string): string[] {
  const [, , , , , first, , , data] = r.params as IndexRow;
  const out: string[] = [];
  scanIndexBlock(data, Buffer.from(value), Number(first), (ad, c, id, seq) =>
    out.push(`${ad}/${c}/${id}@${seq}`),
  );
  return out;
}

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

    // raw_dim_index: every event once per dimension, in the bucket of its value and minute.
    for (const dim of ["ip", "userId"] as const) {
      const seen: string[] = [];
      for (const r of dimRows(rows)) {
        const [d, period, shard, bucket, minute, first, , count] = r.params as IndexRow;
        if (d !== dim) continue;
        expect(first).toBe(7n);
        expect(period.getTime()).toBe(
          Math.floor(minute.getTime() / INDEX_PERIOD_MS) * INDEX_PERIOD_MS,
        );
        expect(shard).toBe(indexShard(bucket, 2));
        let found = 0;
        for (const e of events) {
          const value = dim === "ip" ? e.ip : e.userId;
          const inRow =
            indexBucket(value, 8) === bucket &&
            Math.floor(e.timestampMs / MIN) * MIN === minute.getTime();
          const hits = entriesOf(r, value).filter((x) =>
            x.startsWith(`${e.adId}/USA/${e.eventId}@`),
          );
          expect(hits).toEqual(inRow ? [`${e.adId}/USA/${e.eventId}@7`] : []);
          if (inRow) {
            found++;
            seen.push(e.eventId);
          }
        }
        expect(found).toBe(count);
      }
      expect(seen.sort()).toEqual(events.map((e) => e.eventId).sort());
    }
  });

  it("stores a one-minute message's payload as it arrived, without re-encoding", () => {
    const b = batch("m1", 1, [ev(T0), ev(T0 + 5)]);
    const [row] = blocks(store.rowsOf([b]));
    const blob = row?.params[5] as Buffer;
    expect(Buffer.compare(blob, Buffer.from(b.payload as Uint8Array))).toBe(0);
  });

  it("keys a batch's index rows by its first sequence and a tag of its last and its ids", () => {
    const ev1 = ev(T0, "u", "1.1.1.1");
    const ev2 = ev(T0 + 1, "u", "1.1.1.1");
    const keyOf = (bs: RawBatch[]) =>
      dimRows(store.rowsOf(bs)).map((r) => (r.params as IndexRow).slice(5, 7).join(":"));
    const ab = keyOf([batch("m1", 1, [ev1]), batch("m2", 2, [ev2])]);
    expect(ab).toHaveLength(2); // one row per dimension
    expect(new Set(ab).size).toBe(1);
    expect(ab[0]?.startsWith("1:")).toBe(true);
    // The same first message grouped with fewer (a redelivery grouped differently): other key.
    expect(keyOf([batch("m1", 1, [ev1])])[0]).not.toBe(ab[0]);
    // The same messages in another order: the same key.
    expect(keyOf([batch("m2", 2, [ev2]), batch("m1", 1, [ev1])])).toEqual(ab);
  });

  it("keeps, in an index entry, the stream sequence each event came in", () => {
    const rows = store.rowsOf([
      batch("m1", 11, [ev(T0, "u", "1.1.1.1")]),
      batch("m2", 12, [ev(T0 + 1, "u", "1.1.1.1"), ev(T0 + 2, "u", "1.1.1.1")]),
    ]);
    const dims = dimRows(rows);
    expect(dims).toHaveLength(2);
    for (const r of dims) {
      const value = r.params[0] === "ip" ? "1.1.1.1" : "u";
      expect(entriesOf(r, value).map((x) => x.slice(x.indexOf("@") + 1))).toEqual([
        "11",
        "12",
        "12",
      ]);
      expect(entriesOf(r, "someone else")).toEqual([]);
    }
  });

  it("is deterministic: the same batches give the same rows", () => {
    const events = [ev(T0), ev(T0 + MIN), ev(T0 + 2)];
    const a = store.rowsOf([batch("x", 9, events)]);
    const b = store.rowsOf([batch("x", 9, events)]);
    expect(a).toEqual(b);
  });
});
