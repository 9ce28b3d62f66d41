import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { jitteredBackoffMs, retryForMs, sleep } from "../../src/backoff.js";
import { AdclickError } from "../../src/errors.js";

describe("jitteredBackoffMs", () => {
  it.each([
    // attempt, baseMs, maxMs → the delay with random 0 (half the cap) and with random 1 (the cap)
    [1, 100, 1_000, 50, 100],
    [2, 100, 1_000, 100, 200],
    [3, 100, 1_000, 200, 400],
    [4, 100, 1_000, 400, 800],
    [5, 100, 1_000, 500, 1_000], // capped at maxMs from here on
    [30, 100, 1_000, 500, 1_000],
    [100_000, 100, 1_000, 500, 1_000], // a very long outage: still the cap, not NaN or ∞
    [0, 100, 1_000, 50, 100], // attempts below 1 count as the first
    [-3, 100, 1_000, 50, 100],
    [1, 200, 5_000, 100, 200],
    [6, 200, 5_000, 2_500, 5_000],
    [3, 7, 10, 5, 10],
    [2_000, 0, 5_000, 0, 0],
    [1, 1_000, 500, 250, 500], // base above the cap: the cap wins
  ])("attempt %i, base %i, max %i waits from %i to %i ms", (attempt, baseMs, maxMs, lo, hi) => {
    const bounds = { baseMs, maxMs };
    expect(jitteredBackoffMs(attempt, bounds, () => 0)).toBe(lo);
    expect(jitteredBackoffMs(attempt, bounds, () => 1)).toBe(hi);
    for (const r of [0.1, 0.37, 0.5, 0.99]) {
      const ms = jitteredBackoffMs(attempt, bounds, () => r);
      expect(ms).toBeGreaterThanOrEqual(lo);
      expect(ms).toBeLessThanOrEqual(hi);
    }
  });

  it("spreads the random half linearly, rounded to a millisecond", () => {
    const b = { baseMs: 100, maxMs: 1_000 };
    expect(jitteredBackoffMs(3, b, () => 0.5)).toBe(300);
    expect(jitteredBackoffMs(1, b, () => 0.013)).toBe(51);
  });

  it("defaults to Math.random", () => {
    const ms = jitteredBackoffMs(3, { baseMs: 100, maxMs: 1_000 });
    expect(ms).toBeGreaterThanOrEqual(200);
    expect(ms).toBeLessThanOrEqual(400);
  });
});

describe("sleep", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  /** Settles `p` or reports it still pending, without advancing the clock. */
  async function state(p: Promise<boolean>): Promise<boolean | "pending"> {
    return Promise.race([p, Promise.resolve("pending" as const)]);
  }

  it.each([
    ["no signal", undefined],
    ["a live signal", new AbortController().signal],
  ])("with %s resolves true after the full delay", async (_name, signal) => {
    const p = sleep(1_000, signal);
    await vi.advanceTimersByTimeAsync(999);
    expect(await state(p)).toBe("pending");
    await vi.advanceTimersByTimeAsync(1);
    expect(await state(p)).toBe(true);
  });

  it("with an already aborted signal resolves false at once", async () => {
    const ac = new AbortController();
    ac.abort(new Error("shutdown"));
    expect(await state(sleep(60_000, ac.signal))).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("resolves false as soon as the signal aborts, and leaves no timer behind", async () => {
    const ac = new AbortController();
    const p = sleep(60_000, ac.signal);
    await vi.advanceTimersByTimeAsync(10);
    expect(await state(p)).toBe("pending");
    ac.abort(new Error("shutdown"));
    expect(await state(p)).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("an abort after the delay elapsed changes nothing", async () => {
    const ac = new AbortController();
    const p = sleep(5, ac.signal);
    await vi.advanceTimersByTimeAsync(5);
    ac.abort();
    expect(await p).toBe(true);
  });
});

describe("retryForMs", () => {
  it("retries a failing attempt until it succeeds", async () => {
    let n = 0;
    const retried: number[] = [];
    const v = await retryForMs(
      async () => {
        if (++n < 3) throw new Error("timeout");
        return "ok";
      },
      { forMs: 10_000, onRetry: (_e, i) => retried.push(i) },
    );
    expect(v).toBe("ok");
    expect(retried).toEqual([1, 2]);
  });

  it("rethrows an AdclickError at once: a refusal is not retried", async () => {
    let n = 0;
    await expect(
      retryForMs(
        async () => {
          n++;
          throw new AdclickError("LAYOUT_CONFLICT", "partitions differ");
        },
        { forMs: 10_000 },
      ),
    ).rejects.toThrow("partitions differ");
    expect(n).toBe(1);
  });

  it("gives up with the last error when the next wait would pass the deadline", async () => {
    let n = 0;
    await expect(
      retryForMs(
        async () => {
          n++;
          throw new Error(`down ${n}`);
        },
        { forMs: 0 },
      ),
    ).rejects.toThrow("down 1");
    expect(n).toBe(1);
  });
});

describe("retryForMs with isFinal", () => {
  it("rethrows at once what isFinal names (a compare-and-set conflict)", async () => {
    let n = 0;
    await expect(
      retryForMs(
        async () => {
          n++;
          throw new Error("wrong last sequence");
        },
        { forMs: 10_000, isFinal: (e) => String(e).includes("wrong last sequence") },
      ),
    ).rejects.toThrow("wrong last sequence");
    expect(n).toBe(1);
  });
});
