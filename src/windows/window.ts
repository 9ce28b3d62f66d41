/**
 * The window assigner: event time → tumbling window `[start, end)`.
 *
 * Windows are aligned to the epoch (minute windows start on whole UTC minutes). Timestamps
 * before the epoch are assigned with floor semantics, like Flink's
 * `TimeWindow.getWindowStartWithOffset`: -1 ms belongs to `[-60 000, 0)`, not `[0, 60 000)`.
 */
import { ONE_MINUTE_MS } from "../model.js";

/** Size of the aggregation windows: one minute of event time. */
export const WINDOW_SIZE_MS = ONE_MINUTE_MS;

/**
 * Start (inclusive) of the tumbling window holding `tsMs`.
 *
 * Uses the remainder (exact for every double) rather than `Math.floor(ts / size) * size`,
 * whose division rounds for timestamps far from zero.
 *
 * @throws RangeError when `sizeMs` is not a positive safe integer.
 */
export function windowStartOf(tsMs: number, sizeMs: number = WINDOW_SIZE_MS): number {
  if (!(sizeMs > 0) || !Number.isSafeInteger(sizeMs)) {
    throw new RangeError(`window size must be a positive integer of ms, got ${sizeMs}`);
  }
  const r = tsMs % sizeMs;
  // `+ 0` turns the -0 of an exact negative multiple into 0.
  return r < 0 ? tsMs - r - sizeMs : tsMs - r + 0;
}

/** End (exclusive) of the tumbling window holding `tsMs`: `windowStartOf(tsMs) + sizeMs`. */
export function windowEndOf(tsMs: number, sizeMs: number = WINDOW_SIZE_MS): number {
  return windowStartOf(tsMs, sizeMs) + sizeMs;
}
