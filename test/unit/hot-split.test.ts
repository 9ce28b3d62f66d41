import { describe, expect, it } from "vitest";
import {
  type AggregatorCore,
  type BatchOutcome,
  newOutcome,
  type Publication,
  restoreCore,
  resumeAtBarrier,
  type StreamMessage,
  snapshotStateOf,
  stepBatch,
} from "../../src/aggregate/aggregator-core.js";
import {
  createShardCore,
  type ShardCore,
  type ShardSnapshot,
  snapshotShard,
  stepShard,
} from "../../src/aggregate/shard-core.js";
import { prng } from "../../src/gen/click-log.js";
import { liveEpochs } from "../../src/hot/epochs.js";
import type { HotDetectorOptions } from "../../src/hot/hot-detector.js";
import type { ClickEvent } from "../../src/model.js";
import type { PartialCounts } from "../../src/windows/merge-partials.js";
import type { AggregatorOptions } from "../../src/windows/partition-aggregator.js";
import { partKey } from "../../src/windows/partition-aggregator.js";
import { decodeAggregate, type MinuteRevision } from "../../src/wire/aggregate-messages.js";
import { encodeClickMessage } from "../../src/wire/batch-codec.js";
import { HOT_TICK } from "../../src/wire/hot-messages.js";

// The partition aggregator and the shards of its hot ads, run together over one simulated log
// (the stream: inputs arrive over time, the aggregator's barriers and merge records are
// appended where they would land, a message id is stored once), with random batching and
// crashes restored from snapshots. What they emit must equal an independent recount of the
// input, minute by minute, ad by ad, country by country.

const T0 = Date.UTC(2024, 6, 9, 10, 0, 0);
const MSG_EVERY_MS = 100;
const HOT_AD = "hot";
const COUNTRIES = ["US", "DE", "FR", "JP"];

const OPTIONS: AggregatorOptions = {
  partition: 0,
  allowedLatenessMs: 15_000,
  idleTimeoutMs: 30_000,
  topK: 5,
  latePolicy: "amend",
  dimensions: ["country"],
};
const HOT: HotDetectorOptions = {
  hotShare: 0.3,
  hotMinRatePerSec: 50,
  shardRatePerSec: 200,
  maxShards: 3,
  periodMs: 5_000,
  buckets: 5,
};

interface Input {
  msgs: { data: Uint8Array; atMs: number }[];
  events: ClickEvent[];
}

/**
 * Two sources, `n` messages of `per` clicks, one every 100 ms of processing time. The hot ad
 * draws `hotShare(i)` of message i's clicks; some clicks repeat earlier ones (duplicates,
 * also across the switch points) and some come up to 90 s late (amendments).
 */
function makeInput(seed: number, n: number, per: number, hotShare: (i: number) => number): Input {
  const rnd = prng(seed);
  const msgs: Input["msgs"] = [];
  const events: ClickEvent[] = [];
  let id = 0;
  for (let i = 0; i < n; i++) {
    const atMs = T0 + i * MSG_EVERY_MS;
    const source = i % 2 === 0 ? "a" : "b";
    const batch: ClickEvent[] = [];
    for (let j = 0; j < per; j++) {
      const r = rnd();
      if (r < 0.05 && events.length > 0) {
        batch.push(events[Math.floor(rnd() * events.length)] as ClickEvent); // a duplicate
        continue;
      }
      const late = r < 0.08 ? Math.floor(rnd() * 90_000) : Math.floor(rnd() * 2_000);
      const e: ClickEvent = {
        adId: rnd() < hotShare(i) ? HOT_AD : `ad${Math.floor(rnd() * 40)}`,
        timestampMs: atMs - late,
        userId: `u${Math.floor(rnd() * 100)}`,
        ip: "10.0.0.1",
        country: COUNTRIES[Math.floor(rnd() * COUNTRIES.length)] as string,
        eventId: `e${id++}`,
      };
      events.push(e);
      batch.push(e);
    }
    const progressMs = Math.min(...batch.map((e) => e.timestampMs));
    msgs.push({
      data: encodeClickMessage({ source, progressMs, events: batch, end: i >= n - 2 }),
      atMs,
    });
  }
  return { msgs, events };
}

/** The independent recount: unique event ids per (minute, ad) and (minute, ad, country). */
function recount(events: ClickEvent[]) {
  const seen = new Set<string>();
  const ads = new Map<string, number>();
  const dims = new Map<string, number>();
  for (const e of events) {
    const minute = Math.floor(e.timestampMs / 60_000) * 60_000;
    const key = `${minute}|${e.eventId}`;
    if (seen.has(key)) continue;
    seen.add(key);
    const a = `${minute}|${e.adId}`;
    ads.set(a, (ads.get(a) ?? 0) + 1);
    const d = `${minute}|${e.adId}|${e.country}`;
    dims.set(d, (dims.get(d) ?? 0) + 1);
  }
  return { ads, dims };
}

