import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, describe, expect, it } from "vitest";
import { aggregateWriterChild } from "../../actors/aggregate-writer.js";
import { aggregatorChild, aggregatorLogic } from "../../actors/aggregator.js";
import { reducerChild } from "../../actors/reducer.js";
import { ensureLayout } from "../../app/cli/layout.js";
import { KV_BUCKETS, STREAMS } from "../../nats/layout.js";
import { aggregateWriterConsumer } from "../../src/aggregate/aggregate-writer.js";
import { loadConfig } from "../../src/config.js";
import { generateClickLog } from "../../src/gen/click-log.js";
import { BatchPublisher } from "../../src/ingest/batch-publisher.js";
import { KvCheckpointStore } from "../../src/ingest/checkpoint-store.js";
import { LogShipper } from "../../src/ingest/shipper.js";
import { ONE_MINUTE_MS } from "../../src/model.js";
import { ensureDurable } from "../../src/nats/durable-consumer.js";
import { QueryEngine } from "../../src/query/engine.js";
import { SnapshotStore } from "../../src/snapshots/snapshot-store.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import { RawStore } from "../../src/storage/raw-store.js";
import { decodeBatch } from "../../src/wire/batch-codec.js";
import { useKeyspace, useNatsServer } from "../harness/servers.js";
import { CHILD, runActor } from "../support/actors.js";
import { countedUnderDrop, eventKey, expectedAggregates } from "../support/oracle.js";
import { readStream } from "../support/streams.js";

const PARTITIONS = 4;
const LATENESS_MS = 15_000;
const IDLE_MS = 3_000;
const TOP_N = 20;
const START_MS = Date.UTC(2024, 6, 9, 0, 0, 0);
const SPAN_MS = 4 * ONE_MINUTE_MS;
const RANGE: [number, number] = [
  START_MS - 5 * ONE_MINUTE_MS,
  START_MS + SPAN_MS + 5 * ONE_MINUTE_MS,
];

