/**
 * Every click billed when one log server's shipper starts five minutes after the others, with
 * the default configuration: the minutes of the first three are final without it; its clicks
 * then amend those minutes (new revisions), and every stored count, dimension count and top N,
 * and every query answer, equals an independent recount of the four logs.
 *
 * Knobs: ADCLICK_SOURCES_LINES (lines per server), ADCLICK_SOURCES_DELAY_SECONDS (default 300).
 */
import { expect } from "vitest";
import { sleep, until } from "../support/chaos.js";
import {
  converged,
  exitCode,
  expectQueriesEqualRecount,
  expectStoreEqualsRecount,
  iso,
  MIN,
  report,
  type SeriesPoint,
  SPAN_MS,
  START_MS,
  scenario,
  ship,
  writeServerLogs,
} from "../support/sources.js";

const LINES = Number(process.env.ADCLICK_SOURCES_LINES ?? 15_000);
const DELAY_MS = Number(process.env.ADCLICK_SOURCES_DELAY_SECONDS ?? 300) * 1000;

scenario(
  "(d) one server's shipper started five minutes after the others",
  DELAY_MS + 300_000,
  async (c) => {
    const logs = writeServerLogs(c.dir, 4, LINES);
    const startedAt = Date.now();
    const first = logs.files
      .slice(0, 3)
      .map((f, i) => ship(c.natsUrl, ["--source", `web-${i}`, f]));
    for (const p of first) expect(await exitCode(p)).toBe(0);
    await until(
      "the first three servers' minutes to converge",
      () => converged(c.node, c.jsm),
      180_000,
      500,
    );
    const range = { from: iso(START_MS - MIN), to: iso(START_MS + SPAN_MS) };
    expect(await c.ask("top", { n: 5, ...range })).toMatchObject({
      final: true,
      sources_behind: [],
    });
    const some = { ad_id: "ad000000", from: iso(START_MS), to: iso(START_MS + SPAN_MS) };
    const finalBefore = (await c.ask("series", some)).series as SeriesPoint[];

    await sleep(Math.max(0, startedAt + DELAY_MS - Date.now()));
    const late = ship(c.natsUrl, ["--source", "web-3", logs.files[3] as string]);
    expect(await exitCode(late)).toBe(0);
    await until("the pipeline to converge", () => converged(c.node, c.jsm), 180_000, 500);
    const f = await report("one shipper five minutes late", c.node);
    expect(f.amendedClicks).toBeGreaterThan(0);
    await expectStoreEqualsRecount(c.node.cql, c.partitions, c.topN, logs);
    await expectQueriesEqualRecount(c.ask, logs);
    // Every minute of the late server's log was final without it, and is amended now.
    const amended = (await c.ask("series", some)).series as SeriesPoint[];
    for (const [i, m] of amended.entries()) {
      const was = finalBefore[i] as SeriesPoint;
      expect(m.state).toBe("amended");
      expect(m.revision as number).toBeGreaterThan(was.revision as number);
      expect(m.count).toBeGreaterThan(was.count);
    }
  },
);
