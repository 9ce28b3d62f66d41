/**
 * Hot ads (docs/hot-ads.md): one ad draws half of all clicks for a while. Its partition's
 * aggregator detects it, splits it over shards that run as actors of their own in two worker
 * processes, one shard is killed (its supervisor restarts it from its snapshot), the ad cools
 * and is merged back — and every count, country count and top N equals the recount.
 *
 * The thresholds are this test's settings (ADCLICK_HOT_*): a test-sized rate, a 2 s period.
 */

import type { ChildProcessWithoutNullStreams } from "node:child_process";
import {
  appendFileSync,
  createWriteStream,
  mkdtempSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, describe, expect, it } from "vitest";
import type { ActorRow } from "../../actors/admin-service.js";
import { KV_BUCKETS } from "../../nats/layout.js";
import type { HotStatus } from "../../src/aggregate/aggregator-core.js";
import { generateClickLog, type TruthLine } from "../../src/gen/click-log.js";
import { KvCheckpointStore } from "../../src/ingest/checkpoint-store.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import { useKeyspace, useNatsServer } from "../harness/servers.js";
import { exited, pipeLines, sleep, until } from "../support/chaos.js";
import { adclick } from "../support/cli.js";
import { expectStoreEqualsRecount, MIN, START_MS } from "../support/sources.js";
import { durablesBehind } from "../support/streams.js";

const PARTITIONS = 16; // the default
const TOP_N = 1000; // the default
const HOT_AD = "ad-hot";
/** Appended every half second: 2,000 lines a second. */
const STEP_LINES = 1000;
const STEP_MS = 500;

/** Three phases of one server's log: normal, the hot ad at half of all clicks, normal again. */
const PHASES = [
  { seed: 8101, lines: 8_000, fromMin: 0, toMin: 3, hotShare: 0 },
  { seed: 8102, lines: 24_000, fromMin: 3, toMin: 8, hotShare: 0.5 },
  { seed: 8103, lines: 16_000, fromMin: 8, toMin: 12, hotShare: 0 },
];

