import { AdclickError } from "../errors.js";
import { ONE_MINUTE_MS } from "../model.js";
import { parseFieldValue } from "../parse/click-line.js";

/**
 * The query API's requests: parsed and validated here, purely (the caller passes `nowMs`).
 * A bad request gets a QueryError with a code and a message that says what to fix.
 */
export type QueryErrorCode = "BAD_REQUEST" | "RANGE_TOO_LARGE" | "UNAVAILABLE";

export class QueryError extends AdclickError {
  declare readonly code: QueryErrorCode;
  constructor(code: QueryErrorCode, message: string, options?: { cause?: unknown }) {
    super(code, message, options);
    this.name = "QueryError";
  }
  /** The catalogue code (the same as `code`; kept for callers of the former name). */
  get queryCode(): QueryErrorCode {
    return this.code;
  }
  /** The NATS micro service error code (HTTP-like), as in src/wire/service-errors.ts. */
  get status(): number {
    return this.code === "UNAVAILABLE" ? 503 : 400;
  }
}

export interface Filter {
  country?: string;
  ip?: string;
  userId?: string;
}

export interface Range {
  fromMs: number;
  toMs: number;
}

export interface CountRequest extends Range {
  adId: string;
  filter: Filter;
}

export interface TopRequest extends Range {
  n: number;
  filter: Filter;
}

export type SeriesRequest = CountRequest;

export interface QueryLimits {
  /** The longest range a query may cover (the aggregates' retention). */
  maxRangeMinutes: number;
  /** The largest N of a top query (≤ the per-partition top-k kept). */
  maxN: number;
}

export const DEFAULT_TOP_N = 100;
export const DEFAULT_MINUTES = 1;

function bad(message: string): never {
  throw new QueryError("BAD_REQUEST", message);
}

function object(body: unknown): Record<string, unknown> {
  if (typeof body !== "object" || body === null || Array.isArray(body))
    bad("the request must be a JSON object");
  return body as Record<string, unknown>;
}

function onlyKeys(o: Record<string, unknown>, allowed: readonly string[], what: string): void {
  for (const k of Object.keys(o)) {
    if (!allowed.includes(k))
      bad(`unknown field "${k}" in ${what}; allowed: ${allowed.join(", ")}`);
  }
}

/** Parses the body of a NATS request (bytes of JSON). */
export function parseJsonBody(data: Uint8Array): unknown {
  const text = new TextDecoder().decode(data);
  if (text.trim() === "") return {};
  try {
    return JSON.parse(text);
  } catch (err) {
    bad(`the request is not JSON: ${(err as Error).message}`);
  }
}

const ISO_MINUTE = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:00(\.0{1,3})?)?(Z|[+-]00:00)$/;

function instant(name: string, v: unknown): number {
  if (typeof v !== "string" || !ISO_MINUTE.test(v)) {
    bad(
      `"${name}" must be an ISO-8601 UTC instant on a minute boundary, e.g. "2024-07-09T00:05:00Z"`,
    );
  }
  const ms = Date.parse(v);
  if (Number.isNaN(ms)) bad(`"${name}" is not a valid date: ${v}`);
  return ms;
}

function range(o: Record<string, unknown>, nowMs: number, limits: QueryLimits): Range {
  const hasRange = o.from !== undefined || o.to !== undefined;
  if (hasRange && o.minutes !== undefined)
    bad('give either "minutes" or "from" and "to", not both');
  let fromMs: number;
  let toMs: number;
  if (hasRange) {
    if (o.from === undefined || o.to === undefined) bad('"from" and "to" go together');
    fromMs = instant("from", o.from);
    toMs = instant("to", o.to);
    if (toMs <= fromMs) bad('"to" must be after "from" (the range is [from, to))');
  } else {
    const m = o.minutes ?? DEFAULT_MINUTES;
    if (typeof m !== "number" || !Number.isInteger(m) || m < 1)
      bad('"minutes" must be a whole number ≥ 1');
    // The M most recent whole minutes: the current, unfinished minute is not one of them.
    toMs = Math.floor(nowMs / ONE_MINUTE_MS) * ONE_MINUTE_MS;
    fromMs = toMs - m * ONE_MINUTE_MS;
  }
  const minutes = (toMs - fromMs) / ONE_MINUTE_MS;
  if (minutes > limits.maxRangeMinutes) {
    throw new QueryError(
      "RANGE_TOO_LARGE",
      `the range covers ${minutes} minutes; at most ${limits.maxRangeMinutes} (the aggregates' retention) are answered`,
    );
  }
  return { fromMs, toMs };
}

function filter(v: unknown): Filter {
  if (v === undefined) return {};
  const o = object(v);
  onlyKeys(o, ["country", "ip", "user_id"], "filter");
  const f: Filter = {};
  for (const [key, field] of [
    ["country", "country"],
    ["ip", "ip"],
    ["user_id", "user_id"],
  ] as const) {
    const value = o[key];
    if (value === undefined) continue;
    if (typeof value !== "string") bad(`filter.${key} must be a string`);
    const r = parseFieldValue(field, value);
    if (!r.ok) bad(`filter.${key}: ${r.reason}`);
    if (key === "user_id") f.userId = r.value;
    else f[key] = r.value;
  }
  return f;
}

function adId(v: unknown): string {
  if (typeof v !== "string") bad('"ad_id" is required (a string)');
  const r = parseFieldValue("ad_id", v);
  if (!r.ok) bad(`ad_id: ${r.reason}`);
  return r.value;
}

export function parseCountRequest(body: unknown, nowMs: number, limits: QueryLimits): CountRequest {
  const o = object(body);
  onlyKeys(o, ["ad_id", "minutes", "from", "to", "filter"], "a count request");
  return { adId: adId(o.ad_id), ...range(o, nowMs, limits), filter: filter(o.filter) };
}

export const parseSeriesRequest = parseCountRequest;

export function parseTopRequest(body: unknown, nowMs: number, limits: QueryLimits): TopRequest {
  const o = object(body);
  onlyKeys(o, ["n", "minutes", "from", "to", "filter"], "a top request");
  const n = o.n ?? DEFAULT_TOP_N;
  if (typeof n !== "number" || !Number.isInteger(n) || n < 1 || n > limits.maxN) {
    bad(`"n" must be a whole number from 1 to ${limits.maxN}`);
  }
  return { n, ...range(o, nowMs, limits), filter: filter(o.filter) };
}

export function isoMinute(ms: number): string {
  return new Date(ms).toISOString().replace(".000Z", "Z");
}
