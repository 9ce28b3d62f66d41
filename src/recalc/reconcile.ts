/**
 * Reconciliation: a batch recount of a range from the raw store compared with the stored
 * real-time aggregates, cell by cell, with the likely cause of every difference; `repair`
 * applies the recount (the replay's apply path). Metrics on the shared registry (labels:
 * mode and cause, never ad_id), and a scheduled mode for the running stack.
 */
import type { JetStreamClient, JetStreamManager } from "@nats-io/jetstream";
import { Counter, Gauge } from "prom-client";
import { ConfigError } from "../errors.js";
import { registry } from "../metrics/registry.js";
import type { ClickEvent, Dimension } from "../model.js";
import { ONE_MINUTE_MS } from "../model.js";
import { readLateEvents } from "./late-evidence.js";
import {
  CAUSE_TEXT,
  indexLateEvents,
  MISMATCH_CAUSES,
  type Mismatch,
  type MismatchCause,
  type TopMismatch,
} from "./recount.js";
import { type ReplayOptions, type ReplayResult, replayRange } from "./replay.js";

const rangesChecked = new Counter({
  name: "adclick_reconcile_ranges_checked_total",
  help: "Ranges reconciled against a recount of the raw store, by mode (manual, scheduled) and outcome (ok, failed)",
  labelNames: ["mode", "outcome"] as const,
  registers: [registry],
});
const mismatchesFound = new Counter({
  name: "adclick_reconcile_mismatches_found_total",
  help: "Aggregate cells that differed from the recount, by mode and likely cause",
  labelNames: ["mode", "cause"] as const,
  registers: [registry],
});
const cellsCompared = new Counter({
  name: "adclick_reconcile_cells_compared_total",
  help: "Aggregate cells compared with the recount",
  labelNames: ["mode"] as const,
  registers: [registry],
});
const lastRunMismatches = new Gauge({
  name: "adclick_reconcile_last_run_mismatches",
  help: "Cells (plus minutes whose global top N differs) that differed in the last reconciliation",
  labelNames: ["mode"] as const,
  registers: [registry],
});
const lastRunTimestamp = new Gauge({
  name: "adclick_reconcile_last_run_timestamp_seconds",
  help: "When the last reconciliation finished (successfully or not), Unix seconds",
  labelNames: ["mode"] as const,
  registers: [registry],
});
const lastSuccessTimestamp = new Gauge({
  name: "adclick_reconcile_last_success_timestamp_seconds",
  help: "When the last successful reconciliation finished, Unix seconds",
  labelNames: ["mode"] as const,
  registers: [registry],
});
const lastRangeEnd = new Gauge({
  name: "adclick_reconcile_last_range_end_timestamp_seconds",
  help: "End of the last successfully reconciled range (event time), Unix seconds",
  labelNames: ["mode"] as const,
  registers: [registry],
});

export type ReconcileMode = "manual" | "scheduled";

/** Loads the late events (CLICKS_LATE) of an event-time range: the "late" cause's evidence. */
export type LateEventsLoader = (fromMs: number, toMs: number) => Promise<Iterable<ClickEvent>>;

/** Late-event evidence from the CLICKS_LATE stream. */
export function natsLateEvents(js: JetStreamClient, jsm: JetStreamManager): LateEventsLoader {
  return (fromMs, toMs) => readLateEvents(js, jsm, { fromMs, toMs });
}

export interface ReconcileOptions
  extends Omit<ReplayOptions, "apply" | "late" | "runId" | "progressStore"> {
  /** Apply the recount to the range (replay's apply path; needs `eraser`). */
  repair: boolean;
  /** Resumable repairs (as replay). */
  progressStore?: ReplayOptions["progressStore"];
  /** Late-event evidence; without it no difference is attributed to the late policy. */
  lateEvents?: LateEventsLoader;
  mode?: ReconcileMode;
}

/** A mismatch as reported: the minute also as ISO-8601 text. */
export type ReportedMismatch = Mismatch & { minute: string };

export interface ReconcileReport {
  range: { from: string; to: string; fromMs: number; toMs: number };
  partitions: number;
  dimensions: Dimension[];
  /** Unique raw events recounted. */
  events: number;
  cellsCompared: number;
  /** Every differing cell is counted here; `mismatches` lists at most `maxMismatches`. */
  mismatchCount: number;
  mismatches: ReportedMismatch[];
  truncated: boolean;
  byCause: Record<MismatchCause, number>;
  /** Minutes whose stored global top N differs from the recount's. */
  topMismatches: (TopMismatch & { minute: string })[];
  /** The recount was applied (reconcile --repair, replay --apply). */
  repaired: boolean;
  /** The version the repair wrote. */
  version: number | null;
  resumedFromMs: number | null;
  seconds: number;
}

const iso = (ms: number) => new Date(ms).toISOString();

