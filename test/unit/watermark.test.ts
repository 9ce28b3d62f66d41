import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/errors.js";
import {
  completenessOf,
  createWatermark,
  DEFAULT_ALLOWED_LATENESS_MS,
  holderOf,
  idleDeadlineMs,
  isWindowClosed,
  maxProgressOf,
  observeSource,
  restoreWatermark,
  SOURCE_FORGET_AFTER_MS,
  type SourceReport,
  snapshotWatermark,
  standingOf,
  updateWatermark,
  type WatermarkState,
} from "../../src/windows/watermark.js";

const L = 15_000;
const IDLE = 10_000;
const HOLD = 10 * 60_000;
const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9);

function gen(o: { lateness?: number; idle?: number; hold?: number } = {}): WatermarkState {
  return createWatermark({
    allowedLatenessMs: o.lateness ?? L,
    idleTimeoutMs: o.idle ?? IDLE,
    maxHoldMs: o.hold ?? HOLD,
  });
}

/** A message of `source` at processing time `now`: clicks up to `max`, and/or a mark. */
type Msg = [source: string, now: number, report: Partial<SourceReport>];

function feed(w: WatermarkState, msgs: readonly Msg[]): WatermarkState {
  for (const [source, now, r] of msgs) {
    updateWatermark(w, now);
    observeSource(w, source, { maxEventTimeMs: Number.NEGATIVE_INFINITY, ...r }, now);
  }
  return w;
}

/** The watermark after the messages, settled at processing time `at`. */
function after(msgs: readonly Msg[], at: number, o?: Parameters<typeof gen>[0]): number {
  const w = feed(gen(o), msgs);
  updateWatermark(w, at);
  return w.watermarkMs;
}

describe("one source: bounded out-of-orderness", () => {
  it("starts at minus infinity, so no window is closed before anything is known", () => {
    const w = gen();
    expect(w.watermarkMs).toBe(Number.NEGATIVE_INFINITY);
    updateWatermark(w, 0);
    expect(w.watermarkMs).toBe(Number.NEGATIVE_INFINITY);
    expect(isWindowClosed(w, -1e15)).toBe(false);
  });

  it("exports the SPEC's lateness for callers to pass explicitly", () => {
    expect(DEFAULT_ALLOWED_LATENESS_MS).toBe(15_000);
  });

  it.each<{ msgs: Msg[]; wm: number; why: string }>([
    {
      msgs: [["a", 0, { maxEventTimeMs: 75_000 }]],
      wm: 60_000,
      why: "max event time minus the lateness",
    },
    {
      msgs: [
        ["a", 0, { maxEventTimeMs: 75_000 }],
        ["a", 1, { maxEventTimeMs: 10_000 }],
      ],
      wm: 60_000,
      why: "an older click never moves it back",
    },
    {
      msgs: [["a", 0, { progressMs: 75_000 }]],
      wm: 60_000,
      why: "a progress mark counts like a click",
    },
    {
      msgs: [["a", 0, { maxEventTimeMs: 30_000, progressMs: 75_000 }]],
      wm: 60_000,
      why: "the larger of the clicks and the mark",
    },
    { msgs: [["a", 0, { maxEventTimeMs: 0 }]], wm: -15_000, why: "it may be negative" },
  ])("is $wm after $msgs.length message(s): $why", ({ msgs, wm }) => {
    expect(after(msgs, 1)).toBe(wm);
  });

  it.each([
    { max: 74_999, closed: false, why: "the last ms of minute 0 is exactly the lateness behind" },
    { max: 75_000, closed: true, why: "1 ms past the lateness closes minute 0" },
    { max: 60_000, closed: false, why: "a click of minute 1 alone does not close minute 0" },
  ])("minute [0, 60 s) closed=$closed after a click at $max ms ($why)", ({ max, closed }) => {
    const w = feed(gen(), [["a", 0, { maxEventTimeMs: max }]]);
    updateWatermark(w, 1);
    expect(isWindowClosed(w, 60_000)).toBe(closed);
  });

  it("never goes backwards over random messages of random sources", () => {
    const w = gen({ hold: 60_000 });
    let prev = w.watermarkMs;
    let x = 12345;
    for (let i = 0; i < 3000; i++) {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      const source = `s${x % 5}`;
      updateWatermark(w, i * 700);
      observeSource(
        w,
        source,
        { maxEventTimeMs: x % 1_000_000, end: x % 17 === 0, caughtUp: x % 13 === 0 },
        i * 700,
      );
      updateWatermark(w, i * 700);
      expect(w.watermarkMs).toBeGreaterThanOrEqual(prev);
      prev = w.watermarkMs;
    }
  });
});

