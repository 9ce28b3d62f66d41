import type { NatsConnection } from "@nats-io/transport-node";
import type { AdclickConfig } from "../../src/config.js";
import { AdclickError } from "../../src/errors.js";
import type { KvRecalcProgressStore } from "../../src/recalc/progress.js";
import { parseRange } from "../../src/recalc/range.js";
import {
  formatReconcileReport,
  type LateEventsLoader,
  natsLateEvents,
  reportOf,
} from "../../src/recalc/reconcile.js";
import { indexLateEvents } from "../../src/recalc/recount.js";
import {
  type AggregateEraser,
  type ReplayProgressInfo,
  type ReplayResult,
  replayRange,
} from "../../src/recalc/replay.js";
import type { AggregateStore } from "../../src/storage/aggregate-store.js";
import type { CassandraClient } from "../../src/storage/cassandra-client.js";
import type { RawStore } from "../../src/storage/raw-store.js";
import { openConnections } from "../connections.js";
import { storesOf } from "../worker.js";
import { ProgressBar } from "./progress.js";

/** What replay and reconcile need, opened from the configuration; `close()` releases it. */
export interface RecalcDeps {
  nc: NatsConnection;
  cql: CassandraClient;
  rawStore: RawStore;
  aggregateStore: AggregateStore;
  eraser: AggregateEraser;
  progressStore: KvRecalcProgressStore;
  lateEvents: LateEventsLoader;
  close(): Promise<void>;
}

export async function openRecalcDeps(c: AdclickConfig, name: string): Promise<RecalcDeps> {
  // An operator's job: the admin role (the pipeline's rights, and nothing the workers serve).
  const conn = await openConnections(c, name, "admin");
  const stores = storesOf(conn, name);
  return {
    nc: conn.nc,
    cql: conn.cql,
    rawStore: stores.raw,
    aggregateStore: stores.aggregates,
    eraser: stores.eraser,
    progressStore: stores.recalcVersions,
    lateEvents: natsLateEvents(conn.js, conn.jsm),
    close: () => conn.close(),
  };
}

/** Draws replay progress on the terminal's progress bar. */
export function progressDrawer(bar: ProgressBar): (p: ReplayProgressInfo) => void {
  return (p) =>
    bar.update(
      p.doneUnits,
      p.totalUnits,
      `${new Date(p.minuteMs).toISOString().slice(0, 16)}Z ${p.events} events ${p.mismatches} differing`,
    );
}

/** SIGINT/SIGTERM abort a run between partition-minutes (it stays resumable). */
export function abortOnSignals(): { signal: AbortSignal; dispose(): void } {
  const controller = new AbortController();
  const stop = () => controller.abort(new AdclickError("INTERNAL", "interrupted"));
  process.once("SIGINT", stop);
  process.once("SIGTERM", stop);
  return {
    signal: controller.signal,
    dispose() {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
    },
  };
}

export interface ReplayCliOptions {
  from: string;
  to: string;
  apply: boolean;
  json: boolean;
  /** Resume or name a run (default: derived from the range). */
  runId?: string;
}

/**
 * `adclick replay --from ISO --to ISO [--apply] [--json]`: recounts the range from the raw
 * store with a dedicated aggregation instance; with --apply overwrites its aggregates (a
 * crashed or interrupted apply resumes when the same command runs again).
 */
export async function runReplay(c: AdclickConfig, o: ReplayCliOptions): Promise<ReplayResult> {
  const { fromMs, toMs } = parseRange(o.from, o.to);
  const deps = await openRecalcDeps(c, "adclick-replay");
  const interrupt = abortOnSignals();
  const bar = new ProgressBar(o.apply ? "replaying" : "recounting");
  try {
    const result = await replayRange({
      rawStore: deps.rawStore,
      aggregateStore: deps.aggregateStore,
      eraser: deps.eraser,
      progressStore: deps.progressStore,
      partitions: c.partitions,
      dimensions: c.dimensions,
      topK: c.topK,
      fromMs,
      toMs,
      apply: o.apply,
      ...(o.runId ? { runId: o.runId } : {}),
      // Evidence for the likely causes of what would change (events the late policy dropped).
      late: indexLateEvents(await deps.lateEvents(fromMs, toMs), c.dimensions),
      onProgress: progressDrawer(bar),
      signal: interrupt.signal,
    });
    bar.finish();
    const report = reportOf(result, c);
    if (o.json) {
      console.log(
        JSON.stringify({
          runId: result.runId,
          ...report,
          rowsWritten: result.rowsWritten,
          rowsDeleted: result.rowsDeleted,
        }),
      );
    } else {
      console.log(
        formatReconcileReport(report, {
          title: o.apply ? "replayed" : "replay (dry run, nothing written)",
        }),
      );
      if (o.apply) {
        console.log(
          `run ${result.runId}: ${result.rowsWritten} rows written, ${result.rowsDeleted} stale rows deleted`,
        );
      } else if (result.mismatchCount > 0 || result.topMismatches.length > 0) {
        console.log("run again with --apply to overwrite these aggregates with the recount");
      }
    }
    return result;
  } catch (err) {
    bar.finish();
    if (interrupt.signal.aborted && o.apply) {
      process.stderr.write(
        "replay interrupted: finished minutes are recorded; run the same command again to resume\n",
      );
    }
    throw err;
  } finally {
    interrupt.dispose();
    await deps.close();
  }
}
