import { pack, unpack } from "msgpackr";
import { describe, expect, it } from "vitest";
import { AdclickError, ConfigError } from "../../src/errors.js";
import type { ClickEvent, Dimension } from "../../src/model.js";
import { MinuteState } from "../../src/windows/minute-state.js";
import {
  type AggregatorOptions,
  type AggregatorSnapshot,
  type AggregatorState,
  advance,
  type ClosedMinute,
  createAggregatorState,
  ingest,
  liveAdCount,
  nextIdleDeadlineMs,
  openMinutes,
  restoreAggregator,
  snapshotAggregator,
  watermarkOf,
} from "../../src/windows/partition-aggregator.js";

const L = 15_000;
const IDLE = 10_000;
const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9); // a whole minute

let seq = 0;
function ev(adId: string, timestampMs: number, over: Partial<ClickEvent> = {}): ClickEvent {
  seq++;
  return {
    adId,
    timestampMs,
    userId: `user-${seq % 3}`,
    ip: "207.148.22.22",
    country: "USA",
    eventId: `e${seq}`,
    ...over,
  };
}

function agg(over: Partial<AggregatorOptions> = {}): AggregatorState {
  return createAggregatorState({
    partition: 3,
    allowedLatenessMs: L,
    idleTimeoutMs: IDLE,
    topK: 10,
    latePolicy: "drop",
    ...over,
  });
}

/** `adId:count` pairs of a minute, compact for assertions. */
function counts(m: { adCounts: [string, number][] } | undefined): string[] {
  return (m?.adCounts ?? []).map(([a, c]) => `${a}:${c}`);
}

describe("counting a minute", () => {
  it("emits per-ad counts, per-ad × country counts, the top k and the event count", () => {
    const s = agg({ topK: 2 });
    ingest(
      s,
      [
        ev("ad2", T0 + 1_000, { country: "KOR" }),
        ev("ad1", T0 + 2_000, { country: "USA" }),
        ev("ad2", T0 + 3_000, { country: "USA" }),
        ev("ad2", T0 + 4_000, { country: "KOR" }),
        ev("ad3", T0 + 5_000, { country: "DEU" }),
      ],
      0,
    );
    ingest(s, [ev("ad9", T0 + MIN + L)], 1); // closes minute T0
    expect(advance(s, 2)).toEqual<ClosedMinute[]>([
      {
        partition: 3,
        minuteStartMs: T0,
        version: 1,
        adCounts: [
          ["ad1", 1],
          ["ad2", 3],
          ["ad3", 1],
        ],
        dimCounts: {
          country: [
            ["ad1", "USA", 1],
            ["ad2", "KOR", 2],
            ["ad2", "USA", 1],
            ["ad3", "DEU", 1],
          ],
        },
        topK: [
          { adId: "ad2", count: 3 },
          { adId: "ad1", count: 1 },
        ],
        eventCount: 5,
      },
    ]);
  });

  it.each<{ dims: Dimension[]; keys: string[] }>([
    { dims: [], keys: [] },
    { dims: ["country"], keys: ["country"] },
    { dims: ["userId", "ip"], keys: ["userId", "ip"] },
    { dims: ["country", "ip", "userId"], keys: ["country", "ip", "userId"] },
  ])("counts the configured dimensions $dims and only those", ({ dims, keys }) => {
    const s = agg({ dimensions: dims });
    ingest(
      s,
      [
        ev("a", T0, { userId: "u1", ip: "1.1.1.1", country: "USA" }),
        ev("a", T0 + 1, { userId: "u1", ip: "2.2.2.2", country: "USA" }),
      ],
      0,
    );
    const [m] = advance(s, IDLE); // idle closes it
    expect(Object.keys(m?.dimCounts ?? {})).toEqual(keys);
    if (dims.includes("userId")) expect(m?.dimCounts.userId).toEqual([["a", "u1", 2]]);
    if (dims.includes("ip")) {
      expect(m?.dimCounts.ip).toEqual([
        ["a", "1.1.1.1", 1],
        ["a", "2.2.2.2", 1],
      ]);
    }
  });

  it("defaults the dimensions to country", () => {
    expect(
      createAggregatorState({ ...agg().options, dimensions: undefined }).options.dimensions,
    ).toEqual(["country"]);
  });

  it.each([
    { ts: T0 + 59_999, minute: T0, why: "59.999 s belongs to the first minute" },
    { ts: T0 + 60_000, minute: T0 + MIN, why: "60.000 s belongs to the next minute" },
    { ts: T0 - 1, minute: T0 - MIN, why: "one ms before is the minute before" },
  ])("counts an event at $ts in minute $minute ($why)", ({ ts, minute }) => {
    const s = agg();
    ingest(s, [ev("a", ts)], 0);
    const out = advance(s, IDLE);
    expect(out.map((m) => m.minuteStartMs)).toEqual([minute]);
  });

  it("works for timestamps before the epoch", () => {
    const s = agg();
    ingest(s, [ev("a", -60_001), ev("a", -60_000), ev("a", -1)], 0);
    expect(advance(s, IDLE).map((m) => [m.minuteStartMs, m.eventCount])).toEqual([
      [-120_000, 1],
      [-60_000, 2],
    ]);
  });
});