/** A replay's result as a report (JSON-friendly: minutes also as ISO text). */
export function reportOf(
  r: ReplayResult,
  o: { partitions: number; dimensions: readonly Dimension[] },
): ReconcileReport {
  return {
    range: { from: iso(r.fromMs), to: iso(r.toMs), fromMs: r.fromMs, toMs: r.toMs },
    partitions: o.partitions,
    dimensions: [...o.dimensions],
    events: r.events,
    cellsCompared: r.cellsCompared,
    mismatchCount: r.mismatchCount,
    mismatches: r.mismatches.map((m) => ({ minute: iso(m.minuteMs), ...m })),
    truncated: r.mismatches.length < r.mismatchCount,
    byCause: r.byCause,
    topMismatches: r.topMismatches.map((t) => ({ minute: iso(t.minuteMs), ...t })),
    repaired: r.apply,
    version: r.version,
    resumedFromMs: r.resumedFromMs,
    seconds: r.seconds,
  };
}

/**
 * Reconciles [fromMs, toMs): recount from the raw store vs stored aggregates; with `repair`
 * the recount overwrites the range. Updates the reconciliation metrics.
 */
export async function reconcileRange(o: ReconcileOptions): Promise<ReconcileReport> {
  const mode = o.mode ?? "manual";
  try {
    const late = o.lateEvents
      ? indexLateEvents(await o.lateEvents(o.fromMs, o.toMs), o.dimensions)
      : undefined;
    const { lateEvents: _l, repair, mode: _m, ...replay } = o;
    const r = await replayRange({ ...replay, apply: repair, ...(late ? { late } : {}) });
    const report = reportOf(r, o);
    const nowS = Date.now() / 1000;
    rangesChecked.inc({ mode, outcome: "ok" });
    cellsCompared.inc({ mode }, r.cellsCompared);
    for (const cause of MISMATCH_CAUSES) {
      if (r.byCause[cause] > 0) mismatchesFound.inc({ mode, cause }, r.byCause[cause]);
    }
    lastRunMismatches.set({ mode }, r.mismatchCount + r.topMismatches.length);
    lastRunTimestamp.set({ mode }, nowS);
    lastSuccessTimestamp.set({ mode }, nowS);
    lastRangeEnd.set({ mode }, o.toMs / 1000);
    return report;
  } catch (err) {
    rangesChecked.inc({ mode, outcome: "failed" });
    lastRunTimestamp.set({ mode }, Date.now() / 1000);
    throw err;
  }
}

// ---------------------------------------------------------------------------------------
// Readable table

const minuteText = (ms: number) => iso(ms).slice(0, 16).replace("T", " ");

function cell(m: Mismatch): string {
  return m.dim ? `${m.dim}=${m.value}` : "";
}

/** The report as a readable table (at most `limit` mismatch rows; JSON has them all). */
export function formatReconcileReport(
  r: ReconcileReport,
  o: { limit?: number; title?: string } = {},
): string {
  const limit = o.limit ?? 50;
  const lines: string[] = [];
  lines.push(
    `${o.title ?? "reconciled"} ${r.range.from} → ${r.range.to}: ${r.partitions} partitions, ${r.events} raw events, ` +
      `${r.cellsCompared} cells compared, ${r.mismatchCount} differing` +
      (r.topMismatches.length > 0 ? `, top N differs in ${r.topMismatches.length} minute(s)` : "") +
      (r.repaired ? ` — recount applied at version ${r.version}` : "") +
      (r.resumedFromMs !== null ? ` (resumed from ${iso(r.resumedFromMs)})` : "") +
      ` in ${r.seconds.toFixed(1)} s`,
  );
  if (r.mismatchCount === 0 && r.topMismatches.length === 0) {
    lines.push("aggregates equal the recount of the raw store");
    return lines.join("\n");
  }
  const causes = MISMATCH_CAUSES.filter((c) => r.byCause[c] > 0);
  if (causes.length > 0) {
    lines.push("by likely cause:");
    for (const c of causes) lines.push(`  ${String(r.byCause[c]).padStart(8)}  ${CAUSE_TEXT[c]}`);
  }
  if (r.mismatches.length > 0) {
    const adW = Math.max(5, ...r.mismatches.slice(0, limit).map((m) => m.adId.length));
    const dimW = Math.max(9, ...r.mismatches.slice(0, limit).map((m) => cell(m).length));
    lines.push(
      `${"minute (UTC)".padEnd(16)}  ${"part".padStart(4)}  ${"ad_id".padEnd(adW)}  ${"dimension".padEnd(dimW)}  ${"stored".padStart(8)}  ${"recount".padStart(8)}  likely cause`,
    );
    for (const m of r.mismatches.slice(0, limit)) {
      lines.push(
        `${minuteText(m.minuteMs).padEnd(16)}  ${String(m.partition).padStart(4)}  ${m.adId.padEnd(adW)}  ${cell(m).padEnd(dimW)}  ${String(m.stored ?? "-").padStart(8)}  ${String(m.recount ?? "-").padStart(8)}  ${m.cause}`,
      );
    }
    if (r.mismatchCount > Math.min(limit, r.mismatches.length)) {
      lines.push(
        `… ${r.mismatchCount - Math.min(limit, r.mismatches.length)} more (--json lists up to the cap)`,
      );
    }
  }
  for (const t of r.topMismatches.slice(0, limit)) {
    lines.push(
      `top N of ${minuteText(t.minuteMs)} differs: stored ${t.stored ? `${t.stored.length} entries` : "none"}, recount ${t.recount ? `${t.recount.length} entries` : "none"}`,
    );
  }
  return lines.join("\n");
}

