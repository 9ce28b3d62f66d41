import { describe, expect, it } from "vitest";
import { AdclickError, ConfigError } from "../../src/errors.js";
import type { ClickEvent, Dimension } from "../../src/model.js";
import {
  MemoryRecalcProgressStore,
  nextRecalcVersion,
  RECALC_VERSION_BASE,
  recalcVersionFloor,
} from "../../src/recalc/progress.js";
import { parseInstant, parseRange } from "../../src/recalc/range.js";
import { formatReconcileReport, reportOf, scheduledWindow } from "../../src/recalc/reconcile.js";
import {
  CAUSE_TEXT,
  diffAggregates,
  diffPartitionMinute,
  diffTops,
  indexLateEvents,
  type MismatchCause,
  recountMinute,
  recountPartition,
  recountRange,
  staleCells,
} from "../../src/recalc/recount.js";
import {
  type AggregateEraser,
  type AggregateTarget,
  checkRange,
  type RawMinuteSource,
  replayRange,
} from "../../src/recalc/replay.js";
import type { StoredPartitionMinute } from "../../src/storage/aggregate-store.js";
import {
  DEFAULT_RAW_RETENTION_DAYS,
  rawRetentionDaysFromEnv,
  rawRetentionSeconds,
} from "../../src/storage/raw-retention.js";
import type { ClosedMinute } from "../../src/windows/partition-aggregator.js";
import type { TopEntry } from "../../src/windows/topk.js";

const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9);
const DIMS: readonly Dimension[] = ["country"];
const O = { dimensions: DIMS, topK: 3 };

let seq = 0;
function ev(adId: string, timestampMs: number, over: Partial<ClickEvent> = {}): ClickEvent {
  seq++;
  return {
    adId,
    timestampMs,
    userId: `user-${seq % 3}`,
    ip: "10.0.0.1",
    country: "USA",
    eventId: `e${seq}`,
    ...over,
  };
}

/** A stored partition-minute as the store returns it. */
function stored(
  partition: number,
  minuteMs: number,
  adCounts: [string, number][],
  country: [string, string, number][] = adCounts.map(([a, n]) => [a, "USA", n]),
): StoredPartitionMinute {
  return {
    partition,
    minuteStartMs: minuteMs,
    version: 1,
    eventCount: adCounts.reduce((s, [, n]) => s + n, 0),
    adCounts,
    dimCounts: { country },
  };
}

/** A closed minute with the given counts (everything in country USA). */
function closed(partition: number, minuteMs: number, adCounts: [string, number][]): ClosedMinute {
  const events = adCounts.flatMap(([adId, n]) =>
    Array.from({ length: n }, (_, i) => ev(adId, minuteMs + i)),
  );
  return recountMinute(partition, minuteMs, events, O) as ClosedMinute;
}