describe("minute state", () => {
  it.each([1, 16, 17, 40])(
    "counts %i distinct values of one ad exactly, however many there are",
    (distinct) => {
      const m = new MinuteState(0, MIN, ["ip", "country"]);
      for (let round = 1; round <= 3; round++) {
        for (let v = 0; v < distinct; v++) {
          if (v % 3 < round) m.add(ev("a", 1, { ip: `10.0.0.${v}`, country: "USA" }));
        }
      }
      const expected = Array.from({ length: distinct }, (_, v) => [`10.0.0.${v}`, 3 - (v % 3)])
        .sort((x, y) => ((x[0] as string) < (y[0] as string) ? -1 : 1))
        .map(([ip, n]) => ["a", ip, n]);
      expect(m.dimCountsOf("ip")).toEqual(expected);
      expect(m.dimCount("a", "ip", "10.0.0.0")).toBe(3);
      expect(m.dimCount("a", "ip", "10.9.9.9")).toBe(0);
      expect(m.dimCount("a", "userId", "u")).toBe(0);
      expect(m.dimCountsOf("country")).toEqual([["a", "USA", m.eventCount]]);
      const back = MinuteState.fromSnapshot(JSON.parse(JSON.stringify(m.toSnapshot())), MIN, [
        "ip",
        "country",
      ]);
      expect(back.toSnapshot()).toEqual(m.toSnapshot());
      back.add(ev("a", 2, { ip: "10.0.0.0" }));
      expect(back.dimCount("a", "ip", "10.0.0.0")).toBe(4);
    },
  );

  it("sorts dimension rows by adId, then value, in code-unit order", () => {
    const m = new MinuteState(0, MIN, ["country"]);
    for (const [ad, c] of [
      ["b", "USA"],
      ["a", "kor"],
      ["a", "KOR"],
      ["b", "DEU"],
      ["a", "KOR"],
    ] as const) {
      m.add(ev(ad, 1, { country: c }));
    }
    expect(m.dimCountsOf("country")).toEqual([
      ["a", "KOR", 2],
      ["a", "kor", 1],
      ["b", "DEU", 1],
      ["b", "USA", 1],
    ]);
    expect(m.adCounts()).toEqual([
      ["a", 3],
      ["b", 2],
    ]);
  });
});

describe("closing minutes by watermark", () => {
  it.each([
    { newest: T0 + MIN + L - 1, closed: [], why: "the newest event is within lateness" },
    { newest: T0 + MIN + L, closed: [T0], why: "the watermark reaches the end of minute 0" },
    { newest: T0 + 2 * MIN + L, closed: [T0, T0 + MIN], why: "two minutes close at once" },
  ])("closes $closed when the newest event is at $newest ($why)", ({ newest, closed }) => {
    const s = agg();
    ingest(s, [ev("a", T0 + 1), ev("a", T0 + MIN + 1), ev("b", newest)], 0);
    expect(advance(s, 1).map((m) => m.minuteStartMs)).toEqual(closed);
  });

  it("emits closed minutes in ascending order however the events arrived", () => {
    const s = agg();
    ingest(s, [ev("a", T0 + 2 * MIN + 1_000), ev("a", T0 + MIN + 59_000)], 0);
    ingest(s, [ev("a", T0 + 10 * MIN)], 1);
    expect(advance(s, 2).map((m) => m.minuteStartMs)).toEqual([T0 + MIN, T0 + 2 * MIN]);
    expect(advance(s, 3)).toEqual([]);
  });

  it("emits a minute first created by a late event in order with the others (correct)", () => {
    const s = agg({ latePolicy: "correct" });
    ingest(s, [ev("a", T0 + 3 * MIN), ev("b", T0 + 5)], 0); // T0 is already closed
    ingest(s, [ev("a", T0 + 10 * MIN)], 1);
    expect(advance(s, 2).map((m) => [m.minuteStartMs, m.version])).toEqual([
      [T0, 1],
      [T0 + 3 * MIN, 1],
    ]);
  });

  it("counts events that arrive out of order within the lateness in their own minute", () => {
    const s = agg();
    const r = ingest(
      s,
      [
        ev("a", T0 + 50_000),
        ev("a", T0 + 70_000),
        ev("a", T0 + 10_000),
        ev("a", T0 + 72_000),
        ev("a", T0 + 5_000),
      ],
      0,
    );
    expect(r).toMatchObject({ accepted: 5, late: [], duplicates: 0 });
    const out = advance(s, IDLE);
    expect(out.map((m) => [m.minuteStartMs, m.eventCount])).toEqual([
      [T0, 3],
      [T0 + MIN, 2],
    ]);
  });

  it.each([
    { newest: T0 + MIN + L - 1, counted: true, why: "exactly at the allowed lateness" },
    { newest: T0 + MIN + L, counted: false, why: "1 ms past the allowed lateness" },
  ])(
    "counts the last ms of a minute after an event at $newest: $counted ($why)",
    ({ newest, counted }) => {
      const s = agg();
      ingest(s, [ev("a", T0), ev("b", newest)], 0);
      const r = ingest(s, [ev("a", T0 + 59_999)], 1);
      expect(r.accepted).toBe(counted ? 1 : 0);
      expect(r.late.length).toBe(counted ? 0 : 1);
      const [m] = advance(s, 1 + IDLE);
      expect(counts(m)).toEqual([counted ? "a:2" : "a:1"]);
    },
  );

  it("classifies by watermark within a batch: an event after the closing one is late", () => {
    const s = agg();
    const r = ingest(s, [ev("a", T0), ev("b", T0 + MIN + L), ev("a", T0 + 1)], 0);
    expect(r.accepted).toBe(2);
    expect(r.late.map((e) => e.timestampMs)).toEqual([T0 + 1]);
  });

  it("keeps the watermark and the counts untouched by a non-finite timestamp", () => {
    const s = agg();
    ingest(s, [ev("a", T0)], 0);
    const r = ingest(
      s,
      [ev("a", Number.POSITIVE_INFINITY), ev("a", Number.NaN), ev("a", T0 + 1)],
      1,
    );
    expect(r.late.length).toBe(2);
    expect(r.accepted).toBe(1);
    expect(watermarkOf(s)).toBe(T0 + 1 - L);
  });
});