/** The newest revision of every emitted minute, flattened like the recount. */
function emitted(revisions: Map<number, MinuteRevision>) {
  const ads = new Map<string, number>();
  const dims = new Map<string, number>();
  for (const [minute, r] of revisions) {
    for (const [ad, n] of r.adCounts) ads.set(`${minute}|${ad}`, n);
    for (const [ad, country, n] of r.dimCounts.country ?? []) {
      dims.set(`${minute}|${ad}|${country}`, n);
    }
  }
  return { ads, dims };
}

interface LogEntry extends StreamMessage {
  msgId: string;
}

/** The simulated stream of partition 0: appends, dedupes by message id. */
class Log {
  readonly entries: LogEntry[] = [];
  private readonly ids = new Set<string>();
  clock = T0;

  append(msgId: string, data: Uint8Array, atMs: number, control?: "hot"): void {
    if (this.ids.has(msgId)) return;
    this.ids.add(msgId);
    this.clock = Math.max(this.clock, atMs);
    this.entries.push({
      seq: this.entries.length + 1,
      timestampMs: this.clock,
      tick: control !== undefined,
      ...(control ? { hot: true } : {}),
      data,
      msgId,
    });
  }

  from(seq: number, max: number): StreamMessage[] {
    return this.entries.slice(seq - 1, seq - 1 + max);
  }
}

interface ShardRun {
  core: ShardCore;
  saved?: ShardSnapshot;
}

interface Run {
  revisions: Map<number, MinuteRevision>;
  splits: number;
  merges: number;
  routed: number;
  maxShards: number;
  crashes: number;
}

/**
 * Runs the aggregator (with `hot` settings, or unsplit when null) and its shards over the
 * input. The aggregator and the shards crash now and then (`crashEvery` of their steps) and
 * restart from their last snapshot.
 */
function run(
  input: Input,
  seed: number,
  hot: HotDetectorOptions | null,
  crashEvery = 0,
  /** The settings restarts come back with (default: the same). */
  restartHot: HotDetectorOptions | null = hot,
): Run {
  const rnd = prng(seed);
  const log = new Log();
  const revisions = new Map<number, MinuteRevision>();
  const partials = new Map<string, PartialCounts>();
  const shards = new Map<string, ShardRun>();
  let core: AggregatorCore = restoreCore(OPTIONS, undefined, hot);
  let saved: { state: ReturnType<typeof snapshotStateOf>; streamSeq: number } | undefined;
  let fed = 0;
  let crashes = 0;
  let maxShards = 0;
  let routed = 0;

  const publish = (pubs: Publication[]) => {
    for (const p of pubs) {
      if (p.subject === "clicks.0") {
        log.append(
          p.msgId,
          p.payload,
          log.clock,
          p.headers?.["Adclick-Tick"] === HOT_TICK ? "hot" : undefined,
        );
      } else if (p.subject.startsWith("aggregates.minute.")) {
        const m = decodeAggregate(p.payload);
        if (m.kind !== "minute") continue;
        const had = revisions.get(m.minuteStartMs);
        if (!had || had.version < m.version) revisions.set(m.minuteStartMs, m);
      }
    }
  };

  const stepShards = () => {
    for (const e of liveEpochs(core.state.hot)) {
      for (let k = 0; k < e.shards; k++) {
        const key = `${e.id}.${k}`;
        if (!shards.has(key)) {
          shards.set(key, {
            core: createShardCore({
              partition: 0,
              epoch: e.id,
              adId: e.adId,
              shards: e.shards,
              shard: k,
              startSeq: e.startSeq,
              excluded: [...e.excluded],
              dimensions: ["country"],
            }),
          });
        }
      }
      maxShards = Math.max(maxShards, e.shards);
    }
    for (const [key, s] of shards) {
      if (crashEvery > 0 && rnd() < 1 / crashEvery) {
        // A shard crash: back to its snapshot (or its epoch's start), same options.
        s.core = createShardCore(s.core.options, s.saved);
        crashes++;
      }
      const batch = log.from(s.core.lastSeq + 1, 1 + Math.floor(rnd() * 40));
      const out = stepShard(s.core, batch);
      for (const p of out.partials) {
        partials.set(`${p.epoch}.${p.shard}.${p.minuteStartMs}.${p.asOfSeq}`, p.counts);
      }
      if (rnd() < 0.2) s.saved = snapshotShard(s.core);
      void key;
    }
  };

  /** Steps the aggregator once; true when it is at the end of the log. */
  const stepAggregator = (): boolean => {
    const batch = log.from(core.status.lastSeq + 1, 1 + Math.floor(rnd() * 30));
    if (batch.length === 0) return true;
    let out: BatchOutcome = stepBatch(core, batch, newOutcome());
    for (let guard = 0; out.stop; guard++) {
      const stop = out.stop;
      const got = new Map<string, PartialCounts>();
      for (const [e, k] of stop.wants) {
        const p = partials.get(`${e}.${k}.${stop.minuteStartMs}.${stop.seq}`);
        if (p) got.set(partKey(e, k), p);
      }
      if (got.size < stop.wants.length) {
        // Not all there: the shards run on (the actor waits for them the same way).
        expect(guard).toBeLessThan(10_000);
        stepShards();
        continue;
      }
      resumeAtBarrier(core, out, got);
      out = stepBatch(core, stop.rest, out);
    }
    routed += out.routed;
    publish(out.publications);
    if (rnd() < 0.1) saved = { state: snapshotStateOf(core), streamSeq: core.status.lastSeq };
    return false;
  };

  const splitsMergesSoFar = { splits: 0, merges: 0 };
  for (let round = 0; ; round++) {
    // Inputs arrive a few at a time, so the aggregator's records land between them.
    const arrive = Math.floor(rnd() * 6);
    for (let i = 0; i < arrive && fed < input.msgs.length; i++, fed++) {
      const m = input.msgs[fed] as Input["msgs"][number];
      log.append(`in:${fed}`, m.data, m.atMs);
    }
    if (crashEvery > 0 && rnd() < 1 / crashEvery) {
      splitsMergesSoFar.splits = Math.max(splitsMergesSoFar.splits, core.hotCounts.splits);
      splitsMergesSoFar.merges = Math.max(splitsMergesSoFar.merges, core.hotCounts.merges);
      core = restoreCore(
        OPTIONS,
        saved ? { state: saved.state, streamSeq: saved.streamSeq, takenAtMs: 0 } : undefined,
        restartHot,
      );
      crashes++;
    }
    const atEnd = stepAggregator();
    stepShards();
    if (atEnd && fed >= input.msgs.length && round > 0) {
      // Drained: an idle tick far ahead closes what the ended sources left open.
      if (core.state.pending.size === 0 && core.state.awaiting.size === 0) break;
      log.append(`tick:${round}`, new Uint8Array(0), log.clock + 120_000, undefined);
      const last = log.entries[log.entries.length - 1] as LogEntry;
      last.tick = true;
    }
    expect(round).toBeLessThan(200_000);
  }
  return {
    revisions,
    splits: Math.max(splitsMergesSoFar.splits, core.hotCounts.splits),
    merges: Math.max(splitsMergesSoFar.merges, core.hotCounts.merges),
    routed,
    maxShards,
    crashes,
  };
}

