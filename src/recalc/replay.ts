/**
 * Recalculation (the chapter's Kappa replay): recount a time range from the raw store with a
 * dedicated instance of the aggregation operator and, with `apply`, overwrite the range's
 * aggregates — per-ad counts, per-ad × dimension counts, partition minutes, global top N.
 *
 * Live traffic is untouched: the replay reads Cassandra's raw store, not the click stream,
 * so it adds no consumer, no lag and no output to the live pipeline; its only shared
 * resource is Cassandra. Its writes carry versions above anything the live pipeline writes
 * (see progress.ts), so they win over the live rows of the range, and a later
 * recalculation wins over an earlier one.
 *
 * Operational rule: recalculate closed minutes only. A live amendment (late policy "amend")
 * of a minute after its recalculation carries a lower version and loses; run the replay once
 * the range is past the lateness and the amendment horizon, as the scheduled reconciliation
 * does with its lag.
 *
 * Resumable: with a progress store, every finished minute (all partitions written, then the
 * minute's top N) is recorded; a run restarted with the same run id (by default derived from
 * the range) continues after the last finished minute with the same version, redoing at
 * most one minute (idempotent: same cells, same values, same timestamp).
 */
import { AdclickError } from "../errors.js";
import type { ClickEvent, Dimension } from "../model.js";
import { ONE_MINUTE_MS } from "../model.js";
import { AggregateStore, type StoredPartitionMinute } from "../storage/aggregate-store.js";
import type { ClosedMinute } from "../windows/partition-aggregator.js";
import {
  nextRecalcVersion,
  type RecalcProgress,
  type RecalcProgressStore,
  recalcProgressKey,
  type StoredProgress,
} from "./progress.js";
import {
  compareMismatch,
  type DiffContext,
  diffPartitionMinute,
  diffTops,
  emptyByCause,
  globalTop,
  type LateIndex,
  type Mismatch,
  type MismatchCause,
  recountMinute,
  staleCells,
  type TopMismatch,
} from "./recount.js";

/** What replay reads from the raw store. */
export interface RawMinuteSource {
  /** The unique events of one partition's minute. */
  readMinute(partition: number, minuteMs: number): Promise<ClickEvent[]>;
}

/** What replay reads from and writes to the aggregate store. */
export type AggregateTarget = Pick<
  AggregateStore,
  "partitionMinutes" | "topMinutes" | "writeMinute" | "writeTop" | "progress"
>;

/**
 * Removes stored aggregate rows the recount does not have, at a version: AggregateStore's
 * deletes, whose `USING TIMESTAMP <version>` tombstone shadows every older cell (the live row,
 * a buggy row) and loses to a later recalculation's writes, like the upserts it accompanies.
 */
export type AggregateEraser = Pick<
  AggregateStore,
  "deleteAdMinute" | "deleteAdDimMinute" | "deletePartitionMinute" | "deleteTop"
>;

/** The Cassandra eraser: an AggregateStore on the client, used for its deletes. */
export class CassandraAggregateEraser extends AggregateStore implements AggregateEraser {}

export interface ReplayProgressInfo {
  /** Partition-minutes finished in this run (resumed runs count from the resume point). */
  doneUnits: number;
  totalUnits: number;
  minuteMs: number;
  partition: number;
  events: number;
  mismatches: number;
}

export interface ReplayOptions {
  rawStore: RawMinuteSource;
  aggregateStore: AggregateTarget;
  /** Required with `apply`: removes stored rows the recount does not have. */
  eraser?: AggregateEraser;
  /** Makes an applying run resumable; without it a crash restarts the range from scratch. */
  progressStore?: RecalcProgressStore;
  partitions: number;
  dimensions: readonly Dimension[];
  /** Per-partition top-k per minute (the live `topK`). */
  topK: number;
  /** Global top N per minute (the reducer's `n`); default `topK`, as the worker runs it. */
  topN?: number;
  /** Whole minutes, fromMs < toMs. */
  fromMs: number;
  toMs: number;
  /** Overwrite the range's aggregates; otherwise only report what would change. */
  apply: boolean;
  /** Identifies the run for resumption; default `<fromMs>-<toMs>`. */
  runId?: string;
  /** Late-event evidence for the likely causes (reconcile reads CLICKS_LATE). */
  late?: LateIndex;
  /** Partitions recounted at once. */
  concurrency?: number;
  /** Mismatches listed at most (all are counted). */
  maxMismatches?: number;
  /** Called after each partition-minute; awaited. */
  onProgress?: (p: ReplayProgressInfo) => void | Promise<void>;
  /** Stops between partition-minutes (the run stays resumable). */
  signal?: AbortSignal;
  /** Wall clock (version allocation, record times). */
  now?: () => number;
}

