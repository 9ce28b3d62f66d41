import { hash } from "node:crypto";
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { retryForMs } from "../backoff.js";

/**
 * How far the shipper has got in one log file. Written to JetStream KV with compare-and-set,
 * so two shippers that think they own the same file cannot both advance it.
 */
export interface FileCheckpoint {
  source: string;
  path: string;
  /** The file's identity in event ids: path, inode and generation (bumped on truncation). */
  fileKey: string;
  ino: number;
  generation: number;
  /** Byte offset up to which every line has been acknowledged by JetStream. */
  offset: number;
  /** Lines before `offset` (for reporting line numbers after a restart). */
  lineNo: number;
  /**
   * Set while a chunk [offset, pendingEnd) is being published. After a crash the shipper
   * re-reads exactly this region first, so the re-published batches carry the same message
   * IDs as before even if the file has grown since.
   */
  pendingEnd?: number;
  pendingEndLineNo?: number;
  /**
   * A fingerprint of the file's first `headBytes` bytes (at most HEAD_BYTES). A file truncated
   * and refilled past our offset before we looked (copytruncate rotation) keeps its inode and
   * size, but not its first bytes: a changed fingerprint starts a new generation.
   */
  headBytes?: number;
  headHash?: string;
  /**
   * Largest event time of the file's events before `offset` (the source's progress mark:
   * acknowledged, so in the stream). Absent until a chunk with events is acknowledged.
   */
  progressMs?: number;
}

export const HEAD_BYTES = 256;

export interface StoredCheckpoint {
  checkpoint: FileCheckpoint;
  revision: number;
}

export interface CheckpointStore {
  load(source: string, path: string): Promise<StoredCheckpoint | undefined>;
  /** Saves with compare-and-set against `revision` (none: the key must not exist yet). */
  save(cp: FileCheckpoint, revision: number | undefined): Promise<number>;
}

export function checkpointKey(source: string, path: string): string {
  return `f.${hash("sha1", `${source}\0${path}`, "hex").slice(0, 32)}`;
}

/** Another writer moved the key on (compare-and-set failed): no retry can fix that. */
function isConflict(err: unknown): boolean {
  return (
    err instanceof JetStreamApiError &&
    (err.code === JetStreamApiCodes.StreamWrongLastSequence ||
      err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
  );
}

/**
 * Checkpoints in a KV bucket. Reads and writes are retried for `retryForMs`: on a NATS
 * cluster a bucket's raft leader may be lost (a node crashed or frozen), and until another
 * is elected (4–9 s) its writes time out or find no responders, which must not stop a log
 * agent.
 */
export class KvCheckpointStore implements CheckpointStore {
  constructor(
    private readonly kv: KV,
    private readonly retryForMs = 30_000,
  ) {}

  private retrying<T>(op: () => Promise<T>, applied?: () => Promise<T | undefined>) {
    return retryForMs(
      async () => {
        try {
          return await op();
        } catch (err) {
          // A write that timed out may have been applied after all (a retry then conflicts
          // with it): what is stored decides.
          const stored = await applied?.().catch(() => undefined);
          if (stored !== undefined) return stored;
          throw err;
        }
      },
      { forMs: this.retryForMs, isFinal: isConflict, bounds: { baseMs: 200, maxMs: 2000 } },
    );
  }

  async load(source: string, path: string): Promise<StoredCheckpoint | undefined> {
    const e = await this.retrying(() => this.kv.get(checkpointKey(source, path)));
    if (e?.operation !== "PUT" || e.length === 0) return undefined;
    return { checkpoint: e.json<FileCheckpoint>(), revision: e.revision };
  }

  async save(cp: FileCheckpoint, revision: number | undefined): Promise<number> {
    const key = checkpointKey(cp.source, cp.path);
    const value = JSON.stringify(cp);
    return this.retrying(
      () =>
        revision === undefined ? this.kv.create(key, value) : this.kv.update(key, value, revision),
      async () => {
        const e = await this.kv.get(key);
        const ours = e?.operation === "PUT" && e.revision > (revision ?? 0) && e.string() === value;
        return ours ? e.revision : undefined;
      },
    );
  }
}