describe("idle input", () => {
  it.each([
    { now: 5_000 + IDLE - 1, closed: [], why: "1 ms before the idle timeout" },
    { now: 5_000 + IDLE, closed: [T0 + MIN], why: "at the idle timeout" },
  ])("at now=$now the last minute closed: $closed ($why)", ({ now, closed }) => {
    const s = agg();
    ingest(s, [ev("a", T0 + MIN + 30_000)], 5_000);
    expect(advance(s, now).map((m) => m.minuteStartMs)).toEqual(closed);
  });

  it("makes the last minute of a finished input final, and later minutes stay open", () => {
    const s = agg();
    ingest(s, [ev("a", T0 + 1_000), ev("a", T0 + MIN + 10_000)], 0);
    expect(advance(s, 1).map((m) => m.minuteStartMs)).toEqual([]);
    expect(advance(s, IDLE).map((m) => m.minuteStartMs)).toEqual([T0, T0 + MIN]);
    const r = ingest(s, [ev("b", T0 + 2 * MIN), ev("c", T0 + MIN + 5)], IDLE + 1);
    expect(r.accepted).toBe(1);
    expect(r.late.map((e) => e.adId)).toEqual(["c"]);
  });

  it("classifies the same way when nobody called advance during the idle gap", () => {
    const s = agg();
    ingest(s, [ev("a", T0 + 30_000)], 0);
    const r = ingest(s, [ev("a", T0 + 40_000), ev("a", T0 + MIN)], IDLE);
    expect(r.late.map((e) => e.timestampMs)).toEqual([T0 + 40_000]);
    expect(r.accepted).toBe(1);
    expect(advance(s, IDLE).map((m) => [m.minuteStartMs, m.eventCount])).toEqual([[T0, 1]]);
  });

  it("is kept from closing by any arriving event, duplicates included", () => {
    const s = agg();
    const e = ev("a", T0);
    ingest(s, [e], 0);
    ingest(s, [e], IDLE - 1);
    expect(advance(s, IDLE)).toEqual([]);
    expect(advance(s, 2 * IDLE - 1).length).toBe(1);
  });

  it("tells the runtime when idle advancement will be due", () => {
    const s = agg();
    expect(nextIdleDeadlineMs(s)).toBeNull();
    ingest(s, [ev("a", T0)], 7_000);
    expect(nextIdleDeadlineMs(s)).toBe(7_000 + IDLE);
    advance(s, 7_000 + IDLE);
    expect(nextIdleDeadlineMs(s)).toBeNull();
  });
});

describe("duplicates", () => {
  it.each([
    { why: "within one batch", batches: [["x", "x", "y"]], accepted: 2, dups: 1 },
    {
      why: "across batches",
      batches: [
        ["x", "y"],
        ["y", "x", "z"],
      ],
      accepted: 3,
      dups: 2,
    },
    { why: "repeated many times", batches: [["x", "x"], ["x"], ["x", "x"]], accepted: 1, dups: 4 },
  ])("counts an event id once $why", ({ batches, accepted, dups }) => {
    const s = agg();
    let acc = 0;
    let dup = 0;
    batches.forEach((ids, i) => {
      const r = ingest(
        s,
        ids.map((id) => ev("a", T0 + 1_000, { eventId: id })),
        i,
      );
      acc += r.accepted;
      dup += r.duplicates;
    });
    expect([acc, dup]).toEqual([accepted, dups]);
    expect(advance(s, 100 + IDLE)[0]?.eventCount).toBe(accepted);
  });

  it("dedupes per minute: the same id in two different minutes is counted in each", () => {
    const s = agg();
    const r = ingest(
      s,
      [ev("a", T0, { eventId: "same" }), ev("a", T0 + MIN, { eventId: "same" })],
      0,
    );
    expect(r.accepted).toBe(2);
  });

  it("dedupes the minutes of one batch independently while both are open", () => {
    const s = agg();
    const r = ingest(
      s,
      [
        ev("a", T0, { eventId: "p" }),
        ev("a", T0 + MIN, { eventId: "q" }),
        ev("a", T0 + 1, { eventId: "p" }),
        ev("a", T0 + MIN + 1, { eventId: "q" }),
      ],
      0,
    );
    expect([r.accepted, r.duplicates]).toEqual([2, 2]);
  });

  it("reports a redelivered copy of a counted event as late once its minute is emitted (drop)", () => {
    const s = agg();
    const e = ev("a", T0);
    ingest(s, [e, ev("b", T0 + MIN + L)], 0);
    expect(advance(s, 1).length).toBe(1);
    const r = ingest(s, [e], 2);
    expect(r.late).toEqual([e]);
    expect(r.duplicates).toBe(0);
  });
});

