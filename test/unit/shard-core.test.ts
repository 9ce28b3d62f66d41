import { describe, expect, it } from "vitest";
import type { StreamMessage } from "../../src/aggregate/aggregator-core.js";
import {
  createShardCore,
  type ShardCore,
  type ShardOptions,
  type ShardSnapshot,
  shardDone,
  shardLiveOf,
  snapshotShard,
  stepShard,
} from "../../src/aggregate/shard-core.js";
import { prng } from "../../src/gen/click-log.js";
import { shardOfEvent } from "../../src/hot/epochs.js";
import type { ClickEvent } from "../../src/model.js";
import type { PartialCounts } from "../../src/windows/merge-partials.js";
import { encodeClickMessage } from "../../src/wire/batch-codec.js";
import { encodeHotControl, type ShardPartial } from "../../src/wire/hot-messages.js";

const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9, 10, 0, 0);
const m = (i: number) => T0 + i * MIN;
const HOT = "hot";
const K = 4;
const SHARD = 1;
const START = 10;

const OPTIONS: ShardOptions = {
  partition: 3,
  epoch: 7,
  adId: HOT,
  shards: K,
  shard: SHARD,
  startSeq: START,
  excluded: [],
  dimensions: ["country"],
};

/** Event ids that hash to the given shard of K (and, for `other`, to another one). */
function idsOf(shard: number, n: number, prefix = "e"): string[] {
  const out: string[] = [];
  for (let i = 0; out.length < n; i++) {
    const id = `${prefix}${i}`;
    if (shardOfEvent(id, K) === shard) out.push(id);
  }
  return out;
}
const MINE = idsOf(SHARD, 200);
const OTHERS = idsOf((SHARD + 1) % K, 50, "o");

function click(eventId: string, timestampMs: number, country = "US", adId = HOT): ClickEvent {
  return { adId, timestampMs, userId: `u-${eventId}`, ip: "10.0.0.1", country, eventId };
}

function clicks(seq: number, events: ClickEvent[]): StreamMessage {
  return {
    seq,
    timestampMs: T0 + seq,
    tick: false,
    data: encodeClickMessage({ source: "s", progressMs: null, events }),
  };
}

function barrier(
  seq: number,
  minuteStartMs: number,
  purgedThroughMs: number | null = null,
  episode = 1,
): StreamMessage {
  return {
    seq,
    timestampMs: T0 + seq,
    tick: true,
    hot: true,
    data: encodeHotControl({ kind: "barrier", minuteStartMs, episode, purgedThroughMs }),
  };
}

function merge(seq: number, routed: number[], epoch = OPTIONS.epoch): StreamMessage {
  return {
    seq,
    timestampMs: T0 + seq,
    tick: true,
    hot: true,
    data: encodeHotControl({ kind: "merge", epoch, routed }),
  };
}

function tick(seq: number): StreamMessage {
  return { seq, timestampMs: T0 + seq, tick: true, data: new Uint8Array() };
}

/** What a shard should report: the clicks of its ad and shard, deduplicated, of one minute. */
function expected(events: ClickEvent[], minuteStartMs: number): PartialCounts {
  const seen = new Set<string>();
  const countries = new Map<string, number>();
  for (const e of events) {
    if (e.adId !== HOT || shardOfEvent(e.eventId, K) !== SHARD) continue;
    if (e.timestampMs < minuteStartMs || e.timestampMs >= minuteStartMs + MIN) continue;
    if (seen.has(e.eventId)) continue;
    seen.add(e.eventId);
    countries.set(e.country, (countries.get(e.country) ?? 0) + 1);
  }
  if (seen.size === 0) return { eventCount: 0, ads: [], dims: {} };
  return {
    eventCount: seen.size,
    ads: [[HOT, seen.size]],
    dims: {
      country: [...countries.entries()]
        .sort((a, b) => (a[0] < b[0] ? -1 : 1))
        .map(([c, n]) => [HOT, c, n]),
    },
  };
}

const core = (over: Partial<ShardOptions> = {}) => createShardCore({ ...OPTIONS, ...over });