// ---------------------------------------------------------------------------------------
// Scheduled mode

export interface ScheduleWindowOptions {
  /** Period, whole minutes: one window of this length per period. */
  everyMs: number;
  /** How far behind the clock windows end: past lateness, idle closing and the writer. */
  lagMs: number;
  /** After a pause, at most this many periods are caught up in one window. */
  maxCatchUpPeriods?: number;
}

export function checkScheduleOptions(o: ScheduleWindowOptions): void {
  if (!Number.isSafeInteger(o.everyMs) || o.everyMs <= 0 || o.everyMs % ONE_MINUTE_MS !== 0) {
    throw new ConfigError(
      "reconcile everyMs",
      `must be a positive whole number of minutes, got ${o.everyMs}`,
    );
  }
  if (!Number.isSafeInteger(o.lagMs) || o.lagMs < 0) {
    throw new ConfigError("reconcile lagMs", `must be an integer >= 0, got ${o.lagMs}`);
  }
}

/**
 * The window a schedule reconciles at `nowMs` (pure): `[to − everyMs, to)` with `to` the
 * period boundary at or before `nowMs − lagMs`, so consecutive windows tile the time line;
 * after `lastToMs` (the previous window's end) it starts there, catching up missed periods
 * (bounded). Null when nothing new is due.
 */
export function scheduledWindow(
  nowMs: number,
  o: ScheduleWindowOptions,
  lastToMs?: number,
): { fromMs: number; toMs: number } | null {
  const toMs = Math.floor((nowMs - o.lagMs) / o.everyMs) * o.everyMs;
  const earliest = toMs - (o.maxCatchUpPeriods ?? 24) * o.everyMs;
  const fromMs = lastToMs === undefined ? toMs - o.everyMs : Math.max(lastToMs, earliest);
  return fromMs < toMs ? { fromMs, toMs } : null;
}

export interface ReconcileScheduleOptions
  extends Omit<ReconcileOptions, "fromMs" | "toMs" | "repair" | "mode" | "signal" | "runId">,
    ScheduleWindowOptions {
  /** Apply the recount when a window differs (default false: report and alert only). */
  repair?: boolean;
  /** How often to look whether a window is due; default min(everyMs, 1 minute). */
  checkEveryMs?: number;
  /** Wall clock (tests move it). */
  now?: () => number;
  onReport?: (r: ReconcileReport) => void;
  onError?: (err: unknown) => void;
}

export interface ReconcileSchedule {
  /** The end of the last window reconciled successfully. */
  lastToMs(): number | undefined;
  /** Stops: aborts a run in progress, clears the timer. Idempotent. */
  close(): Promise<void>;
  /** Resolves once closed. */
  closed(): Promise<void>;
}

/**
 * Reconciles every period the window `[now − lagMs − everyMs, now − lagMs)` (aligned to the
 * period), updating the metrics; a failed window is retried at the next check. The timer
 * lives here, at the I/O edge; the window choice is {@link scheduledWindow}.
 */
export function startReconcileSchedule(o: ReconcileScheduleOptions): ReconcileSchedule {
  checkScheduleOptions(o);
  const now = o.now ?? Date.now;
  const checkEveryMs = o.checkEveryMs ?? Math.min(o.everyMs, ONE_MINUTE_MS);
  const controller = new AbortController();
  let lastToMs: number | undefined;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> = Promise.resolve();
  let closing: Promise<void> | undefined;
  let resolveClosed!: () => void;
  const closedP = new Promise<void>((r) => {
    resolveClosed = r;
  });
  const {
    everyMs: _e,
    lagMs: _l,
    maxCatchUpPeriods: _c,
    checkEveryMs: _k,
    now: _n,
    onReport,
    onError,
    repair,
    ...reconcile
  } = o;

  const tick = async () => {
    const w = scheduledWindow(now(), o, lastToMs);
    if (!w) return;
    try {
      const report = await reconcileRange({
        ...reconcile,
        ...w,
        repair: repair ?? false,
        mode: "scheduled",
        signal: controller.signal,
      });
      lastToMs = w.toMs;
      onReport?.(report);
    } catch (err) {
      if (!controller.signal.aborted) onError?.(err);
    }
  };
  const loop = () => {
    if (controller.signal.aborted) return;
    running = tick().finally(() => {
      if (!controller.signal.aborted) timer = setTimeout(loop, checkEveryMs);
    });
  };
  loop();

  return {
    lastToMs: () => lastToMs,
    close() {
      closing ??= (async () => {
        controller.abort();
        if (timer) clearTimeout(timer);
        await running.catch(() => {});
        resolveClosed();
      })();
      return closing;
    },
    closed: () => closedP,
  };
}