describe("recount: the live operator, every unique event in its own minute", () => {
  it("counts per ad, per ad × country and ranks the top k of each minute", () => {
    const events = [
      ev("a", T0 + 1, { country: "KOR" }),
      ev("a", T0 + 2),
      ev("b", T0 + 3),
      ev("c", T0 + MIN + 5),
    ];
    const out = recountPartition(7, [events], O);
    expect(out.map((m) => m.minuteStartMs)).toEqual([T0, T0 + MIN]);
    expect(out[0]).toMatchObject({
      partition: 7,
      eventCount: 3,
      adCounts: [
        ["a", 2],
        ["b", 1],
      ],
      dimCounts: {
        country: [
          ["a", "KOR", 1],
          ["a", "USA", 1],
          ["b", "USA", 1],
        ],
      },
      topK: [
        { adId: "a", count: 2 },
        { adId: "b", count: 1 },
      ],
    });
    expect(out[1]?.adCounts).toEqual([["c", 1]]);
  });

  it.each([
    ["far out of order (hours apart, newest first)", [2 * 60, 0, 1, 2 * 60 + 1]],
    ["in order", [0, 1, 2 * 60, 2 * 60 + 1]],
    ["split over many chunks", [0, 2 * 60, 1, 2 * 60 + 1]],
  ])("never treats an event as late: %s", (_name, minutes) => {
    const events = minutes.map((m) => ev("a", T0 + m * MIN));
    const chunks = events.map((e) => [e]);
    const out = recountPartition(0, chunks, O);
    expect(out.map((m) => [m.minuteStartMs, m.eventCount])).toEqual(
      [...minutes].sort((x, y) => x - y).map((m) => [T0 + m * MIN, 1]),
    );
  });

  it("counts an event id once per minute (a duplicate in another block)", () => {
    const e = ev("a", T0);
    expect(recountMinute(0, T0, [e, { ...e }, ev("a", T0 + 5)], O)?.adCounts).toEqual([["a", 2]]);
  });

  it("returns nothing for a minute without events", () => {
    expect(recountMinute(0, T0, [], O)).toBeUndefined();
  });

  it("merges the partitions' top lists into the global top N of each minute", () => {
    const r = recountRange(
      [
        { partition: 0, events: [ev("a", T0), ev("a", T0 + 1), ev("b", T0 + 2)] },
        { partition: 1, events: [ev("c", T0), ev("c", T0 + 1), ev("c", T0 + 2), ev("d", T0)] },
        { partition: 1, events: [ev("c", T0 + MIN)] },
      ],
      { ...O, topN: 2 },
    );
    expect(r.minutes.map((m) => [m.minuteStartMs, m.partition])).toEqual([
      [T0, 0],
      [T0, 1],
      [T0 + MIN, 1],
    ]);
    expect(r.tops.get(T0)).toEqual([
      { adId: "c", count: 3 },
      { adId: "a", count: 2 },
    ]);
    expect(r.tops.get(T0 + MIN)).toEqual([{ adId: "c", count: 1 }]);
  });
});