describe("many sources: the slowest active one holds the watermark", () => {
  // Every case announces "slow" first (a mark without progress), as shippers announce their
  // files before any click: a source first heard of later cannot pull a watermark back.
  const announce: Msg = ["slow", 0, { progressMs: null }];
  const fast: Msg = ["fast", 0, { maxEventTimeMs: T0 + 5 * MIN }];
  it.each<{ msgs: Msg[]; at: number; wm: number; why: string }>([
    {
      msgs: [announce, fast, ["slow", 0, { maxEventTimeMs: T0 + MIN }]],
      at: 1,
      wm: T0 + MIN - L,
      why: "a source 4 minutes behind holds it",
    },
    {
      msgs: [announce, fast],
      at: 1,
      wm: T0 + 5 * MIN - L - HOLD,
      why: "a source announced before any click holds everything within the hold bound",
    },
    {
      msgs: [fast, ["slow", 0, { maxEventTimeMs: T0 + MIN }]],
      at: 1,
      wm: T0 + 5 * MIN - L,
      why: "a source heard of only after the others moved on holds nothing it has missed",
    },
    {
      msgs: [
        announce,
        fast,
        ["slow", 0, { maxEventTimeMs: T0 + MIN }],
        ["slow", 1, { end: true, progressMs: T0 + 2 * MIN }],
      ],
      at: 2,
      wm: T0 + 5 * MIN - L,
      why: "an ended source holds nothing",
    },
    {
      msgs: [announce, fast, ["slow", 0, { maxEventTimeMs: T0 + MIN, caughtUp: true }]],
      at: 1,
      wm: T0 + 5 * MIN - L,
      why: "a caught-up source holds nothing",
    },
    {
      msgs: [
        announce,
        fast,
        ["slow", 0, { maxEventTimeMs: T0 + MIN }],
        ["fast", IDLE - 1, { maxEventTimeMs: T0 + 5 * MIN }],
      ],
      at: IDLE,
      wm: T0 + 5 * MIN - L,
      why: "a source silent for the idle timeout holds nothing",
    },
    {
      msgs: [
        announce,
        fast,
        ["slow", 0, { maxEventTimeMs: T0 + MIN }],
        ["fast", IDLE - 1, { maxEventTimeMs: T0 + 5 * MIN }],
      ],
      at: IDLE - 1,
      wm: T0 + MIN - L,
      why: "1 ms before the idle timeout it still holds",
    },
    {
      msgs: [
        announce,
        fast,
        ["slow", 0, { maxEventTimeMs: T0 + MIN }],
        ["slow", 5, { progressMs: T0 + 3 * MIN }],
      ],
      at: 6,
      wm: T0 + 3 * MIN - L,
      why: "a heartbeat moves a source without any click",
    },
    {
      msgs: [
        announce,
        fast,
        ["slow", 0, { maxEventTimeMs: T0 + MIN }],
        ["slow", 5, { progressMs: T0 + 3 * MIN }],
        ["slow", 6, { progressMs: T0 + 2 * MIN }],
      ],
      at: 7,
      wm: T0 + 3 * MIN - L,
      why: "a heartbeat out of order (an older mark after a newer one) changes nothing",
    },
    {
      msgs: [
        announce,
        fast,
        ["slow", 0, { maxEventTimeMs: T0 + MIN, end: true }],
        ["slow", 1, { maxEventTimeMs: T0 + MIN + 30_000 }],
      ],
      at: 2,
      wm: T0 + 5 * MIN - L,
      why: "a source that speaks after ending holds again, but never below the watermark",
    },
  ])("$why", ({ msgs, at, wm }) => {
    expect(after(msgs, at)).toBe(wm);
  });

  it.each<{ behind: number; wm: number; lagging: boolean; why: string }>([
    {
      behind: HOLD,
      wm: T0 + 20 * MIN - HOLD - L,
      lagging: false,
      why: "exactly the hold bound behind",
    },
    {
      behind: HOLD + 1,
      wm: T0 + 20 * MIN - HOLD - L,
      lagging: true,
      why: "1 ms past the bound: the watermark moves on without it",
    },
    { behind: 3 * HOLD, wm: T0 + 20 * MIN - HOLD - L, lagging: true, why: "far behind" },
  ])("bounds a hold in event time: $why", ({ behind, wm, lagging }) => {
    const w = feed(gen(), [
      ["slow", 0, {}],
      ["fast", 0, { maxEventTimeMs: T0 + 20 * MIN }],
      ["slow", 0, { maxEventTimeMs: T0 + 20 * MIN - behind }],
    ]);
    updateWatermark(w, 1);
    expect(w.watermarkMs).toBe(wm);
    const slow = w.sources.get("slow");
    expect(slow && standingOf(w, slow)).toBe(lagging ? "lagging" : "active");
    expect(completenessOf(w).behind.map((b) => b.source)).toEqual(lagging ? ["slow"] : []);
  });

  it("reports how complete it is: the lagging sources and the instant every active source passed", () => {
    const w = feed(gen(), [
      ["new", 0, {}],
      ["a", 0, {}],
      ["b", 0, {}],
      ["fast", 0, { maxEventTimeMs: T0 + 30 * MIN }],
      ["b", 0, { maxEventTimeMs: T0 + 12 * MIN }],
      ["a", 0, { maxEventTimeMs: T0 + 2 * MIN }],
      ["new", 0, {}],
    ]);
    updateWatermark(w, 1);
    const c = completenessOf(w);
    expect(c.watermarkMs).toBe(T0 + 20 * MIN - L);
    expect(c.completeThroughMs).toBe(Number.NEGATIVE_INFINITY); // "new" has no progress at all
    expect(c.behind).toEqual([
      { source: "new", progressMs: Number.NEGATIVE_INFINITY },
      { source: "a", progressMs: T0 + 2 * MIN },
      { source: "b", progressMs: T0 + 12 * MIN },
    ]);
    observeSource(w, "new", { maxEventTimeMs: Number.NEGATIVE_INFINITY, end: true }, 2);
    updateWatermark(w, 2);
    expect(completenessOf(w).completeThroughMs).toBe(T0 + 2 * MIN - L);
  });

  it("names the source holding the watermark back, and none when nothing holds it", () => {
    const w = feed(gen(), [
      ["slow", 0, {}],
      ["fast", 0, { maxEventTimeMs: T0 + 5 * MIN }],
      ["slow", 0, { maxEventTimeMs: T0 + 2 * MIN }],
    ]);
    updateWatermark(w, 1);
    expect(holderOf(w)).toEqual({ source: "slow", progressMs: T0 + 2 * MIN });
    feed(w, [["slow", 2, { maxEventTimeMs: T0 + 6 * MIN }]]);
    updateWatermark(w, 3);
    expect(holderOf(w)).toEqual({ source: "fast", progressMs: T0 + 5 * MIN }); // the slowest now
    feed(w, [["fast", 4, { end: true }]]);
    updateWatermark(w, 5);
    expect(holderOf(w)).toBeNull(); // the one left is the most advanced: nothing held back
  });

  it("is complete through the watermark when no source is behind", () => {
    const w = feed(gen(), [
      ["b", 0, {}],
      ["a", 0, { maxEventTimeMs: T0 + 5 * MIN }],
      ["b", 0, { maxEventTimeMs: T0 + 6 * MIN }],
    ]);
    updateWatermark(w, 1);
    expect(completenessOf(w)).toEqual({
      watermarkMs: T0 + 5 * MIN - L,
      completeThroughMs: T0 + 5 * MIN - L,
      behind: [],
    });
  });
});