export interface ReplayResult {
  runId: string | null;
  /** The version written (apply), else null. */
  version: number | null;
  apply: boolean;
  fromMs: number;
  toMs: number;
  /** Where a resumed run picked up (minutes before it were done by the crashed attempt). */
  resumedFromMs: number | null;
  minutes: number;
  partitionMinutes: number;
  /** Unique raw events recounted. */
  events: number;
  cellsCompared: number;
  mismatchCount: number;
  /** The first `maxMismatches` of them, sorted by minute, partition, ad, dimension, value. */
  mismatches: Mismatch[];
  byCause: Record<MismatchCause, number>;
  topMismatches: TopMismatch[];
  rowsWritten: number;
  rowsDeleted: number;
  seconds: number;
}

/** Checks a replay range: whole minutes, non-empty. */
export function checkRange(fromMs: number, toMs: number): void {
  const whole = (t: number) => Number.isSafeInteger(t) && t % ONE_MINUTE_MS === 0;
  if (!whole(fromMs) || !whole(toMs)) {
    throw new AdclickError("BAD_REQUEST", "the range must start and end on whole minutes");
  }
  if (fromMs >= toMs) throw new AdclickError("BAD_REQUEST", "the range is empty (from >= to)");
}

async function forEachLimit<T>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<void>,
): Promise<void> {
  let next = 0;
  const worker = async () => {
    while (next < items.length) await fn(items[next++] as T);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(limit, items.length)) }, worker));
}

/** Overwrites one partition-minute with its recount; returns [rows written, rows deleted]. */
async function overwrite(
  target: AggregateTarget,
  eraser: AggregateEraser,
  recount: ClosedMinute | undefined,
  stored: StoredPartitionMinute | undefined,
  partition: number,
  minuteMs: number,
  version: number,
  dimensions: readonly Dimension[],
): Promise<[number, number]> {
  let written = 0;
  let deleted = 0;
  if (recount) written += await target.writeMinute({ ...recount, version });
  const stale = staleCells(recount, stored, dimensions);
  for (const adId of stale.ads) {
    await eraser.deleteAdMinute(adId, minuteMs, version);
    deleted++;
  }
  for (const c of stale.dims) {
    await eraser.deleteAdDimMinute(c.adId, c.dim, c.value, minuteMs, version);
    deleted++;
  }
  if (stale.partitionRow) {
    await eraser.deletePartitionMinute(partition, minuteMs, version);
    deleted++;
  }
  return [written, deleted];
}

/** Starts or resumes the durable record of an applying run; returns where to start. */
async function beginRun(
  o: ReplayOptions,
  runId: string,
  nowMs: number,
): Promise<{ version: number; startMs: number; resumed: boolean; record?: StoredProgress }> {
  const store = o.progressStore;
  if (!store)
    return { version: nextRecalcVersion(undefined, nowMs), startMs: o.fromMs, resumed: false };
  recalcProgressKey(runId); // validates the id before anything is written
  const existing = await store.load(runId);
  if (existing && existing.progress.state === "running") {
    const p = existing.progress;
    if (p.fromMs !== o.fromMs || p.toMs !== o.toMs) {
      throw new AdclickError(
        "BAD_REQUEST",
        `run ${runId} is an unfinished replay of another range (${new Date(p.fromMs).toISOString()} – ${new Date(p.toMs).toISOString()})`,
      );
    }
    return {
      version: p.version,
      startMs: p.doneThroughMs,
      resumed: true,
      record: existing,
    };
  }
  const version = await store.allocateVersion(nowMs);
  const record: RecalcProgress = {
    runId,
    version,
    fromMs: o.fromMs,
    toMs: o.toMs,
    doneThroughMs: o.fromMs,
    state: "running",
    startedAtMs: nowMs,
    updatedAtMs: nowMs,
  };
  const revision = await store.save(record, existing?.revision);
  return { version, startMs: o.fromMs, resumed: false, record: { progress: record, revision } };
}

/**
 * Recounts [fromMs, toMs) from the raw store, partition-minute by partition-minute, compares
 * with the stored aggregates, and with `apply` overwrites them (see the module comment).
 *
 * @throws AdclickError BAD_REQUEST on an invalid range or run id reuse; RecalcConflictError
 *   when another process advances the same run; the signal's reason when aborted.
 */