describe("diff: recount vs stored, cell by cell, with the likely cause", () => {
  type Case = {
    name: string;
    recount: [string, number][] | null;
    stored: [string, number][] | null;
    late?: ClickEvent[];
    closedThrough?: Map<number, number>;
    want: { adId: string; stored: number | null; recount: number | null; cause: MismatchCause }[];
  };
  const cases: Case[] = [
    { name: "equal minutes", recount: [["a", 3]], stored: [["a", 3]], want: [] },
    {
      name: "stored above the recount",
      recount: [["a", 3]],
      stored: [["a", 5]],
      want: [{ adId: "a", stored: 5, recount: 3, cause: "overcount" }],
    },
    {
      name: "an ad the raw data lacks",
      recount: [["a", 3]],
      stored: [
        ["a", 3],
        ["z", 2],
      ],
      want: [{ adId: "z", stored: 2, recount: null, cause: "overcount" }],
    },
    {
      name: "an ad missing from the stored minute",
      recount: [
        ["a", 3],
        ["b", 1],
      ],
      stored: [["a", 3]],
      want: [{ adId: "b", stored: null, recount: 1, cause: "missing_in_aggregates" }],
    },
    {
      name: "stored below the recount, no evidence",
      recount: [["a", 3]],
      stored: [["a", 1]],
      want: [{ adId: "a", stored: 1, recount: 3, cause: "undercount" }],
    },
    {
      name: "stored below the recount by events the late policy dropped",
      recount: [["a", 3]],
      stored: [["a", 1]],
      late: [ev("a", T0 + 1, { eventId: "L1" }), ev("a", T0 + 2, { eventId: "L2" })],
      want: [{ adId: "a", stored: 1, recount: 3, cause: "late_dropped" }],
    },
    {
      name: "late evidence counts an id once",
      recount: [["a", 3]],
      stored: [["a", 1]],
      late: [ev("a", T0 + 1, { eventId: "L1" }), ev("a", T0 + 1, { eventId: "L1" })],
      want: [{ adId: "a", stored: 1, recount: 3, cause: "undercount" }],
    },
    {
      name: "late evidence of another minute does not count",
      recount: [["a", 3]],
      stored: [["a", 2]],
      late: [ev("a", T0 + MIN, { eventId: "L1" })],
      want: [{ adId: "a", stored: 2, recount: 3, cause: "undercount" }],
    },
    {
      name: "an ad only late events made (absent from the stored minute)",
      recount: [
        ["a", 3],
        ["b", 1],
      ],
      stored: [["a", 3]],
      late: [ev("b", T0 + 7, { eventId: "L1" })],
      want: [{ adId: "b", stored: null, recount: 1, cause: "late_dropped" }],
    },
    {
      name: "a minute never stored, closed",
      recount: [["a", 3]],
      stored: null,
      closedThrough: new Map([[0, T0 + 5 * MIN]]),
      want: [{ adId: "a", stored: null, recount: 3, cause: "missing_minute" }],
    },
    {
      name: "a minute not closed yet by the live pipeline",
      recount: [["a", 3]],
      stored: null,
      closedThrough: new Map([[0, T0]]),
      want: [{ adId: "a", stored: null, recount: 3, cause: "not_closed" }],
    },
    {
      name: "a partition that has closed nothing",
      recount: [["a", 3]],
      stored: null,
      closedThrough: new Map(),
      want: [{ adId: "a", stored: null, recount: 3, cause: "not_closed" }],
    },
    {
      name: "a stored minute without any raw data",
      recount: null,
      stored: [["a", 4]],
      want: [{ adId: "a", stored: 4, recount: null, cause: "no_raw_data" }],
    },
    {
      name: "a stored 0 equals no raw events",
      recount: [["a", 1]],
      stored: [
        ["a", 1],
        ["b", 0],
      ],
      want: [],
    },
  ];

  it.each(cases)("$name", (c) => {
    const d = diffPartitionMinute(
      0,
      T0,
      c.recount ? closed(0, T0, c.recount) : undefined,
      c.stored ? stored(0, T0, c.stored) : undefined,
      {
        dimensions: DIMS,
        ...(c.late ? { late: indexLateEvents(c.late, DIMS) } : {}),
        ...(c.closedThrough ? { closedThrough: c.closedThrough } : {}),
      },
    );
    // Every ad mismatch comes with the same mismatch on its (only) country cell.
    const ads = d.mismatches.filter((m) => m.dim === undefined);
    expect(
      ads.map(({ adId, stored, recount, cause }) => ({ adId, stored, recount, cause })),
    ).toEqual(c.want);
    const dims = d.mismatches.filter((m) => m.dim === "country");
    expect(dims.map((m) => [m.adId, m.value, m.stored, m.recount, m.cause])).toEqual(
      c.want.map((w) => [w.adId, "USA", w.stored, w.recount, w.cause]),
    );
    for (const m of d.mismatches) expect(m.likelyCause).toBe(CAUSE_TEXT[m.cause]);
  });

  it("compares dimension cells on their own (a moved country, same ad total)", () => {
    const r = recountMinute(
      2,
      T0,
      [ev("a", T0, { country: "KOR" }), ev("a", T0 + 1, { country: "USA" })],
      O,
    );
    const s = stored(2, T0, [["a", 2]], [["a", "USA", 2]]);
    const d = diffPartitionMinute(2, T0, r, s, { dimensions: DIMS });
    expect(d.cellsCompared).toBe(3); // a; a×KOR; a×USA
    expect(d.mismatches.map((m) => [m.dim, m.value, m.stored, m.recount, m.cause])).toEqual([
      ["country", "KOR", null, 1, "missing_in_aggregates"],
      ["country", "USA", 2, 1, "overcount"],
    ]);
  });

  it("ignores dimensions that are not configured", () => {
    const r = recountMinute(0, T0, [ev("a", T0)], O);
    const s = {
      ...stored(0, T0, [["a", 1]]),
      dimCounts: { country: [["a", "USA", 1]], ip: [["a", "1.1.1.1", 9]] },
    } as StoredPartitionMinute;
    expect(diffPartitionMinute(0, T0, r, s, { dimensions: DIMS }).mismatches).toEqual([]);
  });

  it("diffs a range: pairs partition-minutes, counts by cause, sorts the report", () => {
    const d = diffAggregates(
      [closed(1, T0 + MIN, [["b", 2]]), closed(0, T0, [["a", 1]])],
      [stored(0, T0, [["a", 1]]), stored(1, T0 + MIN, [["b", 3]]), stored(0, T0 + MIN, [["x", 1]])],
      { dimensions: [] },
    );
    expect(d.mismatches.map((m) => [m.minuteMs, m.partition, m.adId, m.cause])).toEqual([
      [T0 + MIN, 0, "x", "no_raw_data"],
      [T0 + MIN, 1, "b", "overcount"],
    ]);
    expect(d.byCause).toMatchObject({ overcount: 1, no_raw_data: 1, late_dropped: 0 });
    expect(d.cellsCompared).toBe(3);
  });

  const top = (...e: [string, number][]): TopEntry[] => e.map(([adId, count]) => ({ adId, count }));
  it.each([
    ["equal", top(["a", 2]), top(["a", 2]), false],
    ["a different count", top(["a", 2]), top(["a", 3]), true],
    ["a different order", top(["a", 2], ["b", 2]), top(["b", 2], ["a", 2]), true],
    ["missing in the store", top(["a", 2]), undefined, true],
    ["stored without raw data", undefined, top(["a", 2]), true],
  ] as const)("top N per minute: %s", (_n, recount, storedTop, differs) => {
    const r = new Map(recount ? [[T0, recount]] : []);
    const s = new Map(storedTop ? [[T0, { ads: storedTop }]] : []);
    expect(diffTops(r, s).length).toBe(differs ? 1 : 0);
  });
});

