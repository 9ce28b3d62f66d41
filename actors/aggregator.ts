import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import type { KV } from "@nats-io/kv";
import { headers as natsHeaders } from "@nats-io/nats-core";
import { Counter, Gauge, Histogram } from "prom-client";
import { type AnyActorRef, assign, enqueueActions, fromCallback, fromPromise, setup } from "xstate";
import { STREAMS, SUBJECTS } from "../nats/layout.js";
import {
  type AggregatorCore,
  type AggregatorSnapshotState,
  aggregatorSnapshotKey,
  answerLiveQuery,
  type BarrierStop,
  type BatchOutcome,
  idleTick,
  idleTickWanted,
  type Publication,
  restoreCore,
  resumeAtBarrier,
  type ShardLive,
  type StreamMessage,
  snapshotStateOf,
  stepBatch,
} from "../src/aggregate/aggregator-core.js";
import { reportSources } from "../src/aggregate/source-metrics.js";
import { type AdclickErrorCode, errorCodeOf, messageOf } from "../src/errors.js";
import { type HotEpochSnapshot, liveEpochs, snapshotEpoch } from "../src/hot/epochs.js";
import type { HotDetectorOptions } from "../src/hot/hot-detector.js";
import { BatchPublisher } from "../src/ingest/batch-publisher.js";
import type { Lease, PartitionLeases } from "../src/leases/partition-lease.js";
import { registry } from "../src/metrics/registry.js";
import { ONE_MINUTE_MS } from "../src/model.js";
import type { LiveReply, LiveRequest } from "../src/query/live.js";
import type { SnapshotStore } from "../src/snapshots/snapshot-store.js";
import type { PartialCounts } from "../src/windows/merge-partials.js";
import type { AggregatorOptions } from "../src/windows/partition-aggregator.js";
import { TICK_HEADER } from "../src/wire/aggregate-messages.js";
import {
  decodeShardLive,
  decodeShardPartial,
  epochsKey,
  HOT_TICK,
  partialKey,
} from "../src/wire/hot-messages.js";
import {
  type ChildCommand,
  type ChildOutput,
  type ChildSpec,
  childOutput,
  killError,
} from "../supervisor/supervisor.js";
import {
  type ConsumerEvent,
  type PullEvent,
  streamConsumer,
  unprovidedConsumer,
} from "./stream-consumer.js";

