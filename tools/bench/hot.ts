/**
 * Hot ads (docs/hot-ads.md): one partition whose single ad is half of its clicks, shipped as a
 * backlog through the real pipeline with hot-ad splitting on and off, alternated in one run.
 *
 *   node --import tsx tools/bench/hot.ts [--lines 1500000] [--reps 2] [--minutes 10] [--keep]
 *     [--preload] [--env NAME=VALUE ...]
 *
 * Starts one Cassandra node (kept for the whole run, a fresh keyspace per repetition) and, per
 * repetition, a fresh nats-server and two `adclick worker` processes (ADCLICK_PARTITIONS=4,
 * ADCLICK_HOT_SPLIT=on or off, every other hot setting at its default), then one one-shot
 * `adclick ship` of a pre-generated log. The log: uniform ads (10,000, Zipf 0) plus one hot ad
 * whose share of all clicks is set so that it is 50 % of its own partition's clicks.
 *
 * Measures, from the shipper's start:
 * - the hot partition: its events / seconds until its aggregator's status.lastSeq and every
 *   counting shard's (adclick.admin.actors, polled) reached the partition's last click in
 *   CLICKS (positions, not counters: an actor restarted after a lost lease replays and its
 *   counters count again; the counters, adclick_aggregator_events_total and
 *   adclick_hot_shard_events_total, are shown as progress);
 * - end to end: every event / seconds until every partition's stored progress
 *   (partition_progress.closed_through) is past the last minute, then the store's per-minute
 *   totals are checked against the log's.
 * With --preload the log is shipped before the workers start, and both clocks start when the
 * hot partition's aggregator is first seen at work: the aggregators drain a standing backlog
 * instead of following the shipper. --env passes a setting to the workers (both modes).
 * Asserts the hot partition split (status.hot.splits > 0) with splitting on, and did not with
 * it off. Order per repetition: on, off, then off, on (ABBA: drift of the shared machine hits
 * both). Writes bench-results/hot-<time>.json and each process's output next to it.
 */

import { execFileSync } from "node:child_process";
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { cpus, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/nats-core";
import type { ActorRow } from "../../actors/admin-service.js";
import { cassandraSettingsFor, natsLoginOptions } from "../../app/connections.js";
import { type CassandraNodeHandle, startCassandraNode } from "../../app/infra/cassandra-node.js";
import { freePort } from "../../app/infra/free-port.js";
import { type NatsServerHandle, startNatsServer } from "../../app/infra/nats-server.js";
import { projectRoot } from "../../app/infra/paths.js";
import { STREAMS, SUBJECTS } from "../../nats/layout.js";
import type { HotStatus } from "../../src/aggregate/aggregator-core.js";
import { DEFAULT_CONFIG } from "../../src/config.js";
import { generateClickLog } from "../../src/gen/click-log.js";
import { ONE_MINUTE_MS } from "../../src/model.js";
import { connectNats } from "../../src/nats/connect.js";
import { partitionOf } from "../../src/partition.js";
import { type CassandraClient, createCassandraClient } from "../../src/storage/cassandra-client.js";
import {
  type AdclickProcess,
  childPid,
  metricSum,
  ProcSampler,
  scrape,
  startAdclick,
  stopProcess,
} from "./procs.js";
import { storeProgress, storeTotals } from "./verify.js";

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? dflt) : dflt;
}

const LINES = Number(arg("lines", "1500000"));
const REPS = Number(arg("reps", "2"));
const MINUTES = Number(arg("minutes", "10"));
const KEEP = process.argv.includes("--keep");
/** Ship the whole log before starting the workers: the aggregators drain a standing backlog. */
const PRELOAD = process.argv.includes("--preload");
/** Extra worker settings (--env ADCLICK_HOT_MIN_RATE=3000), for both modes. */
const EXTRA_ENV: Record<string, string> = {};
for (let i = 0; i < process.argv.length; i++)
  if (process.argv[i] === "--env") {
    const kv = process.argv[i + 1] ?? "";
    EXTRA_ENV[kv.slice(0, kv.indexOf("="))] = kv.slice(kv.indexOf("=") + 1);
  }
