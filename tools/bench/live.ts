/**
 * The live phase: clicks appended to log files at a steady rate with event time = now (and
 * the same disorder and duplicates), tailed by `adclick ship --follow` processes. It gives
 * what a backlog cannot: the time from a minute's watermark passing (its end + the allowed
 * lateness, in wall-clock time) to the minute being queryable as final in the store.
 */
import { closeSync, openSync, writeSync } from "node:fs";
import { prng, zipfSampler } from "../../src/gen/click-log.js";
import { ONE_MINUTE_MS } from "../../src/model.js";
import { adIdOf, type BookShape, Truth } from "./book.js";

export interface LiveWriter {
  truth: Truth;
  /** Lines written so far. */
  lines(): number;
  stop(): Promise<void>;
}

/**
 * Appends `ratePerSec` lines a second (in 50 ms ticks) to `files`, round-robin, event time
 * = now minus up to `disorderMs`, until stop().
 */
export function startLiveWriter(
  shape: BookShape,
  files: readonly string[],
  ratePerSec: number,
  startMs: number,
): LiveWriter {
  const rand = prng(shape.seed + 1000);
  const adRank = zipfSampler(shape.ads, shape.zipfS, rand);
  const truth = new Truth(
    Math.floor((startMs - shape.disorderMs) / ONE_MINUTE_MS) * ONE_MINUTE_MS,
    shape.ads,
    shape.countries,
  );
  const fds = files.map((f) => openSync(f, "a"));
  const recent: { rank: number; ts: number; user: number; ip: string; c: number; id: string }[] =
    [];
  let written = 0;
  let seq = 0;
  const t0 = Date.now();
  const tick = () => {
    const now = Date.now();
    const due = Math.floor(((now - t0) / 1000) * ratePerSec) - written;
    const parts: string[][] = files.map(() => []);
    for (let i = 0; i < due; i++) {
      const f = (written + i) % files.length;
      let line: string;
      if (rand() < shape.duplicateRatio && recent.length > 0) {
        const d = recent[Math.floor(rand() * recent.length)] as (typeof recent)[number];
        line = fmt(d.rank, d.ts, d.user, d.ip, shape.countries[d.c] as string, d.id);
        truth.duplicates++;
      } else {
        const rank = adRank();
        const ts = now - Math.floor(rand() * shape.disorderMs);
        const user = Math.floor(rand() * shape.users);
        const ip = `${10 + Math.floor(rand() * 200)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${1 + Math.floor(rand() * 254)}`;
        const c = Math.floor(rand() * shape.countries.length);
        const id = rand() < shape.clickIdRatio ? `live-${shape.seed}-${seq++}` : "";
        line = fmt(rank, ts, user, ip, shape.countries[c] as string, id);
        truth.add(rank, ts, c, user);
        if (id) {
          if (recent.length < 5000) recent.push({ rank, ts, user, ip, c, id });
          else recent[seq % 5000] = { rank, ts, user, ip, c, id };
        }
      }
      (parts[f] as string[]).push(line);
    }
    written += Math.max(0, due);
    parts.forEach((p, i) => {
      if (p.length > 0) writeSync(fds[i] as number, p.join(""));
    });
    truth.lines = written;
  };
  const timer = setInterval(tick, 50);
  return {
    truth,
    lines: () => written,
    async stop() {
      clearInterval(timer);
      tick();
      for (const fd of fds) closeSync(fd);
    },
  };
}

function fmt(rank: number, ts: number, user: number, ip: string, country: string, id: string) {
  return `[AdClickEvent] ${adIdOf(rank)}, ${new Date(ts).toISOString()}, user-${user}, ${ip}, ${country}${id ? `, ${id}` : ""}\n`;
}

/**
 * Watches partitions' closed_through advance and turns each minute end it passes into a
 * latency sample: wall clock when seen minus (minute end + allowed lateness). Fed with the
 * store's partition_progress (final in the store) or the aggregators' own closed_through
 * (closed, answered from the live view until stored).
 */
export class QueryableLatency {
  private readonly last = new Map<number, number>();
  /** Per (partition, minute) samples, ms. */
  readonly samples: { partition: number; minuteEndMs: number; latencyMs: number }[] = [];

  constructor(
    private readonly allowedLatenessMs: number,
    /** Only minutes ending after this count (earlier ones were closed before the phase). */
    private readonly fromMs: number,
    /** Only minutes whose watermark passed by events, not by the idle close at the end. */
    private readonly untilMs: () => number,
  ) {}

  observe(progress: Map<number, number>, seenAtMs: number): void {
    for (const [p, closedThrough] of progress) {
      const prev = this.last.get(p) ?? this.fromMs;
      if (closedThrough <= prev) continue;
      this.last.set(p, closedThrough);
      for (let end = prev + ONE_MINUTE_MS; end <= closedThrough; end += ONE_MINUTE_MS) {
        if (end <= this.fromMs || end + this.allowedLatenessMs > this.untilMs()) continue;
        this.samples.push({
          partition: p,
          minuteEndMs: end,
          latencyMs: seenAtMs - (end + this.allowedLatenessMs),
        });
      }
    }
  }
}