describe("overwrite: what must go besides writing the recount", () => {
  it.each([
    ["nothing stored", [["a", 1]], null, { ads: [], dims: [], partitionRow: false }],
    ["same ads", [["a", 1]], [["a", 5]], { ads: [], dims: [], partitionRow: false }],
    [
      "a phantom ad",
      [["a", 1]],
      [
        ["a", 1],
        ["z", 1],
      ],
      { ads: ["z"], dims: [{ dim: "country", adId: "z", value: "USA" }], partitionRow: false },
    ],
    [
      "no raw data left",
      null,
      [["z", 1]],
      { ads: ["z"], dims: [{ dim: "country", adId: "z", value: "USA" }], partitionRow: true },
    ],
  ] as const)("%s", (_n, recount, st, want) => {
    expect(
      staleCells(
        recount
          ? closed(
              0,
              T0,
              recount.map(([a, n]) => [a, n]),
            )
          : undefined,
        st
          ? stored(
              0,
              T0,
              st.map(([a, n]) => [a, n]),
            )
          : undefined,
        DIMS,
      ),
    ).toEqual(want);
  });
});

describe("recalculation versions", () => {
  it("are above every live version and grow with time", () => {
    const v = recalcVersionFloor(Date.UTC(2025, 0, 1));
    expect(v).toBeGreaterThan(RECALC_VERSION_BASE);
    expect(recalcVersionFloor(Date.UTC(2025, 0, 1, 0, 0, 1))).toBe(v + 1);
  });

  it.each([
    ["first run", undefined, 1, RECALC_VERSION_BASE + 1],
    ["a later second", RECALC_VERSION_BASE + 1, 2, RECALC_VERSION_BASE + 2],
    ["the same second", RECALC_VERSION_BASE + 2, 2, RECALC_VERSION_BASE + 3],
    ["a clock behind the counter", RECALC_VERSION_BASE + 50, 2, RECALC_VERSION_BASE + 51],
  ])("strictly increase: %s", (_n, prev, secondsSince2024, want) => {
    expect(nextRecalcVersion(prev, Date.UTC(2024, 0, 1) + secondsSince2024 * 1000)).toBe(want);
  });

  it("fit the int version column until 2060", () => {
    expect(nextRecalcVersion(undefined, Date.UTC(2060, 0, 1))).toBeLessThan(2 ** 31);
    expect(() => nextRecalcVersion(undefined, Date.UTC(2061, 0, 1))).toThrow(RangeError);
  });
});

describe("scheduled reconciliation windows", () => {
  const H = 60 * MIN;
  const o = { everyMs: H, lagMs: 15 * MIN };
  it.each([
    ["first window", T0 + 2 * H + 20 * MIN, undefined, { fromMs: T0 + H, toMs: T0 + 2 * H }],
    ["lag not yet passed", T0 + 2 * H + 10 * MIN, undefined, { fromMs: T0, toMs: T0 + H }],
    ["nothing new due", T0 + 2 * H + 20 * MIN, T0 + 2 * H, null],
    ["next period", T0 + 3 * H + 15 * MIN, T0 + 2 * H, { fromMs: T0 + 2 * H, toMs: T0 + 3 * H }],
    [
      "catch up after a pause",
      T0 + 5 * H + 15 * MIN,
      T0 + 2 * H,
      { fromMs: T0 + 2 * H, toMs: T0 + 5 * H },
    ],
    ["catch-up is bounded", T0 + 100 * H, T0, { fromMs: T0 + 75 * H, toMs: T0 + 99 * H }],
  ])("%s", (_n, now, last, want) => {
    expect(scheduledWindow(now, o, last)).toEqual(want);
  });
});