describe("hot ads: split over shards in two workers, a shard killed, merged back", () => {
  const nats = useNatsServer();
  const ks = useKeyspace();
  const dir = mkdtempSync(join(tmpdir(), "adclick-hot-"));
  const log = createWriteStream(join(dir, "processes.log"));
  const procs: ChildProcessWithoutNullStreams[] = [];
  let failed = false;
  afterAll(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    await Promise.all(procs.map((p) => exited(p)));
    await new Promise<void>((r) => log.end(r));
    if (failed || process.env.ADCLICK_HOT_KEEP === "1") console.log(`[hot] logs kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("counts every click once while the ad is split, a shard dies, and it merges back", {
    timeout: 420_000,
  }, async (ctx) => {
    ctx.onTestFailed(() => {
      failed = true;
    });
    const { server, nc } = nats();
    const { keyspace, contactPoint, client } = ks();
    const jsm = await jetstreamManager(nc);
    const t0 = Date.now();
    const say = (m: string) => console.log(`[hot ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);

    const texts: string[] = [];
    const truth: TruthLine[] = [];
    for (const ph of PHASES) {
      const g = generateClickLog({
        seed: ph.seed,
        lines: ph.lines,
        ads: 500,
        startMs: START_MS + ph.fromMin * MIN,
        spanMs: (ph.toMin - ph.fromMin) * MIN,
        clickIdRatio: 1,
        duplicateRatio: 0.02,
        malformedRatio: 0.001,
        disorderMs: 10_000,
        hotShare: ph.hotShare,
        hotAdId: HOT_AD,
      });
      texts.push(g.text);
      truth.push(...g.truth);
    }
    const lines = texts.join("").split("\n").slice(0, -1);
    const file = join(dir, "web.log");
    writeFileSync(file, "");

    const env = {
      ADCLICK_NATS_URL: server.url,
      ADCLICK_CASSANDRA: contactPoint,
      ADCLICK_KEYSPACE: keyspace,
      ADCLICK_METRICS_PORT: "0",
      ADCLICK_HOT_MIN_RATE: "300",
      ADCLICK_HOT_SHARD_RATE: "400",
      ADCLICK_HOT_PERIOD_MS: "2000",
    };
    const startWorker = (id: string) => {
      const p = adclick(["worker"], { ...env, ADCLICK_WORKER_ID: id });
      pipeLines(p, `[${id}]`, log);
      procs.push(p);
      return p;
    };
    const actors = async (): Promise<ActorRow[]> => {
      const rows: ActorRow[] = [];
      const replies = await nc.requestMany("adclick.admin.actors", "{}", {
        maxWait: 2000,
        maxMessages: 2,
      });
      for await (const m of replies) if (m.data.length > 0) rows.push(...m.json<ActorRow[]>());
      return rows;
    };
    const hotOf = (rows: ActorRow[]) =>
      rows
        .filter((r) => r.kind === "aggregator" && r.status?.lastSeq !== undefined)
        .map((r) => ({ partition: r.partition, hot: r.status?.hot as HotStatus | undefined }))
        .filter((h) => h.hot !== undefined && h.hot.splits > 0);
    /** Shards of an epoch that are counting (hold their lease), with their worker. */
    const countingShards = (rows: ActorRow[], prefix: string) =>
      rows.filter(
        (r) => r.id.startsWith(prefix) && r.state === "running" && r.status?.lastSeq !== undefined,
      );
    /** The hot ad's partition and epoch, once it is split. */
    const hotAdSplit = (rows: ActorRow[]) => {
      for (const h of hotOf(rows)) {
        const epoch = h.hot?.epochs.find((e) => e.adId === HOT_AD);
        if (epoch) return { partition: h.partition as number, epoch, hot: h.hot as HotStatus };
      }
      return undefined;
    };

    startWorker("w1");
    startWorker("w2");
    await until(
      "both workers to answer",
      async () => new Set((await actors()).map((r) => r.worker)).size === 2,
      120_000,
      200,
    );
    const agent = adclick(["ship", "--follow", "--source", "web", file], env);
    pipeLines(agent, "[ship]", log);
    procs.push(agent);

    // ---- the log grows: 2,000 lines a second, the hot phase in the middle ---------------------
    const hotFrom = PHASES[0]?.lines ?? 0;
    let appended = 0;
    let hotStartedAt = 0;
    const appending = (async () => {
      while (appended < lines.length) {
        const next = Math.min(lines.length, appended + STEP_LINES);
        if (appended <= hotFrom && next > hotFrom) hotStartedAt = Date.now();
        appendFileSync(file, `${lines.slice(appended, next).join("\n")}\n`);
        appended = next;
        await sleep(STEP_MS);
      }
      say("the log is complete");
    })();

    // ---- split: the hot ad's partition splits it; its shards count ---------------------------
    // Captured where seen: a later `admin actors` may miss a reply (a worker busy past 2 s).
    let seen: ReturnType<typeof hotAdSplit>;
    await until(
      "the hot ad to be split",
      async () => {
        seen = hotAdSplit(await actors());
        return seen !== undefined;
      },
      120_000,
      250,
    );
    const split = seen as NonNullable<ReturnType<typeof hotAdSplit>>;
    const shards = split.epoch.shards;
    expect(shards).toBeGreaterThanOrEqual(2);
    say(
      `partition ${split.partition} split ${HOT_AD} into ${shards} shards ${((Date.now() - hotStartedAt) / 1000).toFixed(1)} s after the hot phase began; ` +
        `every split so far: ${JSON.stringify(hotOf(await actors()).map((h) => [h.partition, h.hot?.epochs.map((e) => `${e.adId}x${e.shards}`)]))}`,
    );
    const prefix = `hot-shard-${split.partition}-${split.epoch.epoch}-`;
    let counting: ActorRow[] = [];
    await until(
      "every shard of the hot ad counting",
      async () => {
        counting = countingShards(await actors(), prefix);
        return counting.length === shards;
      },
      60_000,
      250,
    );

    // ---- a shard dies: its supervisor restarts it, it restores from its snapshot --------------
    const victim = counting[0] as ActorRow;
    const killed = await nc.request(
      "adclick.admin.kill",
      JSON.stringify({ id: victim.id, worker: victim.worker }),
      { timeout: 5000 },
    );
    say(`killed ${victim.id} on ${victim.worker}: ${killed.string()}`);
    await until(
      `${victim.id} restarted and counting`,
      async () =>
        (await actors()).some(
          (r) =>
            r.id === victim.id &&
            r.state === "running" &&
            r.status?.lastSeq !== undefined &&
            (r.restarts > 0 || r.worker !== victim.worker),
        ),
      60_000,
      250,
    );

    // ---- it cools and merges back; the agent ships the whole log and stops ---------------------
    await appending;
    const checkpoints = new KvCheckpointStore(
      await new Kvm(jetstream(nc)).open(KV_BUCKETS.shipperCheckpoints),
    );
    await until(
      "the whole log shipped",
      async () =>
        ((await checkpoints.load("web", file))?.checkpoint.offset ?? 0) === statSync(file).size,
      120_000,
      250,
    );
    agent.kill("SIGINT");
    expect(await exited(agent)).toBe(0);
    await until(
      "the hot ad merged back",
      async () =>
        hotOf(await actors()).some(
          (h) => h.partition === split.partition && (h.hot?.merges ?? 0) > 0,
        ),
      120_000,
      250,
    );
    say("merged back");

    // ---- everything stored ---------------------------------------------------------------------
    const store = new AggregateStore(client);
    const lastMinute = START_MS + 12 * MIN - MIN;
    await until(
      "the pipeline to converge",
      async () => {
        if ((await durablesBehind(jsm)).length > 0) return false;
        const progress = await store.progress();
        return (
          progress.size === PARTITIONS && [...progress.values()].every((t) => t >= lastMinute + MIN)
        );
      },
      240_000,
      500,
    );
    const rows = await actors();
    const final = hotOf(rows).find((h) => h.partition === split.partition)?.hot;
    say(`converged: ${JSON.stringify(final)}`);
    await expectStoreEqualsRecount(client, PARTITIONS, TOP_N, { files: [file], truth: [truth] });
  });
});
