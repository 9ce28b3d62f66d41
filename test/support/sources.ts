/**
 * Shared by the "servers out of step" suites: N application servers' logs of the same period,
 * a stack with the default configuration, convergence, and the checks of every stored count
 * and query answer against an independent recount of the generated input.
 */
import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type JetStreamManager, jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, describe, expect, inject, it } from "vitest";
import { type Node, startNode } from "../../app/node.js";
import { allRoles } from "../../app/worker.js";
import { KV_BUCKETS, STREAMS, SUBJECTS } from "../../nats/layout.js";
import type { AggregatorStatus } from "../../src/aggregate/aggregator-core.js";
import { loadConfig } from "../../src/config.js";
import { generateClickLog, type TruthClick, type TruthLine } from "../../src/gen/click-log.js";
import { KvCheckpointStore } from "../../src/ingest/checkpoint-store.js";
import { ONE_MINUTE_MS } from "../../src/model.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import type { CassandraClient } from "../../src/storage/cassandra-client.js";
import { uniqueName, useNatsServer } from "../harness/servers.js";
import { runningAggregators } from "./actors.js";
import { diffCounts, diffSize, until } from "./chaos.js";
import { adclick } from "./cli.js";
import { uniqueClicks } from "./oracle.js";
import { durablesBehind } from "./streams.js";

export const MIN = ONE_MINUTE_MS;
/** The period every server's log covers: 12 minutes. */
export const START_MS = Date.UTC(2024, 6, 9, 0, 0, 0);
export const SPAN_MS = 12 * MIN;
export const RANGE: [number, number] = [START_MS - 2 * MIN, START_MS + SPAN_MS + 2 * MIN];
export const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");

export interface ServerLogs {
  files: string[];
  truth: TruthLine[][];
}

/**
 * `servers` application servers' logs of the same 12 minutes: every click with a click_id,
 * 2 % duplicates, disorder within 10 s, a few malformed lines (the issue's shape).
 */
export function writeServerLogs(dir: string, servers: number, linesPerServer: number): ServerLogs {
  const files: string[] = [];
  const truth: TruthLine[][] = [];
  for (let i = 0; i < servers; i++) {
    const log = generateClickLog({
      seed: 7100 + i,
      lines: linesPerServer,
      ads: 500,
      startMs: START_MS,
      spanMs: SPAN_MS,
      clickIdRatio: 1,
      duplicateRatio: 0.02,
      malformedRatio: 0.001,
      disorderMs: 10_000,
    });
    const file = join(dir, `server-${i}.log`);
    writeFileSync(file, log.text);
    files.push(file);
    truth.push(log.truth);
  }
  return { files, truth };
}

/** A series minute as a reply gives it. */
export interface SeriesPoint {
  minute: string;
  count: number;
  state: string;
  revision: number | null;
}

/** What a scenario gets: its own stack, NATS server, keyspace and folder. */
export interface Scenario {
  node: Node;
  natsUrl: string;
  jsm: JetStreamManager;
  checkpoints: KvCheckpointStore;
  dir: string;
  ask: (endpoint: string, body: unknown) => Promise<Record<string, unknown>>;
  partitions: number;
  topN: number;
}

/** A fresh NATS server, keyspace and AdClick process (default configuration) per scenario. */
export function scenario(title: string, timeoutMs: number, body: (c: Scenario) => Promise<void>) {
  describe(title, () => {
    const nats = useNatsServer();
    const dir = mkdtempSync(join(tmpdir(), "adclick-sources-"));
    let node: Node | undefined;
    afterAll(async () => {
      await node?.stop();
      rmSync(dir, { recursive: true, force: true });
    }, 60_000);
    it("counts every click exactly once, in its own minute", { timeout: timeoutMs }, async () => {
      const { server, nc } = nats();
      const { contactPoint } = inject("cassandra");
      const stack = await startStack(server.url, contactPoint, uniqueName("src"));
      node = stack.node;
      await body({
        node,
        natsUrl: server.url,
        jsm: await jetstreamManager(nc),
        checkpoints: new KvCheckpointStore(
          await new Kvm(jetstream(nc)).open(KV_BUCKETS.shipperCheckpoints),
        ),
        dir,
        ask: async (endpoint, b) =>
          (
            await nc.request(`adclick.query.${endpoint}`, JSON.stringify(b), { timeout: 10_000 })
          ).json<Record<string, unknown>>(),
        partitions: stack.config.partitions,
        topN: stack.config.topK,
      });
    });
  });
}