describe("stepShard: counting", () => {
  it("counts only its ad's clicks whose ids hash to its shard", () => {
    const c = core();
    const events: ClickEvent[] = [
      ...MINE.slice(0, 30).map((id, i) => click(id, m(0) + i * 100, i % 3 ? "US" : "DE")),
      ...OTHERS.slice(0, 20).map((id) => click(id, m(0) + 5)),
      ...MINE.slice(30, 40).map((id) => click(id, m(0) + 7, "FR", "cold")),
    ];
    const out = stepShard(c, [clicks(START, events), barrier(START + 1, m(0))]);
    expect(out.counted).toBe(30);
    expect(out.duplicates).toBe(0);
    expect(out.partials).toEqual([
      {
        partition: 3,
        epoch: 7,
        shard: SHARD,
        minuteStartMs: m(0),
        asOfSeq: START + 1,
        counts: expected(events, m(0)),
      },
    ]);
    expect(out.partials[0]?.counts.eventCount).toBe(30);
    expect(c.status).toMatchObject({ counted: 30, partials: 1, lastSeq: START + 1, minutes: 1 });
  });

  it.each([0, 1, 2, 3])("partitions an ad's ids exactly among the %i-th of 4 shards", (shard) => {
    const rnd = prng(shard + 100);
    const events = Array.from({ length: 400 }, (_, i) =>
      click(`r${Math.floor(rnd() * 300)}`, m(0) + i, rnd() < 0.5 ? "US" : "JP"),
    );
    const totals = [0, 1, 2, 3].map((s) => {
      const c = core({ shard: s });
      return stepShard(c, [clicks(START, events), barrier(START + 1, m(0))]).partials[0]?.counts
        .eventCount;
    });
    expect(totals.reduce((a, b) => (a ?? 0) + (b ?? 0), 0)).toBe(
      new Set(events.map((e) => e.eventId)).size,
    );
  });

  it("dedupes per minute: an id seen in an earlier message is counted once", () => {
    const c = core();
    const [a, b] = MINE;
    const first = stepShard(c, [clicks(START, [click(a as string, m(0) + 1)])]);
    expect(first.counted).toBe(1);
    const again = stepShard(c, [
      clicks(START + 1, [click(a as string, m(0) + 30_000, "DE"), click(b as string, m(0) + 2)]),
      clicks(START + 2, [click(b as string, m(0) + 3), click(a as string, m(0) + 59_999)]),
    ]);
    expect(again.counted).toBe(1);
    expect(again.duplicates).toBe(3);
    const out = stepShard(c, [barrier(START + 3, m(0))]);
    expect(out.partials[0]?.counts).toEqual({
      eventCount: 2,
      ads: [[HOT, 2]],
      dims: { country: [[HOT, "US", 2]] },
    });
    expect(c.status.duplicates).toBe(3);
  });

  it("counts the same id once in each of two minutes (dedupe is per minute)", () => {
    const c = core();
    const id = MINE[0] as string;
    const out = stepShard(c, [
      clicks(START, [click(id, m(0) + 59_999), click(id, m(1))]),
      barrier(START + 1, m(0)),
      barrier(START + 2, m(1)),
    ]);
    expect(out.counted).toBe(2);
    expect(out.partials.map((p) => p.counts.eventCount)).toEqual([1, 1]);
  });

  it("skips the excluded minutes (the aggregator's) and answers no barrier of them", () => {
    const c = core({ excluded: [m(1)] });
    const events = MINE.slice(0, 10).flatMap((id, i) => [
      click(id, m(0) + i),
      click(id, m(1) + i),
      click(id, m(2) + i),
    ]);
    const out = stepShard(c, [
      clicks(START, events),
      barrier(START + 1, m(0)),
      barrier(START + 2, m(1)),
      barrier(START + 3, m(2)),
    ]);
    expect(out.counted).toBe(20);
    expect(out.partials.map((p) => [p.minuteStartMs, p.counts.eventCount])).toEqual([
      [m(0), 10],
      [m(2), 10],
    ]);
    expect(c.minutes.has(m(1))).toBe(false);
  });

  it("skips ticks and clicks without a finite time", () => {
    const c = core();
    const out = stepShard(c, [
      tick(START),
      clicks(START + 1, [click(MINE[0] as string, Number.NaN), click(MINE[1] as string, m(0))]),
      barrier(START + 2, m(0)),
    ]);
    expect(out.counted).toBe(1);
    expect(out.partials[0]?.counts.eventCount).toBe(1);
    expect(c.lastSeq).toBe(START + 2);
  });
});