const PARTITIONS = 4;
const WORKERS = 2;
const ADS = 10_000;
const HOT_AD = "ad-hot";
const HOT_P = partitionOf(HOT_AD, PARTITIONS);
const CHUNK = 100_000;
const START_MS = Date.UTC(2024, 6, 9, 0, 0, 0);
const POLL_MS = 250;
const STALL_MS = 120_000;

const fmt = (n: number) => Math.round(n).toLocaleString("en-US");
const t0Run = performance.now();
function log(m: string): void {
  console.log(`[hot ${((performance.now() - t0Run) / 1000).toFixed(0).padStart(4)} s] ${m}`);
}
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? (s[m] as number) : ((s[m - 1] as number) + (s[m] as number)) / 2;
};

// ---- input ---------------------------------------------------------------------------------

interface Input {
  file: string;
  lines: number;
  /** Events (clicks and duplicates) per partition. */
  perPartition: number[];
  hotEvents: number;
  /** Unique clicks per event-time minute (the store's totals must equal these). */
  perMinute: [number, number][];
  firstMinute: number;
  endMinute: number;
  globalHotShare: number;
}

/** Share of the uniform ads that fall in partition p: the hot ad's share must equal it. */
function uniformShareOf(p: number): number {
  let n = 0;
  for (let r = 0; r < ADS; r++)
    if (partitionOf(`ad${String(r).padStart(6, "0")}`, PARTITIONS) === p) n++;
  return n / ADS;
}

function makeInput(): Input {
  const dir = join(tmpdir(), `adclick-hot-input-${LINES}x${MINUTES}`);
  const meta = join(dir, "meta.json");
  if (existsSync(meta)) return JSON.parse(readFileSync(meta, "utf8")) as Input;
  mkdirSync(dir, { recursive: true });
  const file = join(dir, "web.log");
  writeFileSync(file, "");
  // Hot share h of all clicks, the rest uniform: the hot partition holds h + (1 - h) q, so
  // h = q / (1 + q) makes the hot ad half of it.
  const q = uniformShareOf(HOT_P);
  const h = q / (1 + q);
  const perPartition = new Array<number>(PARTITIONS).fill(0);
  const perMinute = new Map<number, number>();
  let hotEvents = 0;
  const chunks = Math.ceil(LINES / CHUNK);
  const spanMs = (MINUTES * ONE_MINUTE_MS) / chunks;
  let lines = 0;
  log(`writing ${fmt(LINES)} lines into ${file} (hot ad share of all clicks ${h.toFixed(4)})`);
  for (let c = 0; c < chunks; c++) {
    const n = Math.min(CHUNK, LINES - lines);
    const g = generateClickLog({
      seed: 7000 + c,
      lines: n,
      ads: ADS,
      zipfS: 0,
      startMs: START_MS + c * spanMs,
      spanMs,
      clickIdRatio: 0.5,
      duplicateRatio: 0.01,
      malformedRatio: 0,
      disorderMs: 5_000,
      hotShare: h,
      hotAdId: HOT_AD,
    });
    appendFileSync(file, g.text);
    for (const t of g.truth) {
      if (t.kind === "malformed") continue;
      const p = partitionOf(t.click.adId, PARTITIONS);
      perPartition[p] = (perPartition[p] as number) + 1;
      if (t.click.adId === HOT_AD) hotEvents++;
      if (t.kind === "click") {
        const m = Math.floor(t.click.timestampMs / ONE_MINUTE_MS) * ONE_MINUTE_MS;
        perMinute.set(m, (perMinute.get(m) ?? 0) + 1);
      }
    }
    lines += n;
  }
  const minutes = [...perMinute.keys()];
  const input: Input = {
    file,
    lines,
    perPartition,
    hotEvents,
    perMinute: [...perMinute],
    firstMinute: Math.min(...minutes),
    endMinute: Math.max(...minutes) + ONE_MINUTE_MS,
    globalHotShare: h,
  };
  writeFileSync(meta, JSON.stringify(input));
  return input;
}

// ---- one repetition ------------------------------------------------------------------------

