import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, describe, expect, it, vi } from "vitest";
import { aggregateWriterChild } from "../../actors/aggregate-writer.js";
import { aggregatorChild, aggregatorLogic } from "../../actors/aggregator.js";
import { rawWriterChild } from "../../actors/raw-writer.js";
import { reducerChild } from "../../actors/reducer.js";
import { ensureLayout } from "../../app/cli/layout.js";
import { runReconcile } from "../../app/cli/reconcile.js";
import { runReplay } from "../../app/cli/replay.js";
import { KV_BUCKETS, STREAMS } from "../../nats/layout.js";
import {
  AD_ROWS_WRITER_DURABLE,
  AGGREGATE_WRITER_DURABLE,
  aggregateWriterConsumer,
} from "../../src/aggregate/aggregate-writer.js";
import { loadConfig } from "../../src/config.js";
import { generateClickLog, type TruthLine } from "../../src/gen/click-log.js";
import { BatchPublisher } from "../../src/ingest/batch-publisher.js";
import { KvCheckpointStore } from "../../src/ingest/checkpoint-store.js";
import { RAW_WRITER_DURABLE, rawWriterConsumer } from "../../src/ingest/raw-writer.js";
import { LogShipper } from "../../src/ingest/shipper.js";
import { registry } from "../../src/metrics/registry.js";
import { type ClickEvent, ONE_MINUTE_MS } from "../../src/model.js";
import { ensureDurable } from "../../src/nats/durable-consumer.js";
import { partitionOf } from "../../src/partition.js";
import { readLateEvents } from "../../src/recalc/late-evidence.js";
import { KvRecalcProgressStore, RECALC_VERSION_BASE } from "../../src/recalc/progress.js";
import {
  natsLateEvents,
  type ReconcileReport,
  reconcileRange,
  startReconcileSchedule,
} from "../../src/recalc/reconcile.js";
import type { MismatchCause } from "../../src/recalc/recount.js";
import { CassandraAggregateEraser, replayRange } from "../../src/recalc/replay.js";
import { SnapshotStore } from "../../src/snapshots/snapshot-store.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import { applyRawRetention, rawRetention } from "../../src/storage/raw-retention.js";
import { RawStore } from "../../src/storage/raw-store.js";
import type { ClosedMinute } from "../../src/windows/partition-aggregator.js";
import { topK } from "../../src/windows/topk.js";
import { decodeBatch } from "../../src/wire/batch-codec.js";
import { useKeyspace, useNatsServer } from "../harness/servers.js";
import { CHILD, runActor } from "../support/actors.js";
import {
  countedUnderDrop,
  type ExpectedAggregates,
  eventKey,
  expectedAggregates,
} from "../support/oracle.js";
import { readStream } from "../support/streams.js";

const PARTITIONS = 4;
const LATENESS_MS = 15_000;
const IDLE_MS = 3_000;
const TOP_N = 20;
const MIN = ONE_MINUTE_MS;
const START_MS = Date.UTC(2024, 6, 9, 0, 0, 0);
const SPAN_MS = 4 * MIN;
/** Everything the first two files hold (late events reach 90 s before their clock). */
const RANGE_A: [number, number] = [START_MS - 5 * MIN, START_MS + SPAN_MS + 5 * MIN];
/** The later file shipped while the replay runs: minutes of its own, after RANGE_A. */
const C_START_MS = START_MS + 20 * MIN;
const C_SPAN_MS = 3 * MIN;
const RANGE_C: [number, number] = [C_START_MS - 5 * MIN, C_START_MS + C_SPAN_MS + 5 * MIN];
/** The minutes a buggy aggregator corrupts. */
const M1 = START_MS + MIN;
const M2 = START_MS + 2 * MIN;
/** A version above the live pipeline's, as a buggy aggregator re-emitting would write. */
const BUGGY_VERSION = 1000;
const PHANTOM = "ad-phantom";

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

const iso = (ms: number) => new Date(ms).toISOString();
const inRange = (minute: number, [from, to]: [number, number]) => minute >= from && minute < to;
/** `${minute}|${adId}|${country}` (country "" for the per-ad cell) → clicks. */
type Cells = Map<string, number>;

