import { hash } from "node:crypto";
import type { KV } from "@nats-io/kv";

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

export class KvCheckpointStore implements CheckpointStore {
  constructor(private readonly kv: KV) {}

  async load(source: string, path: string): Promise<StoredCheckpoint | undefined> {
    const e = await this.kv.get(checkpointKey(source, path));
    if (e?.operation !== "PUT" || e.length === 0) return undefined;
    return { checkpoint: e.json<FileCheckpoint>(), revision: e.revision };
  }

  async save(cp: FileCheckpoint, revision: number | undefined): Promise<number> {
    const key = checkpointKey(cp.source, cp.path);
    const value = JSON.stringify(cp);
    return revision === undefined
      ? this.kv.create(key, value)
      : this.kv.update(key, value, revision);
  }
}