const eventsIn = new Counter({
  name: "adclick_aggregator_events_total",
  help: "Clicks seen by aggregators, by disposition (counted, duplicate, amended: counted into a closed minute, late_horizon: past the amendment horizon, left to the late repair, late_dropped: late under policy drop)",
  labelNames: ["partition", "disposition"] as const,
  registers: [registry],
});
const windowsClosed = new Counter({
  name: "adclick_aggregator_windows_emitted_total",
  help: "Minute windows emitted to the aggregates stream (first emissions and amendments)",
  labelNames: ["partition", "kind"] as const,
  registers: [registry],
});
const watermarkLag = new Gauge({
  name: "adclick_aggregator_watermark_lag_seconds",
  help: "Wall clock minus the partition's event-time watermark",
  labelNames: ["partition"] as const,
  registers: [registry],
});
const watermarkHeld = new Gauge({
  name: "adclick_watermark_held_seconds",
  help: "Event time the partition's watermark is held behind its most advanced source by slower ones",
  labelNames: ["partition"] as const,
  registers: [registry],
});
const holdDuration = new Histogram({
  name: "adclick_watermark_hold_seconds",
  help: "How long (stream time) a slower source held the partition's watermark back, per hold",
  labelNames: ["partition"] as const,
  buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
  registers: [registry],
});
const emitLatency = new Histogram({
  name: "adclick_aggregator_emit_latency_seconds",
  help: "Event time to emission: wall clock at emission minus the end of the emitted minute",
  labelNames: ["partition"] as const,
  buckets: [1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300, 600],
  registers: [registry],
});
const hotChanges = new Counter({
  name: "adclick_hot_changes_total",
  help: "Hot ads split into shards (kind split) and merged back (kind merge)",
  labelNames: ["partition", "kind"] as const,
  registers: [registry],
});
const hotAds = new Gauge({
  name: "adclick_hot_ads",
  help: "Ads of the partition split into shards now",
  labelNames: ["partition"] as const,
  registers: [registry],
});
const hotAdRate = new Gauge({
  name: "adclick_hot_ad_rate",
  help: "Clicks per second (stream time, guaranteed lower bound) of the partition's hottest split ad",
  labelNames: ["partition"] as const,
  registers: [registry],
});
const barrierWait = new Histogram({
  name: "adclick_hot_barrier_wait_seconds",
  help: "How long an aggregator waited at a barrier for its hot shards' partials",
  labelNames: ["partition"] as const,
  buckets: [0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});
const snapshotBytes = new Gauge({
  name: "adclick_snapshot_bytes",
  help: "Size of the latest snapshot",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const snapshotSeconds = new Histogram({
  name: "adclick_snapshot_seconds",
  help: "Time to take and save a snapshot",
  labelNames: ["actor"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});
const snapshotAge = new Gauge({
  name: "adclick_snapshot_age_seconds",
  help: "Seconds since the actor's last saved snapshot",
  labelNames: ["actor"] as const,
  registers: [registry],
});

export interface AggregatorActorInput {
  id: string;
  partition: number;
  aggregator: Omit<AggregatorOptions, "partition">;
  /** Snapshot at most this often while input flows (and on orderly stop). */
  snapshotEveryMs: number;
  maxBatchMessages: number;
  /** The wall clock (snapshot times, metrics, the idle tick's period). */
  now: () => number;
  /** Hot-ad splitting (docs/hot-ads.md): its settings, or null for off. */
  hot?: HotDetectorOptions | null;
}

/** A reply to SNAPSHOT_NOW. */
export type SnapshotDone = {
  type: "SNAPSHOT_DONE";
  requestId: string;
  id: string;
  ok: boolean;
  error?: string;
  /** The error's catalogue code (e.g. SNAPSHOT_CONFLICT: another aggregator saved since). */
  code?: AdclickErrorCode;
};
/** A reply to LIVE_QUERY; `reply` is undefined where the partition is not aggregated (standby). */
export type LiveAnswer = { type: "LIVE_ANSWER"; requestId: string; reply?: LiveReply };

export type AggregatorEvent =
  | ChildCommand
  | ConsumerEvent
  | { type: "SNAPSHOT_NOW"; replyTo?: AnyActorRef; requestId?: string }
  | { type: "LIVE_QUERY"; request: LiveRequest; replyTo: AnyActorRef; requestId: string }
  | { type: "STANDBY"; holder: string }
  | { type: "LEASE_HELD"; lease: Lease | null }
  | { type: "LEASE_LOST"; error: unknown }
  /** The lease balance assigned the partition elsewhere: stop in order, release, stand by. */
  | { type: "HAND_OVER" }
  /** A hot shard's live counts changed (none: gone). */
  | { type: "SHARD_LIVE"; key: string; live?: ShardLive };

interface Waiter {
  replyTo?: AnyActorRef;
  requestId?: string;
}

interface AggregatorContext {
  id: string;
  options: AggregatorOptions;
  hot: HotDetectorOptions | null;
  /** The live epochs last written for the shard pools (their JSON), to write only changes. */
  epochsWritten?: string;
  /** What the hot shards last said of their minutes, by KV key: merged into live answers. */
  shardLive: Map<string, ShardLive>;
  snapshotEveryMs: number;
  maxBatchMessages: number;
  now: () => number;
  lease: Lease | null;
  core?: AggregatorCore;
  snapshotRevision?: number;
  /** The batch the consumer handed over, not yet processed. */
  inbox?: JsMsg[];
  /** What the last batch made, to publish before the next. */
  outbox: Publication[];
  outcome?: BatchOutcome;
  /** SNAPSHOT_NOW requests waiting for the next snapshot. */
  waiters: Waiter[];
  intent: "run" | "pause" | "stop" | "handover";
  /** What `adclick admin actors` shows (the supervisor reads it). */
  status: Record<string, unknown>;
  error?: unknown;
}

/** What restoring yields. */
export interface Restored {
  core: AggregatorCore;
  revision?: number;
}

export interface SnapshotSaved {
  revision: number;
  bytes: number;
  takenAtMs: number;
}

/** What saving a snapshot is given. */
export interface SnapshotToSave {
  partition: number;
  streamSeq: number;
  state: AggregatorSnapshotState;
  /** The revision the last save left (compare-and-set); none for the first. */
  revision?: number;
  nowMs: number;
}

/** A stand-in until the composition root provides the effect (see aggregatorLogic). */
const unprovided = <O, I>(what: string) =>
  fromPromise<O, I>(() => Promise.reject(new Error(`${what} is not provided`)));

export const toStreamMessage = (m: JsMsg): StreamMessage => {
  const tick = m.headers?.get(TICK_HEADER);
  return {
    seq: m.seq,
    timestampMs: Math.floor(m.info.timestampNanos / 1e6),
    tick: tick !== undefined && tick !== "",
    ...(tick === HOT_TICK ? { hot: true } : {}),
    data: m.data,
  };
};

/** What the publish effect is given: the batch's publications, and the epochs if they changed. */
export interface PublishInput {
  publications: Publication[];
  /** The partition's live epochs, for the shard pools, when they changed. */
  epochs?: { partition: number; epochs: HotEpochSnapshot[] };
}

/** The live epochs of a core as the shard pools read them. */
function epochsOf(core: AggregatorCore): HotEpochSnapshot[] {
  return liveEpochs(core.state.hot).map(snapshotEpoch);
}

/**
 * The aggregator actor of one partition. It waits for the partition's lease (standby while
 * another worker holds it), restores its core from the snapshot, then owns its loop: its
 * consumer feeds batches of clicks.<p> and clicks.progress into its mailbox; each batch is a
 * pure step of the core (src/aggregate/aggregator-core.ts) whose publications are then
 * published and flushed; snapshots are taken between batches (periodically, on SNAPSHOT_NOW,
 * and on an orderly stop); live queries are answered from its context between steps. An idle
 * timer asks for an idle tick when input stopped while a source holds minutes open.
 *
 * Effects (lease, restore, publish, snapshot) are invoked actors the composition root provides
 * ({@link aggregatorLogic}); the wall clock is injected. KILL and a lost lease fail it at once,
 * without a final snapshot; a snapshot that loses its compare-and-set (another aggregator of
 * the partition saved since we restored) fails it too: the supervisor restarts it afresh.
 */
export const aggregatorMachine = setup({
  types: {
    context: {} as AggregatorContext,
    events: {} as AggregatorEvent,
    input: {} as AggregatorActorInput,
    output: {} as ChildOutput,
  },
  actors: {
    acquireLease: fromCallback<AggregatorEvent, { partition: number }>(({ sendBack }) => {
      sendBack({ type: "LEASE_HELD", lease: null });
    }),
    watchLease: fromCallback<AggregatorEvent, { lease: Lease | null }>(({ sendBack, input }) => {
      const lease = input.lease;
      if (!lease) return;
      const { lost, moved } = lease;
      const onLost = () => sendBack({ type: "LEASE_LOST", error: lost.reason });
      const onMoved = () => sendBack({ type: "HAND_OVER" });
      if (lost.aborted) onLost();
      else lost.addEventListener("abort", onLost, { once: true });
      if (moved.aborted) onMoved();
      else moved.addEventListener("abort", onMoved, { once: true });
      return () => {
        lost.removeEventListener("abort", onLost);
        moved.removeEventListener("abort", onMoved);
      };
    }),
    releaseLease: fromPromise<void, { lease: Lease | null }>(async ({ input }) => {
      await input.lease?.release();
    }),
    restore: unprovided<Restored, { options: AggregatorOptions; hot: HotDetectorOptions | null }>(
      "restore",
    ),
    consumer: unprovidedConsumer,
    publish: unprovided<void, PublishInput>("publish"),
    fetchPartials: unprovided<Map<string, PartialCounts>, { partition: number; stop: BarrierStop }>(
      "fetchPartials",
    ),
    watchShardLive: fromCallback<AggregatorEvent, { partition: number }>(() => {}),
    saveSnapshot: unprovided<SnapshotSaved, SnapshotToSave>("saveSnapshot"),
  },
  delays: {
    idle: ({ context }) => context.options.idleTimeoutMs,
  },
  guards: {
    stopRequested: ({ context }) => context.intent === "stop" || context.intent === "handover",
    handingOver: ({ context }) => context.intent === "handover",
    pauseRequested: ({ context }) => context.intent === "pause",
    snapshotRequested: ({ context }) => context.waiters.length > 0,
    hasInbox: ({ context }) => context.inbox !== undefined,
    atBarrier: ({ context }) => context.outcome?.stop !== undefined,
    snapshotDue: ({ context }) =>
      context.now() - Number(context.core?.status.lastSnapshotAtMs ?? 0) >= context.snapshotEveryMs,
    tickWanted: ({ context }) => context.core !== undefined && idleTickWanted(context.core),
    failed: ({ context }) => context.error !== undefined,
  },
  actions: {
    /** The pure step: the batch in the inbox goes through the core; its publications wait in the outbox. */
    step: assign(({ context }) => {
      const core = context.core as AggregatorCore;
      const outcome = stepBatch(core, (context.inbox ?? []).map(toStreamMessage));
      return { inbox: undefined, outbox: outcome.publications, outcome };
    }),
    /** The partials of the barrier the step stopped at are in: merge, then step the rest. */
    resume: assign(({ context }, partials: Map<string, PartialCounts>) => {
      const core = context.core as AggregatorCore;
      const outcome = context.outcome as BatchOutcome;
      const rest = (outcome.stop as BarrierStop).rest;
      resumeAtBarrier(core, outcome, partials);
      stepBatch(core, rest, outcome);
      return { outbox: outcome.publications, outcome };
    }),
    pull: enqueueActions(({ enqueue }) =>
      enqueue.sendTo("consumer", { type: "PULL" } as PullEvent),
    ),
    observe: ({ context }) => {
      const core = context.core;
      const o = context.outcome;
      if (!core || !o) return;
      const labels = { partition: String(core.partition) };
      eventsIn.inc({ ...labels, disposition: "counted" }, o.counted);
      eventsIn.inc({ ...labels, disposition: "duplicate" }, o.duplicates);
      eventsIn.inc({ ...labels, disposition: "amended" }, o.amended);
      eventsIn.inc({ ...labels, disposition: "late_horizon" }, o.lateHorizon);
      eventsIn.inc({ ...labels, disposition: "late_dropped" }, o.lateDropped);
      eventsIn.inc({ ...labels, disposition: "routed" }, o.routed);
      for (const h of o.hotChanges) hotChanges.inc({ ...labels, kind: h.kind });
      const hot = core.status.hot;
      hotAds.set(labels, hot?.ads.length ?? 0);
      hotAdRate.set(labels, hot ? Math.max(0, ...hot.ads.map((a) => a.ratePerSec)) : 0);
      const now = context.now();
      for (const e of o.emitted) {
        windowsClosed.inc({ ...labels, kind: e.kind });
        if (e.kind === "closed")
          emitLatency.observe(labels, (now - (e.minuteStartMs + ONE_MINUTE_MS)) / 1000);
      }
      for (const ms of o.holdsEndedMs) holdDuration.observe(labels, ms / 1000);
      if (Number.isFinite(core.status.watermarkMs))
        watermarkLag.set(labels, (now - core.status.watermarkMs) / 1000);
      watermarkHeld.set(labels, core.status.heldMs / 1000);
      if (core.status.lastSnapshotAtMs)
        snapshotAge.set({ actor: context.id }, (now - core.status.lastSnapshotAtMs) / 1000);
      reportSources(core.partition, core.status);
    },
    answerLive: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== "LIVE_QUERY") return;
      const answer: LiveAnswer = {
        type: "LIVE_ANSWER",
        requestId: event.requestId,
        ...(context.core
          ? { reply: answerLiveQuery(context.core, event.request, context.shardLive.values()) }
          : {}),
      };
      enqueue.sendTo(event.replyTo, answer);
    }),
    refuseSnapshot: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== "SNAPSHOT_NOW" || !event.replyTo) return;
      const done: SnapshotDone = {
        type: "SNAPSHOT_DONE",
        requestId: event.requestId ?? "",
        id: context.id,
        ok: false,
        error: "not aggregating here (standby or paused)",
      };
      enqueue.sendTo(event.replyTo, done);
    }),
    /** The outbox is out; the epochs written (if they were) are what the pools now see. */
    published: assign(({ context }) => {
      const epochs = publishInput(context).epochs;
      return {
        outbox: [],
        ...(epochs ? { epochsWritten: JSON.stringify(epochs.epochs) } : {}),
      };
    }),
    /** Back to standby after a hand-over: nothing of the partition stays here. */
    forgetPartition: assign(({ context }) => ({
      lease: null,
      core: undefined,
      snapshotRevision: undefined,
      inbox: undefined,
      outbox: [],
      outcome: undefined,
      intent: "run" as const,
      status: { partition: context.options.partition },
      // Taken again later, it writes its epochs afresh (another worker may have written since).
      epochsWritten: undefined,
      shardLive: new Map(),
    })),
    /** A snapshot is saved: the next one compares against its revision; SNAPSHOT_NOW is answered. */
    snapshotSaved: enqueueActions(({ context, enqueue }, saved: SnapshotSaved) => {
      const core = context.core as AggregatorCore;
      core.status.lastSnapshotAtMs = saved.takenAtMs;
      core.status.snapshotBytes = saved.bytes;
      snapshotBytes.set({ actor: context.id }, saved.bytes);
      for (const [to, done] of snapshotReplies(context)) enqueue.sendTo(to, done);
      enqueue.assign({ snapshotRevision: saved.revision, waiters: [] });
    }),
    /** A snapshot failed (e.g. SNAPSHOT_CONFLICT): SNAPSHOT_NOW is answered, and the actor fails. */
    snapshotFailed: enqueueActions(({ context, enqueue }, params: { error: unknown }) => {
      for (const [to, done] of snapshotReplies(context, params.error)) enqueue.sendTo(to, done);
      enqueue.assign({ error: params.error, waiters: [] });
    }),
  },
}).createMachine({
  id: "aggregator",
  context: ({ input }) => ({
    id: input.id,
    options: { ...input.aggregator, partition: input.partition },
    hot: input.hot ?? null,
    snapshotEveryMs: input.snapshotEveryMs,
    maxBatchMessages: input.maxBatchMessages,
    now: input.now,
    lease: null,
    outbox: [],
    waiters: [],
    intent: "run",
    status: { partition: input.partition },
    shardLive: new Map(),
  }),
  initial: "standby",
  on: {
    LIVE_QUERY: { actions: "answerLive" },
    SNAPSHOT_NOW: { actions: "refuseSnapshot" },
    KILL: {
      target: ".releasing",
      actions: assign({
        error: ({ event }) => killError(event),
      }),
    },
  },
  states: {
    // Waiting for the partition's lease: one worker aggregates a partition at a time.
    standby: {
      invoke: {
        src: "acquireLease",
        input: ({ context }) => ({ partition: context.options.partition }),
      },
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
        LEASE_LOST: {
          target: "releasing",
          actions: assign({ error: ({ event }) => event.error }),
        },
      },
      initial: "restoring",
      states: {
        restoring: {
          invoke: {
            src: "restore",
            input: ({ context }) => ({ options: context.options, hot: context.hot }),
            onDone: {
              target: "running",
              actions: assign(({ event }) => ({
                core: event.output.core,
                snapshotRevision: event.output.revision,
                status: event.output.core.status as unknown as Record<string, unknown>,
              })),
            },
            onError: {
              target: "#aggregator.releasing",
              actions: assign({ error: ({ event }) => event.error }),
            },
          },
          on: {
            STOP: { target: "#aggregator.releasing" },
            HAND_OVER: { target: "#aggregator.releasing", actions: assign({ intent: "handover" }) },
          },
        },
        running: {
          invoke: [
            {
              src: "watchShardLive",
              input: ({ context }) => ({ partition: context.options.partition }),
            },
            {
              id: "consumer",
              src: "consumer",
              input: ({ context }) => ({
                kind: "ordered" as const,
                stream: STREAMS.clicks,
                filterSubjects: [SUBJECTS.clicks(context.options.partition), SUBJECTS.progress],
                startSeq: (context.core?.status.lastSeq ?? 0) + 1,
                maxBatch: context.maxBatchMessages,
              }),
            },
          ],
          exit: assign({ inbox: undefined }),
          on: {
            BATCH: { actions: assign({ inbox: ({ event }) => event.msgs }) },
            SHARD_LIVE: {
              actions: assign({
                shardLive: ({ context, event }) => {
                  const next = new Map(context.shardLive);
                  if (event.live) next.set(event.key, event.live);
                  else next.delete(event.key);
                  return next;
                },
              }),
            },
            CONSUMER_FAILED: {
              target: "#aggregator.releasing",
              actions: assign({ error: ({ event }) => event.error }),
            },
            PAUSE: { actions: assign({ intent: "pause" }) },
            STOP: { actions: assign({ intent: "stop" }) },
            // A stop wins over a hand-over: both end in the same final snapshot and release.
            HAND_OVER: {
              guard: ({ context }) => context.intent === "run",
              actions: assign({ intent: "handover" }),
            },
            SNAPSHOT_NOW: {
              actions: assign({
                waiters: ({ context, event }) => [
                  ...context.waiters,
                  { replyTo: event.replyTo, requestId: event.requestId },
                ],
              }),
            },
          },
          initial: "waiting",
          states: {
            waiting: {
              always: [
                { guard: "stopRequested", target: "#aggregator.leased.finishing" },
                { guard: "pauseRequested", target: "#aggregator.leased.paused" },
                { guard: "snapshotRequested", target: "snapshotting" },
                { guard: "hasInbox", target: "stepped", actions: ["step", "pull"] },
              ],
              after: {
                idle: [
                  { guard: "tickWanted", target: "ticking" },
                  { target: "waiting", reenter: true },
                ],
              },
            },
            // A batch stepped: it stopped at a barrier (merge the hot shards' partials first) or
            // its publications go out.
            stepped: {
              always: [
                { guard: "atBarrier", target: "merging" },
                { target: "publishing", actions: "observe" },
              ],
            },
            merging: {
              invoke: {
                src: "fetchPartials",
                input: ({ context }) => ({
                  partition: context.options.partition,
                  stop: context.outcome?.stop as BarrierStop,
                }),
                onDone: {
                  target: "stepped",
                  actions: { type: "resume", params: ({ event }) => event.output },
                },
                onError: {
                  target: "#aggregator.releasing",
                  actions: assign({ error: ({ event }) => event.error }),
                },
              },
              on: {
                // Mid-batch: nothing of it may be snapshotted before it is published. Stop
                // without a final snapshot; the next holder replays from the last one.
                STOP: { target: "#aggregator.releasing" },
                HAND_OVER: {
                  target: "#aggregator.releasing",
                  actions: assign({ intent: "handover" }),
                },
              },
            },
            publishing: {
              invoke: {
                src: "publish",
                input: ({ context }) => publishInput(context),
                onDone: [
                  { guard: "snapshotDue", target: "snapshotting", actions: "published" },
                  { target: "waiting", actions: "published" },
                ],
                onError: {
                  target: "#aggregator.releasing",
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
                  actions: { type: "snapshotSaved", params: ({ event }) => event.output },
                },
                onError: {
                  target: "#aggregator.releasing",
                  actions: {
                    type: "snapshotFailed",
                    params: ({ event }) => ({ error: event.error }),
                  },
                },
              },
            },
            ticking: {
              invoke: {
                src: "publish",
                input: ({ context }) => ({
                  publications: [
                    idleTick(
                      context.core as AggregatorCore,
                      Math.floor(context.now() / context.options.idleTimeoutMs),
                    ),
                  ],
                }),
                onDone: { target: "waiting" },
                onError: {
                  target: "#aggregator.releasing",
                  actions: assign({ error: ({ event }) => event.error }),
                },
              },
            },
          },
        },
        paused: {
          entry: assign({ intent: "run" }),
          on: {
            RESUME: { target: "running" },
            STOP: { target: "finishing" },
          },
        },
        // Orderly stop (or hand-over): everything processed is published; save where we are.
        finishing: {
          on: { STOP: { actions: assign({ intent: "stop" }) } },
          invoke: {
            src: "saveSnapshot",
            input: ({ context }) => snapshotInput(context),
            onDone: {
              target: "#aggregator.releasing",
              actions: { type: "snapshotSaved", params: ({ event }) => event.output },
            },
            onError: {
              target: "#aggregator.releasing",
              actions: { type: "snapshotFailed", params: ({ event }) => ({ error: event.error }) },
            },
          },
        },
      },
    },
    releasing: {
      entry: ({ context }) => reportSources(context.options.partition, undefined),
      on: { KILL: {}, STOP: { actions: assign({ intent: "stop" }) } },
      invoke: {
        src: "releaseLease",
        input: ({ context }) => ({ lease: context.lease }),
        onDone: [
          { guard: "failed", target: "failed" },
          { guard: "handingOver", target: "standby", actions: "forgetPartition" },
          { target: "stopped" },
        ],
        onError: [
          { guard: "failed", target: "failed" },
          { guard: "handingOver", target: "standby", actions: "forgetPartition" },
          { target: "stopped" },
        ],
      },
    },
    stopped: { type: "final" },
    failed: { type: "final" },
  },
  output: ({ context }) => childOutput(context.error),
});

