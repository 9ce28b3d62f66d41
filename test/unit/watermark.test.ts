import { describe, expect, it } from "vitest";
import { ConfigError } from "../../src/errors.js";
import {
  applyIdle,
  createWatermark,
  DEFAULT_ALLOWED_LATENESS_MS,
  idleDeadlineMs,
  isWindowClosed,
  markArrival,
  observeEventTime,
  restoreWatermark,
  snapshotWatermark,
  type WatermarkState,
} from "../../src/windows/watermark.js";

const L = 15_000;
const IDLE = 10_000;

function gen(lateness = L, idle = IDLE): WatermarkState {
  return createWatermark({ allowedLatenessMs: lateness, idleTimeoutMs: idle });
}

function seen(times: number[], lateness = L): WatermarkState {
  const w = gen(lateness);
  for (const t of times) observeEventTime(w, t);
  return w;
}

describe("watermark from event time", () => {
  it("starts at minus infinity, so no window is closed before the first event", () => {
    const w = gen();
    expect(w.watermarkMs).toBe(Number.NEGATIVE_INFINITY);
    expect(isWindowClosed(w, -1e15)).toBe(false);
  });

  it("exports the SPEC's lateness for callers to pass explicitly", () => {
    expect(DEFAULT_ALLOWED_LATENESS_MS).toBe(15_000);
  });

  it.each([
    { times: [75_000], wm: 60_000, why: "max event time minus the allowed lateness" },
    { times: [75_000, 10_000], wm: 60_000, why: "an older event never moves it back" },
    { times: [10_000, 75_000, 74_000], wm: 60_000, why: "it follows the maximum, not the last" },
    { times: [0], wm: -15_000, why: "it may be negative" },
  ])("is $wm ms after events $times ($why)", ({ times, wm }) => {
    expect(seen(times).watermarkMs).toBe(wm);
  });

  it.each([
    {
      max: 74_999,
      closed: false,
      why: "the last ms of minute 0 is exactly the allowed lateness behind: still open",
    },
    { max: 75_000, closed: true, why: "1 ms past the allowed lateness closes minute 0" },
    { max: 60_000, closed: false, why: "an event of minute 1 alone does not close minute 0" },
    { max: 1_000_000, closed: true, why: "far newer events close it" },
  ])("minute [0, 60 s) closed=$closed after max event time $max ms ($why)", ({ max, closed }) => {
    expect(isWindowClosed(seen([max]), 60_000)).toBe(closed);
  });

  it.each([
    { max: 59_999, closed: false },
    { max: 60_000, closed: true },
  ])("with zero lateness, minute 0 closed=$closed at max event time $max ms", ({ max, closed }) => {
    expect(isWindowClosed(seen([max], 0), 60_000)).toBe(closed);
  });

  it("never goes backwards over a random sequence of event times", () => {
    const w = gen();
    let prev = w.watermarkMs;
    let x = 12345;
    for (let i = 0; i < 2000; i++) {
      x = (x * 1103515245 + 12345) & 0x7fffffff;
      observeEventTime(w, x % 1_000_000);
      expect(w.watermarkMs).toBeGreaterThanOrEqual(prev);
      prev = w.watermarkMs;
    }
  });
});

