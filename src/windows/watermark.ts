/**
 * The watermark generator of one partition, aware of its sources: plain data plus small
 * functions, no clock, no I/O.
 *
 * Clicks come from many sources that run out of step — log agents on many servers, several
 * files of one backfill, programs with clocks of their own. Each source has its own
 * event-time **progress**: the largest event time of its clicks seen here, raised by the
 * progress marks its shipper or producer sends (heartbeats: "everything I sent before this is
 * in the stream, and my clicks have reached time T"; a caught-up log agent says T = its clock).
 *
 * Rules (all times in ms; event time from events and marks, processing time `nowMs` passed in
 * by the caller — the stream timestamp of the message being read, so a replay decides alike):
 *
 * 1. **A source holds the watermark** while it is *active*: not ended, not caught up, and heard
 *    from (a click or a mark) within `idleTimeoutMs` of processing time. A source with a backlog
 *    (an agent restarted after minutes away, a file of a backfill, a slow server) is active.
 *    An ended source (a one-shot ship that finished), a caught-up one (a live agent at the end
 *    of its log: its next clicks are new) and an idle one (silent for the timeout: a stopped
 *    agent) hold nothing — like Flink's idle splits.
 * 2. **Watermark = min over holding sources of (progress − allowedLatenessMs).** A minute
 *    `[start, end)` is closed once `watermark >= end`; a click of a closed minute is late
 *    (the aggregator amends the minute). The slowest active source decides, so a source that
 *    is behind has its clicks counted in their own minute, like Flink's per-split watermarks
 *    combined by minimum. With no source holding, the most advanced progress decides
 *    (`max progress − allowedLatenessMs`: bounded out-of-orderness, as for one source).
 * 3. **Holds are bounded.** The watermark never stays more than `maxHoldMs` (plus the
 *    lateness) behind the most advanced progress known; a holding source behind that bound is
 *    **lagging**: the watermark moves on without it, and it is reported (see
 *    {@link completenessOf}) until it catches up. (The aggregator also bounds the number of
 *    open minutes; see partition-aggregator.ts.)
 * 4. **No live source: everything holding data closes.** When every source has ended or
 *    gone idle, and none has said anything for `idleTimeoutMs`, the watermark jumps to the end
 *    of the newest minute any click or mark reached — the last minute of a finished input
 *    becomes final — and no further: minutes after it stay open, so input that resumes with
 *    newer clicks is on time. (Waiting the timeout after an end lets a source that starts
 *    right after another finished — the next file of a sequence — find its minutes open.)
 * 5. **Monotonic.** The watermark never goes backwards.
 *
 * The functions mutate the given state in place (per-message hot-path data).
 */
import { ConfigError } from "../errors.js";
import { WINDOW_SIZE_MS, windowEndOf } from "./window.js";

/** Allowed lateness suggested by the SPEC; callers pass it explicitly, nothing defaults to it. */
export const DEFAULT_ALLOWED_LATENESS_MS = 15_000;

/**
 * Processing time after which an ended or idle source is forgotten (its entry removed, so a
 * partition does not accumulate every file ever shipped). A forgotten source that speaks again
 * starts afresh from what it says.
 */
export const SOURCE_FORGET_AFTER_MS = 24 * 3_600_000;

export interface WatermarkOptions {
  /** Event-time lateness accepted before a minute closes. No default on purpose. */
  allowedLatenessMs: number;
  /** Processing time without a click or mark after which a source stops holding. */
  idleTimeoutMs: number;
  /** Event time the watermark may stay held behind the most advanced progress. */
  maxHoldMs: number;
  /** Window size used by rule 4; one minute unless given. */
  windowSizeMs?: number;
}

