import { describe, expect, it } from "vitest";
import { formatStatus } from "../../app/cli/admin.js";
import { mergeSourceSummaries, summarizeSources } from "../../src/aggregate/source-metrics.js";
import type { ClickEvent } from "../../src/model.js";
import { coversStored, planRepairs } from "../../src/recalc/late-repair.js";
import { encodeBatch } from "../../src/wire/batch-codec.js";

const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9, 10);

describe("sources over the partitions of a process", () => {
  it("takes each source's slowest progress, worst standing, largest lag and newest word", () => {
    const s = summarizeSources([
      {
        maxProgressMs: T0 + 5 * MIN,
        sources: [
          { source: "a", progressMs: T0 + 5 * MIN, standing: "active", lastSeenMs: 10 },
          { source: "b", progressMs: T0 + 2 * MIN, standing: "lagging", lastSeenMs: 11 },
        ],
      },
      {
        maxProgressMs: T0 + 4 * MIN,
        sources: [
          { source: "a", progressMs: T0 + 3 * MIN, standing: "caught-up", lastSeenMs: 20 },
          { source: "b", progressMs: T0 + 4 * MIN, standing: "active", lastSeenMs: 5 },
          { source: "c", progressMs: null, standing: "idle", lastSeenMs: 1 },
        ],
      },
    ]);
    expect(s).toEqual([
      { source: "c", progressMs: null, standing: "idle", lagMs: 0, lastSeenMs: 1 },
      {
        source: "b",
        progressMs: T0 + 2 * MIN,
        standing: "lagging",
        lagMs: 3 * MIN,
        lastSeenMs: 11,
      },
      { source: "a", progressMs: T0 + 3 * MIN, standing: "active", lagMs: MIN, lastSeenMs: 20 },
    ]);
  });

  it("merges several workers' summaries the same way", () => {
    const merged = mergeSourceSummaries([
      [{ source: "a", progressMs: T0, standing: "active", lagMs: 5, lastSeenMs: 1 }],
      [{ source: "a", progressMs: T0 - MIN, standing: "ended", lagMs: 2, lastSeenMs: 9 }],
    ]);
    expect(merged).toEqual([
      { source: "a", progressMs: T0 - MIN, standing: "active", lagMs: 5, lastSeenMs: 9 },
    ]);
  });

  it("are listed by `adclick admin status` with progress, standing and lag", () => {
    const lines = formatStatus([
      {
        worker: "host/1",
        supervisor: "running",
        actors: 22,
        running: 22,
        restarts: 0,
        uptimeSeconds: 60,
        rssBytes: 300 * 1_048_576,
        sources: [
          {
            source: "web-1:/a.log",
            progressMs: T0,
            standing: "lagging",
            lagMs: 125_000,
            lastSeenMs: 0,
          },
        ],
      },
    ]);
    expect(lines[0]).toBe(
      "worker host/1: running, 22/22 actors running, 0 restarts, up 60 s, 300 MB",
    );
    expect(lines.at(-1)).toMatch(/web-1:\/a\.log\s+lagging\s+2024-07-09T10:00:00Z\s+125 s/);
  });
});

describe("late repairs", () => {
  const ev = (ad: string, t: number, id: string): ClickEvent => ({
    adId: ad,
    timestampMs: t,
    userId: "u",
    ip: "10.0.0.1",
    country: "USA",
    eventId: id,
  });

  it("recount only minutes of clicks past the amendment horizon, and wait for the newest", () => {
    const plan = planRepairs([
      {
        subject: "late.clicks.3",
        reason: "horizon",
        clicksSeq: 40,
        payload: encodeBatch([ev("a", T0 + 5, "1"), ev("b", T0 + MIN + 1, "2")]),
      },
      {
        subject: "late.clicks.1",
        reason: "horizon",
        clicksSeq: 77,
        payload: encodeBatch([ev("c", T0 + 9, "3")]),
      },
      {
        subject: "late.clicks.2",
        reason: "drop",
        clicksSeq: 90,
        payload: encodeBatch([ev("d", T0, "4")]),
      },
      {
        subject: "late.clicks.4",
        reason: undefined,
        clicksSeq: 95,
        payload: encodeBatch([ev("e", T0, "5")]),
      },
      {
        subject: "late.clicks.5",
        reason: "horizon",
        clicksSeq: 60,
        payload: new Uint8Array([0xc1]),
      },
    ]);
    expect([...plan.minutes].map(([p, ms]) => [p, [...ms]])).toEqual([
      [3, [T0, T0 + MIN]],
      [1, [T0]],
    ]);
    expect(plan.maxClicksSeq).toBe(77);
    expect(plan.clicks).toBe(3);
  });

  it.each([
    { stored: undefined, ok: true, why: "nothing stored yet" },
    { stored: [["a", 2]], ok: true, why: "the recount has more" },
    {
      stored: [
        ["a", 3],
        ["b", 1],
      ],
      ok: true,
      why: "equal",
    },
    { stored: [["a", 4]], ok: false, why: "the recount is below a stored count" },
    { stored: [["z", 1]], ok: false, why: "an ad the recount lacks" },
  ] as { stored: [string, number][] | undefined; ok: boolean; why: string }[])(
    "apply a recount only when it covers the stored counts: $why",
    ({ stored, ok }) => {
      const recount = {
        partition: 0,
        minuteStartMs: T0,
        version: 1,
        adCounts: [
          ["a", 3],
          ["b", 1],
        ] as [string, number][],
        dimCounts: {},
        topK: [],
        eventCount: 4,
      };
      expect(coversStored(recount, stored ? { adCounts: stored } : undefined)).toBe(ok);
    },
  );
});