describe("idle advancement", () => {
  function afterArrival(times: number[], arrivedAtMs: number): WatermarkState {
    const w = seen(times);
    markArrival(w, arrivedAtMs);
    return w;
  }

  it.each([
    { now: 1_000 + IDLE - 1, moved: false, wm: 20_000 - L, why: "1 ms before the idle timeout" },
    { now: 1_000 + IDLE, moved: true, wm: 60_000, why: "exactly at the idle timeout" },
    { now: 1_000 + 10 * IDLE, moved: true, wm: 60_000, why: "long after the idle timeout" },
    { now: 0, moved: false, wm: 20_000 - L, why: "a processing time before the arrival" },
  ])("at now=$now ms moved=$moved, watermark $wm ms ($why)", ({ now, moved, wm }) => {
    const w = afterArrival([20_000], 1_000);
    expect(applyIdle(w, now)).toBe(moved);
    expect(w.watermarkMs).toBe(wm);
  });

  it("closes the newest minute holding data, and no later minute", () => {
    const w = afterArrival([119_999], 0);
    applyIdle(w, IDLE);
    expect(isWindowClosed(w, 120_000)).toBe(true);
    expect(isWindowClosed(w, 180_000)).toBe(false);
  });

  it.each([
    { t: 119_999, late: true, why: "an event of the minute made final is late" },
    { t: 60_000, late: true, why: "an event of an older minute is late" },
    { t: 120_000, late: false, why: "an event of the next minute is on time" },
    { t: 170_000, late: false, why: "a newer event is on time" },
  ])("after idle closing, event at $t ms is late=$late ($why)", ({ t, late }) => {
    const w = afterArrival([100_000], 0);
    applyIdle(w, IDLE);
    expect(isWindowClosed(w, t - (t % 60_000) + 60_000)).toBe(late);
  });

  it("never moves the watermark back when it is already past the idle target", () => {
    const w = afterArrival([200_000], 0);
    w.watermarkMs = 500_000; // as if restored from a later state
    expect(applyIdle(w, IDLE)).toBe(false);
    expect(w.watermarkMs).toBe(500_000);
  });

  it("is idempotent: a second idle step changes nothing", () => {
    const w = afterArrival([100_000], 0);
    expect(applyIdle(w, IDLE)).toBe(true);
    expect(applyIdle(w, 3 * IDLE)).toBe(false);
    expect(w.watermarkMs).toBe(120_000);
  });

  it("does nothing before any event was seen", () => {
    const w = gen();
    markArrival(w, 0);
    expect(applyIdle(w, 100 * IDLE)).toBe(false);
    expect(w.watermarkMs).toBe(Number.NEGATIVE_INFINITY);
  });

  it("starts a stopped idle clock instead of firing, so downtime is not idleness", () => {
    const w = seen([100_000]); // lastEventAtMs null, like after a restore
    expect(applyIdle(w, 1_000_000)).toBe(false);
    expect(w.lastEventAtMs).toBe(1_000_000);
    expect(applyIdle(w, 1_000_000 + IDLE - 1)).toBe(false);
    expect(applyIdle(w, 1_000_000 + IDLE)).toBe(true);
  });

  it("resumes normal advancement by event time after an idle jump", () => {
    const w = afterArrival([100_000], 0);
    applyIdle(w, IDLE);
    observeEventTime(w, 130_000); // 130 000 - L = 115 000 < 120 000: stays at the idle target
    expect(w.watermarkMs).toBe(120_000);
    observeEventTime(w, 200_000);
    expect(w.watermarkMs).toBe(185_000);
  });
});

describe("idle deadline", () => {
  it.each([
    { setup: "no event", times: [] as number[], arrived: 0 as number | null, deadline: null },
    { setup: "stopped idle clock", times: [5_000], arrived: null, deadline: null },
    { setup: "an event arrived at 1 s", times: [5_000], arrived: 1_000, deadline: 1_000 + IDLE },
  ])("with $setup is $deadline", ({ times, arrived, deadline }) => {
    const w = seen(times);
    if (arrived !== null) markArrival(w, arrived);
    expect(idleDeadlineMs(w)).toBe(deadline);
  });

  it("is null once idle advancement has closed everything holding data", () => {
    const w = seen([5_000]);
    markArrival(w, 0);
    applyIdle(w, IDLE);
    expect(idleDeadlineMs(w)).toBeNull();
  });
});

describe("options and snapshots", () => {
  it.each([
    { opts: { allowedLatenessMs: -1, idleTimeoutMs: IDLE }, setting: "allowedLatenessMs" },
    { opts: { allowedLatenessMs: 1.5, idleTimeoutMs: IDLE }, setting: "allowedLatenessMs" },
    { opts: { allowedLatenessMs: L, idleTimeoutMs: 0 }, setting: "idleTimeoutMs" },
    { opts: { allowedLatenessMs: L, idleTimeoutMs: Number.NaN }, setting: "idleTimeoutMs" },
    {
      opts: { allowedLatenessMs: L, idleTimeoutMs: IDLE, windowSizeMs: 0 },
      setting: "windowSizeMs",
    },
  ])("rejects an invalid $setting", ({ opts, setting }) => {
    expect(() => createWatermark(opts)).toThrow(ConfigError);
    try {
      createWatermark(opts);
    } catch (e) {
      expect((e as ConfigError).setting).toBe(setting);
    }
  });

  it("round-trips through JSON, with null for nothing seen yet", () => {
    const fresh = snapshotWatermark(gen());
    expect(fresh).toEqual({ maxEventTimeMs: null, watermarkMs: null });
    const w = seen([75_000]);
    markArrival(w, 123);
    const snap = JSON.parse(JSON.stringify(snapshotWatermark(w)));
    const r = restoreWatermark({ allowedLatenessMs: L, idleTimeoutMs: IDLE }, snap);
    expect(r.maxEventTimeMs).toBe(75_000);
    expect(r.watermarkMs).toBe(60_000);
    expect(r.lastEventAtMs).toBeNull();
    const r0 = restoreWatermark({ allowedLatenessMs: L, idleTimeoutMs: IDLE }, fresh);
    expect(r0.watermarkMs).toBe(Number.NEGATIVE_INFINITY);
  });
});
