import type { KV } from "@nats-io/kv";
import { AdclickError } from "../errors.js";

/**
 * Durable progress of recalculation runs, so that a crashed `replay --apply` resumes where it
 * stopped instead of starting over, and the version allocator of recalculations.
 *
 * Versions. Every aggregate write is `USING TIMESTAMP <version>` and the higher version
 * wins. The live pipeline writes small versions (1 for a minute's first emission, +1 per
 * correction; the reducer's top N: the sum of its partitions' versions), so a recalculation
 * writes at RECALC_VERSION_BASE (10⁹) + something, far above anything live. Two rules on
 * the "something":
 *  - a later recalculation must beat an earlier one: versions are allocated from a counter
 *    in KV with compare-and-set (strictly increasing), and never below the seconds elapsed
 *    since 2024-01-01, so even a lost bucket (counter reset) still yields versions above
 *    every earlier run's;
 *  - the `version` columns are Cassandra `int`: 10⁹ + seconds since 2024 stays below 2³¹−1
 *    until 2060 (epoch seconds themselves would not fit on top of the base).
 * A resumed run keeps its version, so redoing a half-finished minute rewrites the same cells
 * at the same timestamp (idempotent).
 */
export const RECALC_VERSION_BASE = 1_000_000_000;
/** 2024-01-01T00:00:00Z: the origin of the time component of recalculation versions. */
export const RECALC_VERSION_EPOCH_MS = Date.UTC(2024, 0, 1);
const MAX_INT32 = 2_147_483_647;

/** The smallest version a recalculation started at `nowMs` may use. */
export function recalcVersionFloor(nowMs: number): number {
  return RECALC_VERSION_BASE + Math.max(0, Math.floor((nowMs - RECALC_VERSION_EPOCH_MS) / 1000));
}

/** The version after `previous` (the last one allocated, if any) at `nowMs`. */
export function nextRecalcVersion(previous: number | undefined, nowMs: number): number {
  const v = Math.max((previous ?? 0) + 1, recalcVersionFloor(nowMs));
  if (v > MAX_INT32) throw new RangeError(`recalculation version ${v} does not fit an int column`);
  return v;
}

/** The durable record of one run. */
export interface RecalcProgress {
  runId: string;
  /** The version every write of this run carries. */
  version: number;
  fromMs: number;
  toMs: number;
  /** Every minute before this is finished (all partitions and the minute's top N). */
  doneThroughMs: number;
  state: "running" | "done";
  startedAtMs: number;
  updatedAtMs: number;
}

export interface StoredProgress {
  progress: RecalcProgress;
  revision: number;
}

/** Another process advanced the same run (two replays of one range at once). */
export class RecalcConflictError extends AdclickError {
  declare readonly code: "RECALC_CONFLICT";
  constructor(message: string, options?: { cause?: unknown }) {
    super("RECALC_CONFLICT", message, options);
    this.name = "RecalcConflictError";
  }
}

export interface RecalcProgressStore {
  load(runId: string): Promise<StoredProgress | undefined>;
  /** Compare-and-set against `revision` (undefined: the record must not exist yet). */
  save(p: RecalcProgress, revision: number | undefined): Promise<number>;
  /** A fresh version, strictly above every version allocated before. */
  allocateVersion(nowMs: number): Promise<number>;
}

/** The KV key of a run's progress record. Run ids: letters, digits, '-', '_'. */
export function recalcProgressKey(runId: string): string {
  if (!/^[A-Za-z0-9_-]{1,200}$/.test(runId)) {
    throw new RangeError(`run id "${runId}" must be 1-200 of A-Z a-z 0-9 _ -`);
  }
  return `recalc.run.${runId}`;
}

export const RECALC_VERSION_KEY = "recalc.version";

/**
 * Progress in the `adclick_snapshots` KV bucket (keys `recalc.run.<runId>`, and
 * `recalc.version` for the allocator), every write compare-and-set.
 */
export class KvRecalcProgressStore implements RecalcProgressStore {
  constructor(private readonly kv: KV) {}

  async load(runId: string): Promise<StoredProgress | undefined> {
    const e = await this.kv.get(recalcProgressKey(runId));
    if (e?.operation !== "PUT" || e.length === 0) return undefined;
    return { progress: e.json<RecalcProgress>(), revision: e.revision };
  }

  async save(p: RecalcProgress, revision: number | undefined): Promise<number> {
    const key = recalcProgressKey(p.runId);
    const data = JSON.stringify(p);
    try {
      return revision === undefined
        ? await this.kv.create(key, data)
        : await this.kv.update(key, data, revision);
    } catch (err) {
      throw new RecalcConflictError(
        `recalculation run ${p.runId} was advanced by someone else (expected revision ${String(revision)})`,
        { cause: err },
      );
    }
  }

  async allocateVersion(nowMs: number): Promise<number> {
    for (let attempt = 0; attempt < 20; attempt++) {
      const e = await this.kv.get(RECALC_VERSION_KEY);
      const have = e?.operation === "PUT" && e.length > 0;
      const next = nextRecalcVersion(have ? Number(e.string()) : undefined, nowMs);
      try {
        if (e) await this.kv.update(RECALC_VERSION_KEY, String(next), e.revision);
        else await this.kv.create(RECALC_VERSION_KEY, String(next));
        return next;
      } catch {
        // Someone allocated in between: read again.
      }
    }
    throw new RecalcConflictError("could not allocate a recalculation version (contention)");
  }
}

/** In-memory progress (tests; runs without NATS are simply not resumable across processes). */
export class MemoryRecalcProgressStore implements RecalcProgressStore {
  readonly records = new Map<string, StoredProgress>();
  private lastVersion: number | undefined;
  private revisions = 0;

  async load(runId: string): Promise<StoredProgress | undefined> {
    const r = this.records.get(runId);
    return r && { progress: { ...r.progress }, revision: r.revision };
  }

  async save(p: RecalcProgress, revision: number | undefined): Promise<number> {
    const cur = this.records.get(p.runId);
    if ((cur?.revision ?? undefined) !== revision) {
      throw new RecalcConflictError(`recalculation run ${p.runId}: revision mismatch`);
    }
    const next = ++this.revisions;
    this.records.set(p.runId, { progress: { ...p }, revision: next });
    return next;
  }

  async allocateVersion(nowMs: number): Promise<number> {
    this.lastVersion = nextRecalcVersion(this.lastVersion, nowMs);
    return this.lastVersion;
  }
}
