import type { JsMsg } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { createActor, fromCallback, fromPromise, SimulatedClock } from "xstate";
import {
  type AggregatorActorInput,
  aggregatorMachine,
  type LiveAnswer,
  type SnapshotDone,
  type SnapshotSaved,
  type SnapshotToSave,
} from "../../actors/aggregator.js";
import type { ConsumerEvent, PullEvent } from "../../actors/stream-consumer.js";
import { type Publication, restoreCore } from "../../src/aggregate/aggregator-core.js";
import { ActorKilledError } from "../../src/errors.js";
import { openEpoch } from "../../src/hot/epochs.js";
import type { Lease } from "../../src/leases/partition-lease.js";
import type { ClickEvent } from "../../src/model.js";
import type { ConsumerPlan } from "../../src/nats/stage-handler.js";
import type { PartialCounts } from "../../src/windows/merge-partials.js";
import {
  decodeAggregate,
  type MinuteRevision,
  TICK_HEADER,
} from "../../src/wire/aggregate-messages.js";
import { encodeClickMessage } from "../../src/wire/batch-codec.js";
import { encodeHotControl, HOT_TICK, type HotControl } from "../../src/wire/hot-messages.js";

// The aggregator actor with its effects replaced by recorders and a simulated clock: what it
// does between batches (snapshots, stop, kill, live queries, idle ticks) is decided by the
// machine alone, so it is tested here without NATS.

const T0 = Date.UTC(2024, 6, 9, 10, 0, 0);
const IDLE_MS = 10_000;

function click(i: number, atMs: number): ClickEvent {
  return {
    adId: `ad${i % 3}`,
    timestampMs: atMs,
    userId: "u",
    ip: "1.1.1.1",
    country: "USA",
    eventId: `c${i}`,
  };
}

let seq = 0;
/** A message of the partition as the consumer would hand it over. */
function msg(events: ClickEvent[], atMs: number): JsMsg {
  return {
    seq: ++seq,
    info: { timestampNanos: atMs * 1e6 },
    data: encodeClickMessage({ source: "web", progressMs: atMs, events }),
  } as unknown as JsMsg;
}