type Mode = "on" | "off";

interface RepResult {
  rep: number;
  mode: Mode;
  shipSeconds: number;
  /** The hot partition's events / seconds until they were all processed (aggregator + shards). */
  partitionSeconds: number;
  partitionEventsPerSec: number;
  /** Every event / seconds until every partition's stored progress passed the last minute. */
  endToEndSeconds: number;
  endToEndEventsPerSec: number;
  /** Hot ad clicks per second of shipping (stream time = publish time). */
  hotAdShipRate: number;
  /** --preload: from the workers' spawn to the hot partition's aggregator at work. */
  workersStartSeconds: number;
  splits: number;
  merges: number;
  shards: number[];
  shardEvents: number;
  routed: number;
  /** Barriers the hot partition's aggregator waited at for its shards' partials, and how long in all. */
  barrierWaits: number;
  barrierWaitSeconds: number;
  hotRateSeen: number;
  aggregatorWorker?: string;
  shardWorkers: Record<string, string>;
  shardRestarts: number;
  workerCpuSeconds: number[];
  natsCpuSeconds: number;
  cassandraCpuSeconds: number;
  errorLines: string[];
  /** Actors that failed and were restarted (e.g. a lease not renewed in time on a loaded machine). */
  actorFailures: number;
}

/** The hot partition's aggregator that holds the lease (a standby has no position). */
const holder = (r: ActorRow) =>
  r.kind === "aggregator" &&
  r.partition === HOT_P &&
  r.state === "running" &&
  r.status?.lastSeq !== undefined;

async function actorsOf(nc: NatsConnection): Promise<ActorRow[]> {
  const rows: ActorRow[] = [];
  try {
    const replies = await nc.requestMany("adclick.admin.actors", "{}", {
      maxWait: 3000,
      maxMessages: WORKERS,
    });
    for await (const m of replies) if (m.data.length > 0) rows.push(...m.json<ActorRow[]>());
  } catch {
    // A slow worker: no rows this time.
  }
  return rows;
}

