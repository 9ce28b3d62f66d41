import { EventEmitter } from "node:events";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { onShutdownSignals, signalExitCode, withDeadline } from "../../app/shutdown.js";
import { AdclickError } from "../../src/errors.js";

/** A controllable orderly stop: resolve or reject it from the test. */
function deferred() {
  let resolve: () => void = () => {};
  let reject: (e: unknown) => void = () => {};
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

function setup(graceMs?: number) {
  const source = new EventEmitter();
  const exits: number[] = [];
  const lines: string[] = [];
  const stop = deferred();
  const reasons: string[] = [];
  const hook = onShutdownSignals(
    (reason) => {
      reasons.push(reason);
      return stop.promise;
    },
    {
      source,
      exit: (code) => exits.push(code),
      log: (line) => lines.push(line),
      ...(graceMs !== undefined ? { graceMs } : {}),
    },
  );
  const emit = (s: NodeJS.Signals) => source.emit(s, s);
  return { source, exits, lines, stop, reasons, hook, emit };
}

describe("onShutdownSignals", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("runs the orderly handler once on the first signal and does not exit when it finishes in time", async () => {
    const t = setup();
    t.emit("SIGINT");
    await expect(t.hook.requested).resolves.toBe("SIGINT");
    expect(t.reasons).toEqual(["SIGINT"]);
    await vi.advanceTimersByTimeAsync(7000);
    t.stop.resolve();
    await vi.advanceTimersByTimeAsync(0);
    expect(t.exits).toEqual([]);
    t.hook.dispose();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.exits).toEqual([]);
    expect(t.lines).toEqual([]);
    expect(t.source.listenerCount("SIGINT")).toBe(0);
    expect(t.source.listenerCount("SIGTERM")).toBe(0);
  });

  it("forces the exit after the default 8 s when the handler hangs, with one line saying so", async () => {
    const t = setup();
    t.emit("SIGTERM");
    await vi.advanceTimersByTimeAsync(7999);
    expect(t.exits).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.exits).toEqual([signalExitCode("SIGTERM")]);
    expect(signalExitCode("SIGTERM")).toBe(143);
    expect(t.lines).toHaveLength(1);
    expect(t.lines[0]).toMatch(/SIGTERM.*did not finish within 8000 ms: forcing exit/);
    // Forced once only, whatever comes after.
    t.emit("SIGINT");
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.exits).toHaveLength(1);
  });

  it("honours graceMs", async () => {
    const t = setup(2000);
    t.emit("SIGINT");
    await vi.advanceTimersByTimeAsync(1999);
    expect(t.exits).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(t.exits).toEqual([130]);
  });

  it("forces the exit at once on a second signal during the orderly stop", async () => {
    const t = setup();
    t.emit("SIGINT");
    await vi.advanceTimersByTimeAsync(100);
    t.emit("SIGINT");
    expect(t.exits).toEqual([130]);
    expect(t.reasons).toEqual(["SIGINT"]);
    expect(t.lines).toHaveLength(1);
    expect(t.lines[0]).toMatch(/second signal \(SIGINT\).*forcing exit/);
    // The deadline does not exit a second time.
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.exits).toEqual([130]);
  });

  it("a SIGTERM after a SIGINT is a second signal too", async () => {
    const t = setup();
    t.emit("SIGINT");
    t.emit("SIGTERM");
    expect(t.exits).toEqual([143]);
    expect(t.reasons).toEqual(["SIGINT"]);
  });

  it("forces the exit when the stop finished but something keeps the process alive", async () => {
    const t = setup();
    const before = process.exitCode;
    process.exitCode = undefined;
    try {
      t.emit("SIGINT");
      t.stop.resolve();
      await vi.advanceTimersByTimeAsync(0);
      expect(t.exits).toEqual([]);
      await vi.advanceTimersByTimeAsync(8000);
      expect(t.exits).toEqual([0]);
      expect(t.lines[0]).toMatch(
        /stopped after SIGINT, but something still keeps the process alive/,
      );
    } finally {
      process.exitCode = before;
    }
  });

  it("a signal after the stop finished forces the exit", async () => {
    const t = setup();
    t.emit("SIGINT");
    t.stop.resolve();
    await vi.advanceTimersByTimeAsync(0);
    t.emit("SIGTERM");
    expect(t.exits).toEqual([143]);
  });

  it("trigger() runs the same stop under the same deadline; signals then force", async () => {
    const t = setup(5000);
    const stopping = t.hook.trigger("supervisor escalation");
    expect(t.hook.trigger("again")).toBe(stopping);
    await expect(t.hook.requested).resolves.toBe("supervisor escalation");
    expect(t.reasons).toEqual(["supervisor escalation"]);
    await vi.advanceTimersByTimeAsync(5000);
    // Not a signal: the generic failure code.
    expect(t.exits).toEqual([1]);
    expect(t.lines[0]).toMatch(/supervisor escalation.*did not finish within 5000 ms/);
  });

  it("a signal during a triggered stop forces the exit", async () => {
    const t = setup();
    void t.hook.trigger("--once");
    t.emit("SIGINT");
    expect(t.exits).toEqual([130]);
  });

  it("a failing handler is logged, the caller sees the rejection, and the deadline still bounds the process", async () => {
    const t = setup();
    const stopping = t.hook.trigger("SIGINT");
    const seen = stopping.catch((e: unknown) => e);
    t.stop.reject(new Error("cassandra went away"));
    expect(await seen).toBeInstanceOf(Error);
    expect(t.lines).toEqual([
      expect.stringMatching(/orderly stop \(SIGINT\) failed: cassandra went away/),
    ]);
    expect(t.exits).toEqual([]);
    await vi.advanceTimersByTimeAsync(8000);
    expect(t.exits).toHaveLength(1);
  });

  it("a handler that fails through a signal raises no unhandled rejection", async () => {
    const t = setup();
    const unhandled = vi.fn();
    process.on("unhandledRejection", unhandled);
    try {
      t.emit("SIGINT");
      t.stop.reject(new Error("boom"));
      await vi.advanceTimersByTimeAsync(0);
      expect(unhandled).not.toHaveBeenCalled();
      expect(t.lines[0]).toMatch(/failed: boom/);
    } finally {
      process.off("unhandledRejection", unhandled);
    }
  });

  it("listens only to the signals asked for", async () => {
    const source = new EventEmitter();
    const exits: number[] = [];
    const reasons: string[] = [];
    const hook = onShutdownSignals(
      (r) => {
        reasons.push(r);
      },
      { source, signals: ["SIGHUP"], exit: (c) => exits.push(c), log: () => {} },
    );
    source.emit("SIGINT", "SIGINT");
    expect(reasons).toEqual([]);
    source.emit("SIGHUP", "SIGHUP");
    expect(reasons).toEqual(["SIGHUP"]);
    hook.dispose();
    expect(source.listenerCount("SIGHUP")).toBe(0);
  });
});

