import { isAscii } from "node:buffer";
import { hash, randomBytes } from "node:crypto";
import { type FileHandle, open, readdir, stat } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { Counter, Gauge } from "prom-client";
import { registry } from "../metrics/registry.js";
import { type MalformedLine, parseClickLine } from "../parse/click-line.js";
import type { BatchMessage, BatchPublisher } from "./batch-publisher.js";
import { type CheckpointStore, type FileCheckpoint, HEAD_BYTES } from "./checkpoint-store.js";
import { PartitionBatches, publishDeadLetters, publishProgress } from "./route.js";

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

/**
 * chunkCut one line at a time (the shipper parses and encodes a line before it looks at the
 * next): `before(i, t)` says whether line i, an event at `t`, is the first past the span and
 * so starts the next chunk. Call it for the events in order; lines without an event do not
 * count for the span but do for the index.
 */
export class SpanCut {
  private base: number;

  constructor(
    fromMs: number | undefined,
    private readonly spanMs: number,
  ) {
    this.base = fromMs ?? Number.NEGATIVE_INFINITY;
  }

  before(index: number, t: number): boolean {
    if (!Number.isFinite(this.base)) this.base = t;
    return index > 0 && t >= this.base + this.spanMs;
  }
}

/** A file's position after the chunks prepared so far (ahead of `cp` while they are in flight). */
interface Cursor {
  offset: number;
  lineNo: number;
  /** Largest event time up to `offset`: the progress the next chunk's batches carry. */
  progressMs: number | undefined;
  /** The pending chunk of a crashed run, still to be redone exactly: its end. */
  redoEnd: number | undefined;
}

function cursorOf(cp: FileCheckpoint): Cursor {
  return {
    offset: cp.offset,
    lineNo: cp.lineNo,
    progressMs: cp.progressMs,
    redoEnd: cp.pendingEnd,
  };
}

/** One chunk of a file, parsed and encoded, ready to publish. */
interface PreparedChunk {
  start: number;
  end: number;
  /** The line number of the chunk's last line. */
  lineNo: number;
  size: number;
  /** Follow mode, and the chunk reaches the end of the file. */
  caughtUp: boolean;
  events: number;
  malformed: MalformedLine[];
  empty: number;
  maxEventTimeMs: number;
  messages: BatchMessage[];
}

/** What preparing a file's next chunk gave: a chunk, or nothing (then: is it at its end?). */
type Step =
  | { f: OpenFile; chunk: PreparedChunk }
  | { f: OpenFile; chunk: undefined; caughtUp: boolean };

/**
 * Chunks prepared (read, parsed, encoded) ahead of the one being published and acknowledged,
 * at most: the CPU work of the next chunks overlaps the acknowledgement of the current one.
 */
const PREPARE_AHEAD = 2;

/** Lines parsed between turns of the event loop (so that acknowledgements are taken in time). */
const PARSE_SLICE_LINES = 4096; // a power of two