/** The answers to the SNAPSHOT_NOW requests waiting for this snapshot. */
function snapshotReplies(
  context: AggregatorContext,
  error?: unknown,
): [AnyActorRef, SnapshotDone][] {
  return context.waiters.flatMap((w) => {
    if (!w.replyTo) return [];
    const code = errorCodeOf(error);
    const done: SnapshotDone = {
      type: "SNAPSHOT_DONE",
      requestId: w.requestId ?? "",
      id: context.id,
      ok: error === undefined,
      ...(error !== undefined ? { error: messageOf(error) } : {}),
      ...(code ? { code } : {}),
    };
    return [[w.replyTo, done]];
  });
}

function publishInput(context: AggregatorContext): PublishInput {
  const core = context.core;
  if (!core?.hotDetector) return { publications: context.outbox };
  const epochs = epochsOf(core);
  const json = JSON.stringify(epochs);
  // Written once on the first batch (the pools may have missed a change before a restart).
  if (json === context.epochsWritten) return { publications: context.outbox };
  return { publications: context.outbox, epochs: { partition: core.partition, epochs } };
}

function snapshotInput(context: AggregatorContext): SnapshotToSave {
  const core = context.core as AggregatorCore;
  return {
    partition: core.partition,
    streamSeq: core.status.lastSeq,
    state: snapshotStateOf(core),
    ...(context.snapshotRevision !== undefined ? { revision: context.snapshotRevision } : {}),
    nowMs: context.now(),
  };
}