describe("late events", () => {
  function closedAfter(policy: "drop" | "correct", retainClosedMinutes?: number) {
    const s = agg({ latePolicy: policy, retainClosedMinutes });
    ingest(s, [ev("a", T0 + 1_000, { eventId: "first" }), ev("z", T0 + 3 * MIN)], 0);
    const closed = advance(s, 1); // minutes T0 and T0+MIN... only T0 holds data
    return { s, closed };
  }

  it("drops and reports them under policy drop, without touching the emitted minute", () => {
    const { s, closed } = closedAfter("drop");
    expect(closed.map((m) => m.minuteStartMs)).toEqual([T0]);
    const late = ev("a", T0 + 2_000);
    const r = ingest(s, [late], 2);
    expect(r).toEqual({ accepted: 0, corrected: 0, duplicates: 0, late: [late], corrections: [] });
    expect(advance(s, 3)).toEqual([]);
  });

  it("re-emits the corrected minute with absolute counts and version 2 under policy correct", () => {
    const { s } = closedAfter("correct");
    const r = ingest(
      s,
      [ev("a", T0 + 2_000, { country: "KOR" }), ev("b", T0 + 3_000, { country: "KOR" })],
      2,
    );
    expect(r.corrected).toBe(2);
    expect(r.late).toEqual([]);
    expect(r.corrections).toEqual<ClosedMinute[]>([
      {
        partition: 3,
        minuteStartMs: T0,
        version: 2,
        adCounts: [
          ["a", 2],
          ["b", 1],
        ],
        dimCounts: {
          country: [
            ["a", "KOR", 1],
            ["a", "USA", 1],
            ["b", "KOR", 1],
          ],
        },
        topK: [
          { adId: "a", count: 2 },
          { adId: "b", count: 1 },
        ],
        eventCount: 3,
      },
    ]);
  });

  it("increments the version with every correcting batch, once per batch and minute", () => {
    const { s } = closedAfter("correct");
    const v = [2, 3, 4].map((_, i) => {
      const r = ingest(s, [ev("a", T0 + 10 + i), ev("a", T0 + 20 + i)], 10 + i);
      expect(r.corrections.length).toBe(1);
      return [r.corrections[0]?.version, r.corrections[0]?.eventCount];
    });
    expect(v).toEqual([
      [2, 3],
      [3, 5],
      [4, 7],
    ]);
  });

  it("re-emits several corrected minutes of one batch in ascending order", () => {
    const s = agg({ latePolicy: "correct" });
    ingest(s, [ev("a", T0), ev("a", T0 + MIN), ev("a", T0 + 2 * MIN), ev("z", T0 + 5 * MIN)], 0);
    expect(advance(s, 1).length).toBe(3);
    const r = ingest(s, [ev("a", T0 + 2 * MIN + 1), ev("a", T0 + 1), ev("a", T0 + 2)], 2);
    expect(r.corrections.map((m) => [m.minuteStartMs, m.version, m.eventCount])).toEqual([
      [T0, 2, 3],
      [T0 + 2 * MIN, 2, 2],
    ]);
  });

  it("never counts a copy of an already counted event on the correction path", () => {
    const { s } = closedAfter("correct");
    const e = ev("a", T0 + 5);
    const r1 = ingest(s, [e, { ...e }], 2);
    expect([r1.corrected, r1.duplicates, r1.corrections[0]?.eventCount]).toEqual([1, 1, 2]);
    const r2 = ingest(s, [ev("a", T0 + 1_000, { eventId: "first" }), { ...e }], 3);
    expect([r2.corrected, r2.duplicates, r2.corrections]).toEqual([0, 2, []]);
  });

  it("counts a late event of a never-seen minute and emits that minute through advance", () => {
    const { s } = closedAfter("correct");
    const r = ingest(s, [ev("q", T0 + MIN + 5)], 2);
    expect(r).toMatchObject({ corrected: 1, corrections: [], late: [] });
    expect(advance(s, 3).map((m) => [m.minuteStartMs, m.version, counts(m)])).toEqual([
      [T0 + MIN, 1, ["q:1"]],
    ]);
  });

  it.each([
    { policy: "drop" as const, corrected: 0, late: 1, first: ["a:1"] },
    { policy: "correct" as const, corrected: 1, late: 0, first: ["a:2"] },
  ])(
    "under $policy, treats an event of a closed but not yet emitted minute like a late one",
    ({ policy, corrected, late, first }) => {
      const s = agg({ latePolicy: policy });
      ingest(s, [ev("a", T0), ev("z", T0 + MIN + L)], 0); // closes T0, no advance yet
      const r = ingest(s, [ev("a", T0 + 1)], 1);
      expect([r.corrected, r.late.length, r.corrections.length]).toEqual([corrected, late, 0]);
      const [m] = advance(s, 2);
      expect([m?.version, counts(m)]).toEqual([1, first]);
    },
  );

  it.each([
    { retain: 0, newest: T0 + MIN + L, counted: false, why: "no retention: like drop" },
    { retain: 2, newest: T0 + 3 * MIN + L - 1, counted: true, why: "1 ms within retention" },
    { retain: 2, newest: T0 + 3 * MIN + L, counted: false, why: "exactly at retention's end" },
    { retain: 60, newest: T0 + 60 * MIN, counted: true, why: "the default hour" },
  ])(
    "with retainClosedMinutes=$retain and newest event $newest, a late event is counted: $counted ($why)",
    ({ retain, newest, counted }) => {
      const s = agg({ latePolicy: "correct", retainClosedMinutes: retain });
      ingest(s, [ev("a", T0), ev("z", newest)], 0);
      advance(s, 1);
      const r = ingest(s, [ev("a", T0 + 1)], 2);
      expect([r.corrected, r.late.length]).toEqual(counted ? [1, 0] : [0, 1]);
    },
  );

  it("purges a retained minute and its ids once retention has passed", () => {
    const s = agg({ latePolicy: "correct", retainClosedMinutes: 1 });
    ingest(s, [ev("a", T0)], 0);
    advance(s, IDLE); // emits T0, retained
    expect(s.retained.size).toBe(1);
    ingest(s, [ev("z", T0 + 2 * MIN + L)], IDLE + 1);
    advance(s, IDLE + 2);
    expect(s.retained.size).toBe(0);
    expect(s.dedupe.windowCount).toBe(1); // only the open minute of "z"
  });

  it("forgets an emitted minute's ids at once under drop", () => {
    const s = agg();
    ingest(s, [ev("a", T0), ev("a", T0 + 1)], 0);
    advance(s, IDLE);
    expect([s.pending.size, s.retained.size, s.dedupe.windowCount]).toEqual([0, 0, 0]);
  });
});

