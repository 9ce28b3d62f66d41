/**
 * Restart intensity and backoff, as OTP's supervisor has them: at most `maxRestarts`
 * restarts of a child within `withinMs`, else the supervisor gives up and escalates; and
 * (as Akka adds) exponential backoff with jitter so failing children do not stampede a
 * backend that is down. Pure functions: time and randomness are passed in.
 */
import { jitteredBackoffMs } from "../src/backoff.js";

export interface RestartPolicy {
  maxRestarts: number;
  withinMs: number;
  baseBackoffMs: number;
  maxBackoffMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  maxRestarts: 10,
  withinMs: 60_000,
  baseBackoffMs: 200,
  maxBackoffMs: 10_000,
};

/**
 * Decides whether one more restart fits the intensity limit. `history` holds the times of
 * earlier restarts; the result's history drops those older than the period and, when the
 * restart is allowed, records this one.
 */
export function admitRestart(
  history: readonly number[],
  nowMs: number,
  p: Pick<RestartPolicy, "maxRestarts" | "withinMs">,
): { allowed: boolean; history: number[] } {
  const recent = history.filter((t) => nowMs - t < p.withinMs);
  if (recent.length >= p.maxRestarts) return { allowed: false, history: recent };
  return { allowed: true, history: [...recent, nowMs] };
}

/**
 * Delay before restart number `attempt` (1-based, counted within the intensity period):
 * base·2^(attempt−1), capped, with "equal jitter" (half fixed, half random) so that
 * children failing together come back spread out: `jitteredBackoffMs` (src/backoff.ts) on
 * the policy's bounds.
 */
export function backoffMs(
  attempt: number,
  p: Pick<RestartPolicy, "baseBackoffMs" | "maxBackoffMs">,
  random: () => number,
): number {
  return jitteredBackoffMs(attempt, { baseMs: p.baseBackoffMs, maxMs: p.maxBackoffMs }, random);
}
