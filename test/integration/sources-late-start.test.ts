/**
 * Every click billed when one log server's shipper starts five minutes after the others, with
 * the default configuration: the minutes of the first three are final without it; its clicks
 * then amend those minutes (new revisions), and every stored count, dimension count and top N,
 * and every query answer, equals an independent recount of the four logs.
 *
 * Knobs: ADCLICK_SOURCES_LINES (lines per server), ADCLICK_SOURCES_DELAY_SECONDS (default 300).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, inject, it } from "vitest";
import type { Node } from "../../supervisor/node.js";
import { uniqueName, useNatsServer } from "../harness/servers.js";
import { sleep, until } from "../support/chaos.js";
import {
  converged,
  exitCode,
  expectQueriesEqualRecount,
  expectStoreEqualsRecount,
  figures,
  iso,
  MIN,
  SPAN_MS,
  START_MS,
  ship,
  startStack,
  writeServerLogs,
} from "../support/sources.js";

interface SeriesPoint {
  minute: string;
  count: number;
  state: string;
  revision: number | null;
}

const LINES = Number(process.env.ADCLICK_SOURCES_LINES ?? 15_000);
const DELAY_MS = Number(process.env.ADCLICK_SOURCES_DELAY_SECONDS ?? 300) * 1000;

describe("(d) one server's shipper started five minutes after the others", () => {
  const nats = useNatsServer();
  const dir = mkdtempSync(join(tmpdir(), "adclick-late-start-"));
  let node: Node | undefined;
  afterAll(async () => {
    await node?.stop();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("counts every click exactly once, in its own minute", {
    timeout: DELAY_MS + 300_000,
  }, async () => {
    const { server, nc } = nats();
    const { contactPoint } = inject("cassandra");
    const stack = await startStack(server.url, contactPoint, uniqueName("late"));
    node = stack.node;
    const jsm = await jetstreamManager(nc);
    const ask = async (endpoint: string, b: unknown) =>
      (await nc.request(`adclick.query.${endpoint}`, JSON.stringify(b), { timeout: 10_000 })).json<
        Record<string, unknown>
      >();
    const logs = writeServerLogs(dir, 4, LINES);
    const startedAt = Date.now();
    const first = logs.files
      .slice(0, 3)
      .map((f, i) => ship(server.url, ["--source", `web-${i}`, f]));
    for (const p of first) expect(await exitCode(p)).toBe(0);
    await until(
      "the first three servers' minutes to converge",
      () => converged(node as Node, jsm),
      180_000,
      500,
    );
    const range = { from: iso(START_MS - MIN), to: iso(START_MS + SPAN_MS) };
    const before = await ask("top", { n: 5, ...range });
    expect(before).toMatchObject({ final: true, sources_behind: [] });
    const some = { ad_id: "ad000000", from: iso(START_MS), to: iso(START_MS + SPAN_MS) };
    const finalBefore = (await ask("series", some)).series as SeriesPoint[];

    await sleep(Math.max(0, startedAt + DELAY_MS - Date.now()));
    const late = ship(server.url, ["--source", "web-3", logs.files[3] as string]);
    expect(await exitCode(late)).toBe(0);
    await until("the pipeline to converge", () => converged(node as Node, jsm), 180_000, 500);
    const f = figures(node);
    console.log(
      `[sources] one shipper five minutes late: ${f.counted} clicks counted, ${f.amendedClicks} of them amending a final minute (${f.amendments} revisions), ${f.lateClicks} left to the late repair`,
    );
    expect(f.amendedClicks).toBeGreaterThan(0);
    await expectStoreEqualsRecount(node.cql, stack.config.partitions, stack.config.topK, logs);
    await expectQueriesEqualRecount(ask, logs);
    // Every minute of the late server's log was final without it, and is amended now.
    const amended = (await ask("series", some)).series as SeriesPoint[];
    for (const [i, m] of amended.entries()) {
      const was = finalBefore[i] as SeriesPoint;
      expect(m.state).toBe("amended");
      expect(m.revision as number).toBeGreaterThan(was.revision as number);
      expect(m.count).toBeGreaterThan(was.count);
    }
  });
});