/** The oracle's cells of a range, per ad and per ad × country, keyed minute first. */
function cellsOf(e: ExpectedAggregates, range: [number, number]): Cells {
  const out: Cells = new Map();
  for (const [k, n] of e.adMinute) {
    const [adId, minute] = k.split("|") as [string, string];
    if (inRange(Number(minute), range)) out.set(`${minute}|${adId}|`, n);
  }
  for (const [k, n] of e.adMinuteCountry) {
    const [adId, minute, country] = k.split("|") as [string, string, string];
    if (inRange(Number(minute), range)) out.set(`${minute}|${adId}|${country}`, n);
  }
  return out;
}

/** The same cells as stored in partition_minutes. */
async function storedCells(store: AggregateStore, range: [number, number]): Promise<Cells> {
  const out: Cells = new Map();
  for (const pm of await store.partitionMinutes(PARTITIONS, ...range)) {
    for (const [adId, n] of pm.adCounts) out.set(`${pm.minuteStartMs}|${adId}|`, n);
    for (const [adId, country, n] of pm.dimCounts.country ?? []) {
      out.set(`${pm.minuteStartMs}|${adId}|${country}`, n);
    }
  }
  return out;
}

const sorted = (m: Cells) => new Map([...m].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));

/** A partition-minute as plain maps, from the oracle's cells. */
function partitionMinute(cells: Cells, p: number, minute: number) {
  const ads = new Map<string, number>();
  const countries = new Map<string, Map<string, number>>();
  for (const [k, n] of cells) {
    const [m, adId, country] = k.split("|") as [string, string, string];
    if (Number(m) !== minute || partitionOf(adId, PARTITIONS) !== p) continue;
    if (country === "") ads.set(adId, n);
    else {
      const c = countries.get(adId) ?? new Map<string, number>();
      c.set(country, n);
      countries.set(adId, c);
    }
  }
  return { ads, countries };
}

function toClosedMinute(
  p: number,
  minute: number,
  ads: Map<string, number>,
  countries: Map<string, Map<string, number>>,
): ClosedMinute {
  const adCounts = [...ads].sort(([a], [b]) => (a < b ? -1 : 1));
  const country: [string, string, number][] = [];
  for (const [adId] of adCounts) {
    for (const [c, n] of [...(countries.get(adId) ?? [])].sort(([a], [b]) => (a < b ? -1 : 1))) {
      country.push([adId, c, n]);
    }
  }
  return {
    partition: p,
    minuteStartMs: minute,
    version: BUGGY_VERSION,
    adCounts,
    dimCounts: { country },
    topK: topK(adCounts, TOP_N),
    eventCount: adCounts.reduce((s, [, n]) => s + n, 0),
  };
}

function mismatchCells(r: ReconcileReport): Map<string, [number | null, number | null]> {
  return new Map(
    r.mismatches.map((m) => [
      `${m.minuteMs}|${m.adId}|${m.value ?? ""}`,
      [m.stored, m.recount] as [number | null, number | null],
    ]),
  );
}

function metricValue(name: string, labels: Record<string, string>): Promise<number> {
  const metric = registry.getSingleMetric(name);
  if (!metric) throw new Error(`no metric ${name}`);
  return Promise.resolve(metric.get()).then(
    (m) =>
      m.values.find((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x))?.value ?? 0,
  );
}

