/**
 * Every click billed when log servers are out of step, with the default configuration: four
 * application servers' logs of the same 12 minutes, shipped (a) by one command, (b) by four
 * shippers at once, (c) with one server's log agent frozen (SIGSTOP) for two minutes and then
 * resumed. Every stored count, dimension count and top N, and every query answer (unfiltered,
 * by country, by ip, by user_id), must equal an independent recount of the input.
 *
 * Knobs: ADCLICK_SOURCES_LINES (lines per server, default 15 000), ADCLICK_SOURCES_FREEZE_SECONDS
 * (default 120).
 */
import { appendFileSync, readFileSync, writeFileSync } from "node:fs";
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
const FREEZE_MS = Number(process.env.ADCLICK_SOURCES_FREEZE_SECONDS ?? 120) * 1000;

scenario("(a) four servers' logs shipped by one command", 240_000, async (c) => {
  const logs = writeServerLogs(c.dir, 4, LINES);
  const p = ship(c.natsUrl, ["--source", "web", ...logs.files]);
  expect(await exitCode(p)).toBe(0);
  await until("the pipeline to converge", () => converged(c.node, c.jsm), 180_000, 500);
  const f = await report("one command", c.node);
  // Announced up front and shipped in turns by event time: no click of any file is late.
  expect(f.amendedClicks).toBe(0);
  expect(f.lateClicks).toBe(0);
  await expectStoreEqualsRecount(c.node.cql, c.partitions, c.topN, logs);
  await expectQueriesEqualRecount(c.ask, logs);
  const whole = await c.ask("count", {
    ad_id: "ad000000",
    from: iso(START_MS - MIN),
    to: iso(START_MS + SPAN_MS),
  });
  expect(whole).toMatchObject({ final: true, revision: 1, sources_behind: [] });
});

scenario("(b) four servers' logs shipped by four shippers at once", 240_000, async (c) => {
  const logs = writeServerLogs(c.dir, 4, LINES);
  const ps = logs.files.map((f, i) => ship(c.natsUrl, ["--source", `web-${i}`, f]));
  for (const p of ps) expect(await exitCode(p)).toBe(0);
  await until("the pipeline to converge", () => converged(c.node, c.jsm), 180_000, 500);
  await report("four shippers at once", c.node);
  await expectStoreEqualsRecount(c.node.cql, c.partitions, c.topN, logs);
  await expectQueriesEqualRecount(c.ask, logs);
});

scenario(
  "(c) one server's log agent frozen (SIGSTOP) for two minutes, then resumed",
  FREEZE_MS + 300_000,
  async (c) => {
    const logs = writeServerLogs(c.dir, 4, LINES);
    // Server 3 writes the first half of its log now, the rest while its agent is frozen.
    const file3 = logs.files[3] as string;
    const full = readFileSync(file3);
    const half = full.indexOf(0x0a, Math.floor(full.length / 2)) + 1;
    writeFileSync(file3, full.subarray(0, half));
    const agent = ship(c.natsUrl, ["--follow", "--source", "web-3", file3]);
    const offset = async () => (await c.checkpoints.load("web-3", file3))?.checkpoint.offset ?? 0;
    await until(
      "web-3's agent to ship what its log holds",
      async () => (await offset()) === half,
      60_000,
      50,
    );
    agent.kill("SIGSTOP");
    const frozenAt = Date.now();
    appendFileSync(file3, full.subarray(half));

    const others = ship(c.natsUrl, ["--source", "web", ...logs.files.slice(0, 3)]);
    expect(await exitCode(others)).toBe(0);
    // Silent past the idle timeout, the frozen agent holds nothing: the minutes close and are
    // stored without its second half.
    const range = { from: iso(START_MS - MIN), to: iso(START_MS + SPAN_MS) };
    let during: Record<string, unknown> = {};
    await until(
      "the other servers' minutes final",
      async () => {
        during = await c.ask("top", { n: 5, ...range });
        return during.final === true;
      },
      120_000,
      500,
    ).catch((err) => {
      throw new Error(`${(err as Error).message}; last answer ${JSON.stringify(during)}`);
    });
    expect(Date.now() - frozenAt).toBeLessThan(FREEZE_MS);
    // The minutes of web-3's unshipped second half, as final without it.
    const tail = { ad_id: "ad000000", from: iso(START_MS + 7 * MIN), to: iso(START_MS + 11 * MIN) };
    const frozen = (await c.ask("series", tail)).series as SeriesPoint[];
    expect(frozen.map((m) => m.state).every((s) => s === "final" || s === "amended")).toBe(true);
    await sleep(Math.max(0, frozenAt + FREEZE_MS - Date.now()));
    agent.kill("SIGCONT");
    await until(
      "web-3's agent to catch up",
      async () => (await offset()) === full.length,
      120_000,
      100,
    );
    agent.kill("SIGINT");
    expect(await exitCode(agent)).toBe(0);
    await until("the pipeline to converge", () => converged(c.node, c.jsm), 180_000, 500);
    const f = await report("one agent frozen for two minutes", c.node);
    // The frozen agent's second half came after its minutes were final: amendments.
    expect(f.amendedClicks).toBeGreaterThan(0);
    await expectStoreEqualsRecount(c.node.cql, c.partitions, c.topN, logs);
    await expectQueriesEqualRecount(c.ask, logs);
    // Each of those minutes is amended: a newer revision, with web-3's clicks in it.
    const resumed = (await c.ask("series", tail)).series as SeriesPoint[];
    for (const [i, m] of resumed.entries()) {
      const was = frozen[i] as SeriesPoint;
      expect(m.state).toBe("amended");
      expect(m.revision as number).toBeGreaterThan(was.revision as number);
      expect(m.count).toBeGreaterThan(was.count);
    }
  },
);
