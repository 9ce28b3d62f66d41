import {
  type JetStreamClient,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  type PubAck,
} from "@nats-io/jetstream";
import { type KV, Kvm } from "@nats-io/kv";
import { headers } from "@nats-io/nats-core";
import type { NatsConnection } from "@nats-io/transport-node";
import { beforeAll, describe, expect, it } from "vitest";
import { aggregateWriterChild } from "../../actors/aggregate-writer.js";
import { aggregatorChild, aggregatorLogic } from "../../actors/aggregator.js";
import { rawWriterChild } from "../../actors/raw-writer.js";
import { reducerChild } from "../../actors/reducer.js";
import { ensureLayout } from "../../app/cli/layout.js";
import { KV_BUCKETS, STREAMS, SUBJECTS } from "../../nats/layout.js";
import {
  AD_ROWS_WRITER_DURABLE,
  type AggregateWriterTarget,
  aggregateWriterConsumer,
} from "../../src/aggregate/aggregate-writer.js";
import { aggregatorSnapshotKey } from "../../src/aggregate/aggregator-core.js";
import { loadConfig } from "../../src/config.js";
import { ActorKilledError } from "../../src/errors.js";
import { BatchPublisher } from "../../src/ingest/batch-publisher.js";
import { RAW_WRITER_DURABLE, rawWriterConsumer } from "../../src/ingest/raw-writer.js";
import { type ClickEvent, ONE_MINUTE_MS } from "../../src/model.js";
import { ensureDurable } from "../../src/nats/durable-consumer.js";
import { partitionOf } from "../../src/partition.js";
import { SnapshotConflictError, SnapshotStore } from "../../src/snapshots/snapshot-store.js";
import { AggregateStore, dayOf } from "../../src/storage/aggregate-store.js";
import type { CassandraClient } from "../../src/storage/cassandra-client.js";
import { type RawBatch, RawStore } from "../../src/storage/raw-store.js";
import type { ClosedMinute } from "../../src/windows/partition-aggregator.js";
import { encodeAggregate, minuteMsgId } from "../../src/wire/aggregate-messages.js";
import { encodeBatch } from "../../src/wire/batch-codec.js";
import { uniqueName, useKeyspace, useNatsServer } from "../harness/servers.js";
import { CHILD, type RunningActor, runActor } from "../support/actors.js";

// Lost acknowledgements, redeliveries and publish retries, one mechanism at a time, against a
// real nats-server and Cassandra. Each describe has its own server (its own streams and
// durables); they share one keyspace and keep apart by day (DAY_n below).

const PARTITIONS = 2;
const DAY_MS = 86_400_000;
const BASE_MS = Date.UTC(2024, 7, 1);
const dayStart = (n: number) => BASE_MS + n * DAY_MS;

async function until(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 30_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const ok = async () => {
    try {
      return await check();
    } catch {
      return false;
    }
  };
  while (!(await ok())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Ads of partition `p` (of PARTITIONS). */
function adsOf(p: number, n: number, prefix: string): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) {
    const ad = `${prefix}${i}`;
    if (partitionOf(ad, PARTITIONS) === p) out.push(ad);
  }
  return out;
}

/** `n` clicks spread over ads, `stepMs` apart from `fromMs`, with ids `${tag}-<i>`. */
function clicks(ads: string[], fromMs: number, n: number, stepMs: number, tag: string) {
  const countries = ["USA", "KOR", "JPN"];
  return Array.from(
    { length: n },
    (_, i): ClickEvent => ({
      adId: ads[i % ads.length] as string,
      timestampMs: fromMs + i * stepMs,
      userId: `user-${i % 7}`,
      ip: `10.0.0.${1 + (i % 200)}`,
      country: countries[i % countries.length] as string,
      eventId: `c:${tag}-${i}`,
    }),
  );
}

/** Per-ad counts of events, as the aggregate store holds them for one minute. */
function countByAd(events: readonly ClickEvent[]): Map<string, number> {
  const m = new Map<string, number>();
  for (const e of events) m.set(e.adId, (m.get(e.adId) ?? 0) + 1);
  return m;
}

async function publishClicks(
  js: JetStreamClient,
  p: number,
  events: ClickEvent[],
  msgId: string,
): Promise<PubAck> {
  return js.publish(SUBJECTS.clicks(p), encodeBatch(events), { msgID: msgId });
}

