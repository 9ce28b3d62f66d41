import type { AdclickConfig } from "../../src/config.js";
import { parseRange } from "../../src/recalc/range.js";
import {
  formatReconcileReport,
  type ReconcileReport,
  reconcileRange,
} from "../../src/recalc/reconcile.js";
import { ProgressBar } from "./progress.js";
import { abortOnSignals, openRecalcDeps, progressDrawer } from "./replay.js";

export interface ReconcileCliOptions {
  from: string;
  to: string;
  repair: boolean;
  json: boolean;
}

/**
 * `adclick reconcile --from ISO --to ISO [--repair] [--json]`: recounts the range from the raw
 * store and compares it with the stored real-time aggregates; prints every differing (ad,
 * minute[, dimension]) with both values and the likely cause; --repair applies the recount.
 */
export async function runReconcile(
  c: AdclickConfig,
  o: ReconcileCliOptions,
): Promise<ReconcileReport> {
  const { fromMs, toMs } = parseRange(o.from, o.to);
  const deps = await openRecalcDeps(c, "adclick-reconcile");
  const interrupt = abortOnSignals();
  const bar = new ProgressBar(o.repair ? "repairing" : "reconciling");
  try {
    const report = await reconcileRange({
      rawStore: deps.rawStore,
      aggregateStore: deps.aggregateStore,
      eraser: deps.eraser,
      progressStore: deps.progressStore,
      lateEvents: deps.lateEvents,
      partitions: c.partitions,
      dimensions: c.dimensions,
      topK: c.topK,
      fromMs,
      toMs,
      repair: o.repair,
      mode: "manual",
      onProgress: progressDrawer(bar),
      signal: interrupt.signal,
    });
    console.log(o.json ? JSON.stringify(report) : formatReconcileReport(report));
    return report;
  } finally {
    bar.finish();
    interrupt.dispose();
    await deps.close();
  }
}