/** The effects the aggregator needs, from the composition root. */
export interface AggregatorDeps {
  js: JetStreamClient;
  snapshots: SnapshotStore;
  /** Without leases (tests, tools), the aggregator runs at once. */
  leases?: PartitionLeases;
  /** Hot ads: the shards' partials (KV_BUCKETS.hot) and where the epochs go (the snapshots bucket). */
  hot?: { partials: KV; epochs: KV };
}

/** The aggregator machine with its effects bound to real NATS and KV handles. */
export function aggregatorLogic(deps: AggregatorDeps) {
  return aggregatorMachine.provide({
    actors: {
      acquireLease: fromCallback<AggregatorEvent, { partition: number }>(({ sendBack, input }) => {
        const leases = deps.leases;
        if (!leases) {
          sendBack({ type: "LEASE_HELD", lease: null });
          return;
        }
        const stop = new AbortController();
        leases
          .acquire(input.partition, stop.signal, (holder) => sendBack({ type: "STANDBY", holder }))
          .then(
            (lease) => {
              if (stop.signal.aborted) void lease.release();
              else sendBack({ type: "LEASE_HELD", lease });
            },
            () => {}, // aborted while waiting
          );
        return () => stop.abort();
      }),
      restore: fromPromise<
        Restored,
        { options: AggregatorOptions; hot: HotDetectorOptions | null }
      >(async ({ input }) => {
        const stored = await deps.snapshots.load<AggregatorSnapshotState>(
          aggregatorSnapshotKey(input.options.partition),
        );
        // Without somewhere to put partials nothing could merge them: no splitting.
        const hot = deps.hot ? input.hot : null;
        if (!stored) return { core: restoreCore(input.options, undefined, hot) };
        return {
          core: restoreCore(
            input.options,
            {
              state: stored.snapshot.state,
              streamSeq: stored.snapshot.streamSeq,
              takenAtMs: stored.snapshot.takenAtMs,
            },
            hot,
          ),
          revision: stored.revision,
        };
      }),
      fetchPartials: fromPromise<
        Map<string, PartialCounts>,
        { partition: number; stop: BarrierStop }
      >(async ({ input, signal }) => {
        const kv = deps.hot?.partials;
        if (!kv) throw new Error("hot partials bucket not provided");
        const started = performance.now();
        const got = await fetchShardPartials(kv, input.partition, input.stop, signal);
        barrierWait.observe(
          { partition: String(input.partition) },
          (performance.now() - started) / 1000,
        );
        return got;
      }),
      consumer: streamConsumer(deps.js),
      watchShardLive: fromCallback<AggregatorEvent, { partition: number }>(
        ({ sendBack, input }) => {
          const kv = deps.hot?.partials;
          if (!kv) return;
          let stopped = false;
          let watcher: { stop(): void } | undefined;
          // Live counts only: a watch that breaks leaves open minutes without them until the
          // aggregator restarts, never a wrong stored count.
          void (async () => {
            const w = await kv.watch({ key: `live.${input.partition}.>` });
            watcher = w;
            if (stopped) w.stop();
            for await (const e of w) {
              if (e.operation !== "PUT" || e.length === 0) {
                sendBack({ type: "SHARD_LIVE", key: e.key });
                continue;
              }
              try {
                sendBack({
                  type: "SHARD_LIVE",
                  key: e.key,
                  live: decodeShardLive<ShardLive>(e.value),
                });
              } catch {
                // not ours to fail on
              }
            }
          })().catch(() => {});
          return () => {
            stopped = true;
            watcher?.stop();
          };
        },
      ),
      publish: fromPromise<void, PublishInput>(async ({ input }) => {
        if (input.epochs && deps.hot) {
          // Before the barriers that may need them: the pools start the shards from it.
          await deps.hot.epochs.put(
            epochsKey(input.epochs.partition),
            JSON.stringify(input.epochs.epochs),
          );
        }
        if (input.publications.length === 0) return;
        const publisher = new BatchPublisher(deps.js, { label: "aggregates" });
        for (const p of input.publications) {
          let h: ReturnType<typeof natsHeaders> | undefined;
          if (p.headers) {
            h = natsHeaders();
            for (const [k, v] of Object.entries(p.headers)) h.set(k, v);
          }
          await publisher.publish({
            subject: p.subject,
            msgId: p.msgId,
            payload: p.payload,
            events: p.events,
            ...(h ? { headers: h } : {}),
          });
        }
        await publisher.flush();
      }),
      saveSnapshot: fromPromise<SnapshotSaved, SnapshotToSave>(async ({ input }) => {
        const started = performance.now();
        const saved = await deps.snapshots.save<AggregatorSnapshotState>(
          aggregatorSnapshotKey(input.partition),
          { streamSeq: input.streamSeq, takenAtMs: input.nowMs, state: input.state },
          input.revision,
        );
        snapshotSeconds.observe(
          { actor: `aggregator-${input.partition}` },
          (performance.now() - started) / 1000,
        );
        return { revision: saved.revision, bytes: saved.bytes, takenAtMs: input.nowMs };
      }),
    },
  });
}

