import { hash } from "node:crypto";
import { type FileHandle, open, readdir, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { Counter, Gauge } from "prom-client";
import { registry } from "../metrics/registry.js";
import type { ClickEvent } from "../model.js";
import { type MalformedLine, parseClickLine } from "../parse/click-line.js";
import type { BatchPublisher } from "./batch-publisher.js";
import { type CheckpointStore, type FileCheckpoint, HEAD_BYTES } from "./checkpoint-store.js";
import { publishDeadLetters, publishPartitioned } from "./route.js";

const linesRead = new Counter({
  name: "adclick_shipper_lines_total",
  help: "Log lines read by the shipper, by result (event, malformed, empty)",
  labelNames: ["source", "result"] as const,
  registers: [registry],
});
const bytesShipped = new Counter({
  name: "adclick_shipper_bytes_total",
  help: "Log bytes whose lines are acknowledged by JetStream",
  labelNames: ["source"] as const,
  registers: [registry],
});
const shipperLagBytes = new Gauge({
  name: "adclick_shipper_lag_bytes",
  help: "Bytes in followed files not yet shipped",
  labelNames: ["source"] as const,
  registers: [registry],
});

export interface ShipperOptions {
  /** The host or origin name; part of every derived event id. */
  source: string;
  partitions: number;
  /** Bytes read and published as one unit between checkpoints. */
  chunkBytes?: number;
  /** Most events in one JetStream message. */
  maxBatchEvents?: number;
  /** Ignore saved checkpoints and ship from the start (still deduplicated downstream). */
  fromStart?: boolean;
  pollIntervalMs?: number;
  onProgress?: (p: ShipProgress) => void;
  /** Where malformed lines are reported (besides the dead-letter stream). */
  onMalformed?: (m: MalformedLine) => void;
}

export interface ShipProgress {
  file: string;
  offset: number;
  size: number;
  summary: ShipSummary;
}

export interface ShipSummary {
  files: number;
  bytes: number;
  lines: number;
  events: number;
  malformed: number;
  emptyLines: number;
  /** Events in batches JetStream already had (a re-shipped region). */
  duplicatesSuppressed: number;
  /** Files whose checkpoint said they were (partly) shipped before: bytes skipped. */
  resumedBytes: number;
}

export function emptySummary(): ShipSummary {
  return {
    files: 0,
    bytes: 0,
    lines: 0,
    events: 0,
    malformed: 0,
    emptyLines: 0,
    duplicatesSuppressed: 0,
    resumedBytes: 0,
  };
}

const NEWLINE = 0x0a;

/**
 * Ships click log files to JetStream: reads them in chunks, parses every line, publishes the
 * valid events in per-partition batches (subject clicks.<p>) and the malformed lines to the
 * dead-letter stream, then advances a durable checkpoint. Batches carry message IDs derived
 * from (source, file, chunk), and after a crash the unfinished chunk is re-read exactly, so
 * a restart never counts a line twice and never skips one.
 */
export class LogShipper {
  readonly summary = emptySummary();
  private readonly o: Required<Omit<ShipperOptions, "onProgress" | "onMalformed">> &
    Pick<ShipperOptions, "onProgress" | "onMalformed">;
  private stopping = false;

  constructor(
    private readonly deps: {
      checkpoints: CheckpointStore;
      clicks: BatchPublisher;
      deadLetters: BatchPublisher;
    },
    opts: ShipperOptions,
  ) {
    this.o = {
      chunkBytes: 1 << 20,
      maxBatchEvents: 4000,
      fromStart: false,
      pollIntervalMs: 250,
      ...opts,
    };
  }

  /** Asks a following shipper to stop after the chunk under way. */
  stop(): void {
    this.stopping = true;
  }

  /** One-shot: ships every file to its end (a last line without newline included). */
  async shipFiles(paths: string[]): Promise<ShipSummary> {
    for (const p of paths) {
      const f = await this.openFile(resolve(p));
      try {
        await this.drain(f, true);
      } finally {
        await f.fh.close();
      }
      this.summary.files++;
    }
    return this.summary;
  }

  /**
   * Follow mode: ships what is there, then keeps tailing the files like a log agent —
   * rotation (the path gets a new inode: the old file is finished first) and truncation
   * (a new generation from offset 0) included — until stop().
   */
  async follow(paths: string[]): Promise<ShipSummary> {
    const files = await Promise.all(paths.map((p) => this.openFile(resolve(p))));
    this.summary.files = files.length;
    try {
      while (!this.stopping) {
        let lag = 0;
        for (let i = 0; i < files.length && !this.stopping; i++) {
          let f = files[i] as OpenFile;
          const st = await stat(f.path).catch(() => undefined);
          if (st && st.ino !== f.cp.ino) {
            // Rotated: finish the old file (now complete), then start on the new one.
            await this.drain(f, true);
            await f.fh.close();
            f = await this.openFile(f.path, true);
            files[i] = f;
          } else if (st && (st.size < f.cp.offset || !(await headMatches(f)))) {
            // Truncated in place (copytruncate), checked before reading anything new:
            // a new generation of the same file, from offset 0.
            await this.startGeneration(f, st.ino, f.cp.generation + 1);
          }
          await this.drain(f, false);
          lag += Math.max(0, (st?.size ?? 0) - f.cp.offset);
        }
        shipperLagBytes.set({ source: this.o.source }, lag);
        if (!this.stopping) await new Promise((r) => setTimeout(r, this.o.pollIntervalMs));
      }
    } finally {
      await Promise.allSettled(files.map((f) => f.fh.close()));
    }
    return this.summary;
  }

  /**
   * Opens a file and works out where to start from its checkpoint: resume at the saved
   * offset; a new inode means the file was rotated (the old one, if still in the folder, is
   * finished first); a file shorter than the offset was truncated (a new generation).
   */
  private async openFile(path: string, afterRotation = false): Promise<OpenFile> {
    const fh = await open(path, "r");
    const st = await fh.stat();
    const stored = await this.deps.checkpoints.load(this.o.source, path);
    let revision = stored?.revision;
    let cp = stored?.checkpoint;
    const fresh = (generation: number): FileCheckpoint => ({
      source: this.o.source,
      path,
      fileKey: `${path}#${st.ino}.${generation}`,
      ino: st.ino,
      generation,
      offset: 0,
      lineNo: 0,
    });
    if (cp && cp.ino !== st.ino) {
      const old = afterRotation ? undefined : await findByInode(dirname(path), cp.ino);
      if (old) {
        const oldFile: OpenFile = { path, fh: await open(old, "r"), cp, revision };
        try {
          await this.drain(oldFile, true);
        } finally {
          await oldFile.fh.close();
        }
        revision = oldFile.revision;
      }
      cp = fresh(cp.generation + 1);
    } else if (cp && (st.size < cp.offset || !(await headMatches({ path, fh, cp, revision })))) {
      cp = fresh(cp.generation + 1);
    } else if (cp && this.o.fromStart) {
      // Same file, same identity: re-shipped lines keep their ids and are deduplicated.
      cp = { ...cp, offset: 0, lineNo: 0, pendingEnd: undefined, pendingEndLineNo: undefined };
    }
    cp ??= fresh(0);
    if (cp !== stored?.checkpoint) revision = await this.deps.checkpoints.save(cp, revision);
    this.summary.resumedBytes += cp.offset;
    return { path, fh, cp, revision };
  }

  private async startGeneration(f: OpenFile, ino: number, generation: number): Promise<void> {
    f.cp = {
      source: this.o.source,
      path: f.path,
      fileKey: `${f.path}#${ino}.${generation}`,
      ino,
      generation,
      offset: 0,
      lineNo: 0,
    };
    f.revision = await this.deps.checkpoints.save(f.cp, f.revision);
  }

  /** Ships complete chunks until the end of the file (with `final`, the last partial line too). */
  private async drain(f: OpenFile, final: boolean): Promise<void> {
    // Big enough for a pending chunk recorded with a larger --chunk-bytes before a restart:
    // it must be redone whole (cut anywhere else, a line would be split in two).
    const buf = Buffer.allocUnsafe(
      Math.max(this.o.chunkBytes, (f.cp.pendingEnd ?? 0) - f.cp.offset),
    );
    for (;;) {
      const { size } = await f.fh.stat();
      // After a crash mid-chunk, redo exactly that chunk.
      const wanted =
        f.cp.pendingEnd !== undefined ? f.cp.pendingEnd - f.cp.offset : this.o.chunkBytes;
      const n = Math.min(wanted, buf.length, size - f.cp.offset);
      if (n <= 0) return;
      const { bytesRead } = await f.fh.read(buf, 0, n, f.cp.offset);
      if (bytesRead <= 0) return;
      const atEnd = f.cp.offset + bytesRead >= size;
      let usable = bytesRead;
      if (f.cp.pendingEnd === undefined) {
        const lastNl = buf.lastIndexOf(NEWLINE, bytesRead - 1);
        if (lastNl >= 0) usable = lastNl + 1;
        else if (!(final && atEnd) && bytesRead < buf.length) return; // an unfinished last line
        // else: no newline in a full chunk (one huge line), or the end of a finished file: take it all
      }
      await this.shipChunk(f, buf, usable);
      this.o.onProgress?.({ file: f.path, offset: f.cp.offset, size, summary: this.summary });
      if (this.stopping && !final) return;
    }
  }

  private async shipChunk(f: OpenFile, buf: Buffer, length: number): Promise<void> {
    const start = f.cp.offset;
    const end = start + length;
    const firstLineNo = f.cp.lineNo;
    const dupBefore = this.deps.clicks.stats.duplicateEvents;
    const events: ClickEvent[] = [];
    const malformed: MalformedLine[] = [];
    let lineNo = f.cp.lineNo;
    let empty = 0;
    let pos = 0;
    while (pos < length) {
      let nl = buf.indexOf(NEWLINE, pos);
      if (nl < 0 || nl >= length) nl = length;
      lineNo++;
      const line = buf.toString("utf8", pos, nl);
      const r = parseClickLine(line, {
        source: this.o.source,
        file: f.cp.fileKey,
        byteOffset: start + pos,
        lineNo,
      });
      if (r.ok) {
        events.push(r.event);
      } else if (r.error.code === "EMPTY") {
        empty++;
      } else {
        r.error.file = f.path;
        malformed.push(r.error);
      }
      pos = nl + 1;
    }

    // Record the chunk's extent before publishing anything from it (see FileCheckpoint.pendingEnd).
    if (f.cp.pendingEnd !== end) {
      f.cp = { ...f.cp, pendingEnd: end, pendingEndLineNo: lineNo };
      f.revision = await this.deps.checkpoints.save(f.cp, f.revision);
    }
    const tag = hash("sha1", `${this.o.source}\0${f.cp.fileKey}`, "base64url").slice(0, 16);
    await publishPartitioned(
      this.deps.clicks,
      events,
      this.o.partitions,
      `s:${tag}:${start}-${end}`,
      this.o.maxBatchEvents,
    );
    for (const m of malformed) this.o.onMalformed?.(m);
    await publishDeadLetters(
      this.deps.deadLetters,
      this.o.source,
      `d:${tag}:${start}-${end}`,
      malformed,
    );
    await Promise.all([this.deps.clicks.flush(), this.deps.deadLetters.flush()]);
    f.cp = { ...f.cp, offset: end, lineNo, pendingEnd: undefined, pendingEndLineNo: undefined };
    if ((f.cp.headBytes ?? 0) < Math.min(HEAD_BYTES, end)) {
      const headBytes = Math.min(HEAD_BYTES, end);
      f.cp.headBytes = headBytes;
      f.cp.headHash = await readHeadHash(f.fh, headBytes);
    }
    f.revision = await this.deps.checkpoints.save(f.cp, f.revision);

    const s = this.summary;
    s.bytes += length;
    s.lines += lineNo - firstLineNo;
    s.events += events.length;
    s.malformed += malformed.length;
    s.emptyLines += empty;
    s.duplicatesSuppressed += this.deps.clicks.stats.duplicateEvents - dupBefore;
    linesRead.inc({ source: this.o.source, result: "event" }, events.length);
    linesRead.inc({ source: this.o.source, result: "malformed" }, malformed.length);
    linesRead.inc({ source: this.o.source, result: "empty" }, empty);
    bytesShipped.inc({ source: this.o.source }, length);
  }
}

interface OpenFile {
  path: string;
  fh: FileHandle;
  cp: FileCheckpoint;
  revision: number | undefined;
}

/** sha1 of the file's first `n` bytes (undefined if it has fewer). */
async function readHeadHash(fh: FileHandle, n: number): Promise<string | undefined> {
  const buf = Buffer.alloc(n);
  const { bytesRead } = await fh.read(buf, 0, n, 0);
  return bytesRead === n ? hash("sha1", buf, "base64url") : undefined;
}

/** False when the file no longer starts with the bytes we shipped (truncated and refilled). */
async function headMatches(f: OpenFile): Promise<boolean> {
  const n = f.cp.headBytes;
  if (!n || !f.cp.headHash) return true;
  return (await readHeadHash(f.fh, n)) === f.cp.headHash;
}

async function findByInode(dir: string, ino: number): Promise<string | undefined> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const p = join(dir, name);
    const st = await stat(p).catch(() => undefined);
    if (st?.isFile() && st.ino === ino) return p;
  }
  return undefined;
}