/** One source's clock as a partition sees it. */
export interface SourceClock {
  readonly id: string;
  /** Largest event time of its clicks here, or of its progress marks; -Infinity if none. */
  progressMs: number;
  /** Processing time of its last click or mark here (-Infinity: unknown, starts at the next call). */
  lastSeenMs: number;
  /** Its last word was "ended" (a finished one-shot ship, a closed producer). */
  ended: boolean;
  /** Its last word was "caught up": at the end of its input, so it holds nothing back. */
  caughtUp: boolean;
}

/** How a source stands: see the module comment. */
export type SourceStanding = "active" | "lagging" | "caught-up" | "idle" | "ended";

/** Watermark state: plain data except the ±Infinity "nothing seen yet" values. */
export interface WatermarkState {
  readonly allowedLatenessMs: number;
  readonly idleTimeoutMs: number;
  readonly maxHoldMs: number;
  readonly windowSizeMs: number;
  readonly sources: Map<string, SourceClock>;
  /** Largest event time of any click seen; -Infinity before the first. */
  maxEventTimeMs: number;
  /** Current watermark; -Infinity before anything is known. */
  watermarkMs: number;
  /** Processing time of the latest call; -Infinity before the first. */
  nowMs: number;
}

function checkInt(setting: string, v: number, min = 0): void {
  if (!Number.isSafeInteger(v) || v < min) {
    throw new ConfigError(setting, `must be an integer >= ${min}, got ${v}`);
  }
}

/** A fresh generator: no source, watermark at -Infinity. */
export function createWatermark(opts: WatermarkOptions): WatermarkState {
  checkInt("allowedLatenessMs", opts.allowedLatenessMs);
  checkInt("idleTimeoutMs", opts.idleTimeoutMs, 1);
  checkInt("maxHoldMs", opts.maxHoldMs);
  const windowSizeMs = opts.windowSizeMs ?? WINDOW_SIZE_MS;
  checkInt("windowSizeMs", windowSizeMs, 1);
  return {
    allowedLatenessMs: opts.allowedLatenessMs,
    idleTimeoutMs: opts.idleTimeoutMs,
    maxHoldMs: opts.maxHoldMs,
    windowSizeMs,
    sources: new Map(),
    maxEventTimeMs: Number.NEGATIVE_INFINITY,
    watermarkMs: Number.NEGATIVE_INFINITY,
    nowMs: Number.NEGATIVE_INFINITY,
  };
}

/** What one message tells about its source. */
export interface SourceReport {
  /** Largest finite event time among the message's clicks (-Infinity: none). */
  maxEventTimeMs: number;
  /** The source's progress mark, if the message carries one. */
  progressMs?: number | null;
  /** The source says it has ended (nothing more will come from it). */
  end?: boolean;
  /** The source says it is at the end of its input (its next clicks will be new ones). */
  caughtUp?: boolean;
}

/**
 * Records one message of `sourceId` read at processing time `nowMs` (once per message, after
 * its clicks were classified). A source that speaks after ending is active again.
 */
export function observeSource(
  w: WatermarkState,
  sourceId: string,
  r: SourceReport,
  nowMs: number,
): void {
  w.nowMs = nowMs;
  let s = w.sources.get(sourceId);
  if (!s) {
    s = {
      id: sourceId,
      progressMs: Number.NEGATIVE_INFINITY,
      lastSeenMs: nowMs,
      ended: false,
      caughtUp: false,
    };
    w.sources.set(sourceId, s);
  }
  if (r.maxEventTimeMs > s.progressMs) s.progressMs = r.maxEventTimeMs;
  if (r.progressMs != null && r.progressMs > s.progressMs) s.progressMs = r.progressMs;
  s.lastSeenMs = nowMs;
  s.ended = r.end === true;
  s.caughtUp = r.caughtUp === true;
  if (r.maxEventTimeMs > w.maxEventTimeMs) w.maxEventTimeMs = r.maxEventTimeMs;
}

function alive(w: WatermarkState, s: SourceClock, nowMs: number): boolean {
  return !s.ended && nowMs - s.lastSeenMs < w.idleTimeoutMs;
}