/** Prints what the aggregators did in a scenario (the figures the issue asks for). */
export async function report(what: string, node: Node): ReturnType<typeof figures> {
  const f = await figures(node);
  console.log(
    `[sources] ${what}: ${f.counted} clicks counted, ${f.amendedClicks} of them amending a closed minute (${f.amendments} revisions), ` +
      `${f.lateClicks} left to the late repair; ${f.holds} holds, the longest ${(f.longestHoldMs / 1000).toFixed(1)} s`,
  );
  return f;
}

/** An AdClick process with every role, and the default configuration. */
export async function startStack(natsUrl: string, contactPoint: string, keyspace: string) {
  const c = loadConfig(
    {},
    {
      natsServers: [natsUrl],
      cassandraContactPoints: [contactPoint],
      cassandraKeyspace: keyspace,
      metricsPort: 0,
    },
  );
  const node = await startNode(c, allRoles(c), () => {});
  return { node, config: c };
}

/** `adclick ship ARGS` as its own process (a log agent on a server). */
export function ship(natsUrl: string, args: string[]): ChildProcessWithoutNullStreams {
  return adclick(["ship", ...args], { ADCLICK_NATS_URL: natsUrl });
}

export function exitCode(p: ChildProcessWithoutNullStreams): Promise<number | null> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve(p.exitCode);
  return new Promise((r) => p.once("exit", (code) => r(code)));
}

/** The running aggregators' status (asked of the supervisor, as `admin actors` does). */
export async function aggregatorStatuses(node: Node): Promise<AggregatorStatus[]> {
  return runningAggregators(await node.worker.status());
}

/**
 * Everything in the streams is aggregated, stored and repaired, every partition is closed
 * past the last minute, and no source still holds minutes open.
 */
export async function converged(node: Node, jsm: JetStreamManager): Promise<boolean> {
  const statuses = await aggregatorStatuses(node);
  if (statuses.length !== node.worker.partitions.length) return false;
  const progressSeq =
    (
      await jsm.streams
        .getMessage(STREAMS.clicks, { last_by_subj: SUBJECTS.progress })
        .catch(() => undefined)
    )?.seq ?? 0;
  for (const s of statuses) {
    const last =
      (
        await jsm.streams
          .getMessage(STREAMS.clicks, { last_by_subj: SUBJECTS.clicks(s.partition) })
          .catch(() => undefined)
      )?.seq ?? 0;
    if (s.lastSeq < Math.max(last, progressSeq)) return false;
    if (s.sources.some((src) => src.standing === "active" || src.standing === "lagging"))
      return false;
  }
  if ((await durablesBehind(jsm)).length > 0) return false;
  const progress = await new AggregateStore(node.cql).progress();
  const lastMinute = START_MS + SPAN_MS - MIN;
  return (
    progress.size === node.worker.partitions.length &&
    [...progress.values()].every((t) => t >= lastMinute + MIN)
  );
}

/** What the aggregators did: clicks amended or left to the late repair, holds. */
export async function figures(node: Node) {
  const s = await aggregatorStatuses(node);
  const sum = (f: (x: AggregatorStatus) => number) => s.reduce((n, x) => n + f(x), 0);
  return {
    counted: sum((x) => x.events),
    amendedClicks: sum((x) => x.amended),
    lateClicks: sum((x) => x.late),
    amendments: sum((x) => x.amendments),
    holds: sum((x) => x.holds),
    longestHoldMs: Math.max(0, ...s.map((x) => x.longestHoldMs)),
  };
}

