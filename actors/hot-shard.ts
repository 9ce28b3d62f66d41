import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { Counter } from "prom-client";
import { assign, enqueueActions, fromCallback, fromPromise, setup } from "xstate";
import { STREAMS, SUBJECTS } from "../nats/layout.js";
import type { ShardOptions } from "../src/aggregate/shard-core.js";
import {
  createShardCore,
  type ShardCore,
  type ShardSnapshot,
  type ShardStepOutcome,
  shardDone,
  shardLiveOf,
  snapshotShard,
  stepShard,
} from "../src/aggregate/shard-core.js";
import type { Lease, PartitionLeases } from "../src/leases/partition-lease.js";
import { registry } from "../src/metrics/registry.js";
import type { SnapshotStore } from "../src/snapshots/snapshot-store.js";
import {
  encodeShardLive,
  encodeShardPartial,
  partialKey,
  type ShardPartial,
  shardLiveKey,
  shardSnapshotKey,
} from "../src/wire/hot-messages.js";
import {
  type ChildCommand,
  type ChildOutput,
  childOutput,
  killError,
} from "../supervisor/supervisor.js";
import { toStreamMessage } from "./aggregator.js";
import {
  type ConsumerEvent,
  type PullEvent,
  streamConsumer,
  unprovidedConsumer,
} from "./stream-consumer.js";

const shardEvents = new Counter({
  name: "adclick_hot_shard_events_total",
  help: "Hot ads' clicks counted by their shards, by disposition (counted, duplicate)",
  labelNames: ["partition", "disposition"] as const,
  registers: [registry],
});
const partialsWritten = new Counter({
  name: "adclick_hot_partials_total",
  help: "Partials hot shards wrote for their aggregators' barriers",
  labelNames: ["partition"] as const,
  registers: [registry],
});

/** How long the aggregating worker waits before it asks for a shard of its own partition. */
const SAME_WORKER_DELAY_MS = 10_000;

export interface HotShardInput {
  id: string;
  options: ShardOptions;
  snapshotEveryMs: number;
  maxBatchMessages: number;
  now: () => number;
}

export type HotShardEvent =
  | ChildCommand
  | ConsumerEvent
  | { type: "LEASE_HELD"; lease: Lease | null }
  | { type: "STANDBY"; holder: string }
  | { type: "LEASE_LOST"; error: unknown };

interface HotShardContext {
  id: string;
  options: ShardOptions;
  snapshotEveryMs: number;
  maxBatchMessages: number;
  now: () => number;
  lease: Lease | null;
  core?: ShardCore;
  snapshotRevision?: number;
  lastSnapshotAtMs: number;
  /** When the live counts were last written (about every second while clicks come). */
  lastLiveAtMs: number;
  inbox?: JsMsg[];
  partials: ShardPartial[];
  intent: "run" | "pause" | "stop";
  status: Record<string, unknown>;
  error?: unknown;
}

export interface ShardRestored {
  core: ShardCore;
  revision?: number;
}

const unprovided = <O, I>(what: string) =>
  fromPromise<O, I>(() => Promise.reject(new Error(`${what} is not provided`)));

/**
 * One shard of a hot ad (docs/hot-ads.md): it waits for its lease (one holder per shard, any
 * worker), restores from its snapshot (or starts at its epoch's first sequence), then reads
 * its partition's log in order: each batch is a pure step of its core whose partials (the
 * answers to its aggregator's barriers) are written to KV before the next batch; it snapshots
 * now and then and on an orderly stop. After its epoch was merged and every minute it kept is
 * purged, it ends for good (its supervisor removes it). KILL and a lost lease fail it at once.
 */
