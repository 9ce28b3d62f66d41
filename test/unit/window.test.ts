import { describe, expect, it } from "vitest";
import { WINDOW_SIZE_MS, windowEndOf, windowStartOf } from "../../src/windows/window.js";

const T = Date.UTC(2024, 6, 9, 0, 0, 0); // 2024-07-09 00:00:00 UTC, a whole minute

describe("windowStartOf", () => {
  it.each([
    { ts: 0, start: 0, why: "the epoch starts minute 0" },
    { ts: 1, start: 0, why: "1 ms is in minute 0" },
    { ts: 59_999, start: 0, why: "59.999 s is the last millisecond of minute 0" },
    { ts: 60_000, start: 60_000, why: "60.000 s starts minute 1" },
    { ts: 60_001, start: 60_000, why: "60.001 s is in minute 1" },
    { ts: 119_999, start: 60_000, why: "119.999 s is the last millisecond of minute 1" },
    { ts: -1, start: -60_000, why: "-1 ms floors to the minute before the epoch" },
    { ts: -59_999, start: -60_000, why: "-59.999 s floors to minute -1" },
    { ts: -60_000, start: -60_000, why: "-60 s is exactly the start of minute -1" },
    { ts: -60_001, start: -120_000, why: "-60.001 s floors to minute -2" },
    { ts: T, start: T, why: "a real whole-minute timestamp is its own start" },
    { ts: T + 59_999, start: T, why: "a real timestamp's 59.999 s stays in its minute" },
    { ts: T + 60_000, start: T + 60_000, why: "a real timestamp's 60.000 s is the next minute" },
    { ts: T - 1, start: T - 60_000, why: "one ms before a real minute is the minute before" },
    {
      ts: Number.MAX_SAFE_INTEGER,
      start: Number.MAX_SAFE_INTEGER - (Number.MAX_SAFE_INTEGER % 60_000),
      why: "the largest safe integer is assigned exactly (no division rounding)",
    },
  ])("assigns $ts ms to the window starting at $start ms ($why)", ({ ts, start }) => {
    expect(windowStartOf(ts)).toBe(start);
    expect(Object.is(windowStartOf(ts), -0)).toBe(false);
  });

  it.each([
    { ts: 0, size: 1000, start: 0 },
    { ts: 999, size: 1000, start: 0 },
    { ts: 1000, size: 1000, start: 1000 },
    { ts: -1, size: 1000, start: -1000 },
    { ts: 12_345, size: 5_000, start: 10_000 },
    { ts: -12_345, size: 5_000, start: -15_000 },
  ])("assigns $ts ms to $start ms with a window of $size ms", ({ ts, size, start }) => {
    expect(windowStartOf(ts, size)).toBe(start);
  });

  it.each([0, -60_000, 0.5, Number.NaN, Number.POSITIVE_INFINITY])(
    "rejects a window size of %s ms",
    (size) => {
      expect(() => windowStartOf(1, size)).toThrow(RangeError);
    },
  );

  it("uses one-minute windows by default", () => {
    expect(WINDOW_SIZE_MS).toBe(60_000);
  });
});

describe("windowEndOf", () => {
  it.each([
    { ts: 0, end: 60_000 },
    { ts: 59_999, end: 60_000 },
    { ts: 60_000, end: 120_000 },
    { ts: -1, end: 0 },
    { ts: -60_000, end: 0 },
    { ts: T + 59_999, end: T + 60_000 },
  ])("ends the window of $ts ms (exclusively) at $end ms", ({ ts, end }) => {
    expect(windowEndOf(ts)).toBe(end);
  });

  it("contains every timestamp in [start, end)", () => {
    for (let ts = -130_000; ts <= 130_000; ts += 997) {
      const start = windowStartOf(ts);
      const end = windowEndOf(ts);
      expect(start <= ts && ts < end).toBe(true);
      expect(end - start).toBe(60_000);
      expect(start % 60_000 === 0).toBe(true);
    }
  });
});