describe("raw retention", () => {
  it.each([
    [30, 2_592_000],
    [0, 0],
    [1, 86_400],
  ])("%i days → %i s of TTL", (days, seconds) => {
    expect(rawRetentionSeconds(days)).toBe(seconds);
  });
  it.each([-1, 1.5, 7301, Number.NaN])("refuses %s days", (days) => {
    expect(() => rawRetentionSeconds(days)).toThrow(ConfigError);
  });
  it("defaults to 30 days and reads ADCLICK_RAW_RETENTION_DAYS", () => {
    expect(rawRetentionDaysFromEnv({})).toBe(DEFAULT_RAW_RETENTION_DAYS);
    expect(rawRetentionDaysFromEnv({ ADCLICK_RAW_RETENTION_DAYS: "90" })).toBe(90);
    expect(() => rawRetentionDaysFromEnv({ ADCLICK_RAW_RETENTION_DAYS: "a month" })).toThrow(
      ConfigError,
    );
  });
});

describe("command-line ranges", () => {
  it.each([
    ["2024-07-09T00:00:00Z", T0],
    ["2024-07-09T00:00Z", T0],
    ["2024-07-09 00:01", T0 + MIN],
    ["2024-07-09", T0],
    ["2024-07-09T09:00:00+09:00", T0],
    ["2024-07-09T00:00:30.500Z", T0 + 30_500],
  ])("%s", (text, ms) => {
    expect(parseInstant("--from", text)).toBe(ms);
  });
  it.each(["yesterday", "2024-13-01", "2024-07-09T25:00Z", ""])("refuses %j", (text) => {
    expect(() => parseInstant("--from", text)).toThrow(AdclickError);
  });
  it("rounds out to whole minutes and refuses an empty range", () => {
    expect(parseRange("2024-07-09T00:00:30Z", "2024-07-09T00:02:10Z")).toEqual({
      fromMs: T0,
      toMs: T0 + 3 * MIN,
    });
    expect(() => parseRange("2024-07-09T00:02Z", "2024-07-09T00:01Z")).toThrow(AdclickError);
    expect(() => checkRange(T0 + 1, T0 + MIN)).toThrow(AdclickError);
  });
});

// ---------------------------------------------------------------------------------------
// replayRange against in-memory stores

/** An aggregate store keeping, per row, the value with the highest version (USING TIMESTAMP). */
class FakeAggregates implements AggregateTarget, AggregateEraser {
  readonly rows = new Map<string, { version: number; value: StoredPartitionMinute | null }>();
  readonly ads = new Map<string, { version: number; clicks: number | null }>();
  readonly tops = new Map<number, { version: number; ads: TopEntry[] | null }>();
  writes = 0;

