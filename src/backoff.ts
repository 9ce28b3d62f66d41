import { AdclickError } from "./errors.js";

/**
 * Retry delays, shared by the supervisor's restarts and every retry loop (store writers,
 * publishers): exponential backoff with "equal jitter", and a sleep that a shutdown cuts short.
 */

export interface BackoffBounds {
  /** Delay cap of the first attempt (the n-th doubles it, n−1 times). */
  baseMs: number;
  /** No cap grows beyond this. */
  maxMs: number;
}

/**
 * Delay before retry number `attempt` (1-based; 0 and below count as 1): the cap
 * baseMs·2^(attempt−1), at most maxMs, with "equal jitter" — half fixed, half random — so
 * that callers failing together come back spread out, yet never sooner than half the cap.
 * Rounded to a whole millisecond. Pure: `random` returns a number in [0, 1].
 */
export function jitteredBackoffMs(
  attempt: number,
  b: BackoffBounds,
  random: () => number = Math.random,
): number {
  // The exponent is clamped so that a very long outage cannot make the cap NaN (0·∞).
  const doublings = Math.min(Math.max(0, attempt - 1), 1000);
  const cap = Math.min(b.maxMs, b.baseMs * 2 ** doublings);
  return Math.round(cap / 2 + random() * (cap / 2));
}

/**
 * Waits `ms` milliseconds. Never rejects: when `signal` aborts (or already has) it resolves
 * at once with `false`, so a retry loop does not delay a shutdown and can give up with a
 * plain `if (!(await sleep(ms, signal))) return;`. Resolves `true` after the full delay.
 */
export function sleep(ms: number, signal?: AbortSignal): Promise<boolean> {
  if (signal?.aborted) return Promise.resolve(false);
  return new Promise((resolve) => {
    const onAbort = () => {
      clearTimeout(timer);
      resolve(false);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener("abort", onAbort);
      resolve(true);
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
  });
}

/**
 * Runs `attempt` until it succeeds, retrying what may pass (a timeout, a node restarting, a
 * leader election) with jittered backoff for at most `forMs`; then, or at once for an
 * AdclickError (our own refusals: a configuration that cannot apply) or an error `isFinal`
 * names (a compare-and-set conflict), rethrows the error. For start-up steps and KV writes:
 * a deployment whose servers are busy goes on a little later instead of exiting.
 */
export async function retryForMs<T>(
  attempt: () => Promise<T>,
  o: {
    forMs: number;
    isFinal?: (err: unknown) => boolean;
    bounds?: BackoffBounds;
    onRetry?: (err: unknown, attempt: number) => void;
  },
): Promise<T> {
  const deadline = Date.now() + o.forMs;
  for (let n = 1; ; n++) {
    try {
      return await attempt();
    } catch (err) {
      if (err instanceof AdclickError || o.isFinal?.(err)) throw err;
      const wait = jitteredBackoffMs(n, o.bounds ?? { baseMs: 250, maxMs: 5000 });
      if (Date.now() + wait > deadline) throw err;
      o.onRetry?.(err, n);
      await sleep(wait);
    }
  }
}