describe("stepShard: barriers", () => {
  it("answers with the counts as of the barrier: clicks after it in the same batch are left out", () => {
    const c = core();
    const before = MINE.slice(0, 5).map((id) => click(id, m(0) + 1));
    const after = MINE.slice(5, 8).map((id) => click(id, m(0) + 2));
    const out = stepShard(c, [
      clicks(START, before),
      barrier(START + 1, m(0)),
      clicks(START + 2, after),
      barrier(START + 3, m(0), null, 2),
    ]);
    expect(out.partials.map((p) => [p.asOfSeq, p.counts.eventCount])).toEqual([
      [START + 1, 5],
      [START + 3, 8],
    ]);
    // The first partial is a value, not a view of the live minute.
    expect(out.partials[0]?.counts.ads).toEqual([[HOT, 5]]);
  });

  it("answers an owned minute it has no click in with an empty partial", () => {
    const c = core();
    const out = stepShard(c, [barrier(START, m(4))]);
    expect(out.partials).toEqual([
      {
        partition: 3,
        epoch: 7,
        shard: SHARD,
        minuteStartMs: m(4),
        asOfSeq: START,
        counts: { eventCount: 0, ads: [], dims: {} },
      },
    ]);
  });

  it("applies purgedThroughMs: forgets minutes ending at or before it and never counts them again", () => {
    const c = core();
    const early = MINE.slice(0, 4);
    stepShard(c, [
      clicks(
        START,
        early.flatMap((id) => [click(id, m(0)), click(id, m(1)), click(id, m(2))]),
      ),
    ]);
    expect([...c.minutes.keys()]).toEqual([m(0), m(1), m(2)]);
    // The barrier of m(2) purges through the end of m(1): m(0) and m(1) go.
    const out = stepShard(c, [barrier(START + 1, m(2), m(2))]);
    expect(out.partials.map((p) => [p.minuteStartMs, p.counts.eventCount])).toEqual([[m(2), 4]]);
    expect([...c.minutes.keys()]).toEqual([m(2)]);
    expect(c.purgedThroughMs).toBe(m(2));
    const late = stepShard(c, [
      clicks(START + 2, [
        click(MINE[10] as string, m(1) + 59_999),
        click(MINE[11] as string, m(0)),
      ]),
      barrier(START + 3, m(1)),
      barrier(START + 4, m(0)),
    ]);
    expect(late.counted).toBe(0);
    expect(late.partials).toEqual([]);
    expect(c.minutes.has(m(1))).toBe(false);
  });

  it("keeps a minute ending just after the purge bound", () => {
    const c = core();
    stepShard(c, [clicks(START, [click(MINE[0] as string, m(1))])]);
    const out = stepShard(c, [barrier(START + 1, m(1), m(2) - 1)]);
    expect(out.partials.map((p) => p.counts.eventCount)).toEqual([1]);
    expect(c.minutes.has(m(1))).toBe(true);
  });

  it("never moves its purge bound back (an older barrier's smaller or null bound)", () => {
    const c = core();
    stepShard(c, [barrier(START, m(5), m(3))]);
    stepShard(c, [barrier(START + 1, m(6), m(1)), barrier(START + 2, m(6), null)]);
    expect(c.purgedThroughMs).toBe(m(3));
    const out = stepShard(c, [
      clicks(START + 3, [click(MINE[0] as string, m(2))]),
      barrier(START + 4, m(2)),
    ]);
    expect(out.counted).toBe(0);
    expect(out.partials).toEqual([]);
  });
});