export async function replayRange(o: ReplayOptions): Promise<ReplayResult> {
  checkRange(o.fromMs, o.toMs);
  if (o.apply && !o.eraser) throw new AdclickError("BAD_REQUEST", "apply needs an eraser");
  const started = performance.now();
  const now = o.now ?? Date.now;
  const topN = o.topN ?? o.topK;
  const maxMismatches = o.maxMismatches ?? 10_000;
  const runId = o.runId ?? `${o.fromMs}-${o.toMs}`;
  const partitions = Array.from({ length: o.partitions }, (_, p) => p);

  let version: number | null = null;
  let startMs = o.fromMs;
  let resumedFromMs: number | null = null;
  let revision: number | undefined;
  let record: RecalcProgress | undefined;
  if (o.apply) {
    const begun = await beginRun(o, runId, now());
    version = begun.version;
    startMs = begun.startMs;
    revision = begun.record?.revision;
    record = begun.record?.progress;
    if (begun.resumed) resumedFromMs = begun.startMs;
  }

  const ctx: DiffContext = {
    dimensions: o.dimensions,
    closedThrough: await o.aggregateStore.progress(),
    ...(o.late ? { late: o.late } : {}),
  };
  const result: ReplayResult = {
    runId: o.apply ? runId : null,
    version,
    apply: o.apply,
    fromMs: o.fromMs,
    toMs: o.toMs,
    resumedFromMs,
    minutes: 0,
    partitionMinutes: 0,
    events: 0,
    cellsCompared: 0,
    mismatchCount: 0,
    mismatches: [],
    byCause: emptyByCause(),
    topMismatches: [],
    rowsWritten: 0,
    rowsDeleted: 0,
    seconds: 0,
  };
  const totalUnits = ((o.toMs - startMs) / ONE_MINUTE_MS) * o.partitions;
  let doneUnits = 0;

  for (let m = startMs; m < o.toMs; m += ONE_MINUTE_MS) {
    o.signal?.throwIfAborted();
    const end = m + ONE_MINUTE_MS;
    const stored = new Map(
      (await o.aggregateStore.partitionMinutes(o.partitions, m, end)).map((s) => [s.partition, s]),
    );
    const storedTop = await o.aggregateStore.topMinutes(m, end);
    const recounts: (ClosedMinute | undefined)[] = new Array(o.partitions);
    const minuteMismatches: Mismatch[] = [];

    await forEachLimit(partitions, o.concurrency ?? 4, async (p) => {
      o.signal?.throwIfAborted();
      const events = await o.rawStore.readMinute(p, m);
      const recount = recountMinute(p, m, events, o);
      recounts[p] = recount;
      const diff = diffPartitionMinute(p, m, recount, stored.get(p), ctx);
      result.events += events.length;
      result.cellsCompared += diff.cellsCompared;
      for (const x of diff.mismatches) {
        minuteMismatches.push(x);
        result.byCause[x.cause]++;
      }
      result.mismatchCount += diff.mismatches.length;
      if (o.apply && version !== null) {
        const [w, d] = await overwrite(
          o.aggregateStore,
          o.eraser as AggregateEraser,
          recount,
          stored.get(p),
          p,
          m,
          version,
          o.dimensions,
        );
        result.rowsWritten += w;
        result.rowsDeleted += d;
      }
      result.partitionMinutes++;
      doneUnits++;
      await o.onProgress?.({
        doneUnits,
        totalUnits,
        minuteMs: m,
        partition: p,
        events: result.events,
        mismatches: result.mismatchCount,
      });
    });

    // The minute's global top N, once all its partitions are recounted (and written).
    const present = recounts.filter((r): r is ClosedMinute => r !== undefined);
    const top = present.length > 0 ? globalTop(present, topN) : undefined;
    result.topMismatches.push(...diffTops(top ? new Map([[m, top]]) : new Map(), storedTop));
    if (o.apply && version !== null) {
      if (top) {
        await o.aggregateStore.writeTop(m, version, topN, top);
        result.rowsWritten++;
      } else if (storedTop.has(m)) {
        await (o.eraser as AggregateEraser).deleteTop(m, version);
        result.rowsDeleted++;
      }
      if (o.progressStore && record) {
        record = { ...record, doneThroughMs: end, updatedAtMs: now() };
        revision = await o.progressStore.save(record, revision);
      }
    }
    minuteMismatches.sort(compareMismatch);
    for (const x of minuteMismatches) {
      if (result.mismatches.length >= maxMismatches) break;
      result.mismatches.push(x);
    }
    result.minutes++;
  }

  if (o.apply && o.progressStore && record) {
    await o.progressStore.save({ ...record, state: "done", updatedAtMs: now() }, revision);
  }
  result.seconds = (performance.now() - started) / 1000;
  return result;
}