export const hotShardMachine = setup({
  types: {
    context: {} as HotShardContext,
    events: {} as HotShardEvent,
    input: {} as HotShardInput,
    output: {} as ChildOutput,
  },
  actors: {
    acquireLease: fromCallback<HotShardEvent, { options: ShardOptions }>(({ sendBack }) => {
      sendBack({ type: "LEASE_HELD", lease: null });
    }),
    watchLease: fromCallback<HotShardEvent, { lease: Lease | null }>(({ sendBack, input }) => {
      const lost = input.lease?.lost;
      if (!lost) return;
      const onLost = () => sendBack({ type: "LEASE_LOST", error: lost.reason });
      if (lost.aborted) onLost();
      else lost.addEventListener("abort", onLost, { once: true });
      return () => lost.removeEventListener("abort", onLost);
    }),
    releaseLease: fromPromise<void, { lease: Lease | null }>(async ({ input }) => {
      await input.lease?.release();
    }),
    restore: unprovided<ShardRestored, { options: ShardOptions }>("restore"),
    consumer: unprovidedConsumer,
    writePartials: unprovided<void, WriteInput>("writePartials"),
    saveSnapshot: unprovided<
      { revision: number },
      { options: ShardOptions; snapshot: ShardSnapshot; revision?: number; nowMs: number }
    >("saveSnapshot"),
  },
  guards: {
    stopRequested: ({ context }) => context.intent === "stop",
    pauseRequested: ({ context }) => context.intent === "pause",
    hasInbox: ({ context }) => context.inbox !== undefined,
    done: ({ context }) => context.core !== undefined && shardDone(context.core),
    snapshotDue: ({ context }) =>
      context.now() - context.lastSnapshotAtMs >= context.snapshotEveryMs,
    failed: ({ context }) => context.error !== undefined,
  },
  actions: {
    step: assign(({ context }) => {
      const core = context.core as ShardCore;
      const out: ShardStepOutcome = stepShard(core, (context.inbox ?? []).map(toStreamMessage));
      const p = String(core.options.partition);
      shardEvents.inc({ partition: p, disposition: "counted" }, out.counted);
      shardEvents.inc({ partition: p, disposition: "duplicate" }, out.duplicates);
      return { inbox: undefined, partials: out.partials, status: { ...core.status } };
    }),
    written: assign(({ context }) => ({
      partials: [],
      ...(writeInput(context).live ? { lastLiveAtMs: context.now() } : {}),
    })),
    pull: enqueueActions(({ enqueue }) =>
      enqueue.sendTo("consumer", { type: "PULL" } as PullEvent),
    ),
  },
}).createMachine({
  id: "hotShard",
  context: ({ input }) => ({
    id: input.id,
    options: input.options,
    snapshotEveryMs: input.snapshotEveryMs,
    maxBatchMessages: input.maxBatchMessages,
    now: input.now,
    lease: null,
    lastSnapshotAtMs: 0,
    lastLiveAtMs: 0,
    partials: [],
    intent: "run",
    status: {
      partition: input.options.partition,
      epoch: input.options.epoch,
      adId: input.options.adId,
      shard: input.options.shard,
      shards: input.options.shards,
    },
  }),
  initial: "standby",
  on: {
    KILL: { target: ".releasing", actions: assign({ error: ({ event }) => killError(event) }) },
  },
  states: {
    standby: {
      invoke: { src: "acquireLease", input: ({ context }) => ({ options: context.options }) },
      on: {
        STANDBY: {
          actions: assign({
            status: ({ context, event }) => ({ ...context.status, standbyFor: event.holder }),
          }),
        },
        LEASE_HELD: { target: "leased", actions: assign({ lease: ({ event }) => event.lease }) },
        STOP: { target: "stopped" },
      },
    },
    leased: {
      invoke: { src: "watchLease", input: ({ context }) => ({ lease: context.lease }) },
      on: {
        LEASE_LOST: { target: "releasing", actions: assign({ error: ({ event }) => event.error }) },
      },
      initial: "restoring",
      states: {
        restoring: {
          invoke: {
            src: "restore",
            input: ({ context }) => ({ options: context.options }),
            onDone: {
              target: "running",
              actions: assign(({ context, event }) => ({
                core: event.output.core,
                snapshotRevision: event.output.revision,
                lastSnapshotAtMs: context.now(),
                status: { ...event.output.core.status },
              })),
            },
            onError: {
              target: "#hotShard.releasing",
              actions: assign({ error: ({ event }) => event.error }),
            },
          },
          on: { STOP: { target: "#hotShard.releasing" } },
        },
        running: {
          invoke: {
            id: "consumer",
            src: "consumer",
            input: ({ context }) => ({
              kind: "ordered" as const,
              stream: STREAMS.clicks,
              filterSubjects: [SUBJECTS.clicks(context.options.partition)],
              startSeq: (context.core?.lastSeq ?? context.options.startSeq - 1) + 1,
              maxBatch: context.maxBatchMessages,
            }),
          },
          exit: assign({ inbox: undefined }),
          on: {
            BATCH: { actions: assign({ inbox: ({ event }) => event.msgs }) },
            CONSUMER_FAILED: {
              target: "#hotShard.releasing",
              actions: assign({ error: ({ event }) => event.error }),
            },
            PAUSE: { actions: assign({ intent: "pause" }) },
            STOP: { actions: assign({ intent: "stop" }) },
          },
          initial: "waiting",
          states: {
            waiting: {
              always: [
                { guard: "done", target: "#hotShard.leased.finishing" },
                { guard: "stopRequested", target: "#hotShard.leased.finishing" },
                { guard: "pauseRequested", target: "#hotShard.leased.paused" },
                { guard: "hasInbox", target: "writing", actions: ["step", "pull"] },
              ],
            },
            // The partials before anything else: the aggregator is waiting for them.
            writing: {
              invoke: {
                src: "writePartials",
                input: ({ context }) => writeInput(context),
                onDone: [
                  {
                    guard: "snapshotDue",
                    target: "snapshotting",
                    actions: "written",
                  },
                  { target: "waiting", actions: "written" },
                ],
                onError: {
                  target: "#hotShard.releasing",
                  actions: assign({ error: ({ event }) => event.error }),
                },
              },
            },
            snapshotting: {
              invoke: {
                src: "saveSnapshot",
                input: ({ context }) => snapshotInput(context),
                onDone: {
                  target: "waiting",
                  actions: assign(({ context, event }) => ({
                    snapshotRevision: event.output.revision,
                    lastSnapshotAtMs: context.now(),
                  })),
                },
                onError: {
                  target: "#hotShard.releasing",
                  actions: assign({ error: ({ event }) => event.error }),
                },
              },
            },
          },
        },
        paused: {
          entry: assign({ intent: "run" }),
          on: { RESUME: { target: "running" }, STOP: { target: "finishing" } },
        },
        finishing: {
          invoke: {
            src: "saveSnapshot",
            input: ({ context }) => snapshotInput(context),
            onDone: { target: "#hotShard.releasing" },
            onError: {
              target: "#hotShard.releasing",
              actions: assign({ error: ({ event }) => event.error }),
            },
          },
        },
      },
    },
    releasing: {
      on: { KILL: {}, STOP: {} },
      invoke: {
        src: "releaseLease",
        input: ({ context }) => ({ lease: context.lease }),
        onDone: [{ guard: "failed", target: "failed" }, { target: "stopped" }],
        onError: [{ guard: "failed", target: "failed" }, { target: "stopped" }],
      },
    },
    stopped: { type: "final" },
    failed: { type: "final" },
  },
  output: ({ context }) => childOutput(context.error),
});