describe("accounting", () => {
  it.each(["drop", "correct"] as const)(
    "under %s accounts for every event exactly once in the ingest result",
    (policy) => {
      const s = agg({ latePolicy: policy, retainClosedMinutes: 1 });
      const rnd = prng(99);
      const history: ClickEvent[] = [];
      for (let step = 0; step < 200; step++) {
        const batch = randomBatch(rnd, history, step * 1_000);
        const r = ingest(s, batch, step * 1_000);
        expect(r.accepted + r.corrected + r.duplicates + r.late.length).toBe(batch.length);
        advance(s, step * 1_000 + 500);
      }
    },
  );
});

describe("live minutes", () => {
  it("shows the counts of minutes not emitted yet, and the watermark", () => {
    const s = agg();
    ingest(s, [ev("a", T0), ev("a", T0 + 1), ev("b", T0 + MIN)], 0);
    const live = openMinutes(s);
    expect(live.map((m) => [m.minuteStartMs, m.closed, counts(m)])).toEqual([
      [T0, false, ["a:2"]],
      [T0 + MIN, false, ["b:1"]],
    ]);
    expect(live[0]?.topK).toEqual([{ adId: "a", count: 2 }]);
    expect(liveAdCount(s, T0, "a")).toBe(2);
    expect(liveAdCount(s, T0, "zzz")).toBe(0);
    expect(liveAdCount(s, T0 + 5 * MIN, "a")).toBe(0);
    expect(watermarkOf(s)).toBe(T0 + MIN - L);
  });

  it("marks a minute closed by the watermark but not emitted yet, and drops it once emitted", () => {
    const s = agg();
    ingest(s, [ev("a", T0), ev("b", T0 + MIN + L)], 0);
    expect(openMinutes(s).map((m) => [m.minuteStartMs, m.closed])).toEqual([
      [T0, true],
      [T0 + MIN, false],
    ]);
    advance(s, 1);
    expect(openMinutes(s).map((m) => m.minuteStartMs)).toEqual([T0 + MIN]);
  });
});