describe("withDeadline", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("passes a value settled in time through", async () => {
    const p = withDeadline(Promise.resolve(42), 1000, "answer");
    await expect(p).resolves.toBe(42);
    expect(vi.getTimerCount()).toBe(0);
  });

  it("passes a rejection in time through", async () => {
    const p = withDeadline(Promise.reject(new Error("nope")), 1000, "answer");
    await expect(p).rejects.toThrow("nope");
    expect(vi.getTimerCount()).toBe(0);
  });

  it("rejects with SHUTDOWN_TIMEOUT naming what did not finish", async () => {
    const never = new Promise<void>(() => {});
    const p = withDeadline(never, 2000, "NATS drain");
    const seen = p.catch((e: unknown) => e);
    await vi.advanceTimersByTimeAsync(1999);
    let settled = false;
    void p.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    await vi.advanceTimersByTimeAsync(0);
    expect(settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    const err = await seen;
    expect(err).toBeInstanceOf(AdclickError);
    expect((err as AdclickError).code).toBe("SHUTDOWN_TIMEOUT");
    expect((err as AdclickError).message).toBe("NATS drain did not finish within 2000 ms");
  });

  it("swallows a rejection that comes after the deadline", async () => {
    const late = deferred();
    const unhandled = vi.fn();
    process.on("unhandledRejection", unhandled);
    try {
      const seen = withDeadline(late.promise, 10, "cassandra shutdown").catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(10);
      expect(((await seen) as AdclickError).code).toBe("SHUTDOWN_TIMEOUT");
      late.reject(new Error("late"));
      // A real turn of the event loop: unhandled rejections are reported by then.
      vi.useRealTimers();
      await new Promise((r) => setImmediate(r));
      expect(unhandled).not.toHaveBeenCalled();
    } finally {
      process.off("unhandledRejection", unhandled);
    }
  });
});