interface WriteInput {
  partials: ShardPartial[];
  /** The live counts, when due. */
  live?: { key: string; value: ReturnType<typeof shardLiveOf> };
}

const LIVE_EVERY_MS = 1000;

function writeInput(context: HotShardContext): WriteInput {
  const core = context.core as ShardCore;
  if (context.now() - context.lastLiveAtMs < LIVE_EVERY_MS) return { partials: context.partials };
  const o = core.options;
  return {
    partials: context.partials,
    live: { key: shardLiveKey(o.partition, o.epoch, o.shard), value: shardLiveOf(core) },
  };
}

function snapshotInput(context: HotShardContext) {
  return {
    options: context.options,
    snapshot: snapshotShard(context.core as ShardCore),
    ...(context.snapshotRevision !== undefined ? { revision: context.snapshotRevision } : {}),
    nowMs: context.now(),
  };
}

export interface HotShardDeps {
  js: JetStreamClient;
  snapshots: SnapshotStore;
  /** KV_BUCKETS.hot: where partials go. */
  partials: KV;
  /** Without leases (tests), the shard runs at once. */
  leases?: PartitionLeases;
}

/** The shard machine with its effects bound to real NATS and KV handles. */
export function hotShardLogic(deps: HotShardDeps) {
  return hotShardMachine.provide({
    actors: {
      acquireLease: fromCallback<HotShardEvent, { options: ShardOptions }>(
        ({ sendBack, input }) => {
          const leases = deps.leases;
          if (!leases) {
            sendBack({ type: "LEASE_HELD", lease: null });
            return;
          }
          const stop = new AbortController();
          const o = input.options;
          // A shard is meant to run beside its aggregator's worker, not in it: the worker that
          // aggregates the partition lets the others ask first.
          const mine = leases.balance?.holderOf(o.partition) === leases.workerId;
          new Promise<void>((r) => setTimeout(r, mine ? SAME_WORKER_DELAY_MS : 0))
            .then(() =>
              leases.acquireWork(
                shardSnapshotKey(o.partition, o.epoch, o.shard),
                o.partition,
                stop.signal,
                (holder) => sendBack({ type: "STANDBY", holder }),
              ),
            )
            .then(
              (lease) => {
                if (stop.signal.aborted) void lease.release();
                else sendBack({ type: "LEASE_HELD", lease });
              },
              () => {},
            );
          return () => stop.abort();
        },
      ),
      restore: fromPromise<ShardRestored, { options: ShardOptions }>(async ({ input }) => {
        const o = input.options;
        const stored = await deps.snapshots.load<ShardSnapshot>(
          shardSnapshotKey(o.partition, o.epoch, o.shard),
        );
        if (!stored) return { core: createShardCore(o) };
        return { core: createShardCore(o, stored.snapshot.state), revision: stored.revision };
      }),
      consumer: streamConsumer(deps.js),
      writePartials: fromPromise<void, WriteInput>(async ({ input }) => {
        for (const p of input.partials) {
          await deps.partials.put(
            partialKey(p.partition, p.epoch, p.shard, p.minuteStartMs, p.asOfSeq),
            encodeShardPartial(p),
          );
        }
        if (input.live) await deps.partials.put(input.live.key, encodeShardLive(input.live.value));
        const first = input.partials[0];
        if (first)
          partialsWritten.inc({ partition: String(first.partition) }, input.partials.length);
      }),
      saveSnapshot: fromPromise<
        { revision: number },
        { options: ShardOptions; snapshot: ShardSnapshot; revision?: number; nowMs: number }
      >(async ({ input }) => {
        const o = input.options;
        const saved = await deps.snapshots.save<ShardSnapshot>(
          shardSnapshotKey(o.partition, o.epoch, o.shard),
          { streamSeq: input.snapshot.lastSeq, takenAtMs: input.nowMs, state: input.snapshot },
          input.revision,
        );
        return { revision: saved.revision };
      }),
    },
  });
}