describe("options", () => {
  it.each<{ over: Partial<AggregatorOptions>; setting: string }>([
    { over: { partition: -1 }, setting: "partition" },
    { over: { partition: 1.5 }, setting: "partition" },
    { over: { allowedLatenessMs: -1 }, setting: "allowedLatenessMs" },
    { over: { allowedLatenessMs: undefined as unknown as number }, setting: "allowedLatenessMs" },
    { over: { idleTimeoutMs: 0 }, setting: "idleTimeoutMs" },
    { over: { topK: 0 }, setting: "topK" },
    { over: { latePolicy: "keep" as "drop" }, setting: "latePolicy" },
    { over: { dimensions: ["city" as Dimension] }, setting: "dimensions" },
    { over: { dimensions: ["ip", "ip"] }, setting: "dimensions" },
    { over: { retainClosedMinutes: -1 }, setting: "retainClosedMinutes" },
  ])("rejects an invalid $setting with a ConfigError naming it", ({ over, setting }) => {
    let err: unknown;
    try {
      agg(over);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).setting).toBe(setting);
  });

  it("defaults retainClosedMinutes to an hour", () => {
    expect(agg().options.retainClosedMinutes).toBe(60);
  });
});

// ---------------------------------------------------------------------------------------
// Randomized: snapshot/restore equivalence and the oracle.

/** mulberry32: a small seeded PRNG, so every random case is reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const COUNTRIES = ["USA", "KOR", "DEU"];
let rid = 0;

/**
 * A batch arriving at processing time `now`: event time follows processing time with
 * mostly small delays, some beyond the lateness, a few far beyond, and ~12% redeliveries of
 * earlier events (same object contents, so same id and time).
 */
function randomBatch(rnd: () => number, history: ClickEvent[], now: number): ClickEvent[] {
  const n = Math.floor(rnd() * 25);
  const out: ClickEvent[] = [];
  for (let i = 0; i < n; i++) {
    if (history.length > 0 && rnd() < 0.12) {
      const old = history[Math.floor(rnd() * history.length)] as ClickEvent;
      out.push({ ...old });
      continue;
    }
    const u = rnd();
    const delay =
      u < 0.85 ? rnd() * 5_000 : u < 0.97 ? 5_000 + rnd() * 40_000 : 45_000 + rnd() * 300_000;
    const e: ClickEvent = {
      adId: `ad${Math.floor(rnd() ** 2 * 12)}`,
      timestampMs: T0 + now - Math.floor(delay),
      userId: `u${Math.floor(rnd() * 5)}`,
      ip: `10.0.0.${Math.floor(rnd() * 40)}`,
      country: COUNTRIES[Math.floor(rnd() * COUNTRIES.length)] as string,
      eventId: `r${rid++}`,
    };
    history.push(e);
    out.push(e);
  }
  return out;
}

type Step =
  | { kind: "ingest"; now: number; events: ClickEvent[] }
  | { kind: "advance"; now: number };

/** Steps over ~25 minutes of processing time, with idle gaps, ending with a final idle close. */
function randomSteps(seed: number): Step[] {
  const rnd = prng(seed);
  const history: ClickEvent[] = [];
  const steps: Step[] = [];
  let now = 0;
  while (now < 25 * MIN) {
    const g = rnd();
    now += g < 0.9 ? Math.floor(rnd() * 3_000) : g < 0.97 ? IDLE + Math.floor(rnd() * 60_000) : 0;
    steps.push({ kind: "ingest", now, events: randomBatch(rnd, history, now) });
    if (rnd() < 0.5) steps.push({ kind: "advance", now: now + Math.floor(rnd() * 2 * IDLE) });
    if (rnd() < 0.05) steps.push({ kind: "ingest", now, events: [] });
  }
  steps.push({ kind: "advance", now: now + IDLE });
  return steps;
}

/** Everything a run emits, in order, as plain data. */
function run(state: AggregatorState, steps: Step[]): unknown[] {
  const log: unknown[] = [];
  for (const step of steps) {
    if (step.kind === "advance") {
      log.push({ closed: advance(state, step.now) });
    } else {
      const r = ingest(state, step.events, step.now);
      log.push({ ...r, late: r.late.map((e) => e.eventId) });
    }
  }
  return log;
}

/**
 * Split points where a restore is indistinguishable: the step is an ingest with events that
 * is not itself an idle gap (a restore restarts the idle clock on purpose).
 */
function safeSplits(steps: Step[]): number[] {
  const out: number[] = [];
  let lastArrival: number | null = null;
  steps.forEach((step, i) => {
    if (step.kind === "ingest" && step.events.length > 0) {
      if (lastArrival !== null && step.now - lastArrival < IDLE) out.push(i);
      lastArrival = step.now;
    }
  });
  return out;
}

const codecs = {
  json: (s: AggregatorSnapshot) => JSON.parse(JSON.stringify(s)) as AggregatorSnapshot,
  msgpack: (s: AggregatorSnapshot) => unpack(pack(s)) as AggregatorSnapshot,
};