describe("no live source: everything holding data closes", () => {
  it.each<{ msgs: Msg[]; at: number; wm: number; why: string }>([
    {
      msgs: [["a", 0, { maxEventTimeMs: T0 + MIN + 30_000 }]],
      at: IDLE,
      wm: T0 + 2 * MIN,
      why: "its only source idle: the end of the newest minute with data",
    },
    {
      msgs: [
        ["a", 0, { maxEventTimeMs: T0 + MIN + 30_000 }],
        ["a", 1, { end: true, progressMs: T0 + MIN + 30_000 }],
      ],
      at: 1 + IDLE,
      wm: T0 + 2 * MIN,
      why: "its only source ended, the idle timeout after its last word",
    },
    {
      msgs: [
        ["a", 0, { maxEventTimeMs: T0 + MIN + 30_000 }],
        ["a", 1, { end: true, progressMs: T0 + MIN + 30_000 }],
      ],
      at: IDLE,
      wm: T0 + MIN + 30_000 - L,
      why: "not before: a source starting right after may still find its minutes open",
    },
    {
      msgs: [
        ["a", 0, { maxEventTimeMs: T0 + MIN + 30_000 }],
        ["b", 0, { maxEventTimeMs: T0 + 5 * MIN, end: true }],
        ["a", 1, { end: true }],
      ],
      at: 1 + IDLE,
      wm: T0 + 6 * MIN,
      why: "every source ended: through the most advanced one",
    },
    {
      msgs: [
        ["a", 0, { maxEventTimeMs: T0 + MIN + 30_000, caughtUp: true }],
        ["b", 0, { maxEventTimeMs: T0 + 40_000, caughtUp: true }],
      ],
      at: 1,
      wm: T0 + MIN + 30_000 - L,
      why: "caught-up live sources: the newest click minus the lateness, no further",
    },
    {
      msgs: [["a", 0, { maxEventTimeMs: T0 + MIN + 30_000 }]],
      at: IDLE - 1,
      wm: T0 + MIN + 30_000 - L,
      why: "1 ms before the idle timeout nothing jumps",
    },
  ])("$why", ({ msgs, at, wm }) => {
    expect(after(msgs, at)).toBe(wm);
  });

  it("resumes by event time after a jump: newer clicks are on time", () => {
    const w = feed(gen(), [["a", 0, { maxEventTimeMs: T0 + 30_000 }]]);
    updateWatermark(w, IDLE);
    expect(w.watermarkMs).toBe(T0 + MIN);
    feed(w, [["a", IDLE + 1, { maxEventTimeMs: T0 + 3 * MIN }]]);
    updateWatermark(w, IDLE + 2);
    expect(w.watermarkMs).toBe(T0 + 3 * MIN - L);
  });
});