/** Per-cell counts of the recount: (ad, minute), (ad, minute, country). */
function recountCells(clicks: readonly TruthClick[]) {
  const adMinute = new Map<string, number>();
  const adMinuteCountry = new Map<string, number>();
  for (const c of clicks) {
    const m = Math.floor(c.timestampMs / MIN) * MIN;
    const k = `${c.adId}|${m}`;
    adMinute.set(k, (adMinute.get(k) ?? 0) + 1);
    const kc = `${k}|${c.country}`;
    adMinuteCountry.set(kc, (adMinuteCountry.get(kc) ?? 0) + 1);
  }
  return { adMinute, adMinuteCountry };
}

/** Every stored table equals the recount of the input: partition-minutes, per-ad rows, top N. */
export async function expectStoreEqualsRecount(
  cql: CassandraClient,
  partitions: number,
  topN: number,
  logs: ServerLogs,
): Promise<void> {
  const clicks = uniqueClicks(logs.truth);
  const want = recountCells(clicks);
  const store = new AggregateStore(cql);
  const am = new Map<string, number>();
  const amc = new Map<string, number>();
  for (const pm of await store.partitionMinutes(partitions, ...RANGE)) {
    for (const [ad, n] of pm.adCounts) am.set(`${ad}|${pm.minuteStartMs}`, n);
    for (const [ad, country, n] of pm.dimCounts.country ?? [])
      amc.set(`${ad}|${pm.minuteStartMs}|${country}`, n);
  }
  const perAd = new Map<string, number>();
  for await (const row of await cql.execute(
    "SELECT ad_id, minute, clicks FROM ad_minute_counts",
    [],
    { prepare: true, fetchSize: 5000 },
  ))
    perAd.set(
      `${row.get("ad_id")}|${(row.get("minute") as Date).getTime()}`,
      Number(row.get("clicks")),
    );
  const perAdCountry = new Map<string, number>();
  for await (const row of await cql.execute(
    "SELECT ad_id, dim, value, minute, clicks FROM ad_minute_dim_counts",
    [],
    { prepare: true, fetchSize: 5000 },
  ))
    if (row.get("dim") === "country")
      perAdCountry.set(
        `${row.get("ad_id")}|${(row.get("minute") as Date).getTime()}|${row.get("value")}`,
        Number(row.get("clicks")),
      );
  const topsWant = new Map<string, number>();
  const perMinute = new Map<number, { adId: string; count: number }[]>();
  for (const [k, count] of want.adMinute) {
    const [adId, m] = k.split("|") as [string, string];
    perMinute.set(Number(m), [...(perMinute.get(Number(m)) ?? []), { adId, count }]);
  }
  for (const [m, list] of perMinute) {
    list.sort((a, b) => b.count - a.count || (a.adId < b.adId ? -1 : 1));
    for (const [i, e] of list.slice(0, topN).entries())
      topsWant.set(`${m}#${i + 1}|${e.adId}`, e.count);
  }
  const topsStored = new Map<string, number>();
  for (const [m, t] of await store.topMinutes(...RANGE))
    for (const [i, e] of t.ads.entries()) topsStored.set(`${m}#${i + 1}|${e.adId}`, e.count);
  const diffs = {
    partition_minutes: diffCounts(am, want.adMinute),
    "partition_minutes (country)": diffCounts(amc, want.adMinuteCountry),
    ad_minute_counts: diffCounts(perAd, want.adMinute),
    "ad_minute_dim_counts (country)": diffCounts(perAdCountry, want.adMinuteCountry),
    top_minutes: diffCounts(topsStored, topsWant),
  };
  for (const [name, d] of Object.entries(diffs))
    expect({
      name,
      size: diffSize(d),
      sample: [...d.missing, ...d.extra, ...d.different].slice(0, 5),
    }).toEqual({
      name,
      size: 0,
      sample: [],
    });
}