describe("snapshot and restore", () => {
  it.each([
    { seed: 11, policy: "drop" as const, codec: "json" as const },
    { seed: 12, policy: "correct" as const, codec: "json" as const },
    { seed: 13, policy: "drop" as const, codec: "msgpack" as const },
    { seed: 14, policy: "correct" as const, codec: "msgpack" as const },
    { seed: 15, policy: "correct" as const, codec: "json" as const },
  ])(
    "feed A, snapshot ($codec), restore, feed B emits exactly what an uninterrupted run emits (seed $seed, $policy)",
    ({ seed, policy, codec }) => {
      const steps = randomSteps(seed);
      const opts = { latePolicy: policy, retainClosedMinutes: 3, dimensions: ["country", "ip"] };
      const expected = run(agg(opts as Partial<AggregatorOptions>), steps);
      const splits = safeSplits(steps);
      expect(splits.length).toBeGreaterThan(50);
      const emitted = expected as { corrections?: unknown[]; late?: unknown[] }[];
      expect(emitted.some((l) => (l.late?.length ?? 0) > 0)).toBe(true);
      if (policy === "correct")
        expect(emitted.some((l) => (l.corrections?.length ?? 0) > 0)).toBe(true);
      const rnd = prng(seed * 7);
      for (let i = 0; i < 6; i++) {
        const split = splits[Math.floor(rnd() * splits.length)] as number;
        const first = agg(opts as Partial<AggregatorOptions>);
        const a = run(first, steps.slice(0, split));
        const restored = restoreAggregator(codecs[codec](snapshotAggregator(first)));
        const b = run(restored, steps.slice(split));
        expect([...a, ...b]).toEqual(expected);
      }
    },
  );

  it("captures nothing mutable: the state goes on without changing a taken snapshot", () => {
    const s = agg({ latePolicy: "correct" });
    ingest(s, [ev("a", T0)], 0);
    const snap = snapshotAggregator(s);
    const before = JSON.stringify(snap);
    ingest(s, [ev("a", T0 + 1), ev("b", T0 + 2)], 1);
    advance(s, 2 * IDLE);
    expect(JSON.stringify(snap)).toBe(before);
  });

  it("is plain versioned data", () => {
    const s = agg();
    const snap = snapshotAggregator(s);
    expect(snap.formatVersion).toBe(2);
    expect(snap.watermark).toEqual({ maxEventTimeMs: null, watermarkMs: null });
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
  });

  it("refuses a snapshot of another format version", () => {
    const snap = {
      ...snapshotAggregator(agg()),
      formatVersion: 3,
    } as unknown as AggregatorSnapshot;
    expect(() => restoreAggregator(snap)).toThrow(AdclickError);
  });

  it("restores a format-1 snapshot (every id a string) with its dedupe set", () => {
    const s = agg();
    ingest(s, [ev("a", T0, { eventId: "c:x-1" }), ev("b", T0 + 1, { eventId: "c:x-2" })], 0);
    const v2 = snapshotAggregator(s);
    const v1 = {
      ...v2,
      formatVersion: 1,
      minutes: v2.minutes.map(({ idKeys: _keys, ...m }) => ({ ...m, ids: ["c:x-1", "c:x-2"] })),
    } as AggregatorSnapshot;
    const restored = restoreAggregator(v1);
    expect(ingest(restored, [ev("a", T0 + 2, { eventId: "c:x-1" })], 1).accepted).toBe(0);
    expect(ingest(restored, [ev("a", T0 + 3, { eventId: "c:x-3" })], 1).accepted).toBe(1);
  });

  it("does not mistake the downtime before a restore for idle input", () => {
    const s = agg();
    ingest(s, [ev("a", T0 + 1_000)], 0);
    const restored = restoreAggregator(snapshotAggregator(s));
    expect(advance(restored, 10 * IDLE)).toEqual([]); // starts the idle clock
    const r = ingest(restored, [ev("a", T0 + 2_000)], 10 * IDLE + 1);
    expect(r.accepted).toBe(1);
    expect(advance(restored, 10 * IDLE + 1 + IDLE).map((m) => m.eventCount)).toEqual([2]);
  });
});

/**
 * Independent recount. Replays the watermark rules naively (floor division, string keys, a
 * global set of counted ids) and counts unique events that the policy accepts.
 */
function oracle(
  steps: Step[],
  policy: "drop" | "correct",
  retainClosedMinutes: number,
): { byKey: Map<string, number>; byIp: Map<string, number> } {
  const countsByKey = new Map<string, number>();
  const byIp = new Map<string, number>();
  const counted = new Set<string>();
  let maxT = Number.NEGATIVE_INFINITY;
  let wm = Number.NEGATIVE_INFINITY;
  let last: number | null = null;
  const idle = (now: number) => {
    if (last === null) last = now;
    else if (now - last >= IDLE && maxT > Number.NEGATIVE_INFINITY) {
      wm = Math.max(wm, (Math.floor(maxT / MIN) + 1) * MIN);
    }
  };
  for (const step of steps) {
    idle(step.now);
    if (step.kind === "advance" || step.events.length === 0) continue;
    last = step.now;
    for (const e of step.events) {
      maxT = Math.max(maxT, e.timestampMs);
      wm = Math.max(wm, maxT - L);
      const minute = Math.floor(e.timestampMs / MIN) * MIN;
      const horizon = policy === "drop" ? 0 : retainClosedMinutes * MIN;
      if (minute + MIN + horizon <= wm) continue; // late, not counted
      const idKey = `${minute}|${e.eventId}`;
      if (counted.has(idKey)) continue;
      counted.add(idKey);
      const key = `${minute}|${e.adId}|${e.country}`;
      countsByKey.set(key, (countsByKey.get(key) ?? 0) + 1);
      const ipKey = `${minute}|${e.adId}|${e.ip}`;
      byIp.set(ipKey, (byIp.get(ipKey) ?? 0) + 1);
    }
  }
  return { byKey: countsByKey, byIp };
}