/** Some source, ended or not, said something within the idle timeout. */
function heardWithin(w: WatermarkState, nowMs: number): boolean {
  for (const s of w.sources.values()) if (nowMs - s.lastSeenMs < w.idleTimeoutMs) return true;
  return false;
}

/** The largest event time anything here reached: clicks and every source's progress. */
export function maxProgressOf(w: WatermarkState): number {
  let max = w.maxEventTimeMs;
  for (const s of w.sources.values()) if (s.progressMs > max) max = s.progressMs;
  return max;
}

/**
 * Applies rules 1–5 at processing time `nowMs` (forgetting sources ended or idle for
 * {@link SOURCE_FORGET_AFTER_MS}). Returns true when the watermark moved.
 */
export function updateWatermark(w: WatermarkState, nowMs: number): boolean {
  w.nowMs = nowMs;
  const now = nowMs;
  let anyHolding = false;
  let anyAlive = false;
  let minHeld = Number.POSITIVE_INFINITY;
  let maxProgress = w.maxEventTimeMs;
  for (const s of w.sources.values()) {
    if (s.progressMs > maxProgress) maxProgress = s.progressMs;
    // Restored without a last-heard time (an older snapshot): its idle clock starts now.
    if (s.lastSeenMs === Number.NEGATIVE_INFINITY) s.lastSeenMs = now;
    if (!alive(w, s, now)) {
      if (now - s.lastSeenMs >= SOURCE_FORGET_AFTER_MS) w.sources.delete(s.id);
      continue;
    }
    anyAlive = true;
    if (!s.caughtUp) {
      anyHolding = true;
      if (s.progressMs < minHeld) minHeld = s.progressMs;
    }
  }
  let target: number;
  if (anyHolding) target = minHeld - w.allowedLatenessMs;
  else if (anyAlive || heardWithin(w, now)) target = maxProgress - w.allowedLatenessMs;
  else if (Number.isFinite(maxProgress)) target = windowEndOf(maxProgress, w.windowSizeMs);
  else target = maxProgress;
  if (Number.isFinite(maxProgress)) {
    const bound = maxProgress - w.allowedLatenessMs - w.maxHoldMs;
    if (bound > target) target = bound;
  }
  if (target > w.watermarkMs) {
    w.watermarkMs = target;
    return true;
  }
  return false;
}

/** Raises the watermark to at least `ms` (the aggregator's open-minute bound). */
export function raiseWatermark(w: WatermarkState, ms: number): void {
  if (ms > w.watermarkMs) w.watermarkMs = ms;
}

/** True when the window ending (exclusively) at `windowEndMs` is closed. */
export function isWindowClosed(w: WatermarkState, windowEndMs: number): boolean {
  return w.watermarkMs >= windowEndMs;
}

/** How `s` stands at the state's newest processing time. */
export function standingOf(w: WatermarkState, s: SourceClock): SourceStanding {
  if (s.ended) return "ended";
  if (!alive(w, s, w.nowMs)) return "idle";
  if (s.caughtUp) return "caught-up";
  return s.progressMs - w.allowedLatenessMs < w.watermarkMs ? "lagging" : "active";
}

/** A source behind the watermark: the minutes it has not passed are closed, not complete. */
export interface SourceBehind {
  source: string;
  progressMs: number;
}

export interface Completeness {
  watermarkMs: number;
  /**
   * Every active source has passed (with the lateness) every instant before this: the
   * watermark, or less when lagging sources are behind it.
   */
  completeThroughMs: number;
  /** The lagging sources, slowest first. */
  behind: SourceBehind[];
}