async function until(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 90_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

for (const policy of ["amend", "drop"] as const) {
  describe(`aggregation with late policy "${policy}"${policy === "amend" ? " (the default)" : ""}: ship → aggregate → reduce → store`, () => {
    const nats = useNatsServer();
    const cass = useKeyspace();
    const dir = mkdtempSync(join(tmpdir(), "adclick-agg-"));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it("stores per-(ad, minute), per-(ad, minute, country) counts and per-minute top N equal to a recount", async () => {
      const { nc, server } = nats();
      const { client } = cass();
      const c = loadConfig({}, { natsServers: [server.url], partitions: PARTITIONS });
      await ensureLayout(nc, c);
      const js = jetstream(nc);
      const jsm = await jetstreamManager(nc);
      const store = new AggregateStore(client);
      await store.createSchema();
      await ensureDurable(jsm, aggregateWriterConsumer("minutes"));
      await ensureDurable(jsm, aggregateWriterConsumer("ad-rows"));

      // Two servers' logs of the same period, shipped by one command: duplicates, malformed
      // lines, disorder within the lateness, and clicks 60–90 s behind their log's clock
      // (past the 15 s lateness).
      const gen = {
        ads: 300,
        startMs: START_MS,
        spanMs: SPAN_MS,
        duplicateRatio: 0.03,
        malformedRatio: 0.02,
        disorderMs: 10_000,
        lateRatio: 0.02,
        lateByMs: 60_000,
      };
      const a = generateClickLog({ ...gen, seed: 21, lines: 15_000 });
      const b = generateClickLog({ ...gen, seed: 22, lines: 15_000 });
      writeFileSync(join(dir, "a.log"), a.text);
      writeFileSync(join(dir, "b.log"), b.text);
      const checkpoints = new KvCheckpointStore(
        await new Kvm(js).open(KV_BUCKETS.shipperCheckpoints),
      );
      await new LogShipper(
        {
          checkpoints,
          clicks: new BatchPublisher(js, { label: "clicks" }),
          deadLetters: new BatchPublisher(js, { label: "dlq" }),
        },
        { source: "web", partitions: PARTITIONS, chunkBytes: 32 * 1024 },
      ).shipFiles([join(dir, "a.log"), join(dir, "b.log")]);

      const snapshots = new SnapshotStore(await new Kvm(js).open(KV_BUCKETS.snapshots));
      const actors = [
        ...Array.from({ length: PARTITIONS }, (_, p) =>
          aggregatorChild(aggregatorLogic({ js, snapshots }), {
            ...CHILD,
            id: `aggregator-${p}`,
            partition: p,
            aggregator: {
              allowedLatenessMs: LATENESS_MS,
              idleTimeoutMs: IDLE_MS,
              dimensions: ["country"],
              topK: TOP_N,
              latePolicy: policy,
            },
          }),
        ),
        reducerChild(js, {
          ...CHILD,
          id: "reducer",
          partitions: PARTITIONS,
          n: TOP_N,
          replayMs: 3_600_000,
          overdueAfterMs: 600_000,
        }),
        aggregateWriterChild({ js, store }, { ...CHILD, id: "aggregate-writer" }),
      ].map((spec) => runActor(spec).actor);

      const minutes = new Set(
        [...a.truth, ...b.truth].flatMap((t) =>
          t.kind === "click"
            ? [Math.floor(t.click.timestampMs / ONE_MINUTE_MS) * ONE_MINUTE_MS]
            : [],
        ),
      );
      const lastMinute = Math.max(...minutes);
      try {
        await until("every partition closed and stored through the last minute", async () => {
          const progress = await store.progress();
          return (
            progress.size === PARTITIONS &&
            [...progress.values()].every((t) => t >= lastMinute + ONE_MINUTE_MS)
          );
        });
        await until("the global top N of every minute", async () => {
          const tops = await store.topMinutes(...RANGE);
          if (![...minutes].every((m) => tops.has(m))) return false;
          const info = await jsm.consumers.info(STREAMS.aggregates, "aggregate-writer");
          return info.num_pending === 0 && info.num_ack_pending === 0;
        });
      } finally {
        for (const actor of actors) actor.send({ type: "STOP" });
      }
      for (const actor of actors) expect(actor.getSnapshot().value).not.toBe("failed");

      // Amend (the default) counts every unique click. Drop counts every click except those
      // it reported late, every copy of them: the late stream and the counts add up.
      const lateKeys = (
        await readStream(nc, js, STREAMS.late, (d) => decodeBatch(d).map(eventKey))
      ).flat();
      const expected = expectedAggregates([...a.truth, ...b.truth], {
        topN: TOP_N,
        ...(policy === "drop"
          ? { counted: countedUnderDrop([...a.truth, ...b.truth], lateKeys) }
          : {}),
      });
      if (policy === "drop") expect(lateKeys.length).toBeGreaterThan(0);
      else expect(lateKeys).toEqual([]);

      // Per (ad, minute) and per (ad, minute, country): the partitions' stored minutes.
      const stored = await store.partitionMinutes(PARTITIONS, ...RANGE);
      const adMinute = new Map<string, number>();
      const adMinuteCountry = new Map<string, number>();
      for (const pm of stored) {
        for (const [adId, count] of pm.adCounts) adMinute.set(`${adId}|${pm.minuteStartMs}`, count);
        for (const [adId, country, count] of pm.dimCounts.country ?? []) {
          adMinuteCountry.set(`${adId}|${pm.minuteStartMs}|${country}`, count);
        }
      }
      expect(new Map([...adMinute].sort())).toEqual(new Map([...expected.adMinute].sort()));
      expect(new Map([...adMinuteCountry].sort())).toEqual(
        new Map([...expected.adMinuteCountry].sort()),
      );

      // Counts are answered from the partition minutes while the per-ad rows trail them (their
      // writer has not run yet): the same numbers, ad by ad.
      const lastStored = lastMinute + ONE_MINUTE_MS;
      expect(await store.adRowsProgress()).toEqual(new Map());
      const engine = new QueryEngine(
        { nc, aggregates: store, raw: new RawStore(client) },
        { partitions: PARTITIONS, dimensions: ["country"], rollupMinutes: 0 },
      );
      const ads = [...new Set([...expected.adMinute.keys()].map((k) => k.split("|")[0] as string))];
      const expectCounts = async (adId: string) => {
        const want = (suffix: string, from: Map<string, number>) =>
          [...from].filter(([k]) => k.startsWith(`${adId}|`) && k.endsWith(suffix));
        const total = (rows: [string, number][]) => rows.reduce((n, [, c]) => n + c, 0);
        const all = await engine.count({ adId, fromMs: RANGE[0], toMs: lastStored, filter: {} });
        expect(all.count, adId).toBe(total(want("", expected.adMinute)));
        const usa = await engine.count({
          adId,
          fromMs: RANGE[0],
          toMs: lastStored,
          filter: { country: "USA" },
        });
        expect(usa.count, `${adId} USA`).toBe(total(want("|USA", expected.adMinuteCountry)));
      };
      for (const adId of ads.slice(0, 30)) await expectCounts(adId);

      // The per-ad tables, written behind by their own writer, agree ad by ad once it is through.
      const adRows = runActor(
        aggregateWriterChild({ js, store }, { ...CHILD, id: "ad-rows-writer", target: "ad-rows" }),
      );
      try {
        await until("the per-ad rows of every minute", async () => {
          const through = await store.adRowsProgress();
          return through.size === PARTITIONS && [...through.values()].every((t) => t >= lastStored);
        });
      } finally {
        await adRows.stop();
      }
      for (const adId of ads.slice(0, 60)) {
        const series = await store.adSeries(adId, ...RANGE);
        const want = [...expected.adMinute].filter(([k]) => k.startsWith(`${adId}|`));
        expect(new Map([...series].map(([m, n]) => [`${adId}|${m}`, n]))).toEqual(new Map(want));
        const usa = await store.adSeries(adId, ...RANGE, { dim: "country", value: "USA" });
        const wantUsa = [...expected.adMinuteCountry].filter(
          ([k]) => k.startsWith(`${adId}|`) && k.endsWith("|USA"),
        );
        expect(new Map([...usa].map(([m, n]) => [`${adId}|${m}|USA`, n]))).toEqual(
          new Map(wantUsa),
        );
      }
      for (const adId of ads.slice(30, 40)) await expectCounts(adId);

      // The reducer's global top N per minute.
      const tops = await store.topMinutes(...RANGE);
      for (const [minute, want] of expected.topByMinute) {
        expect(tops.get(minute)?.ads, `top ${TOP_N} of ${new Date(minute).toISOString()}`).toEqual(
          want,
        );
      }
    });
  });
}