/** Final (highest version) counts per minute|ad|country from everything emitted. */
function finals(log: unknown[]): {
  byKey: Map<string, number>;
  byIp: Map<string, number>;
  adTotals: Map<string, number>;
} {
  const latest = new Map<number, ClosedMinute>();
  const take = (m: ClosedMinute) => {
    const prev = latest.get(m.minuteStartMs);
    if (prev !== undefined && prev.version >= m.version) {
      throw new Error(`version did not grow for minute ${m.minuteStartMs}`);
    }
    latest.set(m.minuteStartMs, m);
  };
  for (const entry of log as { closed?: ClosedMinute[]; corrections?: ClosedMinute[] }[]) {
    for (const m of entry.closed ?? []) take(m);
    for (const m of entry.corrections ?? []) take(m);
  }
  const byKey = new Map<string, number>();
  const byIp = new Map<string, number>();
  const adTotals = new Map<string, number>();
  for (const m of latest.values()) {
    for (const [ad, value, n] of m.dimCounts.ip ?? []) {
      byIp.set(`${m.minuteStartMs}|${ad}|${value}`, n);
    }
    for (const [ad, value, n] of m.dimCounts.country ?? []) {
      byKey.set(`${m.minuteStartMs}|${ad}|${value}`, n);
    }
    for (const [ad, n] of m.adCounts) adTotals.set(`${m.minuteStartMs}|${ad}`, n);
    expect(m.eventCount).toBe(m.adCounts.reduce((s, [, n]) => s + n, 0));
  }
  return { byKey, byIp, adTotals };
}

function sumByAd(byKey: Map<string, number>): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, n] of byKey) {
    const [minute, ad] = key.split("|");
    const k = `${minute}|${ad}`;
    out.set(k, (out.get(k) ?? 0) + n);
  }
  return out;
}

function sorted(m: Map<string, number>): [string, number][] {
  return [...m].sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
}

describe("oracle: emitted final counts equal an independent recount", () => {
  it.each([
    { seed: 21, policy: "drop" as const, retain: 60, what: "unique on-time events" },
    { seed: 22, policy: "drop" as const, retain: 60, what: "unique on-time events" },
    { seed: 23, policy: "correct" as const, retain: 100_000, what: "all unique events" },
    { seed: 24, policy: "correct" as const, retain: 100_000, what: "all unique events" },
    { seed: 25, policy: "correct" as const, retain: 2, what: "unique events within retention" },
    { seed: 26, policy: "correct" as const, retain: 0, what: "unique on-time events" },
  ])(
    "under $policy (retain $retain min) they count $what (seed $seed)",
    ({ seed, policy, retain }) => {
      const steps = randomSteps(seed);
      const s = agg({
        latePolicy: policy,
        retainClosedMinutes: retain,
        dimensions: ["country", "ip"],
      });
      const log = run(s, steps);
      const { byKey, byIp, adTotals } = finals(log);
      const { byKey: expected, byIp: expectedIp } = oracle(steps, policy, retain);
      expect(sorted(byKey)).toEqual(sorted(expected));
      expect(sorted(byIp)).toEqual(sorted(expectedIp));
      // Some ad had more distinct ips in a minute than the flat per-cell array holds.
      const perCell = new Map<string, number>();
      for (const k of byIp.keys()) {
        const cell = k.slice(0, k.lastIndexOf("|"));
        perCell.set(cell, (perCell.get(cell) ?? 0) + 1);
      }
      expect(Math.max(...perCell.values())).toBeGreaterThan(16);
      expect(sorted(adTotals)).toEqual(sorted(sumByAd(expected)));
      // The input really had duplicates and late events, and everything closed at the end.
      const all = steps.flatMap((st) => (st.kind === "ingest" ? st.events : []));
      expect(new Set(all.map((e) => e.eventId)).size).toBeLessThan(all.length);
      expect(openMinutes(s)).toEqual([]);
      if (policy === "drop") {
        const late = (log as { late?: string[] }[]).reduce((n, l) => n + (l.late?.length ?? 0), 0);
        expect(late).toBeGreaterThan(0);
        const versions = (log as { closed?: ClosedMinute[] }[]).flatMap((l) =>
          (l.closed ?? []).map((m) => m.version),
        );
        expect(new Set(versions)).toEqual(new Set([1]));
      }
      if (policy === "correct" && retain > 0) {
        const corrections = (log as { corrections?: unknown[] }[]).reduce(
          (n, l) => n + (l.corrections?.length ?? 0),
          0,
        );
        expect(corrections).toBeGreaterThan(0);
      }
      if (retain === 100_000) {
        const unique = new Set(all.map((e) => e.eventId)).size;
        expect([...expected.values()].reduce((a, b) => a + b, 0)).toBe(unique);
      }
    },
  );
});