async function runRep(
  rep: number,
  mode: Mode,
  input: Input,
  cassandra: CassandraNodeHandle,
  work: string,
  logDir: string,
): Promise<RepResult> {
  const tag = `rep ${rep} split ${mode}`;
  const keyspace = `hot_${rep}_${mode}`;
  const sampler = new ProcSampler(500);
  sampler.track("cassandra", "cassandra", childPid(cassandra.process.pid ?? 0));
  const nats: NatsServerHandle = await startNatsServer({
    storeDir: join(work, `nats-${rep}-${mode}`),
  });
  sampler.track("nats", "nats", childPid(nats.process.pid ?? 0));
  const env = {
    ADCLICK_NATS_URL: nats.url,
    ADCLICK_CASSANDRA: cassandra.contactPoint,
    ADCLICK_KEYSPACE: keyspace,
    ADCLICK_PARTITIONS: String(PARTITIONS),
    ADCLICK_LATE_POLICY: "amend",
    ADCLICK_ALLOWED_LATENESS_MS: "60000",
    ADCLICK_IDLE_TIMEOUT_MS: "3000",
    ADCLICK_RECONCILE_EVERY_MS: "0",
    ...EXTRA_ENV,
    ADCLICK_HOT_SPLIT: mode,
  };
  const workers: AdclickProcess[] = [];
  const ports: number[] = [];
  let ship: AdclickProcess | undefined;
  let nc: NatsConnection | undefined;
  let db: CassandraClient | undefined;
  try {
    nc = await connectNats({
      servers: [nats.url],
      name: "bench-hot",
      ...natsLoginOptions(DEFAULT_CONFIG, "admin"),
    });
    const conn = nc;
    let t0 = performance.now();
    const s = (at = performance.now()) => (at - t0) / 1000;
    let shippedAt = 0;
    let preShipSeconds = 0;
    if (PRELOAD) {
      // The whole log into JetStream first, no worker running: the aggregators then work
      // through a standing backlog (its stream time is still the shipping's).
      log(`${tag}: shipping ${fmt(input.lines)} lines before any worker runs`);
      const pre = startAdclick("ship", ["ship", "--source", "web", "--json", input.file], env);
      ship = pre;
      const code = await pre.exited;
      preShipSeconds = s();
      shippedAt = performance.now();
      if (code !== 0) throw new Error(`${tag}: ship exited ${code}: ${pre.output().slice(-2000)}`);
    }
    // Actor status, polled on the side (a busy worker may answer late).
    let rows: ActorRow[] = [];
    let hotRateSeen = 0;
    let polling = true;
    /**
     * Where the hot partition's aggregator and its counting shards are in the stream, by the
     * time the answer came (positions: a replay after a restart does not move them forward).
     */
    const positions: { at: number; aggregator: number; shards: number }[] = [];
    const poller = (async () => {
      while (polling) {
        const r = await actorsOf(conn);
        const at = performance.now();
        if (r.length > 0) rows = r;
        if (new Set(r.map((x) => x.worker)).size === WORKERS) {
          const seqOf = (x: ActorRow) => x.status?.lastSeq as number | undefined;
          const aggregator = Math.max(
            -1,
            ...r
              .filter(
                (x) => x.kind === "aggregator" && x.partition === HOT_P && x.state === "running",
              )
              .map((x) => seqOf(x) ?? -1),
          );
          const shards = Math.min(
            Number.POSITIVE_INFINITY,
            ...r
              .filter(
                (x) =>
                  x.id.startsWith(`hot-shard-${HOT_P}-`) &&
                  x.state === "running" &&
                  seqOf(x) !== undefined,
              )
              .map((x) => seqOf(x) as number),
          );
          positions.push({ at, aggregator, shards });
        }
        for (const row of r) {
          const hot = row.status?.hot as HotStatus | undefined;
          if (row.kind === "aggregator" && row.partition === HOT_P && hot)
            for (const a of hot.ads)
              if (a.adId === HOT_AD) hotRateSeen = Math.max(hotRateSeen, a.ratePerSec);
        }
        await sleep(250);
      }
    })();

    const cpuPre = sampler.cpu();
    if (PRELOAD) t0 = performance.now();
    for (let i = 0; i < WORKERS; i++) {
      const port = await freePort();
      ports.push(port);
      workers.push(
        startAdclick(`w${i + 1}`, ["worker"], {
          ...env,
          ADCLICK_WORKER_ID: `w${i + 1}`,
          ADCLICK_METRICS_PORT: String(port),
        }),
      );
    }
    await Promise.all(workers.map((w) => w.waitFor(/\[worker\] running/, 180_000)));
    for (const w of workers) sampler.track(w.name, "worker", w.child.pid);
    // Every partition's aggregator holds its lease before the clock starts.
    const ready = Date.now() + 120_000;
    for (;;) {
      const rows = await actorsOf(conn);
      const aggs = new Set(
        rows
          .filter((r) => r.kind === "aggregator" && r.state === "running")
          .map((r) => r.partition),
      );
      if (aggs.size === PARTITIONS && new Set(rows.map((r) => r.worker)).size === WORKERS) break;
      if (Date.now() > ready) throw new Error(`${tag}: the aggregators did not all start in 120 s`);
      await sleep(500);
    }
    db = createCassandraClient(
      cassandraSettingsFor({ ...DEFAULT_CONFIG, cassandraContactPoints: [cassandra.contactPoint] }),
      keyspace,
    );
    const cql = db;
    const cpu0 = PRELOAD ? cpuPre : sampler.cpu();
    if (!PRELOAD) {
      log(`${tag}: workers running (keyspace ${keyspace}); shipping ${fmt(input.lines)} lines`);
      t0 = performance.now();
      const live = startAdclick("ship", ["ship", "--source", "web", "--json", input.file], env);
      ship = live;
      void live.exited.then(() => {
        shippedAt = performance.now();
      });
    } else log(`${tag}: workers running (keyspace ${keyspace})`);
    const shipper = ship as AdclickProcess;

    const nP = input.perPartition[HOT_P] as number;
    let partitionAt = 0;
    let lastClickSeq: number | undefined;
    const jsm = await jetstreamManager(conn);
    let endAt = 0;
    let lastPrint = 0;
    let lastChange = performance.now();
    let lastSeen = "";
    let routed = 0;
    let shardEvents = 0;
    let barrierWaits = 0;
    let barrierWaitSeconds = 0;
    const lastTexts: string[] = [];
    try {
      while (!endAt) {
        await sleep(POLL_MS);
        // A scrape a busy worker did not answer: its last answer (counters only grow).
        const texts = (await Promise.all(ports.map(scrape))).map((t, i) => {
          if (t !== "") lastTexts[i] = t;
          return lastTexts[i] ?? "";
        });
        const sum = (name: string, f?: string) =>
          texts.reduce((n, t) => n + metricSum(t, name, f), 0);
        const pl = `partition="${HOT_P}"`;
        const paSeen = sum("adclick_aggregator_events_total", pl);
        routed = sum("adclick_aggregator_events_total", `${pl},disposition="routed"`);
        shardEvents = sum("adclick_hot_shard_events_total", pl);
        barrierWaits = sum("adclick_hot_barrier_wait_seconds_count", pl);
        barrierWaitSeconds = sum("adclick_hot_barrier_wait_seconds_sum", pl);
        const allSeen =
          sum("adclick_aggregator_events_total") -
          sum("adclick_aggregator_events_total", 'disposition="routed"');
        if (shippedAt && lastClickSeq === undefined) {
          // The partition's last click: every click is in the stream once the shipper is done.
          const m = await jsm.streams.getMessage(STREAMS.clicks, {
            last_by_subj: SUBJECTS.clicks(HOT_P),
          });
          lastClickSeq = m?.seq ?? 0;
        }
        if (!partitionAt && lastClickSeq !== undefined) {
          const last = lastClickSeq;
          const first = positions.find((x) => x.aggregator >= last && x.shards >= last);
          if (first) partitionAt = first.at;
        }
        const progress = await storeProgress(cql).catch(() => new Map<number, number>());
        const closed = Math.min(
          ...Array.from(
            { length: PARTITIONS },
            (_, p) => progress.get(p) ?? Number.NEGATIVE_INFINITY,
          ),
        );
        if (shippedAt && closed >= input.endMinute) endAt = performance.now();
        if (performance.now() - lastPrint >= 2000 || endAt) {
          lastPrint = performance.now();
          const agg = rows.find(holder);
          const hot = agg?.status?.hot as HotStatus | undefined;
          const running = rows.filter(
            (r) => r.id.startsWith(`hot-shard-${HOT_P}-`) && r.state === "running",
          );
          log(
            `  ${tag} ${s().toFixed(1).padStart(5)} s  partition ${HOT_P}: ${fmt(paSeen - routed)} at its aggregator + ${fmt(shardEvents)}/${fmt(routed)} routed at shards of ${fmt(nP)}${partitionAt ? " (done)" : ""}  all partitions ${fmt(allSeen)}  closed through ${Array.from(
              { length: PARTITIONS },
              (_, p) => {
                const c = progress.get(p);
                return c === undefined ? "-" : new Date(c).toISOString().slice(11, 16);
              },
            ).join(
              " ",
            )}${shippedAt ? "  (shipped)" : ""}  hot: ${hot ? `splits ${hot.splits}, merges ${hot.merges}, epochs ${hot.epochs.map((e) => `${e.adId}x${e.shards}${e.merged ? " merged" : ""}`).join(" ") || "-"}, rate ${fmt(hot.ads[0]?.ratePerSec ?? 0)}/s, ${running.length} shard actors running` : "-"}`,
          );
        }
        const seen = JSON.stringify([paSeen, shardEvents, allSeen, closed]);
        if (seen !== lastSeen) {
          lastSeen = seen;
          lastChange = performance.now();
        }
        if (performance.now() - lastChange > STALL_MS)
          throw new Error(`${tag}: no progress for ${STALL_MS / 1000} s`);
        if (shipper.child.exitCode !== null && shipper.child.exitCode !== 0)
          throw new Error(
            `${tag}: ship exited ${shipper.child.exitCode}: ${shipper.output().slice(-2000)}`,
          );
      }
    } catch (err) {
      polling = false;
      await poller;
      throw err;
    }
    // The last position sample may have come in after the store's progress.
    for (let i = 0; i < 20 && !partitionAt; i++) {
      await sleep(POLL_MS);
      const last = lastClickSeq ?? Number.POSITIVE_INFINITY;
      partitionAt = positions.find((x) => x.aggregator >= last && x.shards >= last)?.at ?? 0;
    }
    if (!partitionAt)
      throw new Error(
        `${tag}: no actor status showed partition ${HOT_P} through its last click (seq ${lastClickSeq})`,
      );
    polling = false;
    await poller;
    const cpu1 = sampler.cpu();
    const cpu = (k: string) => Math.round(((cpu1.get(k) ?? 0) - (cpu0.get(k) ?? 0)) * 10) / 10;

    // Exactness of the totals (cheap: per-minute event counts, no blobs).
    const totals = await storeTotals(cql, PARTITIONS, input.firstMinute, input.endMinute);
    const wrong = input.perMinute.filter(([m, n]) => totals.perMinute.get(m) !== n);
    if (wrong.length > 0)
      throw new Error(
        `${tag}: stored per-minute totals differ in ${wrong.length} minutes, e.g. ${wrong
          .slice(0, 3)
          .map(
            ([m, n]) =>
              `${new Date(m).toISOString()}: ${totals.perMinute.get(m)} stored, ${n} in the log`,
          )
          .join("; ")}`,
      );
    const summary = JSON.parse(
      shipper
        .output()
        .trim()
        .split("\n")
        .filter((l) => l.startsWith("{"))
        .pop() ?? "{}",
    ) as {
      events?: number;
      seconds?: number;
    };
    if (summary.events !== input.lines)
      throw new Error(`${tag}: shipped ${summary.events} of ${input.lines} lines`);
    const shipSeconds = PRELOAD ? preShipSeconds : s(shippedAt);
    // The clock's start: the shipper's start, or (--preload) the first status showing the hot
    // partition's aggregator at work.
    const startAt = PRELOAD ? (positions.find((x) => x.aggregator >= 0)?.at ?? t0) : t0;
    const since = (at: number) => (at - startAt) / 1000;

    let final = await actorsOf(conn);
    for (let i = 0; i < 10 && !final.some(holder); i++) {
      await sleep(500);
      final = await actorsOf(conn);
    }
    const agg = final.find(holder);
    const hot = agg?.status?.hot as HotStatus | undefined;
    const shardRows = final.filter((r) => r.id.startsWith(`hot-shard-${HOT_P}-`));
    const splits = hot?.splits ?? 0;
    if (mode === "on" && splits === 0)
      throw new Error(
        `${tag}: partition ${HOT_P} never split ${HOT_AD} (status: ${JSON.stringify(agg?.status)})`,
      );
    if (mode === "off" && (splits > 0 || shardEvents > 0 || routed > 0))
      throw new Error(
        `${tag}: splitting is off, yet partition ${HOT_P} split (splits ${splits}, routed ${routed})`,
      );
    // Counters count a replay again (an actor restarted after a lost lease re-reads from its
    // snapshot): the stored totals above are the exactness check; this is reported only.
    if (mode === "on" && shardEvents < routed)
      throw new Error(`${tag}: shards counted ${shardEvents} of ${routed} routed clicks`);

    // Error-looking lines of the workers, counted by kind (digits blanked).
    const kinds = new Map<string, number>();
    for (const w of workers)
      for (const l of w.output().split("\n"))
        if (/error|exception|failed|crash/i.test(l)) {
          const k = `${w.name}: ${l.replace(/\d+/g, "N").slice(0, 200)}`;
          kinds.set(k, (kinds.get(k) ?? 0) + 1);
        }
    const errorLines = [...kinds].map(([k, n]) => `${n}x ${k}`);
    const actorFailures = workers.reduce(
      (n, w) => n + (w.output().match(/actor \S+ failed/g)?.length ?? 0),
      0,
    );
    const r: RepResult = {
      rep,
      mode,
      shipSeconds,
      partitionSeconds: since(partitionAt),
      partitionEventsPerSec: nP / since(partitionAt),
      endToEndSeconds: since(endAt),
      endToEndEventsPerSec: input.lines / since(endAt),
      workersStartSeconds: PRELOAD ? s(startAt) : 0,
      hotAdShipRate: input.hotEvents / shipSeconds,
      splits,
      merges: hot?.merges ?? 0,
      shards: hot?.epochs.map((e) => e.shards) ?? [],
      shardEvents,
      routed,
      barrierWaits,
      barrierWaitSeconds: Math.round(barrierWaitSeconds * 10) / 10,
      hotRateSeen,
      aggregatorWorker: agg?.worker,
      shardWorkers: Object.fromEntries(shardRows.map((x) => [x.id, `${x.worker} (${x.state})`])),
      shardRestarts: shardRows.reduce((n, x) => n + x.restarts, 0),
      workerCpuSeconds: workers.map((w) => cpu(w.name)),
      natsCpuSeconds: cpu("nats"),
      cassandraCpuSeconds: cpu("cassandra"),
      errorLines,
      actorFailures,
    };
    log(
      `${tag}: partition ${HOT_P} ${fmt(r.partitionEventsPerSec)} events/s (${r.partitionSeconds.toFixed(1)} s); end to end ${fmt(r.endToEndEventsPerSec)} events/s (${r.endToEndSeconds.toFixed(1)} s); shipped in ${shipSeconds.toFixed(1)} s (hot ad ${fmt(r.hotAdShipRate)} clicks/s of shipping); splits ${splits}, shards ${JSON.stringify(r.shards)} ${JSON.stringify(r.shardWorkers)}, aggregator on ${r.aggregatorWorker}; ${fmt(routed)} clicks routed to shards; ${fmt(barrierWaits)} barrier waits, ${barrierWaitSeconds.toFixed(1)} s in all; worker CPU ${r.workerCpuSeconds.join(" + ")} s; exact per-minute totals`,
    );
    for (const l of errorLines) log(`  ${tag} worker log: ${l}`);
    return r;
  } finally {
    await nc?.close().catch(() => {});
    if (ship) await stopProcess(ship, 5_000);
    for (const w of workers) await stopProcess(w, 30_000);
    for (const x of [...workers, ...(ship ? [ship] : [])])
      writeFileSync(join(logDir, `${rep}-${mode}-${x.name}.log`), x.output());
    if (db) {
      await db.execute(`DROP KEYSPACE IF EXISTS ${keyspace}`).catch(() => {});
      await db.shutdown().catch(() => {});
    }
    sampler.stop();
    await nats.stop().catch(() => {});
  }
}

