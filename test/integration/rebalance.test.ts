/**
 * Rebalancing: `adclick worker` processes that join a running deployment take their fair
 * share of the partitions, one that leaves in order hands its share over, one that dies loses
 * its leases on expiry — while servers' logs are shipped. A hand-over is a final snapshot by
 * the giver, then the lease, then a restore by the taker: never two aggregators of a
 * partition at once (their snapshots' compare-and-set would fail one of them; no such failure
 * is allowed here) and never a gap (every count equals the recount).
 */

import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, it } from "vitest";
import type { ActorRow } from "../../actors/admin-service.js";
import { AggregateStore } from "../../src/storage/aggregate-store.js";
import { useKeyspace, useNatsServer } from "../harness/servers.js";
import { exited, pipeLines, until } from "../support/chaos.js";
import { adclick } from "../support/cli.js";
import {
  exitCode,
  expectStoreEqualsRecount,
  MIN,
  SPAN_MS,
  START_MS,
  ship,
  writeServerLogs,
} from "../support/sources.js";
import { durablesBehind } from "../support/streams.js";

const PARTITIONS = 16; // the default
const TOP_N = 1000; // the default

describe("rebalancing: workers join, leave in order and die while clicks flow", () => {
  const nats = useNatsServer();
  const ks = useKeyspace();
  const dir = mkdtempSync(join(tmpdir(), "adclick-rebalance-"));
  const log = createWriteStream(join(dir, "processes.log"));
  const procs: ChildProcessWithoutNullStreams[] = [];
  let failed = false;
  afterAll(async () => {
    for (const p of procs) if (p.exitCode === null && p.signalCode === null) p.kill("SIGKILL");
    await Promise.all(procs.map((p) => exited(p)));
    await new Promise<void>((r) => log.end(r));
    if (failed || process.env.ADCLICK_REBALANCE_KEEP === "1")
      console.log(`[rebalance] logs kept in ${dir}`);
    else rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("moves every partition to its fair share without a gap or a double count", {
    timeout: 420_000,
  }, async (ctx) => {
    ctx.onTestFailed(() => {
      failed = true;
    });
    const { server, nc } = nats();
    const { keyspace, contactPoint, client } = ks();
    const jsm = await jetstreamManager(nc);
    const t0 = Date.now();
    const say = (m: string) =>
      console.log(`[rebalance ${((Date.now() - t0) / 1000).toFixed(1)}s] ${m}`);
    const logs = writeServerLogs(dir, 6, 8000);
    const env = {
      ADCLICK_NATS_URL: server.url,
      ADCLICK_CASSANDRA: contactPoint,
      ADCLICK_KEYSPACE: keyspace,
      ADCLICK_METRICS_PORT: "0",
    };
    const workers = new Map<string, ChildProcessWithoutNullStreams>();
    const startWorker = (id: string) => {
      const p = adclick(["worker"], { ...env, ADCLICK_WORKER_ID: id });
      pipeLines(p, `[${id}]`, log);
      procs.push(p);
      workers.set(id, p);
      return p;
    };
    /** Which worker aggregates which partitions now (`adclick admin actors` of every worker). */
    const aggregating = async (expectWorkers: number): Promise<Map<string, number[]>> => {
      const by = new Map<string, number[]>();
      const replies = await nc.requestMany("adclick.admin.actors", "{}", {
        maxWait: 2000,
        maxMessages: expectWorkers,
      });
      for await (const m of replies) {
        if (m.data.length === 0) continue;
        for (const r of m.json<ActorRow[]>()) {
          if (r.kind !== "aggregator" || r.status?.lastSeq === undefined) continue;
          by.set(r.worker, [...(by.get(r.worker) ?? []), r.partition as number]);
        }
      }
      return by;
    };
    /** Waits until the workers aggregate exactly these shares; returns how long it took. */
    const balanced = async (what: string, want: Record<string, number>, fromMs: number) => {
      let last = "";
      await until(
        what,
        async () => {
          const by = await aggregating(Object.keys(want).length);
          const got: Record<string, number> = {};
          const seen = new Set<number>();
          // In worker order: the replies come in any order.
          for (const [w, ps] of [...by].sort(([a], [b]) => (a < b ? -1 : 1))) {
            got[w] = ps.length;
            for (const p of ps) seen.add(p);
          }
          last = JSON.stringify(got);
          return last === JSON.stringify(want) && seen.size === PARTITIONS;
        },
        120_000,
        250,
      ).catch((e: unknown) => {
        throw new Error(`${String(e)}; last seen ${last}`);
      });
      const ms = Date.now() - fromMs;
      say(`${what}: balanced ${last} after ${(ms / 1000).toFixed(1)} s`);
      return ms;
    };
    /** Starts a worker and returns when it answers admin commands (it is up and announced). */
    const joinWorker = async (id: string) => {
      const started = Date.now();
      startWorker(id);
      await until(
        `${id} to answer`,
        async () => {
          const replies = await nc.requestMany("adclick.admin.status", "{}", { maxWait: 1000 });
          for await (const m of replies)
            if (m.data.length > 0 && m.json<{ worker: string }>().worker === id) return true;
          return false;
        },
        120_000,
        100,
      );
      say(`${id} up after ${((Date.now() - started) / 1000).toFixed(1)} s`);
      return Date.now();
    };
    const shipFile = async (i: number) => {
      const p = ship(server.url, ["--source", `server-${i}`, logs.files[i] as string]);
      pipeLines(p, `[ship ${i}]`, log);
      expect(await exitCode(p)).toBe(0);
    };

    await balanced("w1 alone", { w1: 16 }, await joinWorker("w1"));
    await shipFile(0);

    const shipping1 = shipFile(1);
    const join2 = await balanced("w2 joined", { w1: 8, w2: 8 }, await joinWorker("w2"));
    await shipping1;

    const shipping2 = shipFile(2);
    const join3 = await balanced("w3 joined", { w1: 6, w2: 5, w3: 5 }, await joinWorker("w3"));
    await shipping2;

    let at = Date.now();
    const w1 = workers.get("w1") as ChildProcessWithoutNullStreams;
    w1.kill("SIGTERM");
    const shipping3 = shipFile(3);
    const leave = await balanced("w1 left in order", { w2: 8, w3: 8 }, at);
    expect(await exited(w1)).toBe(0);
    await shipping3;

    at = Date.now();
    (workers.get("w2") as ChildProcessWithoutNullStreams).kill("SIGKILL");
    const shipping4 = shipFile(4);
    const death = await balanced("w2 died (SIGKILL)", { w3: 16 }, at);
    await shipping4;
    await shipFile(5);

    // Everything stored: the writers drained, every partition closed past the last minute.
    const store = new AggregateStore(client);
    const lastMinute = START_MS + SPAN_MS - MIN;
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
    say(
      `converged; time to balance (from the joiner answering, the leave, the kill): join ${(join2 / 1000).toFixed(1)} s, join ${(join3 / 1000).toFixed(1)} s, ` +
        `orderly leave ${(leave / 1000).toFixed(1)} s, death ${(death / 1000).toFixed(1)} s`,
    );
    await expectStoreEqualsRecount(client, PARTITIONS, TOP_N, logs);

    // No partition ever ran on two workers at once: the loser of a snapshot's
    // compare-and-set would have failed, and a lease renewal would have found it taken.
    await new Promise<void>((r) => log.write("", () => r()));
    const text = readFileSync(join(dir, "processes.log"), "utf8");
    expect(text.match(/saved by someone else|taken over/g) ?? []).toEqual([]);
  });
});
