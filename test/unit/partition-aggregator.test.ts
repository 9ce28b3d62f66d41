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
  checkRestorable,
  completeness,
  createAggregatorState,
  ingest,
  liveAdCount,
  nextIdleDeadlineMs,
  openMinutes,
  restoreAggregator,
  snapshotAggregator,
  sourcesOf,
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

  it("emits a minute first created by a late event in order with the others (amend)", () => {
    const s = agg({ latePolicy: "amend" });
    ingest(s, [ev("a", T0 + 3 * MIN)], 0);
    ingest(s, [ev("b", T0 + 5)], 0); // T0 is already closed
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

  it("classifies a message against the watermark before it: its own clicks never make each other late", () => {
    const s = agg();
    const r = ingest(s, [ev("a", T0), ev("b", T0 + MIN + L), ev("a", T0 + 1)], 0);
    expect(r.accepted).toBe(3);
    expect(r.late).toEqual([]);
    const next = ingest(s, [ev("a", T0 + 2)], 1);
    expect(next.late.map((e) => e.timestampMs)).toEqual([T0 + 2]);
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
    advance(s, 1);
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
  function closedAfter(policy: "drop" | "amend", amendHorizonMs?: number) {
    const s = agg({ latePolicy: policy, amendHorizonMs });
    ingest(s, [ev("a", T0 + 1_000, { eventId: "first" }), ev("z", T0 + 3 * MIN)], 0);
    const closed = advance(s, 1); // minutes T0 and T0+MIN... only T0 holds data
    return { s, closed };
  }

  it("drops and reports them under policy drop, without touching the emitted minute", () => {
    const { s, closed } = closedAfter("drop");
    expect(closed.map((m) => m.minuteStartMs)).toEqual([T0]);
    const late = ev("a", T0 + 2_000);
    const r = ingest(s, [late], 2);
    expect(r).toEqual({
      accepted: 0,
      amended: 0,
      duplicates: 0,
      late: [late],
      lateReason: "drop",
      corrections: [],
      routed: 0,
    });
    expect(advance(s, 3)).toEqual([]);
  });

  it("re-emits the amended minute with absolute counts and version 2 under policy amend", () => {
    const { s } = closedAfter("amend");
    const r = ingest(
      s,
      [ev("a", T0 + 2_000, { country: "KOR" }), ev("b", T0 + 3_000, { country: "KOR" })],
      2,
    );
    expect(r.amended).toBe(2);
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
    const { s } = closedAfter("amend");
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
    const s = agg({ latePolicy: "amend" });
    ingest(s, [ev("a", T0), ev("a", T0 + MIN), ev("a", T0 + 2 * MIN), ev("z", T0 + 5 * MIN)], 0);
    expect(advance(s, 1).length).toBe(3);
    const r = ingest(s, [ev("a", T0 + 2 * MIN + 1), ev("a", T0 + 1), ev("a", T0 + 2)], 2);
    expect(r.corrections.map((m) => [m.minuteStartMs, m.version, m.eventCount])).toEqual([
      [T0, 2, 3],
      [T0 + 2 * MIN, 2, 2],
    ]);
  });

  it("never counts a copy of an already counted event on the correction path", () => {
    const { s } = closedAfter("amend");
    const e = ev("a", T0 + 5);
    const r1 = ingest(s, [e, { ...e }], 2);
    expect([r1.amended, r1.duplicates, r1.corrections[0]?.eventCount]).toEqual([1, 1, 2]);
    const r2 = ingest(s, [ev("a", T0 + 1_000, { eventId: "first" }), { ...e }], 3);
    expect([r2.amended, r2.duplicates, r2.corrections]).toEqual([0, 2, []]);
  });

  it("counts a late event of a never-seen minute and emits that minute through advance", () => {
    const { s } = closedAfter("amend");
    const r = ingest(s, [ev("q", T0 + MIN + 5)], 2);
    expect(r).toMatchObject({ amended: 1, corrections: [], late: [] });
    expect(advance(s, 3).map((m) => [m.minuteStartMs, m.version, counts(m)])).toEqual([
      [T0 + MIN, 1, ["q:1"]],
    ]);
  });

  it.each([
    { policy: "drop" as const, amended: 0, late: 1, first: ["a:1"] },
    { policy: "amend" as const, amended: 1, late: 0, first: ["a:2"] },
  ])(
    "under $policy, treats an event of a closed but not yet emitted minute like a late one",
    ({ policy, amended, late, first }) => {
      const s = agg({ latePolicy: policy });
      ingest(s, [ev("a", T0), ev("z", T0 + MIN + L)], 0); // closes T0, no advance yet
      const r = ingest(s, [ev("a", T0 + 1)], 1);
      expect([r.amended, r.late.length, r.corrections.length]).toEqual([amended, late, 0]);
      const [m] = advance(s, 2);
      expect([m?.version, counts(m)]).toEqual([1, first]);
    },
  );

  it.each([
    { retain: 0, newest: T0 + MIN + L, counted: false, why: "no horizon: like drop" },
    { retain: 2, newest: T0 + 3 * MIN + L - 1, counted: true, why: "1 ms within the horizon" },
    { retain: 2, newest: T0 + 3 * MIN + L, counted: false, why: "exactly at the horizon's end" },
    { retain: 15, newest: T0 + 15 * MIN, counted: true, why: "the default 15 minutes" },
    { retain: 60, newest: T0 + 60 * MIN, counted: true, why: "an hour" },
  ])(
    "with an amendment horizon of $retain minutes and newest event $newest, a late event is counted: $counted ($why)",
    ({ retain, newest, counted }) => {
      const s = agg({ latePolicy: "amend", amendHorizonMs: retain * MIN, maxHoldMs: 0 });
      ingest(s, [ev("a", T0), ev("z", newest)], 0);
      advance(s, 1);
      const r = ingest(s, [ev("a", T0 + 1)], 2);
      expect([r.amended, r.late.length]).toEqual(counted ? [1, 0] : [0, 1]);
    },
  );

  it("purges a retained minute and its ids once the horizon has passed", () => {
    const s = agg({ latePolicy: "amend", amendHorizonMs: MIN });
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
  it.each(["drop", "amend"] as const)(
    "under %s accounts for every event exactly once in the ingest result",
    (policy) => {
      const s = agg({ latePolicy: policy, amendHorizonMs: MIN });
      const rnd = prng(99);
      const history: ClickEvent[] = [];
      for (let step = 0; step < 200; step++) {
        const batch = randomBatch(rnd, history, step * 1_000);
        const r = ingest(s, batch, step * 1_000);
        expect(r.accepted + r.amended + r.duplicates + r.late.length).toBe(batch.length);
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
    expect(advance(s, 0)).toEqual([]);
    expect(watermarkOf(s)).toBe(T0 + MIN - L);
  });

  it("marks a minute closed by the watermark but not emitted yet, and drops it once emitted", () => {
    const s = agg();
    ingest(s, [ev("a", T0), ev("b", T0 + MIN + L)], 0);
    ingest(s, [], 0); // the next message settles the watermark: T0 is closed, not emitted yet
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
    { over: { amendHorizonMs: -1 }, setting: "amendHorizonMs" },
    { over: { maxHoldMs: -1 }, setting: "maxHoldMs" },
    { over: { maxOpenMinutes: 0 }, setting: "maxOpenMinutes" },
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

  it("states its defaults: amend for 15 minutes, hold 10 minutes, at most 20 open minutes", () => {
    const o = createAggregatorState({
      partition: 0,
      allowedLatenessMs: L,
      idleTimeoutMs: IDLE,
      topK: 1,
      latePolicy: "amend",
    }).options;
    expect([o.amendHorizonMs, o.maxHoldMs, o.maxOpenMinutes]).toEqual([15 * MIN, 10 * MIN, 20]);
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
 * Every split point: processing time is part of the state (stream timestamps), so a restore
 * anywhere is indistinguishable from an uninterrupted run.
 */
function allSplits(steps: Step[]): number[] {
  return steps.map((_, i) => i).filter((i) => i > 0);
}

/** Restores with the options the state was created with (the configuration is authoritative). */
function restore(snap: AggregatorSnapshot, over: Partial<AggregatorOptions> = {}): AggregatorState {
  return restoreAggregator(snap, {
    partition: 3,
    allowedLatenessMs: L,
    idleTimeoutMs: IDLE,
    topK: 10,
    latePolicy: "drop",
    ...over,
  });
}

const codecs = {
  json: (s: AggregatorSnapshot) => JSON.parse(JSON.stringify(s)) as AggregatorSnapshot,
  msgpack: (s: AggregatorSnapshot) => unpack(pack(s)) as AggregatorSnapshot,
};

describe("snapshot and restore", () => {
  it.each([
    { seed: 11, policy: "drop" as const, codec: "json" as const },
    { seed: 12, policy: "amend" as const, codec: "json" as const },
    { seed: 13, policy: "drop" as const, codec: "msgpack" as const },
    { seed: 14, policy: "amend" as const, codec: "msgpack" as const },
    { seed: 15, policy: "amend" as const, codec: "json" as const },
  ])(
    "feed A, snapshot ($codec), restore, feed B emits exactly what an uninterrupted run emits (seed $seed, $policy)",
    ({ seed, policy, codec }) => {
      const steps = randomSteps(seed);
      const opts: Partial<AggregatorOptions> = {
        latePolicy: policy,
        amendHorizonMs: 3 * MIN,
        dimensions: ["country", "ip"],
      };
      const expected = run(agg(opts), steps);
      const splits = allSplits(steps);
      expect(splits.length).toBeGreaterThan(50);
      const emitted = expected as { corrections?: unknown[]; late?: unknown[] }[];
      expect(emitted.some((l) => (l.late?.length ?? 0) > 0)).toBe(true);
      if (policy === "amend")
        expect(emitted.some((l) => (l.corrections?.length ?? 0) > 0)).toBe(true);
      const rnd = prng(seed * 7);
      for (let i = 0; i < 6; i++) {
        const split = splits[Math.floor(rnd() * splits.length)] as number;
        const first = agg(opts);
        const a = run(first, steps.slice(0, split));
        const restored = restore(codecs[codec](snapshotAggregator(first)), opts);
        const b = run(restored, steps.slice(split));
        expect([...a, ...b]).toEqual(expected);
      }
    },
  );

  it("captures nothing mutable: the state goes on without changing a taken snapshot", () => {
    const s = agg({ latePolicy: "amend" });
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
    expect(snap.formatVersion).toBe(3);
    expect(snap.watermark).toEqual({
      maxEventTimeMs: null,
      watermarkMs: null,
      nowMs: null,
      sources: [],
    });
    expect(JSON.parse(JSON.stringify(snap))).toEqual(snap);
  });

  it("refuses a snapshot of another format version", () => {
    const snap = {
      ...snapshotAggregator(agg()),
      formatVersion: 5,
    } as unknown as AggregatorSnapshot;
    expect(() => restore(snap)).toThrow(AdclickError);
  });

  it("restores a format-1 snapshot (every id a string) with its dedupe set", () => {
    const s = agg();
    ingest(s, [ev("a", T0, { eventId: "c:x-1" }), ev("b", T0 + 1, { eventId: "c:x-2" })], 0);
    const v3 = snapshotAggregator(s);
    const v1 = {
      formatVersion: 1,
      options: {
        partition: 3,
        allowedLatenessMs: L,
        idleTimeoutMs: IDLE,
        dimensions: ["country"],
        topK: 10,
        latePolicy: "drop",
        retainClosedMinutes: 60,
      },
      watermark: { maxEventTimeMs: T0 + 1, watermarkMs: T0 + 1 - L },
      minutes: v3.minutes.map(({ idKeys: _keys, ...m }) => ({ ...m, ids: ["c:x-1", "c:x-2"] })),
    } as AggregatorSnapshot;
    const restored = restore(v1);
    expect(ingest(restored, [ev("a", T0 + 2, { eventId: "c:x-1" })], 1).accepted).toBe(0);
    expect(ingest(restored, [ev("a", T0 + 3, { eventId: "c:x-3" })], 1).accepted).toBe(1);
  });

  it("restores an older snapshot's single watermark as one anonymous source, heard from when it last was", () => {
    const v2 = {
      formatVersion: 2,
      options: {
        partition: 3,
        allowedLatenessMs: L,
        idleTimeoutMs: IDLE,
        dimensions: ["country"],
        topK: 10,
        latePolicy: "correct",
        retainClosedMinutes: 60,
      },
      watermark: { maxEventTimeMs: T0 + 30_000, watermarkMs: T0 + 15_000 },
      minutes: [],
    } as unknown as AggregatorSnapshot;
    const s = restoreAggregator(
      v2,
      { partition: 3, allowedLatenessMs: L, idleTimeoutMs: IDLE, topK: 10, latePolicy: "amend" },
      5_000,
    );
    expect(s.watermark.sources.get("")).toMatchObject({
      progressMs: T0 + 30_000,
      lastSeenMs: 5_000,
    });
    expect(advance(s, 5_000 + IDLE - 1)).toEqual([]);
    expect(watermarkOf(s)).toBe(T0 + 15_000);
    // Minutes closed before the snapshot may have been purged: never re-created.
    expect(s.purgedThroughMs).toBe(T0);
  });

  it("restores every source's clock: progress, last heard, ended, caught up", () => {
    const s = agg();
    ingest(s, [ev("a", T0 + 1_000)], 100, { source: "web-1:/a.log", progressMs: T0 });
    ingest(s, [], 200, { source: "web-2:/b.log", progressMs: T0 + 40_000, caughtUp: true });
    ingest(s, [], 300, { source: "web-3:/c.log", progressMs: T0 + 50_000, end: true });
    const restored = restore(codecs.msgpack(snapshotAggregator(s)));
    expect([...restored.watermark.sources.values()]).toEqual([...s.watermark.sources.values()]);
    expect(restored.watermark.nowMs).toBe(300);
  });
});

/**
 * Independent recount. Replays the watermark rules of one (anonymous) source naively — floor
 * division, string keys, a global set of counted ids — and counts the unique events the policy
 * accepts: at each message or advance, the watermark is the newest event time − lateness while
 * the source was heard from within the idle timeout, else the end of the newest minute with
 * data; a message's events are classified against the watermark before it.
 */
function oracle(
  steps: Step[],
  policy: "drop" | "amend",
  horizonMinutes: number,
): { byKey: Map<string, number>; byIp: Map<string, number> } {
  const countsByKey = new Map<string, number>();
  const byIp = new Map<string, number>();
  const counted = new Set<string>();
  let maxT = Number.NEGATIVE_INFINITY;
  let wm = Number.NEGATIVE_INFINITY;
  let last: number | null = null;
  for (const step of steps) {
    if (last !== null && Number.isFinite(maxT)) {
      const target = step.now - last >= IDLE ? (Math.floor(maxT / MIN) + 1) * MIN : maxT - L;
      wm = Math.max(wm, target);
    }
    if (step.kind === "advance") continue;
    for (const e of step.events) {
      const minute = Math.floor(e.timestampMs / MIN) * MIN;
      const horizon = policy === "drop" ? 0 : horizonMinutes * MIN;
      if (minute + MIN + horizon <= wm) continue; // late, not counted
      const idKey = `${minute}|${e.eventId}`;
      if (counted.has(idKey)) continue;
      counted.add(idKey);
      const key = `${minute}|${e.adId}|${e.country}`;
      countsByKey.set(key, (countsByKey.get(key) ?? 0) + 1);
      const ipKey = `${minute}|${e.adId}|${e.ip}`;
      byIp.set(ipKey, (byIp.get(ipKey) ?? 0) + 1);
    }
    for (const e of step.events) maxT = Math.max(maxT, e.timestampMs);
    last = step.now;
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
    { seed: 23, policy: "amend" as const, retain: 100_000, what: "all unique events" },
    { seed: 24, policy: "amend" as const, retain: 100_000, what: "all unique events" },
    { seed: 25, policy: "amend" as const, retain: 2, what: "unique events within the horizon" },
    { seed: 26, policy: "amend" as const, retain: 0, what: "unique on-time events" },
  ])(
    "under $policy (horizon $retain min) they count $what (seed $seed)",
    ({ seed, policy, retain }) => {
      const steps = randomSteps(seed);
      const s = agg({
        latePolicy: policy,
        amendHorizonMs: retain * MIN,
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
      if (policy === "amend" && retain > 0) {
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

describe("sources out of step", () => {
  const web = (n: number) => ({ source: `web-${n}:/var/log/clicks.log` });

  it("counts every click of a source that is minutes behind in its own minute, on time", () => {
    const s = agg({ latePolicy: "amend" });
    ingest(s, [], 0, web(1)); // both sources announced before any click
    ingest(s, [], 0, web(2));
    ingest(s, [ev("a", T0 + 5 * MIN), ev("a", T0 + 6 * MIN)], 1, web(1));
    expect(advance(s, 2)).toEqual([]); // web-2 holds every minute open
    const r = ingest(s, [ev("b", T0 + 10_000), ev("b", T0 + MIN + 10_000)], 3, web(2));
    expect([r.accepted, r.amended, r.late.length]).toEqual([2, 0, 0]);
    ingest(s, [], 4, { ...web(2), progressMs: T0 + 6 * MIN + 30_000 });
    // web-1 reached 6 min: minute 5 waits for it (and the lateness).
    expect(advance(s, 5).map((m) => [m.minuteStartMs, counts(m)])).toEqual([
      [T0, ["b:1"]],
      [T0 + MIN, ["b:1"]],
    ]);
  });

  it("amends the minutes of a source it had not heard of, as new revisions", () => {
    const s = agg({ latePolicy: "amend" });
    ingest(s, [ev("a", T0 + 10_000), ev("a", T0 + 3 * MIN)], 0, web(1));
    expect(advance(s, 1).map((m) => m.minuteStartMs)).toEqual([T0]);
    const r = ingest(s, [ev("b", T0 + 20_000)], 2, web(9)); // a shipper started later
    expect([r.accepted, r.amended]).toEqual([0, 1]);
    expect(r.corrections.map((m) => [m.minuteStartMs, m.version, counts(m)])).toEqual([
      [T0, 2, ["a:1", "b:1"]],
    ]);
  });

  it("moves on past a source that lags more than the hold bound, and reports it behind", () => {
    const s = agg({ latePolicy: "amend", maxHoldMs: 2 * MIN });
    ingest(s, [], 0, web(2));
    ingest(s, [ev("a", T0 + 10 * MIN)], 1, web(1));
    ingest(s, [ev("b", T0 + 10_000)], 2, web(2));
    advance(s, 3);
    expect(watermarkOf(s)).toBe(T0 + 8 * MIN - L);
    const c = completeness(s);
    expect(c.behind).toEqual([{ source: web(2).source, progressMs: T0 + 10_000 }]);
    expect(c.completeThroughMs).toBe(T0 + 10_000 - L);
    expect(sourcesOf(s).map((v) => [v.source, v.standing])).toEqual([
      [web(2).source, "lagging"],
      [web(1).source, "active"],
    ]);
    // Its later clicks are counted (amending), and it is no longer behind once it catches up.
    const r = ingest(s, [ev("b", T0 + 5 * MIN)], 4, web(2));
    expect(r.amended).toBe(1);
    ingest(s, [], 5, { ...web(2), progressMs: T0 + 10 * MIN });
    advance(s, 6);
    expect(completeness(s).behind).toEqual([]);
  });

  it("keeps at most maxOpenMinutes open minutes holding data: the oldest close", () => {
    const s = agg({ latePolicy: "amend", maxOpenMinutes: 3 });
    ingest(s, [], 0, web(2)); // announced, never heard again: holds everything
    const events = [0, 1, 2, 3, 4, 5].map((i) => ev("a", T0 + i * MIN));
    ingest(s, events, 1, web(1));
    expect(advance(s, 2).map((m) => m.minuteStartMs)).toEqual([T0, T0 + MIN, T0 + 2 * MIN]);
    expect(s.pending.size).toBe(3);
  });

  it("never re-creates a purged minute: a click of it is left to the late repair", () => {
    const s = agg({ latePolicy: "amend", amendHorizonMs: MIN });
    ingest(s, [ev("a", T0), ev("a", T0 + 5 * MIN)], 0, web(1));
    advance(s, 1); // T0 closed, and already past its one-minute horizon: purged
    expect(s.purgedThroughMs).toBe(T0 + MIN);
    const r = ingest(s, [ev("b", T0 + 30_000)], 2, web(2));
    expect([r.amended, r.late.length, r.lateReason]).toEqual([0, 1, "horizon"]);
  });

  it("tells sources apart: standing, progress, last heard", () => {
    const s = agg();
    ingest(s, [], 10, { source: "b", progressMs: T0, caughtUp: true });
    ingest(s, [ev("a", T0 + MIN)], 20, { source: "a" });
    ingest(s, [], 30, { source: "c", end: true, progressMs: T0 + 2 * MIN });
    advance(s, 31);
    expect(sourcesOf(s)).toEqual([
      { source: "b", progressMs: T0, standing: "caught-up", lastSeenMs: 10 },
      { source: "a", progressMs: T0 + MIN, standing: "active", lastSeenMs: 20 },
      { source: "c", progressMs: T0 + 2 * MIN, standing: "ended", lastSeenMs: 30 },
    ]);
  });
});

describe("the configuration is authoritative on restore", () => {
  function withState(over: Partial<AggregatorOptions> = {}) {
    const s = agg({ latePolicy: "amend", ...over });
    ingest(s, [ev("a", T0), ev("a", T0 + 5 * MIN)], 0, { source: "w" });
    advance(s, 1);
    return snapshotAggregator(s);
  }

  it.each<{ change: Partial<AggregatorOptions>; option: string }>([
    { change: { allowedLatenessMs: 30_000 }, option: "allowedLatenessMs" },
    { change: { idleTimeoutMs: 20_000 }, option: "idleTimeoutMs" },
    { change: { maxHoldMs: MIN }, option: "maxHoldMs" },
    { change: { maxOpenMinutes: 5 }, option: "maxOpenMinutes" },
    { change: { topK: 3 }, option: "topK" },
    { change: { latePolicy: "drop" }, option: "latePolicy" },
    { change: { amendHorizonMs: MIN }, option: "amendHorizonMs" },
  ])("applies a changed $option to the restored state", ({ change, option }) => {
    const snap = withState();
    const configured = {
      partition: 3,
      allowedLatenessMs: L,
      idleTimeoutMs: IDLE,
      topK: 10,
      latePolicy: "amend" as const,
      ...change,
    };
    const changes = checkRestorable(snap, configured);
    expect(changes.map((c) => c.option)).toEqual([option]);
    const s = restoreAggregator(snap, configured);
    const key = option as keyof typeof s.options;
    expect(s.options[key]).toEqual(change[option as keyof AggregatorOptions]);
  });

  it("refuses changed dimensions while minutes counted without them are held, naming both values", () => {
    const snap = withState();
    let err: unknown;
    try {
      checkRestorable(
        snap,
        {
          partition: 3,
          allowedLatenessMs: L,
          idleTimeoutMs: IDLE,
          topK: 10,
          latePolicy: "amend",
          dimensions: ["country", "ip"],
        },
        (o) => (o === "dimensions" ? "ADCLICK_DIMENSIONS" : o),
      );
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const e = err as ConfigError;
    expect(e.setting).toBe("ADCLICK_DIMENSIONS");
    expect(e.message).toContain('counts "country"');
    expect(e.message).toContain('says "country,ip"');
    expect(e.message).toContain("ADCLICK_DIMENSIONS=country");
  });

  it("applies changed dimensions when the state holds no minute", () => {
    const s = agg({ latePolicy: "amend" });
    ingest(s, [ev("a", T0)], 0, { source: "w", end: true });
    advance(s, 1);
    advance(s, 2 * IDLE); // emitted; then past the horizon with no source left
    const empty = { ...snapshotAggregator(s), minutes: [] };
    const configured = {
      partition: 3,
      allowedLatenessMs: L,
      idleTimeoutMs: IDLE,
      topK: 10,
      latePolicy: "amend" as const,
      dimensions: ["country", "ip"] as Dimension[],
    };
    expect(checkRestorable(empty, configured).map((c) => c.option)).toEqual(["dimensions"]);
    const restored = restoreAggregator(empty, configured);
    ingest(restored, [ev("b", T0 + 20 * MIN, { ip: "1.2.3.4" })], 3, { source: "w", end: true });
    const [m] = advance(restored, 3 + IDLE);
    expect(m?.dimCounts.ip).toEqual([["b", "1.2.3.4", 1]]);
  });

  it("switching drop → amend never re-creates minutes dropped earlier", () => {
    const s = agg({ latePolicy: "drop" });
    ingest(s, [ev("a", T0), ev("a", T0 + 5 * MIN)], 0, { source: "w" });
    advance(s, 1); // T0 emitted and forgotten under drop
    const restored = restoreAggregator(snapshotAggregator(s), {
      partition: 3,
      allowedLatenessMs: L,
      idleTimeoutMs: IDLE,
      topK: 10,
      latePolicy: "amend",
    });
    const r = ingest(restored, [ev("b", T0 + 1)], 2, { source: "w" });
    expect([r.amended, r.late.length, r.lateReason]).toEqual([0, 1, "horizon"]);
  });
});