/** The watermark and how complete it is (pure; call after {@link updateWatermark}). */
export function completenessOf(w: WatermarkState): Completeness {
  const behind: SourceBehind[] = [];
  let complete = w.watermarkMs;
  for (const s of w.sources.values()) {
    if (standingOf(w, s) !== "lagging") continue;
    behind.push({ source: s.id, progressMs: s.progressMs });
    const reached = s.progressMs - w.allowedLatenessMs;
    if (reached < complete) complete = reached;
  }
  behind.sort((a, b) => a.progressMs - b.progressMs || (a.source < b.source ? -1 : 1));
  return { watermarkMs: w.watermarkMs, completeThroughMs: complete, behind };
}

/**
 * The source holding the watermark back now — the slowest holding one, when the watermark is
 * below what the most advanced progress allows — or null.
 */
export function holderOf(w: WatermarkState): SourceBehind | null {
  const max = maxProgressOf(w);
  if (!Number.isFinite(max) || w.watermarkMs >= max - w.allowedLatenessMs) return null;
  let holder: SourceClock | null = null;
  for (const s of w.sources.values()) {
    if (s.caughtUp || !alive(w, s, w.nowMs)) continue;
    if (holder === null || s.progressMs < holder.progressMs) holder = s;
  }
  return holder ? { source: holder.id, progressMs: holder.progressMs } : null;
}

/**
 * Processing time at which a source's silence could move the watermark — a holding one stops
 * holding; once the last word of every source is that old, every minute holding data closes —
 * or null when none could. Lets a runtime schedule one tick instead of polling.
 */
export function idleDeadlineMs(w: WatermarkState): number | null {
  let deadline: number | null = null;
  for (const s of w.sources.values()) {
    if (w.nowMs - s.lastSeenMs >= w.idleTimeoutMs) continue;
    const d = s.lastSeenMs + w.idleTimeoutMs;
    if (deadline === null || d < deadline) deadline = d;
  }
  return deadline;
}

/** The persistent part of a source clock (JSON-able: null for "nothing yet"). */
export interface SourceSnapshot {
  id: string;
  progressMs: number | null;
  lastSeenMs: number | null;
  ended: boolean;
  caughtUp: boolean;
}

/** The persistent part of the state, JSON-able (null for "nothing seen yet"). */
export interface WatermarkSnapshot {
  maxEventTimeMs: number | null;
  watermarkMs: number | null;
  /** Absent in snapshots of builds before source-aware watermarks. */
  sources?: SourceSnapshot[];
  nowMs?: number | null;
}

const finiteOrNull = (v: number) => (Number.isFinite(v) ? v : null);

export function snapshotWatermark(w: WatermarkState): WatermarkSnapshot {
  return {
    maxEventTimeMs: finiteOrNull(w.maxEventTimeMs),
    watermarkMs: finiteOrNull(w.watermarkMs),
    nowMs: finiteOrNull(w.nowMs),
    sources: [...w.sources.values()].map((s) => ({
      id: s.id,
      progressMs: finiteOrNull(s.progressMs),
      lastSeenMs: finiteOrNull(s.lastSeenMs),
      ended: s.ended,
      caughtUp: s.caughtUp,
    })),
  };
}

/**
 * Restores a generator with the given (configured) options. Processing times are stream
 * timestamps, part of the replayable log, so sources' idle clocks carry over as they were.
 */
export function restoreWatermark(opts: WatermarkOptions, snap: WatermarkSnapshot): WatermarkState {
  const w = createWatermark(opts);
  w.maxEventTimeMs = snap.maxEventTimeMs ?? Number.NEGATIVE_INFINITY;
  w.watermarkMs = snap.watermarkMs ?? Number.NEGATIVE_INFINITY;
  w.nowMs = snap.nowMs ?? Number.NEGATIVE_INFINITY;
  for (const s of snap.sources ?? []) {
    w.sources.set(s.id, {
      id: s.id,
      progressMs: s.progressMs ?? Number.NEGATIVE_INFINITY,
      lastSeenMs: s.lastSeenMs ?? Number.NEGATIVE_INFINITY,
      ended: s.ended,
      caughtUp: s.caughtUp === true,
    });
  }
  return w;
}