/** Publishes partition 0's minute of `events`, version 1, as its aggregator would. */
async function publishMinute(js: JetStreamClient, minute: number, events: ClickEvent[]) {
  const closed: ClosedMinute = {
    partition: 0,
    minuteStartMs: minute,
    version: 1,
    adCounts: [...countByAd(events)].sort(([a], [b]) => (a < b ? -1 : 1)),
    dimCounts: {},
    topK: [],
    eventCount: events.length,
  };
  await js.publish(SUBJECTS.minuteAggregates(0), encodeAggregate({ kind: "minute", ...closed }), {
    msgID: minuteMsgId(0, minute, 1),
  });
}

/** `ad_id → clicks` of one minute in ad_minute_counts, with each cell's write timestamp. */
async function storedAdMinute(
  client: CassandraClient,
  ads: string[],
  minuteMs: number,
): Promise<Map<string, { clicks: number; version: number; writetime: number }>> {
  const out = new Map<string, { clicks: number; version: number; writetime: number }>();
  for (const ad of ads) {
    const rs = await client.execute(
      "SELECT clicks, version, writetime(clicks) AS wt FROM ad_minute_counts WHERE ad_id = ? AND day = ? AND minute = ?",
      [ad, dayOf(minuteMs), new Date(minuteMs)],
      { prepare: true },
    );
    const row = rs.rows[0];
    if (row)
      out.set(ad, {
        clicks: Number(row.get("clicks")),
        version: row.get("version") as number,
        writetime: Number(row.get("wt")),
      });
  }
  return out;
}

/** Message IDs of every message in a stream, in order (small streams). */
async function msgIds(jsm: JetStreamManager, stream: string): Promise<string[]> {
  const { state } = await jsm.streams.info(stream);
  const out: string[] = [];
  if (state.messages === 0) return out;
  for (let seq = state.first_seq; seq <= state.last_seq; seq++) {
    const m = await jsm.streams.getMessage(stream, { seq }).catch(() => undefined);
    if (m) out.push(m.header?.get("Nats-Msg-Id") ?? "");
  }
  return out;
}

async function drained(jsm: JetStreamManager, stream: string, durable: string): Promise<boolean> {
  const info = await jsm.consumers.info(stream, durable);
  return info.num_pending === 0 && info.num_ack_pending === 0;
}

function runnerOptions(
  p: number,
  over: { snapshotEveryMs?: number; maxBatchMessages?: number } = {},
) {
  return {
    ...CHILD,
    id: `aggregator-${p}`,
    partition: p,
    aggregator: {
      allowedLatenessMs: 15_000,
      // No idle ticks: every message of the partition is one these tests published.
      idleTimeoutMs: 3_600_000,
      dimensions: ["country" as const],
      topK: 10,
      latePolicy: "amend" as const,
    },
    snapshotEveryMs: 0,
    maxBatchMessages: 1,
    ...over,
  };
}

/** An aggregator actor started on its own; `stop()` is orderly, `kill()` a crash (no final snapshot). */
function startAggregator(
  deps: { js: JetStreamClient; snapshots: SnapshotStore },
  o: ReturnType<typeof runnerOptions>,
): RunningActor {
  return runActor(aggregatorChild(aggregatorLogic(deps), o));
}

/** The stream sequence an aggregator actor has read up to. */
const lastSeqOf = (a: RunningActor) => Number(a.status().lastSeq ?? 0);

/**
 * A writer of the per-ad tables started on its own (their rows carry each cell's version and
 * write time; the partition-minute writer shares its delivery code, see below).
 */
const writerOf = (
  store: AggregateStore,
  js: JetStreamClient,
  target: AggregateWriterTarget = "ad-rows",
) => runActor(aggregateWriterChild({ js, store }, { ...CHILD, id: `${target}-writer`, target }));