for (const policy of ["amend", "drop"] as const) {
  describe(`recalculation and reconciliation, live late policy "${policy}"`, () => {
    const nats = useNatsServer();
    const cass = useKeyspace();
    const dir = mkdtempSync(join(tmpdir(), "adclick-recalc-"));
    afterAll(() => rmSync(dir, { recursive: true, force: true }));

    it("reconcile reports exactly the corrupted cells; replay --apply restores the recount while live ingestion of later minutes stays exact", async () => {
      const { nc, server } = nats();
      const { client, keyspace, contactPoint, localDataCenter } = cass();
      const config = loadConfig(
        {},
        {
          natsServers: [server.url],
          cassandraContactPoints: [contactPoint],
          cassandraLocalDataCenter: localDataCenter,
          cassandraKeyspace: keyspace,
          partitions: PARTITIONS,
          allowedLatenessMs: LATENESS_MS,
          idleTimeoutMs: IDLE_MS,
          latePolicy: policy,
          dimensions: ["country"],
          topK: TOP_N,
        },
      );
      await ensureLayout(nc, config);
      const js = jetstream(nc);
      const jsm = await jetstreamManager(nc);
      const store = new AggregateStore(client);
      const rawStore = new RawStore(client);
      await store.createSchema();
      await rawStore.createSchema();
      await ensureDurable(jsm, aggregateWriterConsumer("minutes"));
      await ensureDurable(jsm, aggregateWriterConsumer("ad-rows"));
      await ensureDurable(jsm, rawWriterConsumer());
      const eraser = new CassandraAggregateEraser(client);
      const progressStore = new KvRecalcProgressStore(await new Kvm(js).open(KV_BUCKETS.snapshots));
      const recalc = {
        rawStore,
        aggregateStore: store,
        eraser,
        progressStore,
        partitions: PARTITIONS,
        dimensions: ["country"] as const,
        topK: TOP_N,
      };

      // Two hosts' logs over RANGE_A (duplicates, malformed lines, disorder, events past the
      // lateness), and a third, later one shipped while the replay runs.
      const gen = {
        ads: 300,
        duplicateRatio: 0.03,
        malformedRatio: 0.02,
        disorderMs: 10_000,
        lateRatio: 0.02,
        lateByMs: 60_000,
      };
      const a = generateClickLog({
        ...gen,
        seed: 31,
        lines: 12_000,
        startMs: START_MS,
        spanMs: SPAN_MS,
      });
      const b = generateClickLog({
        ...gen,
        seed: 32,
        lines: 12_000,
        startMs: START_MS,
        spanMs: SPAN_MS,
      });
      const c = generateClickLog({
        ...gen,
        seed: 33,
        lines: 9_000,
        startMs: C_START_MS,
        spanMs: C_SPAN_MS,
      });
      for (const [name, log] of [
        ["a.log", a],
        ["b.log", b],
        ["c.log", c],
      ] as const) {
        writeFileSync(join(dir, name), log.text);
      }
      const checkpoints = new KvCheckpointStore(
        await new Kvm(js).open(KV_BUCKETS.shipperCheckpoints),
      );
      const ship = (source: string, files: string[]) =>
        new LogShipper(
          {
            checkpoints,
            clicks: new BatchPublisher(js, { label: "clicks" }),
            deadLetters: new BatchPublisher(js, { label: "dlq" }),
          },
          { source, partitions: PARTITIONS, chunkBytes: 32 * 1024 },
        ).shipFiles(files.map((f) => join(dir, f)));
      await ship("web", ["a.log", "b.log"]);

      const snapshots = new SnapshotStore(await new Kvm(js).open(KV_BUCKETS.snapshots));
      const actors = [
        aggregateWriterChild({ js, store }, { ...CHILD, id: "aggregate-writer" }),
        aggregateWriterChild({ js, store }, { ...CHILD, id: "ad-rows-writer", target: "ad-rows" }),
        reducerChild(js, {
          ...CHILD,
          id: "reducer",
          partitions: PARTITIONS,
          n: TOP_N,
          replayMs: 3_600_000,
          overdueAfterMs: 600_000,
        }),
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
        rawWriterChild({ js, store: rawStore }, { ...CHILD, id: "raw-writer" }),
      ].map((spec) => runActor(spec).actor);

      const drained = async (stream: string, durable: string) => {
        const info = await jsm.consumers.info(stream, durable);
        return info.num_pending === 0 && info.num_ack_pending === 0;
      };
      /** The live pipeline has closed, reduced and stored everything up to `lastMinute`. */
      const settled = async (expected: ExpectedAggregates, range: [number, number]) => {
        const minutes = [...expected.topByMinute.keys()].filter((m) => inRange(m, range));
        const last = Math.max(...minutes);
        await until("every partition closed and stored through the last minute", async () => {
          const progress = await store.progress();
          return (
            progress.size === PARTITIONS && [...progress.values()].every((t) => t >= last + MIN)
          );
        });
        await until("the global top N of every minute, everything written", async () => {
          const tops = await store.topMinutes(...range);
          return (
            minutes.every((m) => tops.has(m)) &&
            (await drained(STREAMS.aggregates, AGGREGATE_WRITER_DURABLE)) &&
            (await drained(STREAMS.aggregates, AD_ROWS_WRITER_DURABLE)) &&
            (await drained(STREAMS.clicks, RAW_WRITER_DURABLE))
          );
        });
      };

      const arrivalAB: TruthLine[] = [...a.truth, ...b.truth];
      // The independent recount of every unique event: what a recalculation must produce, and
      // what the live pipeline counts under "amend" (the default).
      const recountAB = expectedAggregates(arrivalAB, { topN: TOP_N });
      const recountCellsA = cellsOf(recountAB, RANGE_A);
      /** What the live pipeline counts: under "drop", all but the clicks it reported late. */
      const live = async (arrival: TruthLine[]) =>
        policy === "amend"
          ? expectedAggregates(arrival, { topN: TOP_N })
          : expectedAggregates(arrival, {
              topN: TOP_N,
              counted: countedUnderDrop(
                arrival,
                (
                  await readStream(nc, js, STREAMS.late, (d) => decodeBatch(d).map(eventKey))
                ).flat(),
              ),
            });

      try {
        await settled(recountAB, RANGE_A);
        const liveAB = await live(arrivalAB);
        // The live pipeline is exact (its own policy) before anything is corrupted.
        expect(sorted(await storedCells(store, RANGE_A))).toEqual(sorted(cellsOf(liveAB, RANGE_A)));

        // ---- A buggy aggregator rewrites four partition-minutes and a top N ----------------
        const lateEvents = await readLateEvents(js, jsm, { fromMs: RANGE_A[0], toMs: RANGE_A[1] });
        if (policy === "drop") expect(lateEvents.length).toBeGreaterThan(0);
        const liveCells = cellsOf(liveAB, RANGE_A);
        // Subjects whose cells the late policy did not touch (so each cause is unambiguous).
        const untouched = (p: number, minute: number) => {
          const pm = partitionMinute(recountCellsA, p, minute);
          return [...pm.ads]
            .filter(([adId]) => {
              const keys = [...recountCellsA.keys()].filter((k) =>
                k.startsWith(`${minute}|${adId}|`),
              );
              return (
                keys.every((k) => liveCells.get(k) === recountCellsA.get(k)) &&
                !lateEvents.some(
                  (e: ClickEvent) =>
                    e.adId === adId && Math.floor(e.timestampMs / MIN) * MIN === minute,
                )
              );
            })
            .sort(([x, n], [y, m]) => m - n || (x < y ? -1 : 1))
            .map(([adId]) => adId);
        };
        const storedAfter: Cells = new Map(liveCells);
        const corrupted = new Map<string, MismatchCause>();
        const rewrite = async (
          p: number,
          minute: number,
          edit: (ads: Map<string, number>, countries: Map<string, Map<string, number>>) => void,
        ) => {
          const pm = partitionMinute(liveCells, p, minute);
          for (const [adId] of pm.ads) {
            storedAfter.delete(`${minute}|${adId}|`);
            for (const [country] of pm.countries.get(adId) ?? []) {
              storedAfter.delete(`${minute}|${adId}|${country}`);
            }
          }
          edit(pm.ads, pm.countries);
          for (const [adId, n] of pm.ads) storedAfter.set(`${minute}|${adId}|`, n);
          for (const [adId, cs] of pm.countries) {
            for (const [country, n] of cs) storedAfter.set(`${minute}|${adId}|${country}`, n);
          }
          await store.writeMinute(toClosedMinute(p, minute, pm.ads, pm.countries));
        };
        const firstCountry = (cs: Map<string, number> | undefined) =>
          [...(cs ?? [])].sort(([x], [y]) => (x < y ? -1 : 1))[0] as [string, number];
        // 1. An ad's count (and one of its countries) too high.
        const ad1 = untouched(0, M1)[0] as string;
        await rewrite(0, M1, (ads, countries) => {
          ads.set(ad1, (ads.get(ad1) as number) + 7);
          const [country, n] = firstCountry(countries.get(ad1));
          countries.get(ad1)?.set(country, n + 7);
          corrupted.set(`${M1}|${ad1}|`, "overcount");
          corrupted.set(`${M1}|${ad1}|${country}`, "overcount");
        });
        // 2. An ad lost from the minute.
        const ad2 = untouched(1, M1)[0] as string;
        await rewrite(1, M1, (ads, countries) => {
          ads.delete(ad2);
          corrupted.set(`${M1}|${ad2}|`, "missing_in_aggregates");
          for (const [country] of countries.get(ad2) ?? []) {
            corrupted.set(`${M1}|${ad2}|${country}`, "missing_in_aggregates");
          }
          countries.delete(ad2);
        });
        // 3. A phantom ad that no raw event backs.
        await rewrite(2, M2, (ads, countries) => {
          ads.set(PHANTOM, 3);
          countries.set(PHANTOM, new Map([["USA", 3]]));
          corrupted.set(`${M2}|${PHANTOM}|`, "overcount");
          corrupted.set(`${M2}|${PHANTOM}|USA`, "overcount");
        });
        // 4. An ad's count (and one of its countries) too low.
        const ad4 = untouched(3, M2).find(
          (adId) => (recountCellsA.get(`${M2}|${adId}|`) as number) >= 2,
        ) as string;
        await rewrite(3, M2, (ads, countries) => {
          ads.set(ad4, (ads.get(ad4) as number) - 1);
          const [country, n] = firstCountry(countries.get(ad4));
          countries.get(ad4)?.set(country, n - 1);
          corrupted.set(`${M2}|${ad4}|`, "undercount");
          corrupted.set(`${M2}|${ad4}|${country}`, "undercount");
        });
        // 5. A wrong global top N.
        await store.writeTop(M1, BUGGY_VERSION, TOP_N, [{ adId: PHANTOM, count: 999 }]);

        // ---- reconcile: exactly the differing cells, with their likely causes ------------
        const expectedMismatches = new Map<string, [number | null, number | null]>();
        for (const k of new Set([...storedAfter.keys(), ...recountCellsA.keys()])) {
          const s = storedAfter.get(k) ?? null;
          const r = recountCellsA.get(k) ?? null;
          if ((s ?? 0) !== (r ?? 0)) expectedMismatches.set(k, [s, r]);
        }
        const report = await reconcileRange({
          ...recalc,
          lateEvents: natsLateEvents(js, jsm),
          fromMs: RANGE_A[0],
          toMs: RANGE_A[1],
          repair: false,
        });
        expect(sorted(new Map([...mismatchCells(report)].map(([k, v]) => [k, v[0] ?? 0])))).toEqual(
          sorted(new Map([...expectedMismatches].map(([k, v]) => [k, v[0] ?? 0]))),
        );
        expect(mismatchCells(report)).toEqual(expectedMismatches);
        expect(report.mismatchCount).toBe(expectedMismatches.size);
        for (const m of report.mismatches) {
          const key = `${m.minuteMs}|${m.adId}|${m.value ?? ""}`;
          expect(m.cause, key).toBe(corrupted.get(key) ?? "late_dropped");
          if (m.adId === PHANTOM) expect(m.partition).toBe(2);
          else expect(m.partition).toBe(partitionOf(m.adId, PARTITIONS));
        }
        const expectedTops = [...recountAB.topByMinute.keys()]
          .filter(
            (m) =>
              m === M1 ||
              JSON.stringify(recountAB.topByMinute.get(m)) !==
                JSON.stringify(liveAB.topByMinute.get(m)),
          )
          .sort((x, y) => x - y);
        expect(report.topMismatches.map((t) => t.minuteMs)).toEqual(expectedTops);
        if (policy === "amend") {
          // The live pipeline was exact: the report is the corruption, cell for cell.
          expect(new Set(expectedMismatches.keys())).toEqual(new Set(corrupted.keys()));
          expect(report.byCause).toMatchObject({
            overcount: 4,
            missing_in_aggregates: corrupted.size - 6,
            undercount: 2,
          });
        } else {
          expect(report.byCause.late_dropped).toBe(expectedMismatches.size - corrupted.size);
          expect(report.byCause.late_dropped).toBeGreaterThan(0);
        }
        expect(await metricValue("adclick_reconcile_last_run_mismatches", { mode: "manual" })).toBe(
          report.mismatchCount + report.topMismatches.length,
        );

        // The CLI command prints the same report as JSON.
        const log = vi.spyOn(console, "log").mockImplementation(() => {});
        try {
          await runReconcile(config, {
            from: iso(RANGE_A[0]),
            to: iso(RANGE_A[1]),
            repair: false,
            json: true,
          });
          const printed = JSON.parse(String(log.mock.calls.at(-1)?.[0])) as ReconcileReport;
          expect(printed.mismatchCount).toBe(report.mismatchCount);
          expect(printed.mismatches).toEqual(report.mismatches);
        } finally {
          log.mockRestore();
        }

        // ---- replay --apply, while live ingestion of later minutes goes on --------------
        const arrivalABC: TruthLine[] = [...arrivalAB, ...c.truth];
        const shipping = ship("web-3", ["c.log"]);
        let liveStoredDuringReplay = 0;
        const replayed = await replayRange({
          ...recalc,
          fromMs: RANGE_A[0],
          toMs: RANGE_A[1],
          apply: true,
          concurrency: 1,
          onProgress: async (p) => {
            // Half-way through, the live pipeline must be storing the new minutes meanwhile.
            if (p.doneUnits === Math.floor(p.totalUnits / 2)) {
              await until("live minutes of the new file stored during the replay", async () => {
                liveStoredDuringReplay = (await store.partitionMinutes(PARTITIONS, ...RANGE_C))
                  .length;
                return liveStoredDuringReplay > 0;
              });
            }
          },
        });
        await shipping;
        await settled(expectedAggregates(arrivalABC, { topN: TOP_N }), RANGE_C);
        const liveABC = await live(arrivalABC);
        expect(liveStoredDuringReplay).toBeGreaterThan(0);
        expect(replayed.version).toBeGreaterThan(RECALC_VERSION_BASE);
        expect(replayed.mismatchCount).toBe(expectedMismatches.size);
        expect(replayed.rowsDeleted).toBeGreaterThanOrEqual(2); // the phantom's two cells

        // RANGE_A now equals the independent recount: every unique event, in every table.
        expect(sorted(await storedCells(store, RANGE_A))).toEqual(sorted(recountCellsA));
        const ads = new Set([
          ad1,
          ad2,
          ad4,
          PHANTOM,
          ...[...recountAB.adMinute.keys()].map((k) => k.split("|")[0] as string).slice(0, 40),
        ]);
        for (const adId of ads) {
          const want = [...recountAB.adMinute].filter(
            ([k]) => k.startsWith(`${adId}|`) && inRange(Number(k.split("|")[1]), RANGE_A),
          );
          const series = await store.adSeries(adId, ...RANGE_A);
          expect(new Map([...series].map(([m, n]) => [`${adId}|${m}`, n])), adId).toEqual(
            new Map(want),
          );
          const usa = await store.adSeries(adId, ...RANGE_A, { dim: "country", value: "USA" });
          const wantUsa = [...recountAB.adMinuteCountry].filter(
            ([k]) =>
              k.startsWith(`${adId}|`) &&
              k.endsWith("|USA") &&
              inRange(Number(k.split("|")[1]), RANGE_A),
          );
          expect(new Map([...usa].map(([m, n]) => [`${adId}|${m}|USA`, n])), adId).toEqual(
            new Map(wantUsa),
          );
        }
        const topsA = await store.topMinutes(...RANGE_A);
        expect(new Map([...topsA].map(([m, t]) => [m, t.ads]))).toEqual(
          new Map([...recountAB.topByMinute].filter(([m]) => inRange(m, RANGE_A))),
        );
        for (const pm of await store.partitionMinutes(PARTITIONS, ...RANGE_A)) {
          expect(pm.version).toBe(replayed.version);
        }

        // The live minutes ingested meanwhile are exact (the live policy's numbers).
        expect(sorted(await storedCells(store, RANGE_C))).toEqual(
          sorted(cellsOf(liveABC, RANGE_C)),
        );
        const topsC = await store.topMinutes(...RANGE_C);
        for (const [m, want] of liveABC.topByMinute) {
          if (inRange(m, RANGE_C)) expect(topsC.get(m)?.ads, iso(m)).toEqual(want);
        }

        // Reconciling again finds nothing in RANGE_A.
        const after = await reconcileRange({
          ...recalc,
          lateEvents: natsLateEvents(js, jsm),
          fromMs: RANGE_A[0],
          toMs: RANGE_A[1],
          repair: false,
        });
        expect(after.mismatchCount).toBe(0);
        expect(after.topMismatches).toEqual([]);
        const afterC = await reconcileRange({
          ...recalc,
          lateEvents: natsLateEvents(js, jsm),
          fromMs: RANGE_C[0],
          toMs: RANGE_C[1],
          repair: false,
        });
        if (policy === "amend") expect(afterC.mismatchCount).toBe(0);
        for (const m of afterC.mismatches) expect(m.cause).toBe("late_dropped");

        // ---- resumable: a replay interrupted mid-way picks up where it stopped ----------
        const ac = new AbortController();
        await expect(
          replayRange({
            ...recalc,
            fromMs: RANGE_A[0],
            toMs: RANGE_A[1],
            apply: true,
            concurrency: 1,
            onProgress: (p) => {
              if (p.doneUnits === 6 * PARTITIONS + 2) ac.abort(new Error("worker killed"));
            },
            signal: ac.signal,
          }),
        ).rejects.toThrow("worker killed");
        const saved = (await progressStore.load(`${RANGE_A[0]}-${RANGE_A[1]}`))?.progress;
        expect(saved).toMatchObject({ state: "running", doneThroughMs: RANGE_A[0] + 6 * MIN });
        expect(saved?.version).toBeGreaterThan(replayed.version as number);
        const resumed = await replayRange({
          ...recalc,
          fromMs: RANGE_A[0],
          toMs: RANGE_A[1],
          apply: true,
        });
        expect(resumed.resumedFromMs).toBe(RANGE_A[0] + 6 * MIN);
        expect(resumed.version).toBe(saved?.version);
        expect(resumed.partitionMinutes).toBe(((RANGE_A[1] - RANGE_A[0]) / MIN - 6) * PARTITIONS);
        expect(resumed.mismatchCount).toBe(0);
        expect(sorted(await storedCells(store, RANGE_A))).toEqual(sorted(recountCellsA));
        for (const pm of await store.partitionMinutes(PARTITIONS, ...RANGE_A)) {
          expect(pm.version).toBe(resumed.version);
        }
        expect((await progressStore.load(`${RANGE_A[0]}-${RANGE_A[1]}`))?.progress.state).toBe(
          "done",
        );

        // The replay CLI, dry run: nothing would change.
        const log2 = vi.spyOn(console, "log").mockImplementation(() => {});
        try {
          const dry = await runReplay(config, {
            from: iso(RANGE_A[0]),
            to: iso(RANGE_A[1]),
            apply: false,
            json: true,
          });
          expect(dry.mismatchCount).toBe(0);
          expect(JSON.parse(String(log2.mock.calls.at(-1)?.[0]))).toMatchObject({
            mismatchCount: 0,
          });
        } finally {
          log2.mockRestore();
        }

        // ---- scheduled mode: one window per period, metrics updated ----------------------
        const checkedBefore = await metricValue("adclick_reconcile_ranges_checked_total", {
          mode: "scheduled",
          outcome: "ok",
        });
        const reports: ReconcileReport[] = [];
        const errors: unknown[] = [];
        const schedule = startReconcileSchedule({
          ...recalc,
          lateEvents: natsLateEvents(js, jsm),
          everyMs: 5 * MIN,
          lagMs: 2 * MIN,
          checkEveryMs: 50,
          now: () => START_MS + 7 * MIN + 1_000,
          onReport: (r) => reports.push(r),
          onError: (err) => errors.push(err),
        });
        await until(
          "a scheduled reconciliation",
          async () => reports.length > 0 || errors.length > 0,
        );
        await new Promise((r) => setTimeout(r, 300)); // further checks find nothing new due
        await schedule.close();
        await schedule.closed();
        expect(errors).toEqual([]);
        expect(reports.map((r) => [r.range.fromMs, r.range.toMs, r.mismatchCount])).toEqual([
          [START_MS, START_MS + 5 * MIN, 0],
        ]);
        expect(
          await metricValue("adclick_reconcile_ranges_checked_total", {
            mode: "scheduled",
            outcome: "ok",
          }),
        ).toBe(checkedBefore + 1);
        expect(
          await metricValue("adclick_reconcile_last_run_mismatches", { mode: "scheduled" }),
        ).toBe(0);
        expect(
          await metricValue("adclick_reconcile_last_run_timestamp_seconds", { mode: "scheduled" }),
        ).toBeGreaterThan(Date.now() / 1000 - 60);
      } finally {
        for (const actor of actors) actor.send({ type: "STOP" });
      }
      for (const actor of actors) expect(actor.getSnapshot().value).not.toBe("failed");
    });

    it("raw data retention puts a TTL on the raw tables", async () => {
      const { client, keyspace } = cass();
      await new RawStore(client).createSchema();
      expect(await applyRawRetention(client, 30)).toEqual([
        "raw_blocks",
        "raw_dim_blocks",
        "raw_dim_index",
      ]);
      expect(await rawRetention(client, keyspace)).toEqual(
        new Map([
          ["raw_blocks", 30 * 86_400],
          ["raw_dim_blocks", 30 * 86_400],
          ["raw_dim_index", 30 * 86_400],
        ]),
      );
      expect(await applyRawRetention(client, 30)).toEqual([]); // idempotent: no schema change
    });
  });
}
