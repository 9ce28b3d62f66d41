/**
 * The store on a 3-node Cassandra ring (127.0.0.1-3), keyspace at RF 3, reads and writes at
 * the default LOCAL_QUORUM, the pipeline otherwise in its default configuration: three servers'
 * logs shipped in parts through real `adclick ship` processes into one `adclick worker`
 * process while
 *  1. node 3 is stopped (orderly) and, after the pipeline stored what was shipped meanwhile,
 *     started again — its missed writes come back as hints from the coordinators;
 *  2. node 2 is killed (SIGKILL) mid-shipping; the pipeline converges without it.
 * Then every per-(ad, minute) count, per-(ad, minute, country) count and top N, and the raw
 * store's events, equal an independent recount of the input: read from node 3 alone at
 * consistency ONE (node 1 stopped too: only its own replica answers, so what it missed must
 * have come back through hints), and, nodes 1 and 2 started again, from the whole ring at
 * LOCAL_QUORUM.
 * The worker's write failures (each one a retry) stay few, and its memory bounded, while a
 * node is down.
 *
 * Knobs: ADCLICK_RING_LINES (lines per server, default 10 000), ADCLICK_RING_KEEP=1 keeps the
 * logs and the nodes' folders.
 */
import {
  createWriteStream,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import type { CassandraNodeHandle } from "../../app/infra/cassandra-node.js";
import {
  type CassandraRing,
  startCassandraRing,
  waitForRing,
} from "../../app/infra/cassandra-ring.js";
import { freePort } from "../../app/infra/free-port.js";
import { DEFAULT_CONFIG } from "../../src/config.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import { type CassandraClient, createCassandraClient } from "../../src/storage/cassandra-client.js";
import { RawStore } from "../../src/storage/raw-store.js";
import { uniqueName, useNatsServer } from "../harness/servers.js";
import { ShipperLoop, until, WorkerLoop } from "../support/chaos.js";
import { clickKey, eventKey, sortedKeys, uniqueClicks } from "../support/oracle.js";
import {
  expectStoreEqualsRecount,
  MIN,
  RANGE,
  type ServerLogs,
  SPAN_MS,
  START_MS,
  writeServerLogs,
} from "../support/sources.js";
import { durablesBehind } from "../support/streams.js";

const LINES = Number(process.env.ADCLICK_RING_LINES ?? 10_000);
const KEEP = process.env.ADCLICK_RING_KEEP === "1";
const SERVERS = 3;
/** Each server's log is shipped in this many consecutive parts, paced around the faults. */
const PARTS = 3;
/** A worker's resident memory while a node is down stays under this (measured: 160-175 MB peak). */
const WORKER_RSS_BOUND_MB = 400;
/**
 * Write failures (each retried after a backoff) over the whole run; measured 0-9, all from
 * requests in flight on the node being stopped.
 */
const WRITE_FAILURES_BOUND = 40;

const secs = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** Resident memory of a process, in MB (from /proc). */
function rssMb(pid: number | undefined): number {
  if (pid === undefined) return 0;
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  return m ? Number(m[1]) / 1024 : 0;
}

/** The Cassandra JVM of a node (the child of its watchdog shell). */
function jvmPid(node: CassandraNodeHandle): number | undefined {
  const pid = node.process.pid;
  if (pid === undefined) return undefined;
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid === pid && readFileSync(`/proc/${d}/cmdline`, "utf8").startsWith("java"))
        return Number(d);
    } catch {
      // gone meanwhile
    }
  }
  return undefined;
}

/** One log split into `parts` files at line boundaries (consecutive stretches of its time). */
function splitLog(file: string, parts: number): string[] {
  const lines = readFileSync(file, "utf8").split("\n");
  if (lines[lines.length - 1] === "") lines.pop();
  const per = Math.ceil(lines.length / parts);
  return Array.from({ length: parts }, (_, k) => {
    const part = `${file}.part${k}`;
    writeFileSync(part, `${lines.slice(k * per, (k + 1) * per).join("\n")}\n`);
    return part;
  });
}

