/**
 * The benchmark's options: one definition for `npm run bench` (tools/bench/run.ts) and
 * `adclick bench` (app/cli/main.ts). Light on purpose: the CLI loads it for every command.
 */
import { type Command, InvalidArgumentError } from "commander";

/** The late policies (as in src/windows/partition-aggregator.ts; this module stays light). */
type LatePolicy = "amend" | "drop";

export interface BenchOptions {
  /** Lines of the backlog input (events, duplicates, malformed). */
  events: number;
  ads: number;
  /** Event-time minutes the backlog spans (≥ 60 for the 60-minute queries). */
  minutes: number;
  partitions: number;
  shippers: number;
  workers: number;
  /**
   * Query-only processes (ADCLICK_ROLES=query); the workers then run no query service. 0:
   * the workers serve the queries themselves.
   */
  queryProcesses: number;
  /** Live phase: lines per second and seconds (0 skips the phase). */
  rate: number;
  duration: number;
  /** In-process aggregation benchmark: events (0 skips it). */
  aggEvents: number;
  /** In-process query rollup at the book's peak: stored minutes (0 skips it). */
  rollupMinutes: number;
  /** Allowed lateness of the pipeline under test (the latency measure excludes it). */
  latenessMs: number;
  queryConcurrency: number;
  querySeconds: number;
  latePolicy: LatePolicy;
  cassandraHeapMb: number;
  /** Write V8 CPU profiles of the worker(s) and shippers. */
  profile: boolean;
  seed: number;
  /** Keep the temporary folders (logs, server data) for inspection. */
  keep: boolean;
  out?: string;
}

export const DEFAULT_BENCH: BenchOptions = {
  // 3,000,000 clicks in one event-time minute: the book's peak of 50,000 clicks/s.
  events: 3_000_000,
  ads: 2_000_000,
  minutes: 1,
  partitions: 16,
  shippers: 2,
  workers: 1,
  queryProcesses: 1,
  rate: 10_000,
  duration: 240,
  aggEvents: 2_000_000,
  rollupMinutes: 60,
  latenessMs: 60_000,
  queryConcurrency: 8,
  querySeconds: 3,
  latePolicy: "amend",
  cassandraHeapMb: 512,
  profile: false,
  seed: 7,
  keep: false,
};

function int(name: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number`);
    return Number(v);
  };
}

/** The `bench` options on a commander command (shared by `npm run bench` and `adclick bench`). */
export function benchCommand(cmd: Command): Command {
  const env = (name: string, fallback: number) => {
    const v = process.env[name];
    return v && /^\d+$/.test(v) ? Number(v) : fallback;
  };
  return cmd
    .description(
      "benchmark the whole pipeline on this machine (starts its own servers); exits 1 unless every count is exact",
    )
    .option(
      "--events <n>",
      "lines of backlog input; 0 runs the in-process measures only (ADCLICK_BENCH_EVENTS)",
      int("--events"),
      env("ADCLICK_BENCH_EVENTS", DEFAULT_BENCH.events),
    )
    .option(
      "--ads <n>",
      "distinct ads, Zipf popularity (ADCLICK_BENCH_ADS)",
      int("--ads"),
      env("ADCLICK_BENCH_ADS", DEFAULT_BENCH.ads),
    )
    .option(
      "--minutes <n>",
      "event-time minutes the backlog spans (ADCLICK_BENCH_MINUTES)",
      int("--minutes"),
      env("ADCLICK_BENCH_MINUTES", DEFAULT_BENCH.minutes),
    )
    .option(
      "--partitions <n>",
      "raw-click partitions (ADCLICK_BENCH_PARTITIONS)",
      int("--partitions"),
      env("ADCLICK_BENCH_PARTITIONS", DEFAULT_BENCH.partitions),
    )
    .option(
      "--shippers <n>",
      "'adclick ship' processes, one log file each",
      int("--shippers"),
      env("ADCLICK_BENCH_SHIPPERS", DEFAULT_BENCH.shippers),
    )
    .option(
      "--workers <n>",
      "'adclick worker' processes",
      int("--workers"),
      env("ADCLICK_BENCH_WORKERS", DEFAULT_BENCH.workers),
    )
    .option(
      "--query-processes <n>",
      "query-only 'adclick worker' processes (ADCLICK_ROLES=query); 0: the workers serve queries",
      int("--query-processes"),
      env("ADCLICK_BENCH_QUERY_PROCESSES", DEFAULT_BENCH.queryProcesses),
    )
    .option(
      "--rate <n>",
      "live phase: clicks per second (ADCLICK_BENCH_RATE)",
      int("--rate"),
      env("ADCLICK_BENCH_RATE", DEFAULT_BENCH.rate),
    )
    .option(
      "--duration <s>",
      "live phase: seconds, 0 skips it (ADCLICK_BENCH_DURATION)",
      int("--duration"),
      env("ADCLICK_BENCH_DURATION", DEFAULT_BENCH.duration),
    )
    .option(
      "--agg-events <n>",
      "in-process aggregation benchmark events, 0 skips it",
      int("--agg-events"),
      env("ADCLICK_BENCH_AGG_EVENTS", DEFAULT_BENCH.aggEvents),
    )
    .option(
      "--rollup-minutes <n>",
      "in-process query rollup at the book's peak: stored minutes, 0 skips it",
      int("--rollup-minutes"),
      env("ADCLICK_BENCH_ROLLUP_MINUTES", DEFAULT_BENCH.rollupMinutes),
    )
    .option(
      "--lateness-ms <n>",
      "allowed lateness of the pipeline under test (parallel shippers drift apart in event time)",
      int("--lateness-ms"),
      DEFAULT_BENCH.latenessMs,
    )
    .option(
      "--query-concurrency <n>",
      "concurrent query clients",
      int("--query-concurrency"),
      DEFAULT_BENCH.queryConcurrency,
    )
    .option(
      "--query-seconds <s>",
      "seconds of load per query class",
      int("--query-seconds"),
      DEFAULT_BENCH.querySeconds,
    )
    .option(
      "--late-policy <p>",
      "amend (the default: late clicks amend their minute) or drop",
      DEFAULT_BENCH.latePolicy,
    )
    .option(
      "--cassandra-heap-mb <n>",
      "Cassandra heap",
      int("--cassandra-heap-mb"),
      DEFAULT_BENCH.cassandraHeapMb,
    )
    .option("--seed <n>", "input seed", int("--seed"), DEFAULT_BENCH.seed)
    .option("--profile", "write V8 CPU profiles of the workers and shippers into bench-results/")
    .option("--keep", "keep the temporary logs and server data")
    .option("--out <file>", "JSON results file (default bench-results/bench-<time>.json)");
}

export function benchOptionsFrom(v: Record<string, unknown>): BenchOptions {
  const policy: LatePolicy = v.latePolicy === "drop" ? "drop" : "amend";
  return {
    ...DEFAULT_BENCH,
    ...(v as Partial<BenchOptions>),
    latePolicy: policy,
    profile: v.profile === true,
    keep: v.keep === true,
  };
}
