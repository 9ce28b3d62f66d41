import { randomBytes } from "node:crypto";
import type { KV } from "@nats-io/kv";
import { Packr } from "msgpackr";
import { AdclickError } from "../errors.js";

/**
 * Versioned actor snapshots in JetStream KV, written with compare-and-set so that a stale
 * actor (one paused past its replacement's start) cannot overwrite a newer snapshot.
 *
 * A snapshot larger than one KV value (the server's max payload) is split into chunks
 * stored under `<key>.<generation>.<i>`, written before the manifest under `<key>`; the
 * manifest is the commit point, and chunks of older generations are deleted after it.
 */
export interface Snapshot<T> {
  /** The stream position the state reflects (last message fully processed). */
  streamSeq: number;
  /** When it was taken (wall clock, for the snapshot-age metric). */
  takenAtMs: number;
  state: T;
}

export interface StoredSnapshot<T> {
  snapshot: Snapshot<T>;
  revision: number;
  bytes: number;
}

interface Manifest {
  v: 1;
  streamSeq: number;
  takenAtMs: number;
  /** Unique per save attempt, so two racing writers never touch each other's chunks. */
  generation: string;
  chunks: number;
  bytes: number;
}

/** A snapshot save lost its compare-and-set: this writer is stale and must stop. */
export class SnapshotConflictError extends AdclickError {
  declare readonly code: "SNAPSHOT_CONFLICT";
  constructor(message: string, options?: { cause?: unknown }) {
    super("SNAPSHOT_CONFLICT", message, options);
    this.name = "SnapshotConflictError";
  }
}

const packr = new Packr({ useRecords: false });

export class SnapshotStore {
  constructor(
    private readonly kv: KV,
    private readonly chunkBytes = 512 * 1024,
  ) {}

  async load<T>(key: string): Promise<StoredSnapshot<T> | undefined> {
    const e = await this.kv.get(key);
    if (e?.operation !== "PUT" || e.length === 0) return undefined;
    const m = packr.unpack(e.value) as Manifest;
    const parts: Uint8Array[] = [];
    for (let i = 0; i < m.chunks; i++) {
      const c = await this.kv.get(`${key}.${m.generation}.${i}`);
      if (c?.operation !== "PUT")
        throw new AdclickError(
          "INTERNAL",
          `snapshot ${key}: chunk ${i} of generation ${m.generation} is missing`,
        );
      parts.push(c.value);
    }
    const data = Buffer.concat(parts);
    return {
      snapshot: { streamSeq: m.streamSeq, takenAtMs: m.takenAtMs, state: packr.unpack(data) as T },
      revision: e.revision,
      bytes: data.length,
    };
  }

  /**
   * Saves a snapshot if the manifest is still at `revision` (undefined: must not exist).
   * Returns the new revision and the size; throws SnapshotConflictError if someone else
   * saved in between (this writer is stale and must stop).
   */
  async save<T>(
    key: string,
    s: Snapshot<T>,
    revision: number | undefined,
  ): Promise<{ revision: number; bytes: number }> {
    const data = packr.pack(s.state);
    const previous = revision === undefined ? undefined : await this.kv.get(key);
    const prevManifest = previous?.length ? (packr.unpack(previous.value) as Manifest) : undefined;
    const generation = `${s.streamSeq}-${randomBytes(6).toString("hex")}`;
    const chunks = Math.max(1, Math.ceil(data.length / this.chunkBytes));
    for (let i = 0; i < chunks; i++) {
      await this.kv.put(
        `${key}.${generation}.${i}`,
        data.subarray(i * this.chunkBytes, (i + 1) * this.chunkBytes),
      );
    }
    const manifest: Manifest = {
      v: 1,
      streamSeq: s.streamSeq,
      takenAtMs: s.takenAtMs,
      generation,
      chunks,
      bytes: data.length,
    };
    let newRevision: number;
    try {
      newRevision =
        revision === undefined
          ? await this.kv.create(key, packr.pack(manifest))
          : await this.kv.update(key, packr.pack(manifest), revision);
    } catch (err) {
      // An error does not say the write failed: a lost reply (timeout, server restart) may
      // hide a committed manifest. Look before deleting anything: our chunks may be live.
      const current = await this.kv.get(key).catch(() => undefined);
      if (current === undefined) throw err; // cannot tell: keep the chunks (orphans at worst)
      const committed =
        current?.operation === "PUT" && current.length > 0
          ? { manifest: packr.unpack(current.value) as Manifest, revision: current.revision }
          : undefined;
      if (committed?.manifest.generation === generation) {
        newRevision = committed.revision;
      } else {
        for (let i = 0; i < chunks; i++)
          await this.kv.purge(`${key}.${generation}.${i}`).catch(() => {});
        throw new SnapshotConflictError(
          `snapshot ${key} was saved by someone else (expected revision ${revision})`,
          { cause: err },
        );
      }
    }
    if (prevManifest) {
      for (let i = 0; i < prevManifest.chunks; i++) {
        await this.kv.purge(`${key}.${prevManifest.generation}.${i}`).catch(() => {});
      }
    }
    return { revision: newRevision, bytes: data.length };
  }
}
