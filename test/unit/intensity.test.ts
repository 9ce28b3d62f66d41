import { describe, expect, it } from "vitest";
import { admitRestart, backoffMs } from "../../supervisor/intensity.js";

const policy = { maxRestarts: 3, withinMs: 10_000, baseBackoffMs: 100, maxBackoffMs: 1_000 };

describe("admitRestart", () => {
  it.each([
    ["no earlier restarts", [], 50_000, true, [50_000]],
    ["two recent restarts", [45_000, 48_000], 50_000, true, [45_000, 48_000, 50_000]],
    [
      "three restarts within the period",
      [41_000, 45_000, 48_000],
      50_000,
      false,
      [41_000, 45_000, 48_000],
    ],
    [
      "three restarts, the oldest just outside the period",
      [40_000, 45_000, 48_000],
      50_000,
      true,
      [45_000, 48_000, 50_000],
    ],
    ["many old restarts only", [1_000, 2_000, 3_000, 4_000], 50_000, true, [50_000]],
  ])("with %s allows=%s", (_name, history, now, allowed, after) => {
    expect(admitRestart(history, now, policy)).toEqual({ allowed, history: after });
  });
});

describe("backoffMs", () => {
  it.each([
    [1, 0, 50],
    [1, 1, 100],
    [2, 0, 100],
    [3, 0.5, 300],
    [4, 1, 800],
    [5, 0, 500],
    [5, 1, 1000],
    [30, 1, 1000],
  ])("attempt %i with random %f waits %i ms", (attempt, r, ms) => {
    expect(backoffMs(attempt, policy, () => r)).toBe(ms);
  });
});