/** A promise and its resolver (an effect the test completes when it wants). */
function deferred() {
  let resolve: () => void = () => {};
  const promise = new Promise<void>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

/** A lease the test controls: `move()` fires its `moved` signal, `release` is recorded. */
function fakeLease() {
  const lost = new AbortController();
  const moved = new AbortController();
  let released = 0;
  const lease: Lease = {
    partition: 0,
    lost: lost.signal,
    moved: moved.signal,
    release: async () => {
      released++;
    },
  };
  return { lease, move: () => moved.abort(), released: () => released };
}

/** A hot control message (a barrier) as the consumer would hand it over. */
function hotMsg(control: HotControl, atMs: number): JsMsg {
  return {
    seq: ++seq,
    info: { timestampNanos: atMs * 1e6 },
    headers: { get: (k: string) => (k === TICK_HEADER ? HOT_TICK : "") },
    data: encodeHotControl(control),
  } as unknown as JsMsg;
}

function start(
  o: {
    snapshotEveryMs?: number;
    holdPublish?: boolean;
    leases?: () => Lease;
    /** Split this ad (2 shards) from the start. */
    hotAd?: string;
    partials?: () => Promise<Map<string, PartialCounts>>;
  } = {},
) {
  const clock = new SimulatedClock();
  clock.set(T0 + 3_600_000);
  const published: Publication[][] = [];
  const saved: SnapshotToSave[] = [];
  const pulls: number[] = [];
  let feed: (e: ConsumerEvent) => void = () => {};
  let publishGate = deferred();
  if (!o.holdPublish) publishGate.resolve();
  let acquired = 0;
  const logic = aggregatorMachine.provide({
    actors: {
      ...(o.leases
        ? {
            acquireLease: fromCallback(({ sendBack }) => {
              acquired++;
              sendBack({ type: "LEASE_HELD", lease: (o.leases as () => Lease)() });
            }),
          }
        : {}),
      restore: fromPromise(async ({ input }) => {
        if (!o.hotAd) return { core: restoreCore(input.options) };
        // Splitting on, but never deciding by itself here; the ad is split from the start.
        const core = restoreCore(input.options, undefined, { hotMinRatePerSec: 1e9 });
        openEpoch(core.state.hot, o.hotAd, 2, 1, []);
        return { core };
      }),
      fetchPartials: fromPromise(async () => {
        if (!o.partials) throw new Error("no partials in this test");
        return o.partials();
      }),
      consumer: fromCallback<PullEvent, ConsumerPlan, ConsumerEvent>(({ sendBack, receive }) => {
        feed = sendBack;
        receive(() => pulls.push(seq));
      }),
      publish: fromPromise(async ({ input }) => {
        await publishGate.promise;
        published.push(input.publications);
      }),
      saveSnapshot: fromPromise<SnapshotSaved, SnapshotToSave>(async ({ input }) => {
        saved.push(input);
        return { revision: saved.length, bytes: 100, takenAtMs: input.nowMs };
      }),
    },
  });
  const input: AggregatorActorInput = {
    id: "aggregator-0",
    partition: 0,
    aggregator: {
      allowedLatenessMs: 15_000,
      idleTimeoutMs: IDLE_MS,
      dimensions: ["country"],
      topK: 10,
      latePolicy: "amend",
    },
    snapshotEveryMs: o.snapshotEveryMs ?? 3_600_000,
    maxBatchMessages: 64,
    now: () => clock.now(),
  };
  const actor = createActor(logic, { clock, input }).start();
  const settle = () => new Promise((r) => setTimeout(r, 0));
  return {
    actor,
    clock,
    published,
    saved,
    pulls,
    settle,
    acquired: () => acquired,
    batch: async (msgs: JsMsg[]) => {
      feed({ type: "BATCH", msgs });
      await settle();
    },
    holdPublishes: () => {
      publishGate = deferred();
    },
    releasePublishes: async () => {
      publishGate.resolve();
      await settle();
    },
    state: () => JSON.stringify(actor.getSnapshot().value),
  };
}

/** A reply inbox: an actor that records what it is sent. */
function inbox() {
  const got: unknown[] = [];
  const ref = createActor(
    fromCallback(({ receive }) => {
      receive((e) => got.push(e));
    }),
  ).start();
  return { ref, got };
}

describe("the aggregator actor", () => {
  it("stops at a barrier until its hot shards' partials are in, then emits the merged minute", async () => {
    const gate = deferred();
    const partial = (n: number): PartialCounts => ({
      eventCount: n,
      ads: [["hot", n]],
      dims: { country: [["hot", "USA", n]] },
    });
    const a = start({
      hotAd: "hot",
      partials: async () => {
        await gate.promise;
        return new Map([
          ["1.0", partial(3)],
          ["1.1", partial(4)],
        ]);
      },
    });
    await a.settle();
    const hot = (i: number, at: number) => ({ ...click(i, at), adId: "hot" });
    await a.batch([msg([click(1, T0), hot(2, T0 + 1000), hot(3, T0 + 2000)], T0 + 2000)]);
    // The minute closes: not emitted, a barrier asked for instead.
    await a.batch([msg([click(4, T0 + 90_000)], T0 + 90_000)]);
    const barriers = a.published.flat().filter((p) => p.headers?.[TICK_HEADER] === HOT_TICK);
    expect(barriers.map((p) => p.msgId)).toEqual([`bar:0:${T0}:1`]);
    expect(a.published.flat().map((p) => p.msgId)).not.toContain(`min:0:${T0}:1`);
    // The barrier read back: the actor waits for the partials, publishing nothing meanwhile.
    const before = a.published.length;
    await a.batch([
      hotMsg(
        { kind: "barrier", minuteStartMs: T0, episode: 1, purgedThroughMs: null },
        T0 + 91_000,
      ),
    ]);
    expect(a.state()).toBe('{"leased":{"running":"merging"}}');
    expect(a.published).toHaveLength(before);
    gate.resolve();
    await a.settle();
    await a.settle();
    expect(a.state()).toBe('{"leased":{"running":"waiting"}}');
    const minute = a.published.flat().find((p) => p.msgId === `min:0:${T0}:1`);
    expect(minute).toBeDefined();
    const m = decodeAggregate((minute as Publication).payload) as MinuteRevision & {
      kind: "minute";
    };
    // ad1 counted here; the hot ad's 7 from its shards (its 2 clicks were theirs to count).
    expect(m.adCounts).toEqual([
      ["ad1", 1],
      ["hot", 7],
    ]);
    expect(m.eventCount).toBe(8);
  });

  it("a STOP while it waits at a barrier stops it without a final snapshot (the batch is not published)", async () => {
    const a = start({ hotAd: "hot", partials: () => new Promise(() => {}) });
    await a.settle();
    await a.batch([msg([{ ...click(1, T0), adId: "hot" }], T0)]);
    await a.batch([msg([click(2, T0 + 90_000)], T0 + 90_000)]);
    await a.batch([
      hotMsg(
        { kind: "barrier", minuteStartMs: T0, episode: 1, purgedThroughMs: null },
        T0 + 91_000,
      ),
    ]);
    expect(a.state()).toBe('{"leased":{"running":"merging"}}');
    const savedBefore = a.saved.length;
    const publishedBefore = a.published.length;
    a.actor.send({ type: "STOP" });
    await a.settle();
    expect(a.state()).toBe('"stopped"');
    expect(a.saved).toHaveLength(savedBefore);
    expect(a.published).toHaveLength(publishedBefore);
  });

  it("restores, then counts a batch, publishes what it made, and pulls the next batch", async () => {
    const a = start();
    await a.settle();
    expect(a.state()).toBe('{"leased":{"running":"waiting"}}');
    await a.batch([msg([click(1, T0), click(2, T0 + 1000)], T0 + 1000)]);
    // Progress reported; nothing closed yet.
    expect(a.published).toHaveLength(1);
    expect(a.pulls).toHaveLength(1);
    await a.batch([msg([click(3, T0 + 90_000)], T0 + 90_000)]);
    const subjects = a.published.flat().map((p) => p.msgId);
    expect(subjects).toContain(`min:0:${T0}:1`);
    expect(a.actor.getSnapshot().context.status).toMatchObject({ events: 3, lastSeq: seq });
  });

  it("answers live queries between steps from its context", async () => {
    const a = start();
    await a.settle();
    await a.batch([msg([click(1, T0), click(2, T0 + 1000)], T0 + 1000)]);
    const box = inbox();
    a.actor.send({
      type: "LIVE_QUERY",
      request: { fromMs: T0, toMs: T0 + 60_000 },
      replyTo: box.ref,
      requestId: "q1",
    });
    const answer = box.got[0] as LiveAnswer;
    expect(answer.requestId).toBe("q1");
    expect(answer.reply?.minutes).toHaveLength(1);
    expect(answer.reply?.minutes[0]?.ads.reduce((n, [, c]) => n + c, 0)).toBe(2);
  });

  it("takes SNAPSHOT_NOW after the batch being published, never in the middle of one", async () => {
    const a = start({ holdPublish: true });
    await a.settle();
    await a.batch([msg([click(1, T0)], T0)]);
    expect(a.state()).toBe('{"leased":{"running":"publishing"}}');
    const box = inbox();
    a.actor.send({ type: "SNAPSHOT_NOW", replyTo: box.ref, requestId: "s1" });
    await a.settle();
    expect(a.saved).toHaveLength(0);
    await a.releasePublishes();
    expect(a.saved).toHaveLength(1);
    expect(a.saved[0]?.streamSeq).toBe(seq);
    expect(box.got).toEqual([
      { type: "SNAPSHOT_DONE", requestId: "s1", id: "aggregator-0", ok: true },
    ] satisfies SnapshotDone[]);
  });

  it("on STOP finishes the batch, takes a final snapshot and stops", async () => {
    const a = start({ holdPublish: true });
    await a.settle();
    await a.batch([msg([click(1, T0)], T0)]);
    a.actor.send({ type: "STOP" });
    await a.settle();
    expect(a.actor.getSnapshot().status).toBe("active");
    const savedBefore = a.saved.length;
    await a.releasePublishes();
    // (A first start snapshots after its first batch anyway; the final one comes last.)
    expect(a.saved.length).toBeGreaterThan(savedBefore);
    expect(a.saved.at(-1)?.streamSeq).toBe(seq);
    expect(a.actor.getSnapshot().status).toBe("done");
    expect(a.actor.getSnapshot().output).toEqual({ failed: false });
  });

  it("hands over when its lease is moved: finishes the batch, final snapshot, releases, stands by again", async () => {
    const leases = [fakeLease(), fakeLease()];
    let next = 0;
    const a = start({
      holdPublish: true,
      leases: () => (leases[next++] as ReturnType<typeof fakeLease>).lease,
    });
    await a.settle();
    await a.batch([msg([click(1, T0)], T0)]);
    leases[0]?.move();
    await a.settle();
    // Not in the middle of a batch: the publish is still out.
    expect(a.state()).toBe('{"leased":{"running":"publishing"}}');
    expect(leases[0]?.released()).toBe(0);
    await a.releasePublishes();
    await a.settle();
    // The last saved snapshot holds everything counted; the lease went only after it.
    expect(a.saved.at(-1)?.streamSeq).toBe(seq);
    expect(leases[0]?.released()).toBe(1);
    // Back in standby, asking for the lease again (the balance decides when it may take it);
    // here the fake grants at once, and the actor restores and runs afresh.
    expect(a.acquired()).toBe(2);
    expect(a.state()).toBe('{"leased":{"running":"waiting"}}');
    expect(a.actor.getSnapshot().status).toBe("active");
  });

  it("a STOP during a hand-over stops it for good", async () => {
    const lease = fakeLease();
    const a = start({ holdPublish: true, leases: () => lease.lease });
    await a.settle();
    await a.batch([msg([click(1, T0)], T0)]);
    lease.move();
    await a.settle();
    a.actor.send({ type: "STOP" });
    await a.releasePublishes();
    await a.settle();
    expect(lease.released()).toBe(1);
    expect(a.acquired()).toBe(1);
    expect(a.actor.getSnapshot().status).toBe("done");
    expect(a.actor.getSnapshot().output).toEqual({ failed: false });
  });

  it("on KILL stops at once, without a final snapshot, failed with ACTOR_KILLED", async () => {
    const a = start({ holdPublish: true });
    await a.settle();
    await a.batch([msg([click(1, T0)], T0)]);
    a.actor.send({ type: "KILL", reason: "test" });
    await a.settle();
    expect(a.saved).toHaveLength(0);
    const out = a.actor.getSnapshot().output;
    expect(out?.failed).toBe(true);
    expect(out?.error).toBeInstanceOf(ActorKilledError);
  });

  it("pauses between batches and goes on from where it was when resumed", async () => {
    const a = start();
    await a.settle();
    await a.batch([msg([click(1, T0)], T0)]);
    a.actor.send({ type: "PAUSE" });
    await a.settle();
    expect(a.state()).toBe('{"leased":"paused"}');
    a.actor.send({ type: "RESUME" });
    await a.settle();
    expect(a.state()).toBe('{"leased":{"running":"waiting"}}');
    await a.batch([msg([click(2, T0 + 1000)], T0 + 1000)]);
    expect(a.actor.getSnapshot().context.status).toMatchObject({ events: 2 });
  });

  it("publishes an idle tick once input stopped for the idle timeout while a minute is held open", async () => {
    const a = start();
    await a.settle();
    await a.batch([msg([click(1, T0)], T0)]);
    const before = a.published.length;
    a.clock.increment(IDLE_MS - 1);
    await a.settle();
    expect(a.published).toHaveLength(before);
    a.clock.increment(1);
    await a.settle();
    const tick = a.published.at(-1)?.[0];
    expect(tick?.headers).toEqual({ "Adclick-Tick": "idle" });
    expect(tick?.subject).toBe("clicks.0");
  });

  it("snapshots periodically, by its injected clock", async () => {
    const a = start({ snapshotEveryMs: 10_000 });
    await a.settle();
    await a.batch([msg([click(1, T0)], T0)]);
    expect(a.saved).toHaveLength(1); // the first batch: never snapshotted before
    await a.batch([msg([click(2, T0 + 1000)], T0 + 1000)]);
    expect(a.saved).toHaveLength(1);
    a.clock.increment(10_000);
    await a.batch([msg([click(3, T0 + 2000)], T0 + 2000)]);
    expect(a.saved).toHaveLength(2);
  });
});