  private put<K, T extends { version: number }>(m: Map<K, T>, k: K, v: T) {
    const cur = m.get(k);
    if (!cur || cur.version <= v.version) m.set(k, v);
  }
  async writeMinute(c: ClosedMinute): Promise<number> {
    this.writes++;
    this.put(this.rows, `${c.partition}|${c.minuteStartMs}`, {
      version: c.version,
      value: {
        partition: c.partition,
        minuteStartMs: c.minuteStartMs,
        version: c.version,
        eventCount: c.eventCount,
        adCounts: c.adCounts,
        dimCounts: c.dimCounts,
      },
    });
    for (const [adId, n] of c.adCounts) {
      this.put(this.ads, `${adId}|${c.minuteStartMs}`, {
        version: c.version,
        clicks: n,
      });
    }
    return 1 + c.adCounts.length;
  }
  async writeTop(minuteStartMs: number, version: number, _n: number, ads: TopEntry[]) {
    this.put(this.tops, minuteStartMs, { version, ads });
  }
  async partitionMinutes(partitions: number, fromMs: number, toMs: number) {
    return [...this.rows.values()]
      .map((r) => r.value)
      .filter(
        (v): v is StoredPartitionMinute =>
          v !== null &&
          v.partition < partitions &&
          v.minuteStartMs >= fromMs &&
          v.minuteStartMs < toMs,
      );
  }
  async topMinutes(fromMs: number, toMs: number) {
    const out = new Map<number, { version: number; ads: TopEntry[] }>();
    for (const [m, t] of this.tops)
      if (t.ads && m >= fromMs && m < toMs) out.set(m, { version: t.version, ads: t.ads });
    return out;
  }
  async progress() {
    return new Map([
      [0, T0 + 60 * MIN],
      [1, T0 + 60 * MIN],
    ]);
  }
  async deleteAdMinute(adId: string, minuteMs: number, version: number) {
    this.put(this.ads, `${adId}|${minuteMs}`, { version, clicks: null });
  }
  async deleteAdDimMinute() {}
  async deletePartitionMinute(partition: number, minuteMs: number, version: number) {
    this.put(this.rows, `${partition}|${minuteMs}`, { version, value: null });
  }
  async deleteTop(minuteMs: number, version: number) {
    this.put(this.tops, minuteMs, { version, ads: null });
  }
  adClicks(): Map<string, number> {
    const out = new Map<string, number>();
    for (const [k, v] of this.ads) if (v.clicks !== null) out.set(k, v.clicks);
    return out;
  }
}