const hotThenCold = (n: number) => (i: number) => (i > n * 0.2 && i < n * 0.6 ? 0.5 : 0.02);

describe("a hot ad split over shards and merged back", () => {
  it.each([
    { seed: 1, crashEvery: 0 },
    { seed: 2, crashEvery: 0 },
    { seed: 3, crashEvery: 25 },
    { seed: 4, crashEvery: 10 },
  ])(
    "counts exactly what a recount counts (seed $seed, a crash every ~$crashEvery steps)",
    ({ seed, crashEvery }) => {
      const n = 2_500;
      const input = makeInput(seed, n, 20, hotThenCold(n));
      const r = run(input, seed * 7919, HOT, crashEvery);
      expect(r.splits).toBeGreaterThanOrEqual(1);
      expect(r.merges).toBeGreaterThanOrEqual(1);
      expect(r.routed).toBeGreaterThan(1_000);
      expect(r.maxShards).toBeGreaterThanOrEqual(2);
      if (crashEvery > 0) expect(r.crashes).toBeGreaterThan(5);
      const want = recount(input.events);
      const got = emitted(r.revisions);
      expect(got.ads).toEqual(want.ads);
      expect(got.dims).toEqual(want.dims);
    },
  );

  it("merges every split ad back when a restart turns splitting off, and still counts exactly", () => {
    const n = 3_000;
    // Hot from the start, so that ads are split before the first crash.
    const input = makeInput(21, n, 20, () => 0.5);
    let r: Run | undefined;
    // The first crash comes at a random round: find a seed where it comes after a split.
    for (let seed = 1; seed < 40 && (r === undefined || r.splits === 0 || r.merges === 0); seed++) {
      r = run(input, seed, HOT, 60, null);
    }
    const done = r as Run;
    expect(done.splits).toBeGreaterThanOrEqual(1);
    expect(done.merges).toBeGreaterThanOrEqual(1);
    const want = recount(input.events);
    const got = emitted(done.revisions);
    expect(got.ads).toEqual(want.ads);
    expect(got.dims).toEqual(want.dims);
  });

  it("emits the same final revisions as the unsplit aggregator", () => {
    const n = 3_000;
    const input = makeInput(9, n, 20, hotThenCold(n));
    const split = run(input, 11, HOT);
    const unsplit = run(input, 11, null);
    expect(split.splits).toBeGreaterThanOrEqual(1);
    expect(unsplit.splits).toBe(0);
    expect(emitted(split.revisions)).toEqual(emitted(unsplit.revisions));
  });
});
