/**
 * NATS as a 3-node cluster (streams and KV buckets at R3, ADCLICK_NATS_REPLICAS=3), the
 * default configuration otherwise: four application servers' logs, written while `adclick ship
 * --follow` agents tail them into the cluster and an `adclick worker` process aggregates —
 * meanwhile one node is SIGKILLed (the CLICKS stream's leader) and restarted on its store,
 * then another is frozen (SIGSTOP) for 1.5 times nats-server's longest raft election timeout
 * (9 s, maxElectionTimeoutDefault in server/raft.go) and thawed. Afterwards every stored
 * per-(ad, minute) count, per-(ad, minute, country) count and top N, and the raw store's
 * events, equal an independent recount of the input.
 *
 * Knobs: ADCLICK_CLUSTER_LINES (lines per server log, default 10 000), ADCLICK_CLUSTER_KEEP=1
 * keeps the logs and data folder.
 */
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import {
  appendFileSync,
  createWriteStream,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, it, onTestFailed } from "vitest";
import { type NatsClusterHandle, startNatsCluster } from "../../app/infra/nats-cluster.js";
import { KV_BUCKETS, STREAMS } from "../../nats/layout.js";
import { DEFAULT_CONFIG } from "../../src/config.js";
import { KvCheckpointStore } from "../../src/ingest/checkpoint-store.js";
import { connectNats } from "../../src/nats/connect.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import { RawStore } from "../../src/storage/raw-store.js";
import { harnessNatsAuth, natsLogin, useKeyspace } from "../harness/servers.js";
import { diffCounts, diffSize, exited, sleep, until, WorkerLoop } from "../support/chaos.js";
import { adclick } from "../support/cli.js";
import { clickKey, eventKey, sortedKeys, uniqueClicks } from "../support/oracle.js";
import {
  expectStoreEqualsRecount,
  MIN,
  RANGE,
  SPAN_MS,
  START_MS,
  writeServerLogs,
} from "../support/sources.js";
import { durablesBehind, PIPELINE_DURABLES } from "../support/streams.js";

const LINES = Number(process.env.ADCLICK_CLUSTER_LINES ?? 10_000);
const KEEP = process.env.ADCLICK_CLUSTER_KEEP === "1";
const SERVERS = 4;
/** nats-server's raft election timeout is random in 4–9 s (server/raft.go, v2.12). */
const MAX_ELECTION_TIMEOUT_MS = 9_000;
const FREEZE_MS = 1.5 * MAX_ELECTION_TIMEOUT_MS;
/** Each log is appended in this many steps, one a second (the last few after the faults). */
const STEPS = 40;
const HELD_BACK_STEPS = 5;
const { partitions: PARTITIONS, topK: TOP_N } = DEFAULT_CONFIG;

/** Streams and KV buckets whose leaders move when their node fails. */
const ASSETS = [
  STREAMS.clicks,
  STREAMS.aggregates,
  `KV_${KV_BUCKETS.leases}`,
  `KV_${KV_BUCKETS.snapshots}`,
  `KV_${KV_BUCKETS.shipperCheckpoints}`,
];

/** `adclick ship --follow` on one file, started again whenever it exits until it is stopped. */
class FollowAgent {
  current: ChildProcessWithoutNullStreams | undefined;
  runs = 0;
  private stopping = false;

  constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly log: NodeJS.WritableStream,
    readonly source: string,
    readonly file: string,
  ) {}

  start(): void {
    const p = adclick(["ship", "--follow", "--source", this.source, this.file], this.env);
    this.runs++;
    this.current = p;
    const tag = `[ship ${this.source} ${p.pid}]`;
    p.stdout.on("data", (d) => this.log.write(`${tag} ${d}`));
    p.stderr.on("data", (d) => this.log.write(`${tag} ${d}`));
    p.once("exit", (code, signal) => {
      this.log.write(`${tag} exited (code ${code}, signal ${signal})\n`);
      if (this.current === p) this.current = undefined;
      if (!this.stopping) setTimeout(() => this.start(), 250);
    });
  }

  /** SIGINT: the agent finishes its chunk and exits 0. */
  async stop(): Promise<number | null> {
    this.stopping = true;
    const p = this.current;
    if (!p) return 0;
    p.kill("SIGINT");
    const timer = setTimeout(() => p.kill("SIGKILL"), 20_000);
    const code = await exited(p);
    clearTimeout(timer);
    return code;
  }
}

