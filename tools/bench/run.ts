/**
 * `npm run bench` / `adclick bench`: the AdClick benchmark on this machine.
 *
 * 1. The aggregation step alone, in process (events/s on one core).
 * 2. Book-shaped input written to log files, with the recount kept as ground truth.
 * 3. The real pipeline, every component a process: nats-server and a Cassandra node started
 *    here on free ports with temporary storage, `adclick worker` process(es), one
 *    `adclick ship` process per log file. Measures sustained events/s shipped and final in
 *    the store, raw rows/s into Cassandra, peak RSS and CPU of every process.
 * 4. The exactness check: every stored (ad, minute) and (ad, minute, country) count against
 *    the recount. Any difference fails the benchmark, loudly (exit code 1).
 * 5. Query latency under concurrent load (count and top-100; M = 1, 5, 60 minutes; without
 *    filter, by country, by user_id), every reply checked against the recount.
 * 6. The live phase: clicks at a steady rate with event time = now, tailed by
 *    `adclick ship --follow`: event-time-to-queryable latency, and queries while ingesting.
 *
 * Prints a table and writes bench-results/bench-<time>.json.
 */

import { mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { cpus, freemem, loadavg, tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { Command } from "commander";
import { cassandraSettingsFor, natsLoginOptions } from "../../app/connections.js";
import { type CassandraNodeHandle, startCassandraNode } from "../../app/infra/cassandra-node.js";
import { freePort } from "../../app/infra/free-port.js";
import { type NatsServerHandle, startNatsServer } from "../../app/infra/nats-server.js";
import { projectRoot, serverVersions } from "../../app/infra/paths.js";
import { DEFAULT_CONFIG } from "../../src/config.js";
import { ONE_MINUTE_MS } from "../../src/model.js";
import { connectNats } from "../../src/nats/connect.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import { type CassandraClient, createCassandraClient } from "../../src/storage/cassandra-client.js";
import { type AggregationBenchResult, runAggregationBench } from "./aggregation.js";
import { type BookShape, DEFAULT_BOOK, type Truth, writeBookLogs } from "./book.js";
import { type DedupeCompareResult, runDedupeCompare } from "./dedupe-compare.js";
import { gc, gcAvailable } from "./gc.js";
import { QueryableLatency, startLiveWriter } from "./live.js";
import { type BenchOptions, benchCommand, benchOptionsFrom } from "./options.js";
import {
  type AdclickProcess,
  childPid,
  metricSum,
  ProcSampler,
  scrape,
  startAdclick,
  stopProcess,
} from "./procs.js";
import { percentile, type QueryClassResult, queryClasses, runQueryLoad } from "./queries.js";
import { type RollupBenchResult, runRollupBench } from "./rollup-bench.js";
import { checkExactness, storeProgress, storeTotals, totalsMatch } from "./verify.js";

const IDLE_TIMEOUT_MS = 3_000;
/** A latency row when no minute closed during the live phase (--duration below the lateness). */
const NO_SAMPLES = "no minute closed: run the live phase longer than the lateness + 1 min";

class BenchFailure extends Error {}

function log(m: string): void {
  console.log(`[bench ${new Date().toISOString().slice(11, 19)}] ${m}`);
}

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const mb = (b: number) => `${Math.round(b / 1024 / 1024)} MB`;

export async function runBench(o: BenchOptions): Promise<number> {
  const root = projectRoot();
  const resultsDir = join(root, "bench-results");
  mkdirSync(resultsDir, { recursive: true });
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  const profileDir = join(resultsDir, `profiles-${stamp}`);
  const work = mkdtempSync(join(tmpdir(), "adclick-bench-"));
  const result: Record<string, unknown> = {
    date: new Date().toISOString(),
    options: o,
    machine: {
      nproc: cpus().length,
      cpu: cpus()[0]?.model,
      ramBytes: totalmem(),
      freeRamBytes: freemem(),
      loadAvgAtStart: loadavg(),
      node: process.version,
      gcForMemoryFigures: gcAvailable,
      ...serverVersions(root),
    },
  };
  const shape: BookShape = {
    ...DEFAULT_BOOK,
    seed: o.seed,
    lines: o.events,
    ads: o.ads,
    eventRatePerSec: o.events / (o.minutes * 60),
  };
  let failed: string | undefined;
  let nats: NatsServerHandle | undefined;
  let cassandra: CassandraNodeHandle | undefined;
  const workers: AdclickProcess[] = [];
  let cql: CassandraClient | undefined;
  const sampler = new ProcSampler();
  sampler.track("bench", "bench", process.pid);
  /** Shippers and followers, stopped on the way out whatever happened. */
  const others: AdclickProcess[] = [];
  let interrupt: (() => void) | undefined;
  const interrupted = new Promise<never>((_, reject) => {
    interrupt = () =>
      reject(new BenchFailure("interrupted (SIGINT/SIGTERM): stopping what the benchmark started"));
  });
  interrupted.catch(() => {});
  const onSignal = () => interrupt?.();
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);
  try {
    await Promise.race([interrupted, phases()]);
  } catch (err) {
    failed = err instanceof BenchFailure ? err.message : String((err as Error)?.stack ?? err);
  } finally {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
    await cql?.shutdown().catch(() => {});
    for (const w of workers) await stopProcess(w, 30_000);
    for (const x of others) await stopProcess(x, 5_000);
    // Every process's output (the tail the child kept), for a look after a failure.
    const logDir = join(resultsDir, `logs-${stamp}`);
    mkdirSync(logDir, { recursive: true });
    for (const x of [...workers, ...others])
      writeFileSync(join(logDir, `${x.name}.log`), x.output());
    result.processes = sampler
      .stats()
      .map((p) => ({ ...p, peakRssMB: Math.round(p.peakRssBytes / 1048576) }));
    sampler.stop();
    await Promise.allSettled([nats?.stop(), cassandra?.stop()]);
    result.machine = { ...(result.machine as object), loadAvgAtEnd: loadavg() };
    if (o.keep) log(`kept ${work}`);
    else rmSync(work, { recursive: true, force: true });
  }
  result.ok = failed === undefined;
  if (failed) result.failure = failed;
  const out = o.out ?? join(resultsDir, `bench-${stamp}.json`);
  writeFileSync(out, `${JSON.stringify(result, null, 2)}\n`);
  console.log(`\n${formatTable(result)}\n`);
  log(`results: ${out}${o.profile ? `; CPU profiles: ${profileDir}` : ""}`);
  if (failed) {
    console.error(`\n${"!".repeat(78)}\nBENCHMARK FAILED\n${failed}\n${"!".repeat(78)}\n`);
    return 1;
  }
  return 0;

  async function phases(): Promise<void> {
    // 1. The aggregation step alone (before any server competes for the cores).
    if (o.aggEvents > 0) {
      log(
        `aggregation step in process: ${fmt(o.aggEvents)} book-shaped events, ${o.partitions} partitions`,
      );
      const agg: AggregationBenchResult = runAggregationBench(
        {
          shape: { ...shape, eventRatePerSec: 50_000 },
          events: o.aggEvents,
          partitions: o.partitions,
          batchEvents: 625,
          latePolicy: o.latePolicy,
          dimensions: ["country"],
          repetitions: 3,
          sources: o.shippers,
        },
        log,
      );
      result.aggregation = agg;
      const dd = runDedupeCompare(2_000_000);
      result.dedupe = dd;
      log(
        `  dedupe of 2,000,000 ids: Set<string> ${dd.setNsPerId} ns and ${dd.setBytesPerId} bytes an id, IdSet ${dd.idSetNsPerId} ns and ${dd.idSetBytesPerId} bytes an id`,
      );
    }
    if (o.rollupMinutes > 0) {
      log(
        `query rollup in process: ${o.rollupMinutes} stored minutes at 3,000,000 clicks/minute over ${fmt(o.ads)} ads`,
      );
      const rb: RollupBenchResult = await runRollupBench(
        {
          minutes: o.rollupMinutes,
          clicksPerMinute: 3_000_000,
          ads: o.ads,
          partitions: o.partitions,
          seed: o.seed,
        },
        log,
      );
      result.rollup = rb;
      log(
        `  load ${rb.loadSeconds} s, ${mb(rb.heapBytes)}; top-100 over 60 min before the rollup ${Math.round(rb.top60BeforeMs)} ms; cold ${rb.top60ColdMs} ms, warm p99 ${rb.top60WarmP99Ms} ms; after a new partition-minute p50 ${rb.recomputeAfterNewMinuteMs} ms, max ${rb.recomputeMaxMs} ms; count p99 ${rb.count60P99Ms} ms`,
      );
      gc();
    }

    // --events 0: the in-process measures only.
    if (o.events === 0) return;

    // 2. Input.
    const files = Array.from({ length: o.shippers }, (_, i) => join(work, `web-${i}.log`));
    log(
      `writing ${fmt(o.events)} lines (${fmt(o.ads)} ads, Zipf ${shape.zipfS}, ${o.minutes} event-time minutes) into ${o.shippers} log files`,
    );
    const tGen = performance.now();
    const truth = writeBookLogs(shape, files, (n) => log(`  ${fmt(n)} lines written`));
    const bytes = files.reduce((n, f) => n + statSync(f).size, 0);
    result.input = {
      lines: truth.lines,
      uniqueEvents: truth.events,
      duplicates: truth.duplicates,
      malformed: truth.malformed,
      bytes,
      bytesPerLine: Math.round((bytes / truth.lines) * 10) / 10,
      adMinutes: truth.adMinute.size,
      firstEventIso: new Date(truth.minTsMs).toISOString(),
      lastEventIso: new Date(truth.maxTsMs).toISOString(),
      generateSeconds: (performance.now() - tGen) / 1000,
    };
    log(
      `  ${fmt(truth.events)} unique events, ${fmt(truth.duplicates)} duplicates, ${fmt(truth.malformed)} malformed, ${(bytes / truth.lines).toFixed(1)} bytes a line`,
    );

    // 3. Servers and workers.
    log("starting nats-server and Cassandra (free ports, temporary storage)");
    [nats, cassandra] = await Promise.all([
      startNatsServer({ storeDir: join(work, "nats") }),
      startCassandraNode({ dataDir: join(work, "cassandra"), heapMb: o.cassandraHeapMb }),
    ]);
    sampler.track("nats-server", "nats-server", childPid(nats.process.pid ?? 0));
    sampler.track("cassandra", "cassandra", childPid(cassandra.process.pid ?? 0));
    log(
      `  nats ${nats.url}, cassandra ${cassandra.contactPoint} (CQL after ${(cassandra.startupMs / 1000).toFixed(1)} s)`,
    );
    const env = {
      ADCLICK_NATS_URL: nats.url,
      ADCLICK_CASSANDRA: cassandra.contactPoint,
      ADCLICK_KEYSPACE: "bench",
      ADCLICK_PARTITIONS: String(o.partitions),
      ADCLICK_LATE_POLICY: o.latePolicy,
      ADCLICK_ALLOWED_LATENESS_MS: String(o.latenessMs),
      ADCLICK_IDLE_TIMEOUT_MS: String(IDLE_TIMEOUT_MS),
      ADCLICK_RECONCILE_EVERY_MS: "0",
      ADCLICK_METRICS_PORT: "0",
    };
    const prof = (name: string) =>
      o.profile ? ["--cpu-prof", `--cpu-prof-dir=${join(profileDir, name)}`] : [];
    const metricsPorts: number[] = [];
    for (let i = 0; i < o.workers; i++) {
      const port = await freePort();
      metricsPorts.push(port);
      const w = startAdclick(
        `worker-${i}`,
        ["worker"],
        {
          ...env,
          ADCLICK_METRICS_PORT: String(port),
          ...(o.queryProcesses > 0
            ? { ADCLICK_ROLES: "map,raw-writer,aggregators,reducer,aggregate-writer" }
            : {}),
        },
        prof(`worker-${i}`),
      );
      workers.push(w);
      await w.waitFor(/\[worker\] running/, 120_000);
      sampler.track(`worker-${i}`, "worker", w.child.pid);
    }
    // Query-only processes: the production layout that keeps the query rollup out of the
    // aggregators' memory. Not in metricsPorts: the worker figures stay the workers'.
    for (let i = 0; i < o.queryProcesses; i++) {
      const q = startAdclick(
        `query-${i}`,
        ["worker"],
        { ...env, ADCLICK_ROLES: "query", ADCLICK_METRICS_PORT: String(await freePort()) },
        prof(`query-${i}`),
      );
      workers.push(q);
      await q.waitFor(/\[worker\] running/, 120_000);
      sampler.track(`query-${i}`, "query", q.child.pid);
    }
    log(
      `  ${o.workers} worker process(es)${o.queryProcesses > 0 ? ` and ${o.queryProcesses} query process(es)` : ""} running`,
    );
    const db = createCassandraClient(
      cassandraSettingsFor({ ...DEFAULT_CONFIG, cassandraContactPoints: [cassandra.contactPoint] }),
      "bench",
    );
    cql = db;
    const metrics = async () => {
      const texts = await Promise.all(metricsPorts.map(scrape));
      const sum = (name: string, f?: string) =>
        texts.reduce((n, t) => n + metricSum(t, name, f), 0);
      return {
        counted:
          sum("adclick_aggregator_events_total", 'disposition="counted"') +
          sum("adclick_aggregator_events_total", 'disposition="amended"'),
        duplicates: sum("adclick_aggregator_events_total", 'disposition="duplicate"'),
        lateDropped:
          sum("adclick_aggregator_events_total", 'disposition="late_dropped"') +
          sum("adclick_aggregator_events_total", 'disposition="late_horizon"'),
        rawEvents: sum("adclick_raw_events_written_total"),
        rawRows: sum("adclick_raw_rows_written_total"),
        aggRows: sum("adclick_aggregate_rows_written_total"),
        // The partition-minute writer (what `final` follows) and the per-ad rows behind it.
        minuteRows: sum("adclick_aggregate_rows_written_total", 'actor="aggregate-writer"'),
        adRows: sum("adclick_aggregate_rows_written_total", 'actor="ad-rows-writer"'),
        aggWriteFailures: sum("adclick_aggregate_write_failures_total"),
        progressDeferred: sum("adclick_aggregate_progress_deferred_total"),
        // Aggregator snapshots (a batch waits while its aggregator snapshots).
        snapshots: sum("adclick_snapshot_seconds_count"),
        snapshotSeconds: sum("adclick_snapshot_seconds_sum"),
        snapshotsUnder250ms: sum("adclick_snapshot_seconds_bucket", 'le="0.25"'),
        snapshotsUnder1s: sum("adclick_snapshot_seconds_bucket", 'le="1"'),
        // Worker memory (summed over workers): where the resident set goes.
        heapUsed: sum("adclick_nodejs_heap_size_used_bytes"),
        external: sum("adclick_nodejs_external_memory_bytes"),
        rss: sum("adclick_process_resident_memory_bytes"),
      };
    };

    // 4. The backlog through the pipeline.
    const firstMinute = Math.floor(truth.minTsMs / ONE_MINUTE_MS) * ONE_MINUTE_MS;
    const endMinute = Math.floor(truth.maxTsMs / ONE_MINUTE_MS) * ONE_MINUTE_MS + ONE_MINUTE_MS;
    log(`shipping with ${o.shippers} 'adclick ship' processes`);
    const cpu0 = sampler.cpu();
    const t0 = performance.now();
    const shippers = files.map((f, i) =>
      startAdclick(
        `ship-${i}`,
        ["ship", "--source", `web-${i}`, "--json", f],
        env,
        prof(`ship-${i}`),
      ),
    );
    for (const [i, s] of shippers.entries()) sampler.track(`ship-${i}`, "shipper", s.child.pid);
    others.push(...shippers);
    const shipExit = Promise.all(
      shippers.map(async (s) => {
        const code = await s.exited;
        return { code, at: performance.now(), s };
      }),
    );
    let shippedAt = 0;
    void shipExit.then((r) => {
      shippedAt = Math.max(...r.map((x) => x.at));
    });
    let finalAt = 0;
    let rawDoneAt = 0;
    let lastChange = performance.now();
    let lastSeen = "";
    const timeline: {
      s: number;
      counted: number;
      rawEvents: number;
      rawRows: number;
      aggRows: number;
      workerHeapUsedMB: number;
      workerExternalMB: number;
      workerRssMB: number;
    }[] = [];
    for (;;) {
      await new Promise((r) => setTimeout(r, 1000));
      const m = await metrics();
      const s = (performance.now() - t0) / 1000;
      timeline.push({
        s: Math.round(s),
        counted: m.counted,
        rawEvents: m.rawEvents,
        rawRows: m.rawRows,
        aggRows: m.aggRows,
        workerHeapUsedMB: Math.round(m.heapUsed / 1048576),
        workerExternalMB: Math.round(m.external / 1048576),
        workerRssMB: Math.round(m.rss / 1048576),
      });
      const shippedEvents = truth.lines - truth.malformed;
      if (!rawDoneAt && m.rawEvents >= shippedEvents) rawDoneAt = performance.now();
      let final = false;
      const progress = await storeProgress(db).catch(() => new Map<number, number>());
      const closed = Math.min(
        ...Array.from(
          { length: o.partitions },
          (_, p) => progress.get(p) ?? Number.NEGATIVE_INFINITY,
        ),
      );
      if (shippedAt && closed >= endMinute) {
        final = totalsMatch(truth, await storeTotals(db, o.partitions, firstMinute, endMinute));
      }
      log(
        `  ${s.toFixed(0).padStart(4)} s  counted ${fmt(m.counted)} (${fmt(m.counted / s)}/s)  dups ${fmt(m.duplicates)}  raw ${fmt(m.rawEvents)} events ${fmt(m.rawRows)} rows  agg rows ${fmt(m.aggRows)}${m.aggWriteFailures ? ` (${fmt(m.aggWriteFailures)} failed writes)` : ""}${m.progressDeferred ? ` (${fmt(m.progressDeferred)} progress deferred)` : ""}  closed through ${Number.isFinite(closed) ? new Date(closed).toISOString().slice(11, 16) : "-"}${shippedAt ? "  (shipped)" : ""}`,
      );
      if (final && rawDoneAt) {
        finalAt = performance.now();
        break;
      }
      const seen = JSON.stringify([m, [...progress]]);
      if (seen !== lastSeen) {
        lastSeen = seen;
        lastChange = performance.now();
      }
      if (performance.now() - lastChange > 90_000) {
        throw new BenchFailure(
          "the pipeline made no progress for 90 s before the store held every event",
        );
      }
    }
    // The per-ad tables, written behind `final`: when they are through too.
    let adRowsAt = performance.now();
    for (;;) {
      const through = await new AggregateStore(db).adRowsProgress().catch(() => new Map());
      const behind = Array.from({ length: o.partitions }, (_, p) => p).filter(
        (p) => (through.get(p) ?? Number.NEGATIVE_INFINITY) < endMinute,
      );
      adRowsAt = performance.now();
      if (behind.length === 0) break;
      if (adRowsAt - finalAt > 600_000)
        throw new BenchFailure(`the per-ad rows of partitions ${behind.join(",")} are not stored`);
      await new Promise((r) => setTimeout(r, 500));
    }
    const ships = await shipExit;
    const summaries = ships.map(({ code, s }) => {
      if (code !== 0)
        throw new BenchFailure(`${s.name} exited ${code}:\n${s.output().slice(-2000)}`);
      const last =
        s
          .output()
          .trim()
          .split("\n")
          .filter((l) => l.startsWith("{"))
          .pop() ?? "{}";
      return JSON.parse(last) as { events: number; malformed: number; seconds: number };
    });
    const shipped = summaries.reduce((n, x) => n + x.events, 0);
    const malformed = summaries.reduce((n, x) => n + x.malformed, 0);
    const cpu1 = sampler.cpu();
    const shipS = (shippedAt - t0) / 1000;
    const finalS = (finalAt - t0) / 1000;
    const rawS = (rawDoneAt - t0) / 1000;
    const m = await metrics();
    result.pipeline = {
      shippedEvents: shipped,
      malformedLines: malformed,
      shipSeconds: shipS,
      shippedEventsPerSec: shipped / shipS,
      finalSeconds: finalS,
      finalEventsPerSec: shipped / finalS,
      finalUniqueEventsPerSec: truth.events / finalS,
      rawWriteSeconds: rawS,
      rawRows: m.rawRows,
      rawRowsPerSec: m.rawRows / rawS,
      rawEventsPerSec: m.rawEvents / rawS,
      rawEventsWritten: m.rawEvents,
      aggregateRows: m.aggRows,
      aggregateRowsPerSec: m.aggRows / finalS,
      adRowsSeconds: (adRowsAt - t0) / 1000,
      // Rows per event written into Cassandra: what `final` waits for, and what trails it.
      rowsPerEvent: {
        raw: m.rawRows / shipped,
        partitionMinutes: m.minuteRows / shipped,
        perAdTables: m.adRows / shipped,
      },
      duplicatesDropped: m.duplicates,
      idleTimeoutMs: IDLE_TIMEOUT_MS,
      cpuSecondsByProcess: Object.fromEntries(
        [...cpu1].map(([k, v]) => [k, Math.round((v - (cpu0.get(k) ?? 0)) * 10) / 10]),
      ),
      timeline,
    };
    log(
      `shipped ${fmt(shipped)} events in ${shipS.toFixed(1)} s (${fmt(shipped / shipS)}/s); final in the store after ${finalS.toFixed(1)} s (${fmt(shipped / finalS)}/s); per-ad tables through after ${((adRowsAt - t0) / 1000).toFixed(1)} s`,
    );
    log(
      `  rows per event: raw ${(m.rawRows / shipped).toFixed(5)}, partition minutes (final) ${(m.minuteRows / shipped).toFixed(6)}, per-ad tables (behind) ${(m.adRows / shipped).toFixed(4)}`,
    );

    // 5. Exactness.
    if (shipped !== truth.lines - truth.malformed || malformed !== truth.malformed) {
      throw new BenchFailure(
        `the shippers report ${shipped} events and ${malformed} malformed lines; the input has ${truth.lines - truth.malformed} and ${truth.malformed}`,
      );
    }
    log("checking every stored count against the recount");
    const exact = await checkExactness(db, truth, o.partitions, firstMinute, endMinute);
    result.exactness = exact;
    if (!exact.ok) {
      throw new BenchFailure(
        `${exact.differences} stored counts differ from the recount:\n  ${exact.examples.join("\n  ")}`,
      );
    }
    log(
      `  exact: ${fmt(exact.adMinuteRows)} (ad, minute) and ${fmt(exact.adMinuteCountryRows)} (ad, minute, country) counts, ${fmt(exact.events)} events`,
    );

    // 6. Queries over the final backlog.
    const nc = await connectNats({
      servers: [nats.url],
      name: "bench-queries",
      ...natsLoginOptions(DEFAULT_CONFIG, "query"),
    });
    try {
      log(
        `query load: ${o.queryConcurrency} concurrent clients, ${o.querySeconds} s per class, replies checked`,
      );
      // Hot to cold ads (ranks past --ads would not exist).
      const hot = [0, 1, 5, 100, 10_000, 500_000].filter((r) => r < o.ads);
      const classes = queryClasses(truth, endMinute, hot);
      // One request first: the query service loads its rollup of recent minutes on first use.
      const tWarm = performance.now();
      await nc.request(
        "adclick.query.top",
        JSON.stringify({
          n: 100,
          from: new Date(endMinute - 60 * ONE_MINUTE_MS).toISOString(),
          to: new Date(endMinute).toISOString(),
        }),
        { timeout: 60_000 },
      );
      result.queryWarmupMs = Math.round(performance.now() - tWarm);
      log(`  first query (loads the service's rollup): ${result.queryWarmupMs} ms`);
      const queries = await runQueryLoad(
        nc,
        classes,
        { concurrency: o.queryConcurrency, seconds: o.querySeconds, timeoutMs: 30_000 },
        log,
      );
      result.queries = queries;
      const wrong = queries.filter((q) => q.wrong > 0);
      if (wrong.length > 0) {
        throw new BenchFailure(
          `wrong query replies: ${wrong.map((q) => `${q.name} (${q.wrong})`).join(", ")}`,
        );
      }

      // 7. Live.
      if (o.duration > 0 && o.rate > 0) {
        const liveFiles = Array.from({ length: o.shippers }, (_, i) => join(work, `live-${i}.log`));
        for (const f of liveFiles) writeFileSync(f, "");
        const liveStart = Date.now();
        const liveMetrics0 = await metrics();
        log(
          `live phase: ${fmt(o.rate)} clicks/s with event time = now for ${o.duration} s, tailed by 'adclick ship --follow'`,
        );
        const followers = liveFiles.map((f, i) =>
          startAdclick(`follow-${i}`, ["ship", "--follow", "--source", `live-${i}`, f], env),
        );
        for (const [i, s] of followers.entries())
          sampler.track(`follow-${i}`, "shipper", s.child.pid);
        others.push(...followers);
        const writer = startLiveWriter(shape, liveFiles, o.rate, liveStart);
        let writerStoppedAt = Number.POSITIVE_INFINITY;
        const lat = new QueryableLatency(
          o.latenessMs,
          Math.floor(liveStart / ONE_MINUTE_MS) * ONE_MINUTE_MS,
          () => writerStoppedAt,
        );
        const closedLat = new QueryableLatency(
          o.latenessMs,
          Math.floor(liveStart / ONE_MINUTE_MS) * ONE_MINUTE_MS,
          () => writerStoppedAt,
        );
        let polling = true;
        const poller = (async () => {
          while (polling) {
            const p = await storeProgress(db).catch(() => undefined);
            if (p) lat.observe(p, Date.now());
            await new Promise((r) => setTimeout(r, 25));
          }
        })();
        // When each partition's aggregator closes a minute, from its actor status
        // (adclick.admin.actors, every worker answers): cheap for the workers, unlike
        // polling the live view, which builds the open minutes' full views per request.
        const livePoller = (async () => {
          while (polling) {
            const seen = new Map<number, number>();
            const replies = await nc
              .requestMany("adclick.admin.actors", "", {
                strategy: "count",
                maxMessages: o.workers + o.queryProcesses,
                maxWait: 2000,
              })
              .catch(() => []);
            try {
              for await (const msg of replies) {
                const rows =
                  msg.json<
                    { kind: string; status?: { partition?: number; closedThroughMs?: number } }[]
                  >();
                for (const r of Array.isArray(rows) ? rows : []) {
                  const st = r.status;
                  if (r.kind !== "aggregator" || st?.partition === undefined) continue;
                  if (typeof st.closedThroughMs === "number" && Number.isFinite(st.closedThroughMs))
                    seen.set(
                      st.partition,
                      Math.max(seen.get(st.partition) ?? 0, st.closedThroughMs),
                    );
                }
              }
            } catch {
              // A request cut short (the connection closing as the phase ends): no sample.
            }
            closedLat.observe(seen, Date.now());
            await new Promise((r) => setTimeout(r, 50));
          }
        })();
        const liveQueries: QueryClassResult[] = [];
        const endAt = liveStart + o.duration * 1000;
        // Queries while ingesting (relative ranges: the M most recent whole minutes).
        await new Promise((r) => setTimeout(r, Math.min(70_000, o.duration * 500)));
        const relative = queryClasses(undefined, undefined, hot).filter(
          (q) => !q.name.includes("user"),
        );
        liveQueries.push(
          ...(await runQueryLoad(
            nc,
            relative,
            { concurrency: o.queryConcurrency, seconds: 2, timeoutMs: 30_000 },
            (x) => log(`  live${x}`),
          )),
        );
        let liveWorkerRss = 0;
        let liveWorkerHeap = 0;
        while (Date.now() < endAt) {
          await new Promise((r) => setTimeout(r, 1000));
          const lm = await metrics();
          liveWorkerRss = Math.max(liveWorkerRss, lm.rss);
          liveWorkerHeap = Math.max(liveWorkerHeap, lm.heapUsed);
          log(
            `  live: ${fmt(writer.lines())} lines written, ${lat.samples.length} minute closes seen, worker RSS ${mb(lm.rss)} (heap used ${mb(lm.heapUsed)})`,
          );
        }
        await writer.stop();
        writerStoppedAt = Date.now();
        const liveTruth: Truth = writer.truth;
        // The followers are caught-up sources that keep sending heartbeats: they hold no
        // minute open, but idle closing waits for every source to fall silent (README, "Event
        // time"). Once every live line is counted, they stop, and the last minutes close.
        const countedBy = Date.now() + 60_000;
        for (;;) {
          const lm = await metrics();
          const seen =
            lm.counted + lm.duplicates - (liveMetrics0.counted + liveMetrics0.duplicates);
          if (seen >= liveTruth.lines - liveTruth.malformed || Date.now() > countedBy) break;
          await new Promise((r) => setTimeout(r, 500));
        }
        await Promise.all(followers.map((f) => stopProcess(f)));
        const liveFirst = Math.floor(liveTruth.minTsMs / ONE_MINUTE_MS) * ONE_MINUTE_MS;
        const liveEnd =
          Math.floor(liveTruth.maxTsMs / ONE_MINUTE_MS) * ONE_MINUTE_MS + ONE_MINUTE_MS;
        const deadline = Date.now() + 120_000;
        for (;;) {
          const t = await storeTotals(db, o.partitions, liveFirst, liveEnd);
          if (totalsMatch(liveTruth, t)) break;
          if (Date.now() > deadline)
            throw new BenchFailure(
              "the live phase's events did not all reach the store within 120 s",
            );
          await new Promise((r) => setTimeout(r, 500));
        }
        polling = false;
        await poller;
        await livePoller;
        await Promise.all(followers.map((f) => stopProcess(f)));
        const liveExact = await checkExactness(db, liveTruth, o.partitions, liveFirst, liveEnd);
        if (!liveExact.ok) {
          throw new BenchFailure(
            `live phase: ${liveExact.differences} stored counts differ from the recount:\n  ${liveExact.examples.join("\n  ")}`,
          );
        }
        const ms = lat.samples.map((x) => x.latencyMs).sort((a, b) => a - b);
        const perMinute = new Map<number, number>();
        for (const s of lat.samples)
          perMinute.set(s.minuteEndMs, Math.max(perMinute.get(s.minuteEndMs) ?? 0, s.latencyMs));
        const minuteMs = [...perMinute.values()].sort((a, b) => a - b);
        const closedMs = closedLat.samples.map((x) => x.latencyMs).sort((a, b) => a - b);
        const liveMetrics1 = await metrics();
        const liveSeconds = (Date.now() - liveStart) / 1000;
        result.live = {
          ratePerSec: o.rate,
          // What the store had to take during the phase (aggregate rows are per ad and
          // per ad × country of every minute: the writer's work behind "final").
          aggregateRows: liveMetrics1.aggRows - liveMetrics0.aggRows,
          aggregateRowsPerSec: Math.round(
            (liveMetrics1.aggRows - liveMetrics0.aggRows) / liveSeconds,
          ),
          rawEventsPerSec: Math.round(
            (liveMetrics1.rawEvents - liveMetrics0.rawEvents) / liveSeconds,
          ),
          snapshots: {
            count: liveMetrics1.snapshots - liveMetrics0.snapshots,
            meanMs: Math.round(
              (1000 * (liveMetrics1.snapshotSeconds - liveMetrics0.snapshotSeconds)) /
                Math.max(1, liveMetrics1.snapshots - liveMetrics0.snapshots),
            ),
            over250ms:
              liveMetrics1.snapshots -
              liveMetrics0.snapshots -
              (liveMetrics1.snapshotsUnder250ms - liveMetrics0.snapshotsUnder250ms),
            over1s:
              liveMetrics1.snapshots -
              liveMetrics0.snapshots -
              (liveMetrics1.snapshotsUnder1s - liveMetrics0.snapshotsUnder1s),
          },
          workerPeakRssMB: Math.round(liveWorkerRss / 1048576),
          workerPeakHeapUsedMB: Math.round(liveWorkerHeap / 1048576),
          seconds: o.duration,
          lines: liveTruth.lines,
          uniqueEvents: liveTruth.events,
          exact: liveExact,
          queryableLatency: {
            samples: ms.length,
            p50Ms: percentile(ms, 0.5),
            p99Ms: percentile(ms, 0.99),
            maxMs: ms[ms.length - 1],
            allPartitionsP50Ms: percentile(minuteMs, 0.5),
            allPartitionsMaxMs: minuteMs[minuteMs.length - 1],
            minutes: minuteMs.length,
          },
          closedLatency: {
            samples: closedMs.length,
            p50Ms: percentile(closedMs, 0.5),
            p99Ms: percentile(closedMs, 0.99),
            maxMs: closedMs[closedMs.length - 1],
          },
          queries: liveQueries,
        };
        log(
          `  live: exact; event time to queryable (after minute end + ${o.latenessMs / 1000} s): p50 ${percentile(ms, 0.5)} ms, p99 ${percentile(ms, 0.99)} ms over ${ms.length} partition-minutes`,
        );
      }
    } finally {
      await nc.close().catch(() => {});
    }
  }
}

/** The result as a Markdown table (also pasted into docs/benchmarks.md). */
export function formatTable(r: Record<string, unknown>): string {
  const rows: [string, string, string][] = [];
  const add = (what: string, value: string, target = "") => rows.push([what, value, target]);
  const agg = r.aggregation as AggregationBenchResult | undefined;
  if (agg) {
    add(
      "aggregation step alone (ingest + advance), events/s on one core",
      fmt(agg.ingestEventsPerSec),
      "≥ 2,000,000",
    );
    add(
      "aggregation step with msgpack decode, events/s on one core",
      fmt(agg.decodeIngestEventsPerSec),
      "",
    );
  }
  const dd = r.dedupe as DedupeCompareResult | undefined;
  if (dd) {
    add(
      "dedupe, ns and bytes an id: Set<string> (before) vs exact compact IdSet (after)",
      `${dd.setNsPerId} ns, ${dd.setBytesPerId} B vs ${dd.idSetNsPerId} ns, ${dd.idSetBytesPerId} B`,
      "",
    );
  }
  const rb = r.rollup as RollupBenchResult | undefined;
  if (rb) {
    add(`query rollup, ${rb.minutes} min at 3M clicks/min: memory`, mb(rb.heapBytes), "");
    if (rb.top60BeforeMs !== undefined)
      add(
        "query top-100 over the last 60 min before the rollup (per request: decode + sum every stored partition-minute; CPU only), ms",
        String(Math.round(rb.top60BeforeMs)),
        "",
      );
    add(
      "query rollup: top-100 over 60 min, warm p50 / p99 ms",
      `${rb.top60WarmP50Ms} / ${rb.top60WarmP99Ms}`,
      "p99 ≤ 10",
    );
    add(
      "query rollup: top-100 over 60 min after a partition-minute lands, p50 / max ms",
      `${rb.recomputeAfterNewMinuteMs} / ${rb.recomputeMaxMs}`,
      "",
    );
    add(
      "query rollup: count over 60 min, p50 / p99 ms",
      `${rb.count60P50Ms} / ${rb.count60P99Ms}`,
      "p99 ≤ 10",
    );
  }
  const p = r.pipeline as Record<string, number> | undefined;
  if (p) {
    add(
      "end to end: shipped (acknowledged by JetStream), events/s",
      fmt(p.shippedEventsPerSec ?? 0),
      "",
    );
    add(
      "end to end: final in the store, events/s",
      fmt(p.finalEventsPerSec ?? 0),
      "≥ 250,000 (aim 500,000)",
    );
    add(
      "raw store: events/s into Cassandra (rows/s: blocks of events)",
      `${fmt(p.rawEventsPerSec ?? 0)} (${fmt(p.rawRowsPerSec ?? 0)})`,
      "",
    );
    add("aggregate rows into Cassandra, rows/s", fmt(p.aggregateRowsPerSec ?? 0), "");
  }
  const e = r.exactness as { ok: boolean; adMinuteRows: number } | undefined;
  if (e)
    add(
      "exactness (every stored count vs the recount)",
      e.ok ? `exact (${fmt(e.adMinuteRows)} ad-minutes)` : "DIFFERENT",
      "exact",
    );
  const live = r.live as { queryableLatency: Record<string, number> } | undefined;
  if (live) {
    const l = live.queryableLatency;
    const c = (r.live as { closedLatency: Record<string, number> }).closedLatency;
    add(
      "minute closed by its aggregator (exact in the live view), after the watermark passes, p50 / p99 / max ms",
      c.samples ? `${c.p50Ms} / ${c.p99Ms} / ${c.maxMs}` : NO_SAMPLES,
      "p99 ≤ 500",
    );
    add(
      "final (stored, final: true) after the watermark passes, p50 / p99 / max ms",
      l.samples ? `${l.p50Ms} / ${l.p99Ms} / ${l.maxMs}` : NO_SAMPLES,
      "p99 ≤ 500",
    );
    const lr = r.live as {
      ratePerSec: number;
      aggregateRowsPerSec?: number;
      workerPeakRssMB?: number;
      workerPeakHeapUsedMB?: number;
    };
    if (lr.workerPeakRssMB !== undefined)
      add(
        `live at ${fmt(lr.ratePerSec)} clicks/s: worker RSS peak (heap used peak)`,
        `${lr.workerPeakRssMB} MB (${lr.workerPeakHeapUsedMB} MB)`,
        "≤ 1,024 MB",
      );
    if (lr.aggregateRowsPerSec !== undefined)
      add(
        `live at ${fmt(lr.ratePerSec)} clicks/s: aggregate rows into Cassandra, rows/s`,
        fmt(lr.aggregateRowsPerSec),
        "",
      );
  }
  for (const q of (r.queries as QueryClassResult[] | undefined) ?? []) {
    const target = q.name === "top-100 M=60" || q.name === "count M=60" ? "p99 ≤ 10" : "";
    add(
      `query ${q.name}, p50 / p99 / max ms (${q.perSec}/s)`,
      `${q.p50Ms} / ${q.p99Ms} / ${q.maxMs}`,
      target,
    );
  }
  for (const proc of (r.processes as
    | { name: string; peakRssMB: number; cpuSeconds: number }[]
    | undefined) ?? []) {
    add(
      `peak RSS ${proc.name} (CPU ${proc.cpuSeconds.toFixed(0)} s)`,
      `${proc.peakRssMB} MB`,
      proc.name.startsWith("worker") ? "≤ 1,024 MB" : "",
    );
  }
  return `${markdownTable(["measure", "value", "target"], rows)}\n\n${markdownTable(["figure (issue: final in the store at 250k)", "measured", "target", "met"], targetRows(r))}`;
}

/** Every figure of the store-performance issue's table, against its target. */
export function targetRows(r: Record<string, unknown>): string[][] {
  const out: string[][] = [];
  const row = (
    what: string,
    value: number | undefined,
    target: string,
    met: boolean,
    show?: string,
  ) =>
    out.push([
      what,
      value === undefined ? "not measured in this run" : (show ?? fmt(value)),
      target,
      value === undefined ? "-" : met ? "yes" : "no",
    ]);
  const p = r.pipeline as
    | {
        finalEventsPerSec: number;
        shippedEventsPerSec: number;
        cpuSecondsByProcess: Record<string, number>;
        rowsPerEvent?: { raw: number; partitionMinutes: number; perAdTables: number };
      }
    | undefined;
  row(
    "final in the store, book-peak backlog, events/s",
    p?.finalEventsPerSec,
    "≥ 250,000",
    (p?.finalEventsPerSec ?? 0) >= 250_000,
  );
  row(
    "acknowledged by JetStream (fsync before ack), events/s",
    p?.shippedEventsPerSec,
    "≥ 400,000",
    (p?.shippedEventsPerSec ?? 0) >= 400_000,
  );
  const live = r.live as
    | {
        queryableLatency: { samples: number; p99Ms: number };
        closedLatency: { samples: number; p99Ms: number };
        workerPeakRssMB?: number;
      }
    | undefined;
  const fin = live?.queryableLatency.samples ? live.queryableLatency.p99Ms : undefined;
  row("final after the watermark, p99 ms", fin, "≤ 1,000", (fin ?? Infinity) <= 1000);
  const closed = live?.closedLatency.samples ? live.closedLatency.p99Ms : undefined;
  row(
    "exact in the live view after the watermark, p99 ms",
    closed,
    "≤ 500",
    (closed ?? Infinity) <= 500,
  );
  const q = (r.queries as QueryClassResult[] | undefined) ?? [];
  const worst = (pick: (name: string) => boolean) => {
    const cls = q.filter((x) => pick(x.name));
    return cls.length === 0 ? undefined : Math.max(...cls.map((x) => x.p99Ms));
  };
  const filtered = worst((n) => n.includes("M=60") && / (user|ip|multi)/.test(n));
  row(
    "count and top-100 filtered by ip / user_id / several dimensions, 60 min, worst p99 ms",
    filtered,
    "≤ 50",
    (filtered ?? Infinity) <= 50,
  );
  const plain = worst((n) => n.includes("M=60") && !/ (user|ip|multi)/.test(n));
  row("unfiltered / country queries, 60 min, worst p99 ms", plain, "≤ 5", (plain ?? Infinity) <= 5);
  const agg = r.aggregation as AggregationBenchResult | undefined;
  row(
    "aggregation step, events/s per core",
    agg?.ingestEventsPerSec,
    "≥ 2,000,000",
    (agg?.ingestEventsPerSec ?? 0) >= 2_000_000,
  );
  row(
    "worker RSS live at 10k clicks/s, MB",
    live?.workerPeakRssMB,
    "≤ 768",
    (live?.workerPeakRssMB ?? Infinity) <= 768,
  );
  if (p) {
    const cpu = Object.entries(p.cpuSecondsByProcess);
    const total = cpu.reduce((n, [, v]) => n + v, 0);
    const cass = cpu.filter(([k]) => k.startsWith("cassandra")).reduce((n, [, v]) => n + v, 0);
    const share = total > 0 ? (100 * cass) / total : undefined;
    row(
      "Cassandra's share of the pipeline run's CPU, %",
      share,
      "≤ 25",
      (share ?? Infinity) <= 25,
      share?.toFixed(0),
    );
    if (p.rowsPerEvent)
      out.push([
        "Cassandra rows per event: raw / partition minutes (final) / per-ad tables (behind)",
        `${p.rowsPerEvent.raw.toFixed(5)} / ${p.rowsPerEvent.partitionMinutes.toFixed(6)} / ${p.rowsPerEvent.perAdTables.toFixed(3)}`,
        "",
        "",
      ]);
  }
  return out;
}

/** A Markdown table with padded columns. */
function markdownTable(header: string[], rows: string[][]): string {
  const width = header.map(() => 0);
  const all: string[][] = [header, ...rows];
  for (const row of all) {
    for (const [i, c] of row.entries()) width[i] = Math.max(width[i] as number, c.length);
  }
  const line = (row: string[]) =>
    `| ${row.map((c, i) => c.padEnd(width[i] as number)).join(" | ")} |`;
  return [
    line(header),
    `| ${width.map((w) => "-".repeat(w)).join(" | ")} |`,
    ...rows.map(line),
  ].join("\n");
}

if (process.argv[1] && /bench[/\\]run\.(ts|js)$/.test(process.argv[1])) {
  const program = benchCommand(new Command("bench"));
  program.parse(process.argv);
  // Exit explicitly: a client a failed phase left open must not keep the benchmark alive.
  process.exit(await runBench(benchOptionsFrom(program.opts())));
}
