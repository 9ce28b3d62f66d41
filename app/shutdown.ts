import { constants } from "node:os";
import { AdclickError } from "../src/errors.js";

/**
 * Bounded process shutdown. An orderly stop (actors finish their batch, snapshots, drain,
 * servers we started stop) is what SIGINT / SIGTERM ask for, but it waits on NATS and
 * Cassandra, which may be gone or frozen: whatever their state, the process must end within
 * a bound (10 s for `up`, `worker` and `ship`). These helpers give every step a deadline and
 * the whole stop a last-resort exit.
 */

/** Where signals come from: the process, or an EventEmitter in tests. */
export interface SignalSource {
  on(event: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown;
  off(event: NodeJS.Signals, listener: (signal: NodeJS.Signals) => void): unknown;
}

export interface ShutdownOptions {
  /**
   * Milliseconds from the first signal (or trigger) until the exit is forced: 8000 by
   * default, leaving room within a 10 s bound for the exit itself and a slow machine.
   */
  graceMs?: number;
  /** Ends the process; process.exit by default. */
  exit?: (code: number) => void;
  /** Where the one line saying what is forced goes; stderr by default. */
  log?: (line: string) => void;
  /** The signals that ask for the orderly stop; SIGINT and SIGTERM by default. */
  signals?: readonly NodeJS.Signals[];
  /** Listened to for the signals; the process by default. */
  source?: SignalSource;
}

export interface ShutdownHook {
  /** Resolves with the reason (signal name or trigger reason) of the first stop request. */
  readonly requested: Promise<string>;
  /**
   * Starts the orderly stop for another reason (e.g. a supervisor escalation) under the same
   * deadline; returns the handler's promise. Idempotent: later calls, and signals, get the
   * stop already under way.
   */
  trigger(reason: string): Promise<void>;
  /** Removes the signal listeners and the deadline (the process ended its work by itself). */
  dispose(): void;
}

export const DEFAULT_SHUTDOWN_GRACE_MS = 8000;

/** The conventional exit code of a process ended by `signal` (128 + its number). */
export function signalExitCode(reason: string): number {
  const n = (constants.signals as Record<string, number | undefined>)[reason];
  return n === undefined ? 1 : 128 + n;
}

function errorText(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/**
 * On the first SIGINT / SIGTERM runs `handler` (the orderly stop). The exit is forced —
 * one log line saying what is forced, then `exit(code)` — when
 *  - the handler has not finished `graceMs` after the first signal (code 128 + signal), or
 *  - a second signal arrives (code 128 + that signal), or
 *  - the handler has finished but something (a socket, a timer) still keeps the process alive
 *    at `graceMs` (the exit code the process already has, 0 by default).
 * The deadline timer does not itself keep the process alive once the handler has finished,
 * so a clean stop exits as soon as the event loop is empty.
 */
export function onShutdownSignals(
  handler: (reason: string) => Promise<void> | void,
  opts: ShutdownOptions = {},
): ShutdownHook {
  const graceMs = opts.graceMs ?? DEFAULT_SHUTDOWN_GRACE_MS;
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const signals = opts.signals ?? (["SIGINT", "SIGTERM"] as const);
  const source: SignalSource = opts.source ?? process;

  let resolveRequested: (reason: string) => void = () => {};
  const requested = new Promise<string>((r) => {
    resolveRequested = r;
  });
  let running: Promise<void> | undefined;
  let firstReason = "";
  let finished = false;
  let forced = false;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const force = (line: string, code: number) => {
    if (forced) return;
    forced = true;
    if (timer !== undefined) clearTimeout(timer);
    log(line);
    exit(code);
  };

  const onDeadline = () => {
    timer = undefined;
    if (finished) {
      force(
        `shutdown: stopped after ${firstReason}, but something still keeps the process alive ${graceMs} ms later: forcing exit`,
        typeof process.exitCode === "number" ? process.exitCode : 0,
      );
    } else {
      force(
        `shutdown: the orderly stop (${firstReason}) did not finish within ${graceMs} ms: forcing exit`,
        signalExitCode(firstReason),
      );
    }
  };

  const trigger = (reason: string): Promise<void> => {
    if (running) return running;
    firstReason = reason;
    resolveRequested(reason);
    timer = setTimeout(onDeadline, graceMs);
    running = (async () => handler(reason))();
    running.then(
      () => {
        finished = true;
        timer?.unref?.();
      },
      (err: unknown) => {
        finished = true;
        timer?.unref?.();
        log(`shutdown: the orderly stop (${reason}) failed: ${errorText(err)}`);
      },
    );
    return running;
  };

  const onSignal = (signal: NodeJS.Signals) => {
    if (!running) {
      // The caller sees a rejected stop through `trigger`; here nobody awaits it.
      trigger(signal).catch(() => {});
      return;
    }
    force(
      finished
        ? `shutdown: ${signal} after the orderly stop finished while the process stays alive: forcing exit`
        : `shutdown: second signal (${signal}) during the orderly stop (${firstReason}): forcing exit`,
      signalExitCode(signal),
    );
  };

  for (const s of signals) source.on(s, onSignal);

  return {
    requested,
    trigger,
    dispose() {
      for (const s of signals) source.off(s, onSignal);
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
    },
  };
}

/**
 * `promise`, or a rejection with AdclickError SHUTDOWN_TIMEOUT when it has not settled within
 * `ms` ("<what> did not finish within <ms> ms"). The promise keeps running (nothing can cancel
 * it); its late rejection, if any, is swallowed.
 */
export function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new AdclickError("SHUTDOWN_TIMEOUT", `${what} did not finish within ${ms} ms`));
    }, ms);
    promise.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err);
      },
    );
  });
}