// ---- main ----------------------------------------------------------------------------------

const stamp = new Date().toISOString().replace(/[:.]/g, "-");
const resultsDir = join(projectRoot(), "bench-results");
const logDir = join(resultsDir, `hot-logs-${stamp}`);
mkdirSync(logDir, { recursive: true });
const work = join(tmpdir(), `adclick-hot-bench-${process.pid}`);
mkdirSync(work, { recursive: true });
const input = makeInput();
const nP = input.perPartition[HOT_P] as number;
log(
  `${fmt(input.lines)} lines, ${PARTITIONS} partitions (events per partition ${input.perPartition.map(fmt).join(" / ")}); ${HOT_AD} is in partition ${HOT_P}: ${fmt(input.hotEvents)} of its ${fmt(nP)} events (${((100 * input.hotEvents) / nP).toFixed(1)} %), ${((100 * input.hotEvents) / input.lines).toFixed(1)} % of all`,
);
let cassandra: CassandraNodeHandle | undefined;
const results: RepResult[] = [];
const failed: string[] = [];
let failure: string | undefined;
try {
  log("starting Cassandra (kept for the run; a keyspace per repetition)");
  cassandra = await startCassandraNode({ dataDir: join(work, "cassandra"), heapMb: 512 });
  for (let rep = 0; rep < REPS; rep++) {
    const order: Mode[] = rep % 2 === 0 ? ["on", "off"] : ["off", "on"];
    for (const mode of order) {
      try {
        results.push(await runRep(rep, mode, input, cassandra, work, logDir));
      } catch (err) {
        // A failed repetition (no split, a stall): reported, and the run goes on.
        const msg = String((err as Error)?.message ?? err);
        log(`FAILED rep ${rep} split ${mode}: ${msg.slice(0, 2000)}`);
        failed.push(`rep ${rep} split ${mode}: ${msg}`);
      }
    }
  }
} catch (err) {
  failure = String((err as Error)?.stack ?? err);
} finally {
  await cassandra?.stop().catch(() => {});
  if (KEEP) log(`kept ${work}`);
  else rmSync(work, { recursive: true, force: true });
}