/**
 * The partials a barrier wants, keyed by `<epoch>.<shard>`: each shard writes its own when it
 * reads the barrier, so the wait is as long as the slowest shard is behind (or restarting).
 */
async function fetchShardPartials(
  kv: KV,
  partition: number,
  stop: BarrierStop,
  signal: AbortSignal,
): Promise<Map<string, PartialCounts>> {
  const got = new Map<string, PartialCounts>();
  let waitMs = 5;
  for (;;) {
    for (const [epoch, shard] of stop.wants) {
      const key = `${epoch}.${shard}`;
      if (got.has(key)) continue;
      const e = await kv.get(partialKey(partition, epoch, shard, stop.minuteStartMs, stop.seq));
      if (e && e.operation === "PUT" && e.length > 0)
        got.set(key, decodeShardPartial(e.value).counts);
    }
    if (got.size === stop.wants.length) return got;
    if (signal.aborted) throw signal.reason ?? new Error("aborted");
    await new Promise((r) => setTimeout(r, waitMs));
    waitMs = Math.min(500, waitMs * 2);
  }
}

/** The supervisor's child spec of partition `partition`'s aggregator (`logic` from {@link aggregatorLogic}). */
export function aggregatorChild(
  logic: ReturnType<typeof aggregatorLogic>,
  o: Omit<AggregatorActorInput, "snapshotEveryMs" | "maxBatchMessages"> & {
    snapshotEveryMs?: number;
    maxBatchMessages?: number;
    shutdownMs: number;
  },
): ChildSpec {
  const input: AggregatorActorInput = {
    id: o.id,
    partition: o.partition,
    aggregator: o.aggregator,
    snapshotEveryMs: o.snapshotEveryMs ?? 10_000,
    maxBatchMessages: o.maxBatchMessages ?? 64,
    now: o.now,
    hot: o.hot ?? null,
  };
  return {
    id: o.id,
    kind: "aggregator",
    partition: o.partition,
    restart: "permanent",
    shutdownMs: o.shutdownMs,
    logic,
    input,
  };
}
