/**
 * The watermark generator of one partition: plain data plus small functions, no clock.
 *
 * Rules (all times in ms; "event time" comes from events, "processing time" is `nowMs`,
 * always passed in by the caller):
 *
 * 1. **Bounded out-of-orderness.** `watermark = maxEventTime − allowedLatenessMs`, where
 *    maxEventTime is the largest event time observed. A window `[start, end)` is closed
 *    once `watermark >= end`, i.e. once an event with time `>= end + allowedLatenessMs`
 *    has been seen. An event is late exactly when its window is closed. (Same boundary as
 *    Flink's `BoundedOutOfOrdernessWatermarks` + event-time trigger, which subtract 1 on
 *    both sides.)
 * 2. **Idle advancement.** If no event arrived for `idleTimeoutMs` of processing time
 *    (`nowMs − lastEventAtMs >= idleTimeoutMs`), the watermark jumps to
 *    `windowEndOf(maxEventTime)`: the end of the newest window that holds any event. That
 *    is the smallest watermark that closes every window holding data, so the last minute
 *    of a finished input becomes final — and no further: windows after the newest event
 *    stay open, so input that resumes with newer events is on time, while an event for a
 *    minute that was already made final is (correctly) late. Jumping to +∞ would instead
 *    make all resumed input late.
 * 3. **Monotonic.** The watermark never goes backwards (`max` everywhere).
 *
 * The idle clock (`lastEventAtMs`) is processing time and is not carried across a restore:
 * `null` means "not started"; it starts at the next call that passes `nowMs`. Downtime of
 * a crashed process therefore never counts as idleness of its input.
 *
 * The functions mutate the given state in place (it is per-event hot-path data) and do no
 * I/O.
 */
import { ConfigError } from "../errors.js";
import { WINDOW_SIZE_MS, windowEndOf } from "./window.js";

/** Allowed lateness suggested by the SPEC; callers pass it explicitly, nothing defaults to it. */
export const DEFAULT_ALLOWED_LATENESS_MS = 15_000;

export interface WatermarkOptions {
  /** Event-time lateness accepted before a window closes. No default on purpose. */
  allowedLatenessMs: number;
  /** Processing time without any event after which open windows close. */
  idleTimeoutMs: number;
  /** Window size used by idle advancement; one minute unless given. */
  windowSizeMs?: number;
}

/** Watermark state: plain, JSON-able data except the ±Infinity "nothing seen yet" values. */
export interface WatermarkState {
  readonly allowedLatenessMs: number;
  readonly idleTimeoutMs: number;
  readonly windowSizeMs: number;
  /** Largest event time observed; -Infinity before the first event. */
  maxEventTimeMs: number;
  /** Current watermark; -Infinity before the first event. */
  watermarkMs: number;
  /** Processing time of the last event arrival (or idle-clock start); null = not started. */
  lastEventAtMs: number | null;
}

function checkNonNegativeInt(setting: string, v: number, min = 0): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new ConfigError(setting, `must be an integer >= ${min}, got ${v}`);
  }
}

/** A fresh generator: no event seen, watermark at -Infinity. */
export function createWatermark(opts: WatermarkOptions): WatermarkState {
  checkNonNegativeInt("allowedLatenessMs", opts.allowedLatenessMs);
  checkNonNegativeInt("idleTimeoutMs", opts.idleTimeoutMs, 1);
  const windowSizeMs = opts.windowSizeMs ?? WINDOW_SIZE_MS;
  checkNonNegativeInt("windowSizeMs", windowSizeMs, 1);
  return {
    allowedLatenessMs: opts.allowedLatenessMs,
    idleTimeoutMs: opts.idleTimeoutMs,
    windowSizeMs,
    maxEventTimeMs: Number.NEGATIVE_INFINITY,
    watermarkMs: Number.NEGATIVE_INFINITY,
    lastEventAtMs: null,
  };
}

/**
 * Observes one event time (per event, hot path). Does not touch the idle clock — call
 * {@link markArrival} once per batch for that.
 */
export function observeEventTime(w: WatermarkState, eventTimeMs: number): void {
  if (eventTimeMs > w.maxEventTimeMs) {
    w.maxEventTimeMs = eventTimeMs;
    const candidate = eventTimeMs - w.allowedLatenessMs;
    if (candidate > w.watermarkMs) w.watermarkMs = candidate;
  }
}

/** Records that events arrived at processing time `nowMs` (restarts the idle clock). */
export function markArrival(w: WatermarkState, nowMs: number): void {
  w.lastEventAtMs = nowMs;
}

/** True when the window ending (exclusively) at `windowEndMs` is closed. */
export function isWindowClosed(w: WatermarkState, windowEndMs: number): boolean {
  return w.watermarkMs >= windowEndMs;
}

/**
 * Applies idle advancement at processing time `nowMs` (rule 2). Starts the idle clock if it
 * is not running. Returns true when the watermark moved.
 */
export function applyIdle(w: WatermarkState, nowMs: number): boolean {
  if (w.lastEventAtMs === null) {
    w.lastEventAtMs = nowMs;
    return false;
  }
  if (nowMs - w.lastEventAtMs < w.idleTimeoutMs) return false;
  if (w.maxEventTimeMs === Number.NEGATIVE_INFINITY) return false;
  const target = windowEndOf(w.maxEventTimeMs, w.windowSizeMs);
  if (target <= w.watermarkMs) return false;
  w.watermarkMs = target;
  return true;
}

/**
 * Processing time at which {@link applyIdle} would move the watermark, or null when it would
 * not (no event yet, idle clock not started, or every window holding data already closed).
 * Lets a runtime schedule one timer instead of polling.
 */
export function idleDeadlineMs(w: WatermarkState): number | null {
  if (w.lastEventAtMs === null || w.maxEventTimeMs === Number.NEGATIVE_INFINITY) return null;
  if (windowEndOf(w.maxEventTimeMs, w.windowSizeMs) <= w.watermarkMs) return null;
  return w.lastEventAtMs + w.idleTimeoutMs;
}

/** The persistent part of the state, JSON-able (null for "nothing seen yet"). */
export interface WatermarkSnapshot {
  maxEventTimeMs: number | null;
  watermarkMs: number | null;
}

export function snapshotWatermark(w: WatermarkState): WatermarkSnapshot {
  return {
    maxEventTimeMs: Number.isFinite(w.maxEventTimeMs) ? w.maxEventTimeMs : null,
    watermarkMs: Number.isFinite(w.watermarkMs) ? w.watermarkMs : null,
  };
}

/** Restores a generator; the idle clock starts fresh (see the module comment). */
export function restoreWatermark(opts: WatermarkOptions, snap: WatermarkSnapshot): WatermarkState {
  const w = createWatermark(opts);
  w.maxEventTimeMs = snap.maxEventTimeMs ?? Number.NEGATIVE_INFINITY;
  w.watermarkMs = snap.watermarkMs ?? Number.NEGATIVE_INFINITY;
  return w;
}