describe("stepShard: merge records and shardDone", () => {
  it("keeps only the routed minutes after its merge, and is done once they are purged", () => {
    const c = core();
    const ids = MINE.slice(0, 3);
    stepShard(c, [
      clicks(
        START,
        ids.flatMap((id) => [click(id, m(0)), click(id, m(1)), click(id, m(2))]),
      ),
    ]);
    expect(shardDone(c)).toBe(false);
    stepShard(c, [merge(START + 1, [m(0), m(2)])]);
    expect(c.status.merged).toBe(true);
    expect([...c.minutes.keys()].sort()).toEqual([m(0), m(2)]);
    expect(shardDone(c)).toBe(false);
    // After the merge, m(1) and m(3) are the aggregator's; m(2) is still the shard's.
    const after = stepShard(c, [
      clicks(START + 2, [
        click(MINE[5] as string, m(1)),
        click(MINE[6] as string, m(3)),
        click(MINE[7] as string, m(2)),
      ]),
      barrier(START + 3, m(1)),
      barrier(START + 4, m(2)),
    ]);
    expect(after.counted).toBe(1);
    expect(after.partials.map((p) => [p.minuteStartMs, p.counts.eventCount])).toEqual([[m(2), 4]]);
    stepShard(c, [barrier(START + 5, m(3), m(1))]);
    expect(shardDone(c)).toBe(false);
    stepShard(c, [barrier(START + 6, m(4), m(3))]);
    expect(shardDone(c)).toBe(true);
    expect(c.minutes.size).toBe(0);
  });

  it("ignores the merge record of another epoch", () => {
    const c = core();
    stepShard(c, [clicks(START, [click(MINE[0] as string, m(0))]), merge(START + 1, [], 8)]);
    expect(c.keep).toBeNull();
    expect(c.status.merged).toBe(false);
    expect(shardDone(c)).toBe(false);
    expect(c.minutes.has(m(0))).toBe(true);
  });

  it("is done at once after a merge that routed it nothing", () => {
    const c = core();
    stepShard(c, [clicks(START, [click(MINE[0] as string, m(0))]), merge(START + 1, [])]);
    expect(c.minutes.size).toBe(0);
    expect(shardDone(c)).toBe(true);
  });

  it("answers a barrier of a kept minute that the excluded list would have refused", () => {
    // After the merge, `keep` decides alone (excluded minutes are never routed in practice).
    const c = core({ excluded: [m(0)] });
    const out = stepShard(c, [merge(START, [m(1)]), barrier(START + 1, m(1))]);
    expect(out.partials.map((p) => p.minuteStartMs)).toEqual([m(1)]);
  });
});

describe("stepShard: redelivery and poison", () => {
  it("skips messages before its epoch's start and at or before its last sequence", () => {
    const c = core();
    const a = MINE[0] as string;
    const b = MINE[1] as string;
    const out1 = stepShard(c, [
      clicks(START - 2, [click(b, m(0))]),
      clicks(START - 1, [click(b, m(0))]),
      clicks(START, [click(a, m(0))]),
    ]);
    expect(out1.counted).toBe(1);
    // Redelivered: the same messages again, then a barrier redelivered too.
    const out2 = stepShard(c, [clicks(START, [click(b, m(0))]), barrier(START + 1, m(0))]);
    expect(out2.counted).toBe(0);
    expect(out2.partials.map((p) => p.counts.eventCount)).toEqual([1]);
    const out3 = stepShard(c, [barrier(START + 1, m(0)), clicks(START - 5, [click(b, m(0))])]);
    expect(out3).toEqual({ partials: [], counted: 0, duplicates: 0 });
    expect(c.lastSeq).toBe(START + 1);
    expect(c.status.lastSeq).toBe(START + 1);
  });

  it.each([
    { why: "random bytes as clicks", hot: false, data: Uint8Array.from([0xc1, 0xff, 0x00, 7]) },
    { why: "an empty click payload", hot: false, data: new Uint8Array() },
    {
      why: "a msgpack string as clicks",
      hot: false,
      data: Uint8Array.from([0xa3, 0x61, 0x62, 0x63]),
    },
    {
      why: "a hot control of an unknown kind",
      hot: true,
      data: encodeHotControl({ kind: "split" } as never),
    },
    { why: "garbage as a hot control", hot: true, data: Uint8Array.from([0xc1]) },
    { why: "an empty hot control", hot: true, data: new Uint8Array() },
    {
      why: "a click batch flagged hot",
      hot: true,
      data: encodeClickMessage({ source: "s", events: [click("x", m(0))] }),
    },
    {
      why: "a truncated click batch",
      hot: false,
      data: encodeClickMessage({ source: "s", events: [click(MINE[3] as string, m(0))] }).slice(
        0,
        -4,
      ),
    },
  ])("skips a poison message ($why) without throwing and goes on", ({ hot, data }) => {
    const c = core();
    const poison: StreamMessage = { seq: START, timestampMs: T0, tick: hot, hot, data };
    let out: ReturnType<typeof stepShard> | undefined;
    expect(() => {
      out = stepShard(c, [
        poison,
        clicks(START + 1, [click(MINE[0] as string, m(0))]),
        barrier(START + 2, m(0)),
      ]);
    }).not.toThrow();
    expect(out?.counted).toBe(1);
    expect(out?.partials.map((p) => p.counts.eventCount)).toEqual([1]);
    expect(c.lastSeq).toBe(START + 2);
  });
});