function git(a: string[]): string {
  try {
    return execFileSync("git", ["-C", projectRoot(), ...a], { encoding: "utf8" }).trim();
  } catch {
    return "unknown";
  }
}
const byMode = (m: Mode) => results.filter((r) => r.mode === m);
const med = (m: Mode, k: "partitionEventsPerSec" | "endToEndEventsPerSec") =>
  median(byMode(m).map((r) => r[k]));
const out = {
  date: new Date().toISOString(),
  command: `node --import tsx tools/bench/hot.ts --lines ${LINES} --reps ${REPS} --minutes ${MINUTES}${PRELOAD ? " --preload" : ""}${Object.entries(
    EXTRA_ENV,
  )
    .map(([k, v]) => ` --env ${k}=${v}`)
    .join("")}`,
  // The workers run the working tree's sources: its commit and what differed from it.
  code: {
    commit: git(["rev-parse", "--short", "HEAD"]),
    uncommitted: git(["status", "--porcelain", "--", "src", "actors", "app", "nats"]),
  },
  machine: { nproc: cpus().length, cpu: cpus()[0]?.model, loadAvgAtEnd: loadavg() },
  input: { ...input, perMinute: undefined, hotPartition: HOT_P },
  results,
  failed,
  failure,
};
writeFileSync(join(resultsDir, `hot-${stamp}.json`), `${JSON.stringify(out, null, 2)}\n`);
if (results.length > 0) {
  const rows = [
    "| rep | split | hot partition, events/s (s) | end to end, events/s (s) | shipped in, s | partition done after the shipper, s | actor failures | hot ad while shipping, clicks/s | splits, shards | worker CPU, s |",
    "| --- | ----- | --------------------------- | ------------------------ | ------------- | ----------------------------------- | -------------- | ------------------------------- | -------------- | ------------- |",
    ...results.map(
      (r) =>
        `| ${r.rep} | ${r.mode} | ${fmt(r.partitionEventsPerSec)} (${r.partitionSeconds.toFixed(1)}) | ${fmt(r.endToEndEventsPerSec)} (${r.endToEndSeconds.toFixed(1)}) | ${r.shipSeconds.toFixed(1)} | ${PRELOAD ? "-" : (r.partitionSeconds - r.shipSeconds).toFixed(1)} | ${r.actorFailures} | ${fmt(r.hotAdShipRate)} | ${r.splits}, ${r.shards.join("+") || "-"} | ${r.workerCpuSeconds.join(" + ")} |`,
    ),
  ];
  console.log(`\n${rows.join("\n")}\n`);
  if (byMode("on").length && byMode("off").length) {
    for (const k of ["partitionEventsPerSec", "endToEndEventsPerSec"] as const) {
      const on = med("on", k);
      const off = med("off", k);
      console.log(
        `${k === "partitionEventsPerSec" ? `hot partition ${HOT_P}` : "end to end"}: median split on ${fmt(on)}, off ${fmt(off)} events/s; ratio on/off ${(on / off).toFixed(2)}`,
      );
    }
  }
}
log(`results: ${join(resultsDir, `hot-${stamp}.json`)}; process logs: ${logDir}`);
if (failure || failed.length > 0) {
  console.error(`\nHOT BENCHMARK FAILED\n${[...failed, failure ?? ""].join("\n")}`);
  process.exit(1);
}
process.exit(0);