describe("a 3-node NATS cluster: exactly once while a node crashes and another freezes", () => {
  const keyspace = useKeyspace();
  const dir = mkdtempSync(join(tmpdir(), "adclick-nats-cluster-"));
  let cluster: NatsClusterHandle | undefined;
  let nc: NatsConnection | undefined;
  let clusterStartMs = 0;
  let failed = false;

  beforeAll(async () => {
    const t = Date.now();
    cluster = await startNatsCluster({
      nodes: 3,
      storeRoot: join(dir, "nats"),
      auth: harnessNatsAuth(),
    });
    clusterStartMs = Date.now() - t;
    nc = await connectNats({ servers: cluster.urls, name: "nats-cluster-test", ...natsLogin() });
  }, 60_000);

  afterAll(async () => {
    await nc?.close().catch(() => {});
    await cluster?.stop();
    if (!failed && !KEEP) rmSync(dir, { recursive: true, force: true });
    else console.log(`[nats-cluster] logs and data kept in ${dir}`);
  }, 60_000);

  it("counts every click once; every count, dimension count, top N and raw event equals the recount", {
    timeout: 300_000,
  }, async () => {
    onTestFailed(() => {
      failed = true;
    });
    if (!cluster || !nc) throw new Error("cluster not started");
    const c = cluster;
    const conn = nc;
    const { client: cql, contactPoint, keyspace: ks } = keyspace();
    const jsm = await jetstreamManager(conn);
    const t0 = Date.now();
    const say = (m: string) =>
      console.log(`[nats-cluster ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
    const timings: string[] = [`cluster start ${clusterStartMs} ms (meta leader, 3 current peers)`];
    say(`cluster up in ${clusterStartMs} ms: ${c.urls.join(", ")}`);
    const log = createWriteStream(join(dir, "processes.log"), { flags: "a" });

    // ---- the input: four servers' logs of the same 12 minutes, written over time ----------
    const full = writeServerLogs(dir, SERVERS, LINES);
    const texts = full.files.map((f) => readFileSync(f));
    const cuts = texts.map((t) =>
      Array.from({ length: STEPS + 1 }, (_, k) => {
        if (k === 0) return 0;
        if (k === STEPS) return t.length;
        return t.indexOf(0x0a, Math.floor((t.length * k) / STEPS)) + 1;
      }),
    );
    for (const f of full.files) writeFileSync(f, "");
    const clicks = uniqueClicks(full.truth);
    say(`input: ${SERVERS} logs × ${LINES} lines, ${clicks.length} unique clicks`);

    const env = {
      ADCLICK_NATS_URL: c.urls.join(","),
      ADCLICK_NATS_REPLICAS: "3",
      ADCLICK_CASSANDRA: contactPoint,
      ADCLICK_KEYSPACE: ks,
      ADCLICK_METRICS_PORT: "0",
    };
    const workers = new WorkerLoop(env, log);
    const request = async <T>(cmd: string): Promise<T | undefined> => {
      const m = await conn
        .request(`adclick.admin.${cmd}`, "{}", { timeout: 2000 })
        .catch(() => undefined);
      return m && m.data.length > 0 ? m.json<T>() : undefined;
    };
    type Status = { supervisor: string; actors: number; running: number };
    const healthy = async () => {
      const s = await request<Status>("status");
      return s?.supervisor === "running" && s.actors > 0 && s.running === s.actors;
    };
    workers.start();
    await until("the worker healthy", healthy, 120_000, 200);
    say("worker healthy");

    // ---- everything AdClick created is replicated 3 times ---------------------------------
    for (const name of [...Object.values(STREAMS), ...ASSETS.filter((a) => a.startsWith("KV_"))]) {
      const info = await jsm.streams.info(name);
      expect(
        {
          name,
          replicas: info.config.num_replicas,
          peers: 1 + (info.cluster?.replicas ?? []).length,
        },
        `${name} at R3`,
      ).toEqual({ name, replicas: 3, peers: 3 });
    }
    for (const [stream, durable] of PIPELINE_DURABLES) {
      // num_replicas 0: the consumer inherits its stream's replicas.
      const ci = await jsm.consumers.info(stream, durable);
      expect(
        { durable, peers: 1 + (ci.cluster?.replicas ?? []).length },
        `${durable} replicated`,
      ).toEqual({ durable, peers: 3 });
    }
    say("every stream, KV bucket and durable consumer has 3 replicas");

    // ---- shipping: follow agents while the logs grow ---------------------------------------
    const agents = full.files.map((f, i) => new FollowAgent(env, log, `web-${i}`, f));
    for (const a of agents) a.start();
    let faultsDone = false;
    let step = 0;
    const appending = (async () => {
      for (step = 1; step <= STEPS; step++) {
        while (step > STEPS - HELD_BACK_STEPS && !faultsDone) await sleep(200);
        for (const [i, f] of full.files.entries()) {
          const cut = cuts[i] as number[];
          appendFileSync(f, (texts[i] as Buffer).subarray(cut[step - 1], cut[step]));
        }
        await sleep(1000);
      }
      say("the logs are complete");
    })();

    // ---- fault 1: SIGKILL the CLICKS leader, restart it on its store -----------------------
    // Leaders as a running node's monitoring port shows them (not over our client connection,
    // which may sit on the failed node until its pings go unanswered).
    const checkpoints = new KvCheckpointStore(
      await new Kvm(jetstream(conn)).open(KV_BUCKETS.shipperCheckpoints),
    );
    const shippedBytes = async (a: FollowAgent) =>
      (await checkpoints.load(a.source, a.file))?.checkpoint.offset ?? 0;
    // The faults hit agents that are shipping, not starting.
    await until(
      "every agent shipping",
      async () => {
        for (const a of agents) if ((await shippedBytes(a)) === 0) return false;
        return step >= 5;
      },
      60_000,
      100,
    );
    const killedName = (await c.streamLeaders()).get(STREAMS.clicks);
    const killed = c.nodes.find((n) => n.name === killedName);
    if (!killed) throw new Error(`no CLICKS leader (${killedName})`);
    let at = Date.now();
    await killed.kill();
    say(`SIGKILLed ${killed.name} (CLICKS leader)`);
    await until(
      "a new CLICKS leader",
      async () => {
        const l = (await c.streamLeaders()).get(STREAMS.clicks);
        return l !== undefined && l !== killed.name;
      },
      60_000,
      100,
    );
    const reElected = Date.now() - at;
    at = Date.now();
    await killed.restart({ timeoutMs: 120_000 });
    const restarted = Date.now() - at;
    timings.push(
      `kill ${killed.name}: new CLICKS leader after ${reElected} ms; restarted and current (/healthz) ${restarted} ms later`,
    );
    say(timings.at(-1) as string);

    // ---- fault 2: freeze the node leading the most, longer than an election -----------------
    const before = await c.streamLeaders();
    const meta = await c.metaLeader();
    const led = (name: string) =>
      ASSETS.filter((a) => before.get(a) === name).length + (meta === name ? 1 : 0);
    const frozen = c.nodes
      .filter((n) => n !== killed)
      .sort((a, b) => led(b.name) - led(a.name))[0] as (typeof c.nodes)[number];
    const itLed = [...before].filter(([, l]) => l === frozen.name).map(([a]) => a);
    at = Date.now();
    frozen.pause();
    say(
      `SIGSTOPped ${frozen.name} for ${FREEZE_MS} ms (leader of ${[...itLed, ...(meta === frozen.name ? ["meta"] : [])].join(", ") || "nothing"})`,
    );
    let movedMs: number | undefined;
    const moved = until(
      "the frozen node's leaderships moved",
      async () => {
        const now = await c.streamLeaders();
        if (itLed.some((a) => now.get(a) === undefined || now.get(a) === frozen.name)) return false;
        const m = await c.metaLeader();
        return m !== undefined && m !== frozen.name;
      },
      FREEZE_MS,
      100,
    ).then(
      () => {
        movedMs = Date.now() - at;
      },
      () => {},
    );
    await sleep(Math.max(0, at + FREEZE_MS - Date.now()));
    frozen.resume();
    const thawedAt = Date.now();
    await moved;
    await c.waitHealthy(120_000);
    const recovered = Date.now() - thawedAt;
    timings.push(
      `freeze ${frozen.name} ${FREEZE_MS} ms: its ${itLed.length} stream leaderships and meta moved after ${movedMs ?? "(not within the freeze)"} ms; ` +
        `cluster healthy ${recovered} ms after SIGCONT`,
    );
    say(timings.at(-1) as string);
    faultsDone = true;
    await appending;

    // ---- every agent shipped its whole log; stop them ---------------------------------------
    at = Date.now();
    await until(
      "every agent shipped its whole log",
      async () => {
        for (const a of agents) if ((await shippedBytes(a)) !== statSync(a.file).size) return false;
        return true;
      },
      120_000,
      250,
    );
    for (const a of agents) expect(await a.stop()).toBe(0);
    const shippedAt = Date.now();
    timings.push(`shipped the rest ${shippedAt - at} ms after the faults`);
    say(timings.at(-1) as string);

    // ---- convergence ----------------------------------------------------------------------
    const store = new AggregateStore(cql);
    const want = new Map<string, number>();
    for (const k of clicks) {
      const key = `${k.adId}|${Math.floor(k.timestampMs / MIN) * MIN}`;
      want.set(key, (want.get(key) ?? 0) + 1);
    }
    const lastMinute = START_MS + SPAN_MS - MIN;
    let lastSay = 0;
    const converged = async () => {
      const missing: string[] = [];
      const progress = await store.progress();
      const behind = [...Array(PARTITIONS).keys()].filter(
        (p) => (progress.get(p) ?? 0) < lastMinute + MIN,
      );
      if (behind.length > 0) missing.push(`progress of ${behind.length} partitions`);
      missing.push(...(await durablesBehind(jsm)));
      if (missing.length === 0) {
        const am = new Map<string, number>();
        for (const pm of await store.partitionMinutes(PARTITIONS, ...RANGE))
          for (const [ad, n] of pm.adCounts) am.set(`${ad}|${pm.minuteStartMs}`, n);
        const d = diffSize(diffCounts(am, want));
        if (d > 0) missing.push(`${d} (ad, minute) counts`);
      }
      if (missing.length > 0 && Date.now() - lastSay > 10_000) {
        lastSay = Date.now();
        say(`converging: waiting for ${missing.join("; ")}`);
      }
      return missing.length === 0;
    };
    await until("the pipeline to converge", converged, 150_000, 1000);
    timings.push(`converged ${Date.now() - shippedAt} ms after the last line was shipped`);
    say(timings.at(-1) as string);

    // ---- the checks -------------------------------------------------------------------------
    // Stored counts, country counts and top N (partition minutes, per-ad rows, top minutes);
    // top N may trail the counts a moment (the reducer, then its writer).
    await until(
      "every stored table equal to the recount",
      async () => {
        await expectStoreEqualsRecount(cql, PARTITIONS, TOP_N, full);
        return true;
      },
      60_000,
      1000,
    ).catch(() => {});
    await expectStoreEqualsRecount(cql, PARTITIONS, TOP_N, full);
    const raw = [];
    for await (const { events } of new RawStore(cql).readRange(...RANGE, PARTITIONS))
      raw.push(...events);
    const rawKeys = sortedKeys(raw, eventKey);
    const wantKeys = sortedKeys(clicks, clickKey);
    expect({
      events: rawKeys.length,
      equal: JSON.stringify(rawKeys) === JSON.stringify(wantKeys),
    }).toEqual({ events: wantKeys.length, equal: true });

    await workers.stop();
    await new Promise<void>((r) => log.end(r));
    console.log(
      `\n[nats-cluster] timings\n${[
        ...timings,
        `${workers.starts} worker processes, ${agents.reduce((n, a) => n + a.runs, 0)} ship processes; ${((Date.now() - t0) / 1000).toFixed(0)} s in all`,
        `${clicks.length} unique clicks: stored counts, country counts, top ${TOP_N} and raw events equal the recount`,
      ]
        .map((l) => `  ${l}`)
        .join("\n")}\n`,
    );
  });
});
