/**
 * The aggregation step alone, as `run.ts` measures it (same input and options), without the
 * rest of the benchmark: for profiling and before/after comparisons of the operator.
 *
 *   node --expose-gc --import tsx tools/bench/agg-step.ts [repetitions]
 *
 * Prints the runs, the counts (which must not change), and the memory of the per-minute
 * state split between counts and event ids.
 */
import { writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import { constants, PerformanceObserver } from "node:perf_hooks";
import type { ClickEvent } from "../../src/model.js";
import { partitionOf } from "../../src/partition.js";
import { IdSet } from "../../src/windows/dedupe.js";
import { MinuteState } from "../../src/windows/minute-state.js";
import { WINDOW_SIZE_MS, windowStartOf } from "../../src/windows/window.js";
import { decodeClickMessage, encodeClickMessage } from "../../src/wire/batch-codec.js";
import { runAggregationBench } from "./aggregation.js";
import { bookEvents, DEFAULT_BOOK } from "./book.js";
import { gc } from "./gc.js";

const reps = Number(process.argv[2] ?? 3);
// Garbage collection per run (not the forced ones of the memory figures): the entries are
// delivered asynchronously, so they are attributed afterwards by time, run by run.
const gcs: { at: number; ms: number }[] = [];
const runEnds: number[] = [];
const session = new Session();
const observer = new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    const flags = (e as unknown as { detail?: { flags?: number } }).detail?.flags ?? 0;
    if ((flags & constants.NODE_PERFORMANCE_GC_FLAGS_FORCED) === 0) {
      gcs.push({ at: e.startTime, ms: e.duration });
    }
  }
});
observer.observe({ entryTypes: ["gc"] });
const events = 2_000_000;
const partitions = 16;
const shape = { ...DEFAULT_BOOK, lines: events, eventRatePerSec: 50_000 };
const r = runAggregationBench(
  {
    shape,
    events,
    partitions,
    batchEvents: 625,
    latePolicy: "amend",
    dimensions: ["country"],
    repetitions: reps,
    sources: 4,
  },
  (m) => {
    runEnds.push(performance.now());
    console.log(m);
    // AGG_PROFILE=FILE: a CPU profile of the runs after the first (input already built).
    if (runEnds.length === 1 && process.env.AGG_PROFILE) {
      session.connect();
      session.post("Profiler.enable");
      session.post("Profiler.start");
    }
  },
);
if (process.env.AGG_PROFILE && runEnds.length > 1) {
  session.post("Profiler.stop", (err, r) => {
    if (!err) writeFileSync(process.env.AGG_PROFILE as string, JSON.stringify(r.profile));
  });
}
await new Promise((r) => setTimeout(r, 100));
observer.disconnect();
for (let i = 1; i < runEnds.length; i++) {
  const from = runEnds[i - 1] as number;
  const to = runEnds[i] as number;
  const ms = gcs.filter((g) => g.at >= from && g.at < to).reduce((n, g) => n + g.ms, 0);
  console.log(`  run ${i + 1}: ${Math.round(ms)} ms of garbage collection (main thread pauses)`);
}
console.log(
  `best ingest ${Math.round(r.ingestEventsPerSec).toLocaleString()} events/s, decode + ingest ${Math.round(r.decodeIngestEventsPerSec).toLocaleString()} events/s (${Math.round(Math.max(...r.decodeIngestCpuRuns)).toLocaleString()} per CPU second); counted ${r.counted}, duplicates ${r.duplicates}, minutes ${r.minutesEmitted}, state ${(r.stateHeapBytes / 1e6).toFixed(1)} MB, snapshot ${Math.round(r.snapshotMs)} ms`,
);

if (process.env.AGG_MEMORY !== "0") {
  // Memory of the two parts of a minute's state, built apart from the same messages (the
  // strings of decoded batches, as an aggregator gets them): counts of every event, then ids.
  const all = bookEvents(shape, events);
  const payloads: { key: string; payload: Uint8Array }[] = [];
  const per = new Map<string, ClickEvent[]>();
  for (const e of all) {
    const key = `${partitionOf(e.adId, partitions)}/${windowStartOf(e.timestampMs, WINDOW_SIZE_MS)}`;
    let list = per.get(key);
    if (list === undefined) {
      list = [];
      per.set(key, list);
    }
    list.push(e);
    if (list.length === 625) {
      payloads.push({ key, payload: encodeClickMessage({ source: "s", events: list }) });
      per.set(key, []);
    }
  }
  for (const [key, list] of per) {
    if (list.length > 0)
      payloads.push({ key, payload: encodeClickMessage({ source: "s", events: list }) });
  }
  all.length = 0;
  per.clear();
  // Array buffers are freed by a sweeper after the collection: let it finish.
  const heap = async () => {
    for (let i = 0; i < 3; i++) {
      gc();
      await new Promise((r) => setTimeout(r, 200));
    }
    const m = process.memoryUsage();
    if (process.env.AGG_DEBUG) console.log(m.heapUsed, m.arrayBuffers, m.external);
    return m.heapUsed + m.arrayBuffers;
  };
  let before = await heap();
  const states = new Map<string, MinuteState>();
  for (const { key, payload } of payloads) {
    let m = states.get(key);
    if (m === undefined) {
      m = new MinuteState(Number(key.split("/")[1]), WINDOW_SIZE_MS, ["country"]);
      states.set(key, m);
    }
    for (const e of decodeClickMessage(payload).events) m.add(e);
  }
  const countsBytes = (await heap()) - before;
  for (const m of states.values()) m.compact();
  const countsCompactBytes = (await heap()) - before;
  let cells = 0;
  let counted = 0;
  for (const m of states.values()) {
    cells += m.sortedAdIds().length;
    counted += m.eventCount;
  }
  before = await heap();
  const sets = new Map<string, IdSet>();
  let ids = 0;
  for (const { key, payload } of payloads) {
    let s = sets.get(key);
    if (s === undefined) {
      s = new IdSet();
      sets.set(key, s);
    }
    for (const e of decodeClickMessage(payload).events) if (s.add(e.eventId)) ids++;
  }
  const idBytes = (await heap()) - before;
  for (const set of sets.values()) set.compact();
  const idCompactBytes = (await heap()) - before;
  console.log(
    `compacted (a minute kept for amendments): ${(countsCompactBytes / cells).toFixed(1)} B a cell, ${(idCompactBytes / ids).toFixed(1)} B an id`,
  );
  console.log(
    `memory: ${cells.toLocaleString()} (ad, minute) cells for ${counted.toLocaleString()} events: ${(countsBytes / 1e6).toFixed(1)} MB, ${(countsBytes / cells).toFixed(1)} B a cell; ${ids.toLocaleString()} ids: ${(idBytes / 1e6).toFixed(1)} MB, ${(idBytes / ids).toFixed(1)} B an id (${states.size + sets.size} sets, ${payloads.length} messages)`,
  );
}