describe("snapshotShard / createShardCore(options, snapshot)", () => {
  /** A random log of the hot ad and others over 5 minutes, with barriers and a merge. */
  function randomLog(seed: number): StreamMessage[] {
    const rnd = prng(seed);
    const log: StreamMessage[] = [];
    let seq = START;
    const pool = [...MINE.slice(0, 60), ...OTHERS.slice(0, 20)].map((id, i) =>
      // Some ids longer than 16 characters (kept as strings in a snapshot).
      i % 7 === 0 ? `${id}-with-a-rather-long-suffix` : id,
    );
    let purged: number | null = null;
    let merged = false;
    for (let minute = 0; minute < 5; minute++) {
      for (let j = 0; j < 6; j++) {
        const events = Array.from({ length: 1 + Math.floor(rnd() * 12) }, () =>
          click(
            pool[Math.floor(rnd() * pool.length)] as string,
            m(Math.max(0, minute - Math.floor(rnd() * 2))) + Math.floor(rnd() * MIN),
            ["US", "DE", "FR"][Math.floor(rnd() * 3)],
            rnd() < 0.8 ? HOT : "cold",
          ),
        );
        log.push(clicks(seq++, events));
      }
      if (minute >= 1) {
        if (minute >= 3) purged = m(minute - 2);
        log.push(barrier(seq++, m(minute - 1), purged));
      }
      if (minute === 3 && !merged) {
        merged = true;
        log.push(merge(seq++, [m(2), m(3)]));
      }
    }
    log.push(barrier(seq++, m(3), purged));
    log.push(barrier(seq++, m(4), m(4)));
    return log;
  }

  function run(c: ShardCore, msgs: StreamMessage[]): ShardPartial[] {
    return stepShard(c, msgs).partials;
  }

  it.each([1, 2, 3, 4, 5, 6])("gives the same later partials after a restart (seed %i)", (seed) => {
    const log = randomLog(seed);
    const straight = core({ excluded: [m(0)] });
    const all = run(straight, log);
    expect(all.length).toBeGreaterThan(0);
    const rnd = prng(seed * 31);
    for (let trial = 0; trial < 5; trial++) {
      const cut = 1 + Math.floor(rnd() * (log.length - 1));
      const first = core({ excluded: [m(0)] });
      const before = run(first, log.slice(0, cut));
      const snap = JSON.parse(JSON.stringify(snapshotShard(first))) as ShardSnapshot;
      const restored = createShardCore({ ...OPTIONS, excluded: [m(0)] }, snap);
      expect(snapshotShard(restored)).toEqual(snapshotShard(first));
      // A restart re-reads from an earlier position (the stream redelivers): the overlap is
      // skipped.
      const redeliverFrom = Math.max(0, cut - 3);
      const after = run(restored, log.slice(redeliverFrom));
      expect([...before, ...after]).toEqual(all);
      expect(snapshotShard(restored)).toEqual(snapshotShard(straight));
      expect(shardDone(restored)).toBe(shardDone(straight));
      expect(shardLiveOf(restored)).toEqual(shardLiveOf(straight));
    }
  });

  it("restores an untouched shard to its start position", () => {
    const snap = snapshotShard(core());
    expect(snap).toEqual({ lastSeq: START - 1, purgedThroughMs: null, keep: null, minutes: [] });
    const c = createShardCore(OPTIONS, JSON.parse(JSON.stringify(snap)));
    expect(c.purgedThroughMs).toBe(Number.NEGATIVE_INFINITY);
    expect(c.lastSeq).toBe(START - 1);
    expect(stepShard(c, [clicks(START, [click(MINE[0] as string, m(0))])]).counted).toBe(1);
  });

  it("keeps the dedupe set across a restart (a duplicate after it is still a duplicate)", () => {
    const c = core();
    const long = MINE.map((id) => `${id}-${"x".repeat(20)}`).filter(
      (id) => shardOfEvent(id, K) === SHARD,
    );
    const ids = [MINE[0] as string, long[0] as string];
    stepShard(c, [
      clicks(
        START,
        ids.map((id) => click(id, m(0))),
      ),
    ]);
    const restored = createShardCore(OPTIONS, JSON.parse(JSON.stringify(snapshotShard(c))));
    const out = stepShard(restored, [
      clicks(
        START + 1,
        ids.map((id) => click(id, m(0) + 1)),
      ),
      barrier(START + 2, m(0)),
    ]);
    expect(out.counted).toBe(0);
    expect(out.duplicates).toBe(2);
    expect(out.partials[0]?.counts.eventCount).toBe(2);
    expect(restored.status.minutes).toBe(1);
  });
});
