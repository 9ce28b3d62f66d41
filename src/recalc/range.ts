import { AdclickError } from "../errors.js";
import { ONE_MINUTE_MS } from "../model.js";

/** The time ranges of recalculation commands (replay, reconcile), as users type them. */

const ISO_RE =
  /^(\d{4}-\d{2}-\d{2})(?:[T ](\d{2}:\d{2}(?::\d{2}(?:\.\d{1,3})?)?))?(Z|[+-]\d{2}:?\d{2})?$/;

/**
 * An ISO-8601 instant from the command line: a date, or date and time, with an optional zone
 * (none: UTC, as everything in AdClick).
 */
export function parseInstant(flag: string, text: string): number {
  const m = ISO_RE.exec(text.trim());
  const ms = m ? Date.parse(`${m[1]}T${m[2] ?? "00:00"}${m[3] ?? "Z"}`) : Number.NaN;
  if (!Number.isFinite(ms)) {
    throw new AdclickError(
      "BAD_REQUEST",
      `${flag} "${text}" is not an ISO-8601 time (e.g. 2024-07-09T00:00Z)`,
    );
  }
  return ms;
}

/** The whole-minute range covering [from, to): from rounded down, to rounded up. */
export function parseRange(from: string, to: string): { fromMs: number; toMs: number } {
  const f = parseInstant("--from", from);
  const t = parseInstant("--to", to);
  const fromMs = Math.floor(f / ONE_MINUTE_MS) * ONE_MINUTE_MS;
  const toMs = Math.ceil(t / ONE_MINUTE_MS) * ONE_MINUTE_MS;
  if (fromMs >= toMs) throw new AdclickError("BAD_REQUEST", "--from must be before --to");
  return { fromMs, toMs };
}