describe("replayRange (in-memory stores)", () => {
  // Raw data: partition 0 holds ad "a", partition 1 ad "b", over minutes T0..T0+3.
  const raw = new Map<string, ClickEvent[]>();
  for (let m = 0; m < 4; m++) {
    raw.set(`0|${T0 + m * MIN}`, [ev("a", T0 + m * MIN), ev("a", T0 + m * MIN + 1)]);
    raw.set(`1|${T0 + m * MIN}`, m === 3 ? [] : [ev("b", T0 + m * MIN)]);
  }
  const rawStore: RawMinuteSource & { reads: number } = {
    reads: 0,
    async readMinute(p, m) {
      this.reads++;
      return raw.get(`${p}|${m}`) ?? [];
    },
  };

  async function liveStore(): Promise<FakeAggregates> {
    const s = new FakeAggregates();
    for (let m = 0; m < 4; m++) {
      await s.writeMinute({ ...closed(0, T0 + m * MIN, [["a", 2]]), version: 1 });
      if (m < 3) await s.writeMinute({ ...closed(1, T0 + m * MIN, [["b", 1]]), version: 1 });
    }
    // A buggy aggregator: wrong count and a phantom ad in minute 1, a phantom minute 3 of p1.
    await s.writeMinute({
      ...closed(0, T0 + MIN, [
        ["a", 5],
        ["zz", 1],
      ]),
      version: 7,
    });
    await s.writeMinute({ ...closed(1, T0 + 3 * MIN, [["b", 4]]), version: 7 });
    return s;
  }
  const base = {
    rawStore,
    partitions: 2,
    dimensions: DIMS,
    topK: 3,
    fromMs: T0,
    toMs: T0 + 4 * MIN,
  };

  it("without apply reports what would change and writes nothing", async () => {
    const s = await liveStore();
    const writes = s.writes;
    const r = await replayRange({ ...base, aggregateStore: s, apply: false });
    expect(
      r.mismatches
        .filter((m) => !m.dim)
        .map((m) => [m.minuteMs - T0, m.adId, m.stored, m.recount, m.cause]),
    ).toEqual([
      [MIN, "a", 5, 2, "overcount"],
      [MIN, "zz", 1, null, "overcount"],
      [3 * MIN, "b", 4, null, "no_raw_data"],
    ]);
    expect(r).toMatchObject({
      version: null,
      runId: null,
      minutes: 4,
      partitionMinutes: 8,
      events: 11,
    });
    expect(r.topMismatches.map((t) => t.minuteMs)).toEqual([
      T0,
      T0 + MIN,
      T0 + 2 * MIN,
      T0 + 3 * MIN,
    ]);
    expect(s.writes).toBe(writes);
  });

  it("with apply overwrites the range, removes stale rows, and then agrees with the recount", async () => {
    const s = await liveStore();
    const progress = new MemoryRecalcProgressStore();
    const r = await replayRange({
      ...base,
      aggregateStore: s,
      eraser: s,
      progressStore: progress,
      apply: true,
    });
    expect(r.version).toBeGreaterThan(RECALC_VERSION_BASE);
    expect(s.adClicks()).toEqual(
      new Map([
        ...[0, 1, 2, 3].map((m) => [`a|${T0 + m * MIN}`, 2] as const),
        ...[0, 1, 2].map((m) => [`b|${T0 + m * MIN}`, 1] as const),
      ]),
    );
    expect(s.tops.get(T0 + 3 * MIN)?.ads).toEqual([{ adId: "a", count: 2 }]);
    const again = await replayRange({ ...base, aggregateStore: s, apply: false });
    expect(again.mismatchCount).toBe(0);
    expect(again.topMismatches).toEqual([]);
    expect((await progress.load(`${T0}-${T0 + 4 * MIN}`))?.progress).toMatchObject({
      state: "done",
      doneThroughMs: T0 + 4 * MIN,
      version: r.version,
    });
  });

  it("resumes an interrupted apply after its last finished minute, with the same version", async () => {
    const s = await liveStore();
    const progress = new MemoryRecalcProgressStore();
    const ac = new AbortController();
    await expect(
      replayRange({
        ...base,
        aggregateStore: s,
        eraser: s,
        progressStore: progress,
        apply: true,
        concurrency: 1,
        // Crash in the middle of minute 2 (after its first partition).
        onProgress: (p) => {
          if (p.doneUnits === 5) ac.abort(new Error("crash"));
        },
        signal: ac.signal,
      }),
    ).rejects.toThrow("crash");
    const saved = (await progress.load(`${T0}-${T0 + 4 * MIN}`))?.progress;
    expect(saved).toMatchObject({ state: "running", doneThroughMs: T0 + 2 * MIN });

    const reads = rawStore.reads;
    const r = await replayRange({
      ...base,
      aggregateStore: s,
      eraser: s,
      progressStore: progress,
      apply: true,
    });
    expect(r.resumedFromMs).toBe(T0 + 2 * MIN);
    expect(r.version).toBe(saved?.version);
    expect(r.partitionMinutes).toBe(4);
    expect(rawStore.reads - reads).toBe(4);
    expect((await replayRange({ ...base, aggregateStore: s, apply: false })).mismatchCount).toBe(0);

    // A finished run is not resumed: the same range again is a new run with a higher version.
    const next = await replayRange({
      ...base,
      aggregateStore: s,
      eraser: s,
      progressStore: progress,
      apply: true,
    });
    expect(next.resumedFromMs).toBeNull();
    expect(next.version).toBeGreaterThan(r.version as number);
  });

  it("refuses to resume a run id with another range", async () => {
    const s = await liveStore();
    const progress = new MemoryRecalcProgressStore();
    const ac = new AbortController();
    ac.abort(new Error("stop at once"));
    await expect(
      replayRange({
        ...base,
        aggregateStore: s,
        eraser: s,
        progressStore: progress,
        apply: true,
        runId: "x",
        signal: ac.signal,
      }),
    ).rejects.toThrow("stop at once");
    await expect(
      replayRange({
        ...base,
        toMs: T0 + MIN,
        aggregateStore: s,
        eraser: s,
        progressStore: progress,
        apply: true,
        runId: "x",
      }),
    ).rejects.toThrow(AdclickError);
  });

  it("formats a readable report", async () => {
    const s = await liveStore();
    const r = await replayRange({ ...base, aggregateStore: s, apply: false });
    const text = formatReconcileReport(reportOf(r, { partitions: 2, dimensions: DIMS }));
    expect(text).toContain("6 differing");
    expect(text).toContain(CAUSE_TEXT.overcount);
    expect(text).toMatch(/2024-07-09 00:01\s+0\s+zz\s+1\s+-\s+overcount/);
    const clean = formatReconcileReport(
      reportOf(
        { ...r, mismatchCount: 0, mismatches: [], topMismatches: [] },
        { partitions: 2, dimensions: DIMS },
      ),
    );
    expect(clean).toContain("aggregates equal the recount");
  });
});