describe("idle deadline", () => {
  it.each<{ msgs: Msg[]; deadline: number | null; why: string }>([
    { msgs: [], deadline: null, why: "no source" },
    {
      msgs: [["a", 7_000, { maxEventTimeMs: T0 }]],
      deadline: 7_000 + IDLE,
      why: "one active source",
    },
    {
      msgs: [
        ["a", 7_000, { maxEventTimeMs: T0 }],
        ["b", 3_000, { maxEventTimeMs: T0 }],
      ],
      deadline: 3_000 + IDLE,
      why: "the earliest of the holding sources",
    },
    {
      msgs: [["a", 7_000, { maxEventTimeMs: T0, caughtUp: true }]],
      deadline: 7_000 + IDLE,
      why: "a caught-up source: once it is silent, its minutes close",
    },
    {
      msgs: [["a", 7_000, { maxEventTimeMs: T0, end: true }]],
      deadline: 7_000 + IDLE,
      why: "an ended source: its minutes close the idle timeout after its last word",
    },
  ])("is $deadline with $why", ({ msgs, deadline }) => {
    expect(idleDeadlineMs(feed(gen(), msgs))).toBe(deadline);
  });
});

describe("options, memory and snapshots", () => {
  it.each([
    { o: { allowedLatenessMs: -1, idleTimeoutMs: 1, maxHoldMs: 0 }, setting: "allowedLatenessMs" },
    { o: { allowedLatenessMs: 0, idleTimeoutMs: 0, maxHoldMs: 0 }, setting: "idleTimeoutMs" },
    { o: { allowedLatenessMs: 0, idleTimeoutMs: 1, maxHoldMs: -1 }, setting: "maxHoldMs" },
    { o: { allowedLatenessMs: 1.5, idleTimeoutMs: 1, maxHoldMs: 0 }, setting: "allowedLatenessMs" },
  ])("rejects an invalid $setting with a ConfigError naming it", ({ o, setting }) => {
    let err: unknown;
    try {
      createWatermark(o);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).setting).toBe(setting);
  });

  it("forgets sources ended or idle for a day, keeping what they told", () => {
    const w = feed(gen(), [
      ["gone", 0, { maxEventTimeMs: T0 + 9 * MIN, end: true }],
      ["quiet", 0, { maxEventTimeMs: T0 + MIN }],
      ["live", SOURCE_FORGET_AFTER_MS, { maxEventTimeMs: T0 + 2 * MIN }],
    ]);
    updateWatermark(w, SOURCE_FORGET_AFTER_MS);
    expect([...w.sources.keys()]).toEqual(["live"]);
    expect(maxProgressOf(w)).toBe(T0 + 9 * MIN); // the clicks it counted still say so
  });

  it("round-trips through JSON, with null for nothing known yet", () => {
    const w = feed(gen(), [
      ["a", 100, { maxEventTimeMs: T0 + MIN }],
      ["b", 200, { progressMs: null, caughtUp: true }],
      ["c", 300, { progressMs: T0 + 5 * MIN, end: true }],
    ]);
    updateWatermark(w, 400);
    const snap = JSON.parse(JSON.stringify(snapshotWatermark(w)));
    expect(snap.sources.find((s: { id: string }) => s.id === "b").progressMs).toBeNull();
    const back = restoreWatermark(
      { allowedLatenessMs: L, idleTimeoutMs: IDLE, maxHoldMs: HOLD },
      snap,
    );
    expect(back.watermarkMs).toBe(w.watermarkMs);
    expect(back.nowMs).toBe(400);
    expect([...back.sources.values()]).toEqual([...w.sources.values()]);
    expect(snapshotWatermark(gen())).toEqual({
      maxEventTimeMs: null,
      watermarkMs: null,
      nowMs: null,
      sources: [],
    });
  });

  it("restores with the configured options: a longer lateness applies to what follows", () => {
    const w = feed(gen(), [["a", 0, { maxEventTimeMs: T0 + 5 * MIN }]]);
    updateWatermark(w, 1);
    const back = restoreWatermark(
      { allowedLatenessMs: 60_000, idleTimeoutMs: IDLE, maxHoldMs: HOLD },
      snapshotWatermark(w),
    );
    updateWatermark(back, 2);
    expect(back.watermarkMs).toBe(T0 + 5 * MIN - L); // never back
    feed(back, [["a", 3, { maxEventTimeMs: T0 + 7 * MIN }]]);
    updateWatermark(back, 4);
    expect(back.watermarkMs).toBe(T0 + 6 * MIN);
  });
});