/** A JetStream client whose consumers cannot be created until `gate` resolves: a frozen process. */
function frozenUntil(js: JetStreamClient, gate: Promise<void>): JetStreamClient {
  const consumers = new Proxy(js.consumers, {
    get(target, prop) {
      const v = Reflect.get(target, prop);
      if (prop === "get")
        return async (...args: unknown[]) => {
          await gate;
          return (v as (...a: unknown[]) => unknown).apply(target, args);
        };
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  return new Proxy(js, {
    get(target, prop) {
      if (prop === "consumers") return consumers;
      const v = Reflect.get(target, prop);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
}

const cass = useKeyspace();
let schemaReady: Promise<void> | undefined;
function stores() {
  const { client } = cass();
  const aggregates = new AggregateStore(client);
  const raw = new RawStore(client);
  schemaReady ??= (async () => {
    await aggregates.createSchema();
    await raw.createSchema();
  })();
  return { client, aggregates, raw, ready: schemaReady };
}

/** A fresh nats-server with the AdClick layout, for one describe. */
function useLayout(duplicateWindowMs = 120_000) {
  const nats = useNatsServer();
  let env: { nc: NatsConnection; js: JetStreamClient; jsm: JetStreamManager } | undefined;
  beforeAll(async () => {
    const { nc, server } = nats();
    await ensureLayout(
      nc,
      loadConfig({}, { natsServers: [server.url], partitions: PARTITIONS, duplicateWindowMs }),
    );
    env = { nc, js: jetstream(nc), jsm: await jetstreamManager(nc) };
    await stores().ready;
  });
  return () => {
    if (!env) throw new Error("layout not ready");
    return env;
  };
}

describe("a publish retried after its acknowledgement was lost", () => {
  const env = useLayout();

  it("is stored once: the retry carries the same Nats-Msg-Id and JetStream reports a duplicate", async () => {
    const { nc, js, jsm } = env();
    const events = clicks(adsOf(0, 3, "pa"), dayStart(0), 50, 100, "lost-ack");
    // The first attempt reaches the server, but its PubAck never comes back (no reply subject).
    const h = headers();
    h.set("Nats-Msg-Id", "s:lost-ack:0");
    nc.publish(SUBJECTS.clicks(0), encodeBatch(events), { headers: h });
    await nc.flush();
    // The publisher only knows the publish did not succeed: it publishes again.
    const publisher = new BatchPublisher(js, { label: "clicks" });
    await publisher.publish({
      subject: SUBJECTS.clicks(0),
      msgId: "s:lost-ack:0",
      payload: encodeBatch(events),
      events: events.length,
    });
    await publisher.flush();
    expect(publisher.stats).toMatchObject({ batches: 1, duplicateBatches: 1, events: 0 });
    expect(await msgIds(jsm, STREAMS.clicks)).toEqual(["s:lost-ack:0"]);
  });

  it("is retried by the batch publisher under the same ID when the ack times out, and stored once", async () => {
    const { js, jsm } = env();
    // A client whose first publish is stored by the server but answers with an error, as a
    // PubAck lost to a dropped connection does.
    let lose = 1;
    const lossy = new Proxy(js, {
      get(target, prop) {
        const v = Reflect.get(target, prop);
        if (prop === "publish")
          return async (...args: Parameters<JetStreamClient["publish"]>) => {
            const ack = await target.publish(...args);
            if (lose-- > 0)
              throw Object.assign(new Error("TIMEOUT"), { name: "TimeoutError", seq: ack.seq });
            return ack;
          };
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    const before = (await jsm.streams.info(STREAMS.clicks)).state.messages;
    const publisher = new BatchPublisher(lossy, { label: "clicks", baseRetryDelayMs: 10 });
    const events = clicks(adsOf(1, 3, "pb"), dayStart(0), 40, 100, "retry");
    await publisher.publish({
      subject: SUBJECTS.clicks(1),
      msgId: "s:retry:1",
      payload: encodeBatch(events),
      events: events.length,
    });
    await publisher.flush();
    expect(publisher.stats).toMatchObject({ retries: 1, batches: 1, duplicateBatches: 1 });
    const ids = await msgIds(jsm, STREAMS.clicks);
    expect(ids.filter((id) => id === "s:retry:1")).toHaveLength(1);
    expect((await jsm.streams.info(STREAMS.clicks)).state.messages).toBe(before + 1);
  });
});

describe("a raw writer that dies after writing a batch but before acknowledging it", () => {
  const env = useLayout();

  it("gets the batch redelivered (to its replacement), which rewrites the same rows", async () => {
    const { js, jsm } = env();
    const { client, raw } = stores();
    await ensureDurable(jsm, { ...rawWriterConsumer(), ackWaitMs: 1500 });
    const minute = dayStart(1);
    const events = clicks(adsOf(0, 4, "rw"), minute, 90, 500, "raw");
    await publishClicks(js, 0, events, "s:raw:0");

    // The first writer stores its batch, then its process dies before the acks go out.
    let first: RunningActor | undefined;
    class DiesAfterWriting extends RawStore {
      override async write(b: readonly RawBatch[]): Promise<number> {
        await super.write(b);
        first?.actor.send({ type: "KILL" });
        throw new Error("process died before acknowledging");
      }
    }
    first = runActor(
      rawWriterChild(
        { js, store: new DiesAfterWriting(client) },
        { ...CHILD, id: "raw-writer", retryBaseMs: 10 },
      ),
    );
    await expect(first.done).rejects.toBeInstanceOf(ActorKilledError);
    const rowsQuery =
      "SELECT batch_id, stream_seq, event_count FROM raw_blocks WHERE partition = ? AND minute = ?";
    const written = (await client.execute(rowsQuery, [0, new Date(minute)], { prepare: true }))
      .rows;
    expect(written.map((r) => r.get("batch_id"))).toEqual(["s:raw:0"]);
    const unacked = await jsm.consumers.info(STREAMS.clicks, RAW_WRITER_DURABLE);
    expect(unacked.num_ack_pending).toBe(1);

    // The replacement gets the same messages again after ack_wait and writes the same rows.
    const second = runActor(rawWriterChild({ js, store: raw }, { ...CHILD, id: "raw-writer" }));
    await until("the redelivered batch is acknowledged", () =>
      drained(jsm, STREAMS.clicks, RAW_WRITER_DURABLE),
    );
    await second.stop();
    const info = await jsm.consumers.info(STREAMS.clicks, RAW_WRITER_DURABLE);
    // One message, delivered twice: to the writer that died, then to its replacement.
    expect(info.delivered.consumer_seq).toBe(2);
    expect(second.status().messages).toBe(1);
    const again = (await client.execute(rowsQuery, [0, new Date(minute)], { prepare: true })).rows;
    expect(again.map((r) => [r.get("batch_id"), Number(r.get("stream_seq"))])).toEqual(
      written.map((r) => [r.get("batch_id"), Number(r.get("stream_seq"))]),
    );
    const stored = await raw.readMinute(0, minute);
    expect(stored.map((e) => e.eventId).sort()).toEqual(events.map((e) => e.eventId).sort());
  });
});

describe("an aggregate writer that dies after writing but before acknowledging", () => {
  const env = useLayout();

  it("gets the minute redelivered, which rewrites the same rows at the same version", async () => {
    const { js, jsm } = env();
    const { client, aggregates } = stores();
    await ensureDurable(jsm, { ...aggregateWriterConsumer("ad-rows"), ackWaitMs: 1500 });
    const minute = dayStart(2);
    const ads = adsOf(0, 5, "aw");
    const events = clicks(ads, minute, 60, 900, "aw");
    await publishMinute(js, minute, events);

    let first: RunningActor | undefined;
    let written = 0;
    class DiesAfterWriting extends AggregateStore {
      override async writeAdRows(c: ClosedMinute): Promise<number> {
        written = await super.writeAdRows(c);
        first?.actor.send({ type: "KILL" });
        throw new Error("process died before acknowledging");
      }
    }
    first = writerOf(new DiesAfterWriting(client), js);
    await expect(first.done).rejects.toBeInstanceOf(ActorKilledError);
    expect(written).toBe(ads.length);
    const afterCrash = await storedAdMinute(client, ads, minute);
    expect(
      (await jsm.consumers.info(STREAMS.aggregates, AD_ROWS_WRITER_DURABLE)).num_ack_pending,
    ).toBe(1);

    const second = writerOf(aggregates, js);
    await until("the redelivered minute is acknowledged", () =>
      drained(jsm, STREAMS.aggregates, AD_ROWS_WRITER_DURABLE),
    );
    await second.stop();
    const info = await jsm.consumers.info(STREAMS.aggregates, AD_ROWS_WRITER_DURABLE);
    expect(info.delivered.consumer_seq).toBe(2);
    const final = await storedAdMinute(client, ads, minute);
    expect(final).toEqual(afterCrash);
    expect(new Map([...final].map(([ad, v]) => [ad, v.clicks]))).toEqual(countByAd(events));
    for (const v of final.values()) expect(v).toMatchObject({ version: 1, writetime: 1 });
  });
});

describe("an aggregate writer that dies with minutes it never wrote", () => {
  const env = useLayout();

  // Both writers: the partition-minute rows (`final` follows their progress) and the per-ad
  // rows behind them (their own progress).
  for (const target of ["minutes", "ad-rows"] as const) {
    it(`leaves its replacement unable to store progress past those minutes until they are stored (${target})`, async () => {
      const { js, jsm } = env();
      const { client, aggregates } = stores();
      const spec = aggregateWriterConsumer(target);
      await ensureDurable(jsm, { ...spec, ackWaitMs: 3000 });
      const minute = dayStart(target === "minutes" ? 9 : 7);
      const ads = adsOf(0, 3, `pr-${target}`);
      const events = clicks(ads, minute, 30, 1000, `pr-${target}`);
      await publishMinute(js, minute, events);
      /** ad → clicks of the minute as the target stores them. */
      const storedCounts = async (): Promise<Map<string, number>> =>
        target === "minutes"
          ? new Map((await aggregates.partitionMinute(0, minute))?.adCounts ?? [])
          : new Map(
              [...(await storedAdMinute(client, ads, minute))].map(([a, v]) => [a, v.clicks]),
            );
      const progressOf = async () =>
        (target === "minutes"
          ? await aggregates.progress()
          : await aggregates.adRowsProgress()
        ).get(0) ?? 0;

      // The first writer gets the minute and dies before writing it: it stays unacknowledged,
      // to be redelivered after ack_wait.
      let first: RunningActor | undefined;
      class DiesBeforeWriting extends AggregateStore {
        override async writePartitionMinute(): Promise<number> {
          first?.actor.send({ type: "KILL" });
          throw new Error("process died");
        }
        override async writeAdRows(): Promise<number> {
          first?.actor.send({ type: "KILL" });
          throw new Error("process died");
        }
      }
      first = writerOf(new DiesBeforeWriting(client), js, target);
      await expect(first.done).rejects.toBeInstanceOf(ActorKilledError);

      // The aggregator reports the minute closed; the replacement gets that report first.
      await js.publish(
        SUBJECTS.minuteAggregates(0),
        encodeAggregate({
          kind: "progress",
          partition: 0,
          closedThroughMs: minute + ONE_MINUTE_MS,
        }),
        { msgID: `prog:0:${minute + ONE_MINUTE_MS}` },
      );
      const second = writerOf(aggregates, js, target);
      // "Closed through" in the store must imply the minute is stored, at every moment.
      const seen: string[] = [];
      await until(
        "the progress is stored",
        async () => {
          if ((await progressOf()) < minute + ONE_MINUTE_MS) return false;
          const stored = await storedCounts();
          seen.push(`progress stored with ${stored.size} of ${ads.length} ads of the minute`);
          return true;
        },
        30_000,
      );
      // Everything it was given is acknowledged in the end (the report too, once ready).
      await until("every message acknowledged", () =>
        drained(jsm, STREAMS.aggregates, spec.durable),
      );
      await second.stop();
      expect(seen).toEqual([
        `progress stored with ${ads.length} of ${ads.length} ads of the minute`,
      ]);
      expect(await storedCounts()).toEqual(countByAd(events));
    });
  }
});

describe("an aggregator restored from a snapshot older than what it already emitted", () => {
  for (const window of ["within", "past"] as const) {
    describe(`${window} JetStream's duplicate window`, () => {
      const env = useLayout(window === "within" ? 120_000 : 1000);

      it(`re-emits the same outputs under the same IDs (${window === "within" ? "dropped as duplicates" : "stored again"}) and the store converges to the same rows`, async () => {
        const { js, jsm, nc } = env();
        const { client, aggregates } = stores();
        await ensureDurable(jsm, aggregateWriterConsumer("ad-rows"));
        const snapshots = new SnapshotStore(await new Kvm(js).open(KV_BUCKETS.snapshots));
        const day = dayStart(window === "within" ? 3 : 4);
        const ads = adsOf(0, 6, `rs${window}`);
        // Four minutes of clicks, one message each; every message closes the minute before it.
        const input = [0, 1, 2, 3].map((k) =>
          clicks(ads, day + k * ONE_MINUTE_MS + 20_000, 40, 1000, `rs-${window}-${k}`),
        );
        const seqs: number[] = [];
        const a = startAggregator({ js, snapshots }, runnerOptions(0));
        seqs.push((await publishClicks(js, 0, input[0] as ClickEvent[], `rs:${window}:0`)).seq);
        await until("the first message is snapshotted", async () => {
          const s = await snapshots.load(aggregatorSnapshotKey(0));
          return s?.snapshot.streamSeq === seqs[0];
        });
        // From here on the aggregator emits without snapshotting (as between two periodic
        // snapshots), then crashes: its last snapshot is older than its outputs.
        await a.stop();
        const c = startAggregator(
          { js, snapshots },
          runnerOptions(0, { snapshotEveryMs: 3_600_000 }),
        );
        for (let k = 1; k < 4; k++)
          seqs.push(
            (await publishClicks(js, 0, input[k] as ClickEvent[], `rs:${window}:${k}`)).seq,
          );
        await until("every message is aggregated", () => lastSeqOf(c) === seqs[3]);
        await c.kill();
        const emitted = await msgIds(jsm, STREAMS.aggregates);
        expect(emitted.filter((id) => id.startsWith("min:"))).toEqual(
          [0, 1, 2].map((k) => minuteMsgId(0, day + k * ONE_MINUTE_MS, 1)),
        );
        const writer = writerOf(aggregates, js);
        await until("the aggregates are stored", () =>
          drained(jsm, STREAMS.aggregates, AD_ROWS_WRITER_DURABLE),
        );
        const before = await Promise.all(
          [0, 1, 2].map((k) => storedAdMinute(client, ads, day + k * ONE_MINUTE_MS)),
        );
        if (window === "past") await new Promise((r) => setTimeout(r, 1500));

        // Restored from the snapshot of the first message: the replay re-makes minutes 0..2.
        const restored = await snapshots.load(aggregatorSnapshotKey(0));
        expect(restored?.snapshot.streamSeq).toBe(seqs[0]);
        const d = startAggregator({ js, snapshots }, runnerOptions(0));
        await until("the replay is done", () => lastSeqOf(d) === seqs[3]);
        await d.stop();
        const replayed = await msgIds(jsm, STREAMS.aggregates);
        const minuteIds = replayed.filter((id) => id.startsWith("min:"));
        if (window === "within") {
          expect(minuteIds).toEqual(emitted.filter((id) => id.startsWith("min:")));
        } else {
          // Past the window JetStream stores them again: the sink must absorb them.
          expect(minuteIds).toEqual([
            ...emitted.filter((id) => id.startsWith("min:")),
            ...emitted.filter((id) => id.startsWith("min:")),
          ]);
        }
        await until("the replayed aggregates are stored", () =>
          drained(jsm, STREAMS.aggregates, AD_ROWS_WRITER_DURABLE),
        );
        await writer.stop();
        const after = await Promise.all(
          [0, 1, 2].map((k) => storedAdMinute(client, ads, day + k * ONE_MINUTE_MS)),
        );
        expect(after).toEqual(before);
        for (const [k, m] of after.entries()) {
          expect(new Map([...m].map(([ad, v]) => [ad, v.clicks]))).toEqual(
            countByAd(input[k] as ClickEvent[]),
          );
        }
        expect(nc.isClosed()).toBe(false);
      });
    });
  }
});

describe("a nats-server crash and restart (file store)", () => {
  const nats = useNatsServer();
  beforeAll(async () => {
    const { nc, server } = nats();
    await ensureLayout(nc, loadConfig({}, { natsServers: [server.url], partitions: PARTITIONS }));
  });

  it("is ridden out by the aggregator and the reducer: both go on consuming where they were", async () => {
    const { nc, server } = nats();
    const js = jetstream(nc);
    const jsm = await jetstreamManager(nc);
    const snapshots = new SnapshotStore(await new Kvm(js).open(KV_BUCKETS.snapshots));
    const day = dayStart(8);
    const ads = [adsOf(0, 3, "nr"), adsOf(1, 3, "nr")];
    const aggregators = [0, 1].map((p) =>
      startAggregator({ js, snapshots }, runnerOptions(p, { maxBatchMessages: 64 })),
    );
    const reducer = runActor(
      reducerChild(js, {
        ...CHILD,
        id: "reducer",
        partitions: PARTITIONS,
        n: 10,
        replayMs: 3_600_000,
        overdueAfterMs: 3_600_000,
      }),
    );
    const topsOf = async () =>
      (await msgIds(jsm, STREAMS.aggregates)).filter((id) => id.startsWith("top:"));
    /** Clicks of minute k in both partitions, and a click two minutes later that closes it. */
    const minute = async (k: number) => {
      for (const p of [0, 1]) {
        const t = day + k * ONE_MINUTE_MS;
        await publishClicks(
          js,
          p,
          clicks(ads[p] as string[], t, 10, 1000, `nr${k}-${p}`),
          `nr:${k}:${p}`,
        );
        await publishClicks(
          js,
          p,
          clicks(ads[p] as string[], t + 2 * ONE_MINUTE_MS, 1, 1, `nr${k}c-${p}`),
          `nr:${k}c:${p}`,
        );
      }
    };
    await minute(0);
    await until("the global top N of the first minute", async () => (await topsOf()).length === 1);

    await server.restart({ crash: true });
    await until("JetStream answers again", async () => {
      await jsm.streams.info(STREAMS.clicks);
      return true;
    });
    await minute(10);
    await until(
      "the global top N of a minute after the restart",
      async () => (await topsOf()).length === 2,
      30_000,
    );
    await reducer.stop();
    for (const a of aggregators) await a.stop();
  });
});

describe("snapshots in JetStream KV", () => {
  const env = useLayout();

  /** A KV whose next `update` is applied by the server but answered with an error. */
  function lossyUpdates(kv: KV) {
    const state = { loseNext: false };
    const proxy = new Proxy(kv, {
      get(target, prop) {
        const v = Reflect.get(target, prop);
        if (prop === "update")
          return async (...args: Parameters<KV["update"]>) => {
            const rev = await target.update(...args);
            if (state.loseNext) {
              state.loseNext = false;
              throw Object.assign(new Error("TIMEOUT"), { name: "TimeoutError" });
            }
            return rev;
          };
        return typeof v === "function" ? v.bind(target) : v;
      },
    });
    return { kv: proxy, state };
  }

  it("stay loadable when the acknowledgement of a (chunked) save is lost", async () => {
    const { js } = env();
    const kv = await new Kvm(js).create(uniqueName("snaps"), { history: 5 });
    const lossy = lossyUpdates(kv);
    const store = new SnapshotStore(lossy.kv, 64);
    const big = (n: number) => ({ ids: Array.from({ length: n }, (_, i) => `event-${i}`) });
    const first = await store.save(
      "agg.0",
      { streamSeq: 10, takenAtMs: 1, state: big(40) },
      undefined,
    );
    lossy.state.loseNext = true;
    // The new manifest is committed, but the writer hears an error: it must neither delete the
    // chunks the committed manifest points to, nor report a conflict it did not have.
    const saved = await store
      .save("agg.0", { streamSeq: 20, takenAtMs: 2, state: big(50) }, first.revision)
      .catch((e: unknown) => e);
    const loaded = await store.load<{ ids: string[] }>("agg.0");
    expect(loaded?.snapshot.streamSeq).toBe(20);
    expect(loaded?.snapshot.state.ids).toHaveLength(50);
    expect(saved).toEqual({ revision: loaded?.revision, bytes: loaded?.bytes });
    // And the next save of the same writer goes on from there.
    const third = await store.save(
      "agg.0",
      { streamSeq: 30, takenAtMs: 3, state: big(5) },
      (saved as { revision: number }).revision,
    );
    expect((await store.load("agg.0"))?.revision).toBe(third.revision);
  });

  it("refuse a stale writer with SnapshotConflictError and keep the winner's chunks", async () => {
    const { js } = env();
    const kv = await new Kvm(js).create(uniqueName("snaps"), { history: 5 });
    const store = new SnapshotStore(kv, 64);
    const big = (n: number) => ({ ids: Array.from({ length: n }, (_, i) => `event-${i}`) });
    const r1 = await store.save("agg.1", { streamSeq: 1, takenAtMs: 1, state: big(10) }, undefined);
    const winner = await store.save(
      "agg.1",
      { streamSeq: 5, takenAtMs: 2, state: big(30) },
      r1.revision,
    );
    const stale = store.save("agg.1", { streamSeq: 3, takenAtMs: 3, state: big(20) }, r1.revision);
    await expect(stale).rejects.toBeInstanceOf(SnapshotConflictError);
    await expect(stale).rejects.toMatchObject({ code: "SNAPSHOT_CONFLICT" });
    const loaded = await store.load<{ ids: string[] }>("agg.1");
    expect(loaded).toMatchObject({ revision: winner.revision, snapshot: { streamSeq: 5 } });
    expect(loaded?.snapshot.state.ids).toHaveLength(30);
  });
});

describe("fencing: an aggregator paused past its replacement's start", () => {
  // A short duplicate window, so that the stale aggregator's late outputs really reach the
  // aggregates stream and the sink, instead of being dropped as duplicates.
  const env = useLayout(1000);

  it("cannot overwrite the newer snapshot (SnapshotConflictError stops it) nor the newer results (versions)", async () => {
    const { js, jsm } = env();
    const { client, aggregates } = stores();
    await ensureDurable(jsm, aggregateWriterConsumer("ad-rows"));
    const snapshots = new SnapshotStore(await new Kvm(js).open(KV_BUCKETS.snapshots));
    const m = dayStart(5);
    const ads = adsOf(0, 4, "fence");
    const m1 = clicks(ads, m + 1000, 20, 2000, "f1"); // minute m
    const m2 = clicks(ads, m + 80_000, 5, 1000, "f2"); // closes minute m: m v1 (20 clicks)
    const m3 = clicks(ads, m + 30_000, 3, 1000, "f3"); // late for m: correction m v2 (23 clicks)
    const m4 = clicks(ads, m + 150_000, 2, 1000, "f4"); // closes minute m+1

    const seq1 = (await publishClicks(js, 0, m1, "f:1")).seq;
    const first = startAggregator({ js, snapshots }, runnerOptions(0));
    await until("the first message is aggregated", () => lastSeqOf(first) === seq1);
    await first.stop();

    // The old aggregator restores that snapshot, then freezes (SIGSTOP, a long GC pause)...
    let thaw: () => void = () => {};
    const frozen = new Promise<void>((r) => {
      thaw = r;
    });
    const stale = startAggregator({ js: frozenUntil(js, frozen), snapshots }, runnerOptions(0));
    await until("the stale aggregator has restored", () => lastSeqOf(stale) === seq1);
    const seq2 = (await publishClicks(js, 0, m2, "f:2")).seq;
    await publishClicks(js, 0, m3, "f:3");
    await publishClicks(js, 0, m4, "f:4");

    // ...while its replacement restores the same snapshot and goes on: m v1, m v2, m+1 v1.
    const replacement = startAggregator({ js, snapshots }, runnerOptions(0));
    const writer = writerOf(aggregates, js);
    await until("the replacement is done", async () => {
      if (lastSeqOf(replacement) < seq2 + 2) return false;
      const s = await snapshots.load(aggregatorSnapshotKey(0));
      return s?.snapshot.streamSeq === seq2 + 2;
    });
    await until("the replacement's results are stored", () =>
      drained(jsm, STREAMS.aggregates, AD_ROWS_WRITER_DURABLE),
    );
    const newer = await storedAdMinute(client, ads, m);
    expect([...newer.values()].reduce((n, v) => n + v.clicks, 0)).toBe(23);
    const newerSnapshot = await snapshots.load(aggregatorSnapshotKey(0));
    await new Promise((r) => setTimeout(r, 1500)); // past the duplicate window

    // The old one thaws: it processes one message (re-emitting m at version 1, now stored
    // again in the stream), then its snapshot loses the compare-and-set and it stops.
    thaw();
    await expect(stale.done).rejects.toBeInstanceOf(SnapshotConflictError);
    expect(lastSeqOf(stale)).toBe(seq2);
    const ids = await msgIds(jsm, STREAMS.aggregates);
    expect(ids.filter((id) => id === minuteMsgId(0, m, 1))).toHaveLength(2);
    await until("the stale aggregator's late output is consumed", () =>
      drained(jsm, STREAMS.aggregates, AD_ROWS_WRITER_DURABLE),
    );
    await writer.stop();
    await replacement.stop();

    // The newer results and the newer snapshot stand.
    expect(await storedAdMinute(client, ads, m)).toEqual(newer);
    for (const v of newer.values()) expect(v).toMatchObject({ version: 2, writetime: 2 });
    expect(new Map([...newer].map(([ad, v]) => [ad, v.clicks]))).toEqual(countByAd([...m1, ...m3]));
    const finalSnapshot = await snapshots.load(aggregatorSnapshotKey(0));
    expect(finalSnapshot?.snapshot.streamSeq).toBe(seq2 + 2);
    expect(finalSnapshot?.revision).toBeGreaterThanOrEqual(newerSnapshot?.revision ?? 0);
  });

  it("stops at once when an on-demand snapshot (admin snapshot) finds it stale", async () => {
    const { js } = env();
    const snapshots = new SnapshotStore(await new Kvm(js).open(KV_BUCKETS.snapshots));
    const m = dayStart(6);
    const ads = adsOf(1, 3, "fence-now");
    const seq1 = (await publishClicks(js, 1, clicks(ads, m + 1000, 10, 1000, "n1"), "n:1")).seq;
    // No periodic snapshots: only the on-demand one can tell the old aggregator it is stale.
    const opts = runnerOptions(1, { snapshotEveryMs: 3_600_000 });
    const old = startAggregator({ js, snapshots }, opts);
    await until("the old aggregator is caught up", () => lastSeqOf(old) === seq1);
    await old.snapshotNow();
    const replacement = startAggregator({ js, snapshots }, opts);
    await until("the replacement is caught up", () => lastSeqOf(replacement) === seq1);
    await replacement.snapshotNow();

    await expect(old.snapshotNow()).rejects.toMatchObject({ code: "SNAPSHOT_CONFLICT" });
    const settled = await Promise.race([
      old.done.then(
        () => "stopped without an error",
        (e: unknown) => (e instanceof SnapshotConflictError ? "failed: conflict" : String(e)),
      ),
      new Promise((r) => setTimeout(() => r("still running"), 3000)),
    ]);
    expect(settled).toBe("failed: conflict");
    // Input after the conflict is not processed by the stale aggregator.
    const seq2 = (await publishClicks(js, 1, clicks(ads, m + 70_000, 5, 1000, "n2"), "n:2")).seq;
    await until("the replacement goes on", () => lastSeqOf(replacement) === seq2);
    expect(lastSeqOf(old)).toBe(seq1);
    await replacement.stop();
  });
});
