import { hash, randomBytes } from "node:crypto";
import { type FileHandle, open, readdir, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { Counter, Gauge } from "prom-client";
import { registry } from "../metrics/registry.js";
import type { ClickEvent } from "../model.js";
import { type MalformedLine, type ParseResult, parseClickLine } from "../parse/click-line.js";
import type { BatchPublisher } from "./batch-publisher.js";
import { type CheckpointStore, type FileCheckpoint, HEAD_BYTES } from "./checkpoint-store.js";
import { publishDeadLetters, publishPartitioned, publishProgress } from "./route.js";

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
  /** The host or origin name; part of every derived event id and of every file's source id. */
  source: string;
  partitions: number;
  /** Bytes read and published as one unit between checkpoints, at most. */
  chunkBytes?: number;
  /** Most events in one JetStream message. */
  maxBatchEvents?: number;
  /** Ignore saved checkpoints and ship from the start (still deduplicated downstream). */
  fromStart?: boolean;
  pollIntervalMs?: number;
  /**
   * How often every file's progress mark is sent while it waits its turn, catches up or idles,
   * so the aggregators tell a waiting source from a stopped one. Keep it well below the
   * aggregators' idle timeout (ADCLICK_IDLE_TIMEOUT_MS).
   */
  heartbeatMs?: number;
  /**
   * With several files: event time one chunk of a file may span. Files ship in turn, the one
   * furthest behind first, so their event times stay within about this much of each other.
   */
  interleaveSpanMs?: number;
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

/** The source id of one shipped file: the shipper's source and the file's path. */
export function fileSourceId(source: string, path: string): string {
  return `${source}:${path}`;
}

/** What a file offers the interleaving: its progress and whether it has something to ship. */
export interface FileTurn {
  /** Largest event time shipped so far (-Infinity: none yet). */
  progressMs: number;
  ready: boolean;
}

/**
 * The file that ships next (pure): the ready one furthest behind in event time (ties: the
 * first), or -1 when none is ready. With every file announced as a source up front, this
 * k-way merge keeps the sources' progress together, so no file's clicks are late.
 */
export function nextFileTurn(files: readonly FileTurn[]): number {
  let best = -1;
  for (let i = 0; i < files.length; i++) {
    const f = files[i] as FileTurn;
    if (!f.ready) continue;
    if (best < 0 || f.progressMs < (files[best] as FileTurn).progressMs) best = i;
  }
  return best;
}

/**
 * Where a chunk of parsed lines is cut so that its events span at most `spanMs` of event time
 * from `fromMs` (the file's progress; -Infinity: from the chunk's first event): the index of
 * the first line at or past the limit, never 0 (a chunk ships at least one line). Pure.
 */
export function chunkCut(
  times: readonly (number | undefined)[],
  fromMs: number,
  spanMs: number,
): number {
  let base = fromMs;
  if (!Number.isFinite(base)) {
    for (const t of times) {
      if (t !== undefined) {
        base = t;
        break;
      }
    }
  }
  if (!Number.isFinite(base)) return times.length;
  const limit = base + spanMs;
  for (let i = 1; i < times.length; i++) {
    const t = times[i];
    if (t !== undefined && t >= limit) return i;
  }
  return times.length;
}

const NEWLINE = 0x0a;

/** One parsed line: its byte range and line number. */
interface ParsedLine {
  start: number;
  end: number;
  lineNo: number;
  /** undefined: an empty line. */
  r: ParseResult | undefined;
}

interface OpenFile {
  path: string;
  fh: FileHandle;
  cp: FileCheckpoint;
  revision: number | undefined;
  /** The source id the aggregators know this file by. */
  sourceId: string;
  /** Parsed lines read ahead of `cp.offset` (a chunk cut by event time leaves the rest here). */
  carry?: { start: number; end: number; lines: ParsedLine[] };
  /** Nothing more to ship (one-shot: at its end; follow: nothing new this round). */
  done: boolean;
  /** Follow mode: at the end of the file (its next lines will be new ones). */
  caughtUp: boolean;
  /** One-shot: shipped to its end, and its source told it has ended. */
  ended: boolean;
}

/**
 * Ships click log files to JetStream: reads them in chunks, parses every line, publishes the
 * valid events in per-partition batches (subject clicks.<p>) and the malformed lines to the
 * dead-letter stream, then advances a durable checkpoint. Batches carry message IDs derived
 * from (source, file, chunk), and after a crash the unfinished chunk is re-read exactly, so
 * a restart never counts a line twice and never skips one.
 *
 * Every file is a source of its own for the aggregators' event time: announced before any of
 * its clicks, marked with its progress (the largest event time acknowledged) on every batch
 * and on heartbeats, and ended when a one-shot ship finishes it. Several files ship
 * interleaved by event time, so each click is counted in its own minute.
 */
export class LogShipper {
  readonly summary = emptySummary();
  private readonly o: Required<Omit<ShipperOptions, "onProgress" | "onMalformed">> &
    Pick<ShipperOptions, "onProgress" | "onMalformed">;
  private stopping = false;
  private markSeq = 0;
  /** Makes this run's mark IDs differ from any other run's. */
  private readonly runTag = randomBytes(4).toString("hex");

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
      heartbeatMs: 2000,
      interleaveSpanMs: 60_000,
      ...opts,
    };
  }

  /** Asks a following shipper to stop after the chunk under way. */
  stop(): void {
    this.stopping = true;
  }

  /**
   * One-shot: ships every file to its end (a last line without newline included), the files
   * interleaved by event time, and ends each file's source once it is done.
   */
  async shipFiles(paths: string[]): Promise<ShipSummary> {
    const files: OpenFile[] = [];
    try {
      for (const p of paths) files.push(await this.openFile(resolve(p)));
      this.summary.files = files.length;
      const heartbeat = await this.startHeartbeats(files);
      try {
        await this.shipInTurns(files, true);
      } finally {
        heartbeat.stop();
      }
      await this.deps.clicks.flush();
    } finally {
      await Promise.allSettled(files.map((f) => f.fh.close()));
    }
    return this.summary;
  }

  /**
   * Follow mode: ships what is there, then keeps tailing the files like a log agent —
   * rotation (the path gets a new inode: the old file is finished first) and truncation
   * (a new generation from offset 0) included — until stop(). A file at its end is caught up:
   * it holds no minute open, and its heartbeats keep it known as alive.
   */
  async follow(paths: string[]): Promise<ShipSummary> {
    const files: OpenFile[] = [];
    try {
      for (const p of paths) files.push(await this.openFile(resolve(p)));
      this.summary.files = files.length;
      const heartbeat = await this.startHeartbeats(files);
      try {
        while (!this.stopping) {
          let lag = 0;
          for (let i = 0; i < files.length && !this.stopping; i++) {
            let f = files[i] as OpenFile;
            const st = await stat(f.path).catch(() => undefined);
            if (st && st.ino !== f.cp.ino) {
              // Rotated: finish the old file (now complete), then start on the new one.
              await this.drainAll(f);
              await f.fh.close();
              f = await this.openFile(f.path, true);
              files[i] = f;
            } else if (st && (st.size < f.cp.offset || !(await headMatches(f)))) {
              // Truncated in place (copytruncate), checked before reading anything new:
              // a new generation of the same file, from offset 0.
              await this.startGeneration(f, st.ino, f.cp.generation + 1);
            }
            f.done = false;
          }
          await this.shipInTurns(files, false);
          for (const f of files) {
            const { size } = await f.fh.stat();
            lag += Math.max(0, size - f.cp.offset);
          }
          shipperLagBytes.set({ source: this.o.source }, lag);
          if (!this.stopping) await new Promise((r) => setTimeout(r, this.o.pollIntervalMs));
        }
      } finally {
        heartbeat.stop();
      }
    } finally {
      await Promise.allSettled(files.map((f) => f.fh.close()));
    }
    return this.summary;
  }

  /** Ships chunks, the ready file furthest behind first, until no file has more. */
  private async shipInTurns(files: OpenFile[], final: boolean): Promise<void> {
    const spanMs = files.length > 1 ? this.o.interleaveSpanMs : undefined;
    for (;;) {
      if (this.stopping && !final) return;
      const i = nextFileTurn(
        files.map((f) => ({
          progressMs: f.cp.progressMs ?? Number.NEGATIVE_INFINITY,
          ready: !f.done,
        })),
      );
      if (i < 0) return;
      const f = files[i] as OpenFile;
      if (await this.shipNextChunk(f, final, spanMs)) {
        // Partitions that got none of the chunk's clicks learn the file's progress too.
        await this.mark(f, false);
      } else {
        f.done = true;
        if (final) {
          // One-shot: the file's source has ended; it holds no minute open any more.
          f.ended = true;
          await this.mark(f, true);
        }
      }
    }
  }

  /** Ships a whole file, chunk by chunk (a rotated file's rest). */
  private async drainAll(f: OpenFile): Promise<void> {
    while (await this.shipNextChunk(f, true, undefined)) {}
  }

  /**
   * Sends `f`'s progress mark (after its events are acknowledged: a mark never runs ahead of
   * them): its source, how far it got, whether it is caught up or ended. Failures surface
   * from the publisher's next flush, like those of clicks.
   */
  private async mark(f: OpenFile, end: boolean): Promise<void> {
    await publishProgress(
      this.deps.clicks,
      {
        source: f.sourceId,
        progressMs: f.cp.progressMs ?? null,
        caughtUp: !end && f.caughtUp,
        end,
      },
      `p:${fileTag(this.o.source, f.cp.fileKey)}:${this.runTag}:${this.markSeq++}`,
    );
  }

  /**
   * Announces every file's source before any click of any of them (a file announced late
   * would find minutes closed by the others), then re-sends the marks every heartbeatMs.
   */
  private async startHeartbeats(files: OpenFile[]): Promise<{ stop(): void }> {
    for (const f of files) await this.mark(f, false);
    await this.deps.clicks.flush();
    const timer = setInterval(() => {
      for (const f of files) if (!f.ended) void this.mark(f, false).catch(() => {});
    }, this.o.heartbeatMs);
    timer.unref();
    return { stop: () => clearInterval(timer) };
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
    const sourceId = fileSourceId(this.o.source, path);
    const fresh = (generation: number, progressMs?: number): FileCheckpoint => ({
      source: this.o.source,
      path,
      fileKey: `${path}#${st.ino}.${generation}`,
      ino: st.ino,
      generation,
      offset: 0,
      lineNo: 0,
      ...(progressMs !== undefined ? { progressMs } : {}),
    });
    const opened = (c: FileCheckpoint, r: number | undefined): OpenFile => ({
      path,
      fh,
      cp: c,
      revision: r,
      sourceId,
      done: false,
      caughtUp: false,
      ended: false,
    });
    if (cp && cp.ino !== st.ino) {
      const old = afterRotation ? undefined : await findByInode(dirname(path), cp.ino);
      if (old) {
        const oldFile: OpenFile = { ...opened(cp, revision), fh: await open(old, "r") };
        try {
          await this.drainAll(oldFile);
        } finally {
          await oldFile.fh.close();
        }
        revision = oldFile.revision;
        cp = oldFile.cp;
      }
      cp = fresh(cp.generation + 1, cp.progressMs);
    } else if (cp && (st.size < cp.offset || !(await headMatches(opened(cp, revision))))) {
      cp = fresh(cp.generation + 1, cp.progressMs);
    } else if (cp && this.o.fromStart) {
      // Same file, same identity: re-shipped lines keep their ids and are deduplicated.
      cp = { ...cp, offset: 0, lineNo: 0, pendingEnd: undefined, pendingEndLineNo: undefined };
    }
    cp ??= fresh(0);
    if (cp !== stored?.checkpoint) revision = await this.deps.checkpoints.save(cp, revision);
    this.summary.resumedBytes += cp.offset;
    return opened(cp, revision);
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
      ...(f.cp.progressMs !== undefined ? { progressMs: f.cp.progressMs } : {}),
    };
    f.carry = undefined;
    f.revision = await this.deps.checkpoints.save(f.cp, f.revision);
  }

  /** Parses `buf[0, length)`, the file's bytes from `start`, into lines numbered from `lineNo`. */
  private parse(f: OpenFile, buf: Buffer, length: number, start: number, lineNo: number) {
    const lines: ParsedLine[] = [];
    let pos = 0;
    while (pos < length) {
      let nl = buf.indexOf(NEWLINE, pos);
      if (nl < 0 || nl >= length) nl = length;
      lineNo++;
      const r = parseClickLine(buf.toString("utf8", pos, nl), {
        source: this.o.source,
        file: f.cp.fileKey,
        byteOffset: start + pos,
        lineNo,
      });
      const next = Math.min(nl + 1, length);
      lines.push({
        start: start + pos,
        end: start + next,
        lineNo,
        r: !r.ok && r.error.code === "EMPTY" ? undefined : r,
      });
      pos = nl + 1;
    }
    return lines;
  }

  /**
   * Ships the next chunk of `f` — at most chunkBytes, whole lines (with `final`, the last
   * partial line of the file too), and with `spanMs` no more event time than that — or
   * exactly the pending chunk of a crashed run. Returns false when there was nothing to ship.
   */
  private async shipNextChunk(f: OpenFile, final: boolean, spanMs: number | undefined) {
    const { size } = await f.fh.stat();
    const start = f.cp.offset;
    const redo = f.cp.pendingEnd !== undefined;
    let lines: ParsedLine[] = [];
    let parsedEnd = start;
    if (!redo && f.carry?.start === start) {
      lines = f.carry.lines;
      parsedEnd = f.carry.end;
    }
    f.carry = undefined;
    const wantEnd = redo ? (f.cp.pendingEnd as number) : start + this.o.chunkBytes;
    if (parsedEnd < wantEnd && parsedEnd < size) {
      // Big enough for a pending chunk recorded with a larger --chunk-bytes before a restart:
      // it must be redone whole (cut anywhere else, a line would be split in two).
      const n = Math.min(wantEnd, size) - parsedEnd;
      const buf = Buffer.allocUnsafe(Math.max(n, 1));
      const { bytesRead } = await f.fh.read(buf, 0, n, parsedEnd);
      let usable = bytesRead;
      if (!redo && bytesRead > 0) {
        const lastNl = buf.lastIndexOf(NEWLINE, bytesRead - 1);
        const atEnd = parsedEnd + bytesRead >= size;
        if (lastNl >= 0) usable = lastNl + 1;
        else if (!(final && atEnd) && lines.length > 0) usable = 0;
        else if (!(final && atEnd) && parsedEnd + bytesRead < start + this.o.chunkBytes) usable = 0; // an unfinished last line
        // else: no newline in a full chunk (one huge line), or the end of a finished file: take it all
      }
      const lastLineNo =
        lines.length > 0 ? (lines[lines.length - 1] as ParsedLine).lineNo : f.cp.lineNo;
      for (const l of this.parse(f, buf, usable, parsedEnd, lastLineNo)) lines.push(l);
      parsedEnd += usable;
    }
    f.caughtUp = parsedEnd >= size;
    if (lines.length === 0) return false;
    let cut = lines.length;
    if (!redo && spanMs !== undefined) {
      const times = lines.map((l) => (l.r?.ok ? l.r.event.timestampMs : undefined));
      cut = chunkCut(times, f.cp.progressMs ?? Number.NEGATIVE_INFINITY, spanMs);
    }
    if (cut < lines.length) {
      const rest = lines.slice(cut);
      f.carry = { start: (rest[0] as ParsedLine).start, end: parsedEnd, lines: rest };
      f.caughtUp = false;
    }
    const shipped = cut < lines.length ? lines.slice(0, cut) : lines;
    const end = (shipped[shipped.length - 1] as ParsedLine).end;
    await this.shipChunk(f, shipped, start, end, size, !final && f.caughtUp);
    return true;
  }

  private async shipChunk(
    f: OpenFile,
    lines: readonly ParsedLine[],
    start: number,
    end: number,
    size: number,
    /** Follow mode, and the chunk reaches the end of the file. */
    caughtUp: boolean,
  ): Promise<void> {
    const firstLineNo = f.cp.lineNo;
    const dupBefore = this.deps.clicks.stats.duplicateEvents;
    const events: ClickEvent[] = [];
    const malformed: MalformedLine[] = [];
    let empty = 0;
    let maxEventTimeMs = Number.NEGATIVE_INFINITY;
    for (const l of lines) {
      if (l.r === undefined) empty++;
      else if (l.r.ok) {
        events.push(l.r.event);
        if (l.r.event.timestampMs > maxEventTimeMs) maxEventTimeMs = l.r.event.timestampMs;
      } else {
        l.r.error.file = f.path;
        malformed.push(l.r.error);
      }
    }
    const lineNo = (lines[lines.length - 1] as ParsedLine).lineNo;

    // Record the chunk's extent before publishing anything from it (see FileCheckpoint.pendingEnd).
    if (f.cp.pendingEnd !== end) {
      f.cp = { ...f.cp, pendingEnd: end, pendingEndLineNo: lineNo };
      f.revision = await this.deps.checkpoints.save(f.cp, f.revision);
    }
    const tag = fileTag(this.o.source, f.cp.fileKey);
    await publishPartitioned(
      this.deps.clicks,
      events,
      this.o.partitions,
      `s:${tag}:${start}-${end}`,
      this.o.maxBatchEvents,
      { source: f.sourceId, progressMs: f.cp.progressMs ?? null, caughtUp },
    );
    for (const m of malformed) this.o.onMalformed?.(m);
    await publishDeadLetters(
      this.deps.deadLetters,
      this.o.source,
      `d:${tag}:${start}-${end}`,
      malformed,
    );
    await Promise.all([this.deps.clicks.flush(), this.deps.deadLetters.flush()]);
    const progressMs = Math.max(f.cp.progressMs ?? Number.NEGATIVE_INFINITY, maxEventTimeMs);
    f.cp = {
      ...f.cp,
      offset: end,
      lineNo,
      pendingEnd: undefined,
      pendingEndLineNo: undefined,
      ...(Number.isFinite(progressMs) ? { progressMs } : {}),
    };
    if ((f.cp.headBytes ?? 0) < Math.min(HEAD_BYTES, end)) {
      const headBytes = Math.min(HEAD_BYTES, end);
      f.cp.headBytes = headBytes;
      f.cp.headHash = await readHeadHash(f.fh, headBytes);
    }
    f.revision = await this.deps.checkpoints.save(f.cp, f.revision);

    const s = this.summary;
    s.bytes += end - start;
    s.lines += lineNo - firstLineNo;
    s.events += events.length;
    s.malformed += malformed.length;
    s.emptyLines += empty;
    s.duplicatesSuppressed += this.deps.clicks.stats.duplicateEvents - dupBefore;
    linesRead.inc({ source: this.o.source, result: "event" }, events.length);
    linesRead.inc({ source: this.o.source, result: "malformed" }, malformed.length);
    linesRead.inc({ source: this.o.source, result: "empty" }, empty);
    bytesShipped.inc({ source: this.o.source }, end - start);
    this.o.onProgress?.({ file: f.path, offset: f.cp.offset, size, summary: this.summary });
  }
}

/** A short, stable tag of (source, file key) for message IDs. */
function fileTag(source: string, fileKey: string): string {
  return hash("sha1", `${source}\0${fileKey}`, "base64url").slice(0, 16);
}

/** sha1 of the file's first `n` bytes (undefined if it has fewer). */
async function readHeadHash(fh: FileHandle, n: number): Promise<string | undefined> {
  const buf = Buffer.alloc(n);
  const { bytesRead } = await fh.read(buf, 0, n, 0);
  return bytesRead === n ? hash("sha1", buf, "base64url") : undefined;
}

/** False when the file no longer starts with the bytes we shipped (truncated and refilled). */
async function headMatches(f: Pick<OpenFile, "fh" | "cp">): Promise<boolean> {
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