/** A counter's sum over its label sets in a Prometheus text exposition. */
function counterSum(text: string, name: string): number {
  let n = 0;
  for (const line of text.split("\n"))
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `))
      n += Number(line.slice(line.lastIndexOf(" ") + 1));
  return n;
}

/** The raw store's unique events equal the recount's unique clicks, one for one. */
async function expectRawEqualsRecount(cql: CassandraClient, partitions: number, logs: ServerLogs) {
  const stored = [];
  for await (const block of new RawStore(cql).readRange(...RANGE, partitions))
    stored.push(...block.events);
  const expected = uniqueClicks(logs.truth);
  expect(stored.length).toBe(expected.length);
  expect(sortedKeys(stored, eventKey)).toEqual(sortedKeys(expected, clickKey));
}

describe("a 3-node Cassandra ring (RF 3, LOCAL_QUORUM) with one node down at a time", () => {
  const nats = useNatsServer();
  const dir = mkdtempSync(join(tmpdir(), "adclick-ring-"));
  const keyspace = uniqueName("ring");
  let ring: CassandraRing | undefined;
  let ringStartMs = 0;
  let failed = false;

  beforeAll(async () => {
    const t = Date.now();
    // 512 MB heaps: three nodes (~1 GB resident each) beside NATS, the workers and the
    // harness's own node on a shared 24 GB machine.
    ring = await startCassandraRing({
      nodes: 3,
      heapMb: 512,
      dataDir: join(dir, "ring"),
    });
    ringStartMs = Date.now() - t;
  }, 240_000);

  afterAll(async () => {
    await ring?.stop();
    if (!failed && !KEEP) rmSync(dir, { recursive: true, force: true });
    else console.log(`[ring] logs and data kept in ${dir}`);
  }, 120_000);

  it("stores every click exactly once while one node at a time is stopped or killed", {
    timeout: 420_000,
  }, async () => {
    onTestFailed(() => {
      failed = true;
    });
    if (!ring) throw new Error("ring not started");
    const r = ring;
    const [n1, n2, n3] = r.nodes as [CassandraNodeHandle, CassandraNodeHandle, CassandraNodeHandle];
    const { server, nc } = nats();
    const jsm = await jetstreamManager(nc);
    const t0 = Date.now();
    const say = (m: string) => console.log(`[ring ${secs(Date.now() - t0)}] ${m}`);
    const timings: string[] = [`ring start ${secs(ringStartMs)}`];
    const rss = (n: CassandraNodeHandle) => `${n.host} ${rssMb(jvmPid(n)).toFixed(0)} MB`;
    const nodeRss: string[] = [`after start: ${r.nodes.map(rss).join(", ")}`];
    say(`ring up in ${secs(ringStartMs)} at ${r.contactPoints.join(",")}; ${nodeRss[0]}`);

    const logs = writeServerLogs(dir, SERVERS, LINES);
    const parts = logs.files.map((f) => splitLog(f, PARTS));
    const partitions = DEFAULT_CONFIG.partitions;
    const topN = DEFAULT_CONFIG.topK;

    const metricsPort = await freePort();
    const env = {
      ADCLICK_NATS_URL: server.url,
      ADCLICK_CASSANDRA: r.contactPoints.join(","),
      ADCLICK_CASSANDRA_RF: "3",
      ADCLICK_KEYSPACE: keyspace,
      ADCLICK_METRICS_PORT: String(metricsPort),
      // The ring's roles: the worker logs in with the passwords in this folder.
    };
    const log = createWriteStream(join(dir, "processes.log"), { flags: "a" });
    const worker = new WorkerLoop(env, log);
    const shippers = logs.files.map(() => new ShipperLoop(env, log));
    const metrics = async () => (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    const writeFailures = async () => {
      const text = await metrics();
      return (
        counterSum(text, "adclick_raw_write_failures_total") +
        counterSum(text, "adclick_aggregate_write_failures_total")
      );
    };
    let workerRssPeakMb = 0;
    let sampling = false;
    const sampler = setInterval(() => {
      if (!sampling) return;
      try {
        workerRssPeakMb = Math.max(workerRssPeakMb, rssMb(worker.current?.pid));
      } catch {
        // the worker is between processes
      }
    }, 250);

    try {
      worker.start();
      await until("the worker's metrics", async () => (await metrics()).length > 0, 120_000, 250);
      timings.push(`worker serving ${secs(Date.now() - t0)} after the ring was up`);
      const cql = createCassandraClient(
        {
          cassandraContactPoints: r.contactPoints,
          cassandraLocalDataCenter: r.localDataCenter,
          login: r.credentials?.app,
        },
        keyspace,
      );
      const store = new AggregateStore(cql);
      /** What was shipped so far is stored: every writer's consumer drained. */
      const drained = async () => {
        return (await durablesBehind(jsm)).length === 0;
      };
      const shipParts = async (from: number, to: number) => {
        await Promise.all(
          shippers.map(async (s, i) => {
            for (let k = from; k < to; k++) await s.ship(parts[i]?.[k] as string, `web-${i}`);
          }),
        );
      };

      // ---- all up --------------------------------------------------------------------------
      let t = Date.now();
      await shipParts(0, 1);
      timings.push(`part 0 shipped with every node up ${secs(Date.now() - t)}`);

      // ---- node 3 stopped (orderly) ----------------------------------------------------------
      t = Date.now();
      await n3.stop();
      timings.push(`node 3 orderly stop ${secs(Date.now() - t)}`);
      const downAt = Date.now();
      sampling = true;
      await shipParts(1, 2);
      await until("part 1 stored with node 3 down", drained, 120_000, 250);
      timings.push(`part 1 shipped and stored with node 3 down ${secs(Date.now() - downAt)}`);
      nodeRss.push(`under load, node 3 down: ${[n1, n2].map(rss).join(", ")}`);
      sampling = false;
      const failuresNode3Down = await writeFailures();
      say(
        `node 3 down: ${failuresNode3Down} write failures, worker RSS peak ${workerRssPeakMb.toFixed(0)} MB`,
      );

      t = Date.now();
      await n3.start();
      await waitForRing(r.nodes);
      timings.push(`node 3 back, ring whole ${secs(Date.now() - t)}`);
      // Its missed writes come back as hints: wait until each coordinator delivered its hints
      // for node 3 (so that none is lost with node 2 below).
      t = Date.now();
      const hintFiles = (n: CassandraNodeHandle) =>
        readdirSync(join(n.dataDir, "hints")).filter((f) => f.endsWith(".hints"));
      const handedOff = (n: CassandraNodeHandle) =>
        /Finished hinted handoff of file .* to endpoint \S*127\.0\.0\.3[/:]/.test(
          readFileSync(join(n.dataDir, "logs", "system.log"), "utf8"),
        );
      await until(
        "nodes 1 and 2 to deliver their hints to node 3",
        () =>
          hintFiles(n1).length === 0 &&
          hintFiles(n2).length === 0 &&
          (handedOff(n1) || handedOff(n2)),
        120_000,
        250,
      );
      timings.push(`hints delivered to node 3 ${secs(Date.now() - t)}`);

      // ---- node 2 killed mid-shipping --------------------------------------------------------
      const shipping = shipParts(2, 3);
      await until("the shippers under way", () => shippers.some((s) => s.runs > 2), 60_000, 50);
      const failuresBeforeKill = await writeFailures();
      t = Date.now();
      sampling = true;
      await n2.process.kill();
      await shipping;
      await until("part 2 stored with node 2 down", drained, 120_000, 250);
      timings.push(`part 2 shipped and stored with node 2 killed ${secs(Date.now() - t)}`);
      sampling = false;
      const failuresNode2Down = (await writeFailures()) - failuresBeforeKill;

      // ---- convergence, node 2 still down ------------------------------------------------------
      t = Date.now();
      const lastMinute = START_MS + SPAN_MS - MIN;
      await until(
        "every partition stored past the last minute",
        async () => {
          if (!(await drained())) return false;
          const progress = await store.progress();
          return (
            progress.size === partitions &&
            [...progress.values()].every((p) => p >= lastMinute + MIN)
          );
        },
        180_000,
        500,
      );
      timings.push(`converged ${secs(Date.now() - t)} after part 2 was stored`);
      const failures = await writeFailures();
      // Everything is stored: the worker would only fail to write ticks from here on.
      await worker.stop();
      await cql.shutdown();

      // ---- node 3 alone, at ONE --------------------------------------------------------------
      // Node 2 killed, node 1 stopped: no other replica can answer, so node 3 holds every row
      // itself — what it missed while stopped came as hints (no quorum read has repaired it
      // since it came back; the progress rows above are the only exception).
      t = Date.now();
      await n1.stop();
      const one = createCassandraClient(
        {
          cassandraContactPoints: [n3.contactPoint],
          cassandraLocalDataCenter: r.localDataCenter,
          cassandraConsistency: "ONE",
          login: r.credentials?.app,
        },
        keyspace,
      );
      try {
        await expectStoreEqualsRecount(one, partitions, topN, logs);
        await expectRawEqualsRecount(one, partitions, logs);
      } finally {
        await one.shutdown();
      }
      timings.push(`node 3 alone at ONE equals the recount (checked in ${secs(Date.now() - t)})`);
      // The seed first: a node cannot join while no seed answers.
      t = Date.now();
      await n1.start();
      await n2.start();
      await waitForRing(r.nodes);
      timings.push(`nodes 1 and 2 back, ring whole ${secs(Date.now() - t)}`);

      // ---- the ring at LOCAL_QUORUM --------------------------------------------------------------
      const quorum = createCassandraClient(
        {
          cassandraContactPoints: r.contactPoints,
          cassandraLocalDataCenter: r.localDataCenter,
          login: r.credentials?.app,
        },
        keyspace,
      );
      try {
        await expectStoreEqualsRecount(quorum, partitions, topN, logs);
        await expectRawEqualsRecount(quorum, partitions, logs);
      } finally {
        await quorum.shutdown();
      }
      nodeRss.push(`at the end: ${r.nodes.map(rss).join(", ")}`);

      const clicks = uniqueClicks(logs.truth).length;
      console.log(
        `\n[ring] figures\n${[
          `input: ${SERVERS} servers × ${LINES} lines in ${PARTS} parts each, ${clicks} unique clicks`,
          ...timings,
          `write failures (retried): ${failuresNode3Down} with node 3 stopped, ${failuresNode2Down} with node 2 killed, ${failures} in all`,
          `worker: ${worker.starts} process(es), RSS peak while a node was down ${workerRssPeakMb.toFixed(0)} MB`,
          ...nodeRss.map((l) => `node RSS ${l}`),
          `total ${secs(Date.now() - t0)}`,
        ]
          .map((l) => `  ${l}`)
          .join("\n")}\n`,
      );
      expect(worker.starts).toBe(1);
      expect(failures).toBeLessThanOrEqual(WRITE_FAILURES_BOUND);
      expect(workerRssPeakMb).toBeGreaterThan(0);
      expect(workerRssPeakMb).toBeLessThan(WORKER_RSS_BOUND_MB);
    } finally {
      clearInterval(sampler);
      for (const s of shippers) s.stop();
      await worker.stop();
      await new Promise<void>((done) => log.end(done));
    }
  });
});