interface OpenFile {
  path: string;
  fh: FileHandle;
  cp: FileCheckpoint;
  revision: number | undefined;
  /** The source id the aggregators know this file by. */
  sourceId: string;
  /**
   * Where the next chunk starts: past every chunk prepared so far, acknowledged or not (see
   * runChunks). Set from `cp` at the start of every run of chunks.
   */
  cursor: Cursor;
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
    await this.runChunks(files, final, spanMs, async (step) => {
      const f = step.f;
      if (step.chunk) {
        // Partitions that got none of the chunk's clicks learn the file's progress too.
        await this.mark(f, false);
      } else if (final) {
        // One-shot: the file's source has ended; it holds no minute open any more.
        f.ended = true;
        await this.mark(f, true);
      }
    });
  }

  /** Ships a whole file, chunk by chunk (a rotated file's rest). */
  private async drainAll(f: OpenFile): Promise<void> {
    f.done = false; // whatever the last round said: this is the file's rest
    await this.runChunks([f], true, undefined, async () => {});
  }

  /**
   * Ships chunks of `files` until none has more (or, not `final`, until stop()): the ready
   * file furthest behind in event time first. Pipelined: up to PREPARE_AHEAD chunks are read,
   * parsed and encoded while the chunk before them is published and acknowledged; chunks are
   * still published strictly one after the other, in the order they were cut, and each is
   * committed (see commitChunk) before the next one's first message goes out.
   *
   * Why this keeps a crash harmless: the checkpoint only ever describes acknowledged data
   * (`offset`) and the one chunk being published (`pendingEnd`), exactly as without the
   * pipeline; chunks prepared ahead exist only in memory. Their boundaries do not depend on
   * timing either: they are cut from the cursor, which advances as the serial shipper's
   * checkpoint would (same offsets, line numbers and progress), so the message IDs
   * (`s:<file>:<start>-<end>:<p>.<k>`) and payloads are those a serial run produces, and a
   * re-ship after a crash (the pending chunk redone exactly, then the same cuts) is
   * recognised by JetStream as duplicates; past its window, the events' own ids still
   * deduplicate downstream.
   */
  private async runChunks(
    files: OpenFile[],
    final: boolean,
    spanMs: number | undefined,
    afterStep: (step: Step) => Promise<void>,
  ): Promise<void> {
    for (const f of files) {
      f.cursor = cursorOf(f.cp);
    }
    /** Steps prepared and not yet committed, in order (the first one is being committed). */
    const queue: Step[] = [];
    let tail: Promise<void> = Promise.resolve();
    const committing: Promise<void>[] = [];
    try {
      for (;;) {
        if (this.stopping && !final) break;
        const i = nextFileTurn(
          files.map((f) => ({
            progressMs: f.cursor.progressMs ?? Number.NEGATIVE_INFINITY,
            ready: !f.done,
          })),
        );
        if (i < 0) break;
        const f = files[i] as OpenFile;
        const step = await this.prepareChunk(f, final, spanMs);
        if (!step.chunk) f.done = true;
        queue.push(step);
        tail = tail.then(async () => {
          const s = queue[0] as Step;
          if (s.chunk) {
            await this.commitChunk(s.f, s.chunk, () => {
              const next = queue[1];
              return next?.f === s.f ? next.chunk : undefined;
            });
          } else {
            s.f.caughtUp = s.caughtUp;
          }
          await afterStep(s);
          queue.shift();
        });
        committing.push(tail);
        while (committing.length > PREPARE_AHEAD) await committing.shift();
      }
    } finally {
      // Never leave a commit running behind the caller (a failure surfaces below).
      await tail.catch(() => {});
    }
    await tail;
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
      cursor: cursorOf(c),
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
    f.revision = await this.deps.checkpoints.save(f.cp, f.revision);
  }

  /**
   * Prepares the next chunk of `f` from its cursor — at most chunkBytes, whole lines (with
   * `final`, the last partial line of the file too), and with `spanMs` no more event time
   * than that — or exactly the pending chunk of a crashed run, and advances the cursor past
   * it. Nothing is published here. Every line is parsed and its event encoded into its
   * partition's batch at once (the chunk's events are never all kept as objects: little is
   * left for the garbage collector to copy), giving the event loop a turn every
   * PARSE_SLICE_LINES lines so that the acknowledgements of the chunk in flight are taken.
   */
  private async prepareChunk(
    f: OpenFile,
    final: boolean,
    spanMs: number | undefined,
  ): Promise<Step> {
    const { size } = await f.fh.stat();
    const cur = f.cursor;
    const start = cur.offset;
    const redo = cur.redoEnd !== undefined;
    // Big enough for a pending chunk recorded with a larger --chunk-bytes before a restart:
    // it must be redone whole (cut anywhere else, a line would be split in two).
    const wantEnd = redo ? (cur.redoEnd as number) : start + this.o.chunkBytes;
    if (start >= wantEnd || start >= size) return { f, chunk: undefined, caughtUp: start >= size };
    const n = Math.min(wantEnd, size) - start;
    const buf = Buffer.allocUnsafe(n);
    const { bytesRead } = await f.fh.read(buf, 0, n, start);
    let usable = bytesRead;
    if (!redo && bytesRead > 0) {
      const lastNl = buf.lastIndexOf(NEWLINE, bytesRead - 1);
      const atEnd = start + bytesRead >= size;
      if (lastNl >= 0) usable = lastNl + 1;
      else if (!(final && atEnd) && bytesRead < this.o.chunkBytes) usable = 0; // an unfinished last line
      // else: no newline in a full chunk (one huge line), or the end of a finished file: take it all
    }
    if (usable === 0) return { f, chunk: undefined, caughtUp: start >= size };

    // ASCII (the usual log): decode the chunk once and slice lines out of it (offsets in the
    // string are byte offsets); otherwise decode line by line.
    const text = isAscii(buf.subarray(0, usable)) ? buf.toString("latin1", 0, usable) : undefined;
    const cut = spanMs === undefined || redo ? undefined : new SpanCut(cur.progressMs, spanMs);
    const batches = new PartitionBatches(this.o.partitions, this.o.maxBatchEvents);
    const progress =
      cur.progressMs !== undefined && Number.isFinite(cur.progressMs) ? cur.progressMs : null;
    const malformed: MalformedLine[] = [];
    const loc = { source: this.o.source, file: f.cp.fileKey, byteOffset: 0, lineNo: cur.lineNo };
    let events = 0;
    let empty = 0;
    let maxEventTimeMs = Number.NEGATIVE_INFINITY;
    let lineNo = cur.lineNo;
    let pos = 0;
    let index = 0;
    let wasCut = false;
    while (pos < usable) {
      if ((index & (PARSE_SLICE_LINES - 1)) === PARSE_SLICE_LINES - 1) {
        await new Promise<void>((r) => setImmediate(r));
      }
      let nl = buf.indexOf(NEWLINE, pos);
      if (nl < 0 || nl >= usable) nl = usable;
      loc.byteOffset = start + pos;
      loc.lineNo = lineNo + 1;
      const r = parseClickLine(
        text !== undefined ? text.slice(pos, nl) : buf.toString("utf8", pos, nl),
        loc,
      );
      if (r.ok) {
        const t = r.event.timestampMs;
        if (cut?.before(index, t)) {
          wasCut = true;
          break;
        }
        events++;
        if (t > maxEventTimeMs) maxEventTimeMs = t;
        batches.add(r.event, f.sourceId, progress);
      } else if (r.error.code === "EMPTY") {
        empty++;
      } else {
        r.error.file = f.path;
        malformed.push(r.error);
      }
      lineNo++;
      index++;
      pos = Math.min(nl + 1, usable);
    }
    const end = start + pos;
    const caughtUp = !wasCut && start + usable >= size;
    const chunkCaughtUp = !final && caughtUp;
    // The batches carry the progress of everything before this chunk: by the time they are
    // published, every chunk before it is acknowledged (they are committed in order).
    const messages = batches.finish(
      `s:${fileTag(this.o.source, f.cp.fileKey)}:${start}-${end}`,
      f.sourceId,
      progress,
      chunkCaughtUp,
    );
    const progressMs = Math.max(cur.progressMs ?? Number.NEGATIVE_INFINITY, maxEventTimeMs);
    f.cursor = {
      offset: end,
      lineNo,
      progressMs: Number.isFinite(progressMs) ? progressMs : cur.progressMs,
      redoEnd: undefined,
    };
    return {
      f,
      chunk: {
        start,
        end,
        lineNo,
        size,
        caughtUp,
        events,
        malformed,
        empty,
        maxEventTimeMs,
        messages,
      },
    };
  }

  /**
   * Publishes a prepared chunk and waits for every acknowledgement, then advances the
   * checkpoint past it. The chunk's extent is recorded before anything of it is published
   * (FileCheckpoint.pendingEnd): with `next`, the following chunk of the same file, already
   * prepared, the checkpoint that completes this chunk records that one's extent too (one
   * write instead of two; the same state a serial shipper would write a moment later).
   */
  private async commitChunk(
    f: OpenFile,
    c: PreparedChunk,
    next: () => PreparedChunk | undefined,
  ): Promise<void> {
    const firstLineNo = f.cp.lineNo;
    const { start, end, lineNo } = c;
    f.caughtUp = c.caughtUp;
    const dupBefore = this.deps.clicks.stats.duplicateEvents;

    // Record the chunk's extent before publishing anything from it (see FileCheckpoint.pendingEnd).
    if (f.cp.pendingEnd !== end) {
      f.cp = { ...f.cp, pendingEnd: end, pendingEndLineNo: lineNo };
      f.revision = await this.deps.checkpoints.save(f.cp, f.revision);
    }
    for (const m of c.messages) await this.deps.clicks.publish(m);
    for (const m of c.malformed) this.o.onMalformed?.(m);
    const tag = fileTag(this.o.source, f.cp.fileKey);
    await publishDeadLetters(
      this.deps.deadLetters,
      this.o.source,
      `d:${tag}:${start}-${end}`,
      c.malformed,
    );
    await Promise.all([this.deps.clicks.flush(), this.deps.deadLetters.flush()]);
    const progressMs = Math.max(f.cp.progressMs ?? Number.NEGATIVE_INFINITY, c.maxEventTimeMs);
    const following = next();
    f.cp = {
      ...f.cp,
      offset: end,
      lineNo,
      pendingEnd: following?.end,
      pendingEndLineNo: following?.lineNo,
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
    s.events += c.events;
    s.malformed += c.malformed.length;
    s.emptyLines += c.empty;
    s.duplicatesSuppressed += this.deps.clicks.stats.duplicateEvents - dupBefore;
    linesRead.inc({ source: this.o.source, result: "event" }, c.events);
    linesRead.inc({ source: this.o.source, result: "malformed" }, c.malformed.length);
    linesRead.inc({ source: this.o.source, result: "empty" }, c.empty);
    bytesShipped.inc({ source: this.o.source }, end - start);
    this.o.onProgress?.({ file: f.path, offset: f.cp.offset, size: c.size, summary: this.summary });
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