type Filter = { country?: string; ip?: string; user_id?: string };

function matches(c: TruthClick, f: Filter): boolean {
  return (
    (f.country === undefined || c.country === f.country) &&
    (f.ip === undefined || c.ip === f.ip) &&
    (f.user_id === undefined || c.userId === f.user_id)
  );
}

/** The queries a user would ask, each with the recount's answer. */
export function queriesOf(
  logs: ServerLogs,
): { endpoint: string; body: Record<string, unknown>; want: unknown }[] {
  const clicks = uniqueClicks(logs.truth);
  const byAd = new Map<string, number>();
  for (const c of clicks) byAd.set(c.adId, (byAd.get(c.adId) ?? 0) + 1);
  const ads = [...byAd].sort((a, b) => b[1] - a[1]).map(([a]) => a);
  const sample = clicks[Math.floor(clicks.length / 3)] as TruthClick;
  const ranges: [number, number][] = [
    [START_MS - MIN, START_MS + SPAN_MS],
    [START_MS + 3 * MIN, START_MS + 4 * MIN],
    [START_MS + 6 * MIN, START_MS + 9 * MIN],
  ];
  const filters: Filter[] = [
    {},
    { country: sample.country },
    { ip: sample.ip },
    { user_id: sample.userId },
  ];
  const out: { endpoint: string; body: Record<string, unknown>; want: unknown }[] = [];
  for (const [from, to] of ranges) {
    const inRange = clicks.filter((c) => c.timestampMs >= from && c.timestampMs < to);
    for (const f of filters) {
      const filter = Object.keys(f).length > 0 ? { filter: f } : {};
      for (const ad of [ads[0], ads[1], ads[7], sample.adId] as string[]) {
        out.push({
          endpoint: "count",
          body: { ad_id: ad, from: iso(from), to: iso(to), ...filter },
          want: inRange.filter((c) => c.adId === ad && matches(c, f)).length,
        });
      }
      const sums = new Map<string, number>();
      for (const c of inRange) if (matches(c, f)) sums.set(c.adId, (sums.get(c.adId) ?? 0) + 1);
      out.push({
        endpoint: "top",
        body: { n: 10, from: iso(from), to: iso(to), ...filter },
        want: [...sums]
          .sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))
          .slice(0, 10)
          .map(([ad_id, count]) => ({ ad_id, count })),
      });
    }
  }
  return out;
}

/**
 * Every query answers as the recount does, final, with nothing behind (waiting, with a bound,
 * for the query side's view of the store to catch up), and a filtered count never exceeds the
 * unfiltered count of the same ad and range.
 */
export async function expectQueriesEqualRecount(
  ask: (endpoint: string, body: unknown) => Promise<Record<string, unknown>>,
  logs: ServerLogs,
): Promise<void> {
  let last: unknown[] = [];
  await until(
    "every query answer equal to the recount",
    async () => {
      last = [];
      for (const q of queriesOf(logs)) {
        const r = await ask(q.endpoint, q.body);
        const got = q.endpoint === "count" ? r.count : r.ads;
        if (JSON.stringify(got) !== JSON.stringify(q.want) || r.final !== true)
          last.push({ ...q, got, final: r.final, sources_behind: r.sources_behind });
      }
      return last.length === 0;
    },
    60_000,
    500,
  ).catch((err) => {
    throw new Error(`${(err as Error).message}: ${JSON.stringify(last.slice(0, 5))}`);
  });
  for (const q of queriesOf(logs)) {
    if (q.endpoint !== "count" || !q.body.filter) continue;
    const { filter: _f, ...unfiltered } = q.body;
    const all = (await ask("count", unfiltered)).count as number;
    const filtered = (await ask("count", q.body)).count as number;
    expect(filtered, JSON.stringify(q.body)).toBeLessThanOrEqual(all);
  }
}
