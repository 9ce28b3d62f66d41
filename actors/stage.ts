import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { assign, enqueueActions, fromPromise, setup } from "xstate";
import type { ConsumerPlan, StageHandler } from "../src/nats/stage-handler.js";
import {
  type ChildCommand,
  type ChildOutput,
  childOutput,
  killError,
} from "../supervisor/supervisor.js";
import {
  type ConsumerEvent,
  type PullEvent,
  streamConsumer,
  unprovidedConsumer,
} from "./stream-consumer.js";

export type { StageHandler };

export interface StageInput {
  id: string;
  /** The wall clock handed to ticks. */
  now: () => number;
}

type StageEvent = ChildCommand | ConsumerEvent | { type: "TICK" };

interface StageContext {
  id: string;
  now: () => number;
  handler?: StageHandler;
  consumer?: ConsumerPlan;
  inbox?: JsMsg[];
  intent: "run" | "pause" | "stop";
  /** A tick came while a batch was being handled: run it next. */
  tickDue: boolean;
  status: Record<string, unknown>;
  error?: unknown;
}

/** What preparing a stage yields: its handler, and where its consumer reads. */
export interface StagePrepared {
  handler: StageHandler;
  consumer: ConsumerPlan;
}

const notProvided = fromPromise<StagePrepared>(() =>
  Promise.reject(new Error("no stage handler provided")),
);

/**
 * The actor of a stream stage (raw writer, aggregate writer, map, reducer, late repair): it
 * prepares, then owns its loop — its consumer feeds batches into its mailbox one at a time,
 * each handled by an invoked effect before the next is pulled; ticks run between batches.
 * PAUSE and STOP take effect between batches (a batch is never cut in half); KILL fails it at
 * once (its unacknowledged input is redelivered).
 */
export const stageMachine = setup({
  types: {
    context: {} as StageContext,
    events: {} as StageEvent,
    input: {} as StageInput,
    output: {} as ChildOutput,
  },
  actors: {
    prepare: notProvided,
    consumer: unprovidedConsumer,
    handleBatch: fromPromise<void, { handler: StageHandler; msgs: JsMsg[] }>(({ input, signal }) =>
      input.handler.handle(input.msgs, signal),
    ),
    tick: fromPromise<void, { handler: StageHandler; nowMs: number }>(({ input, signal }) =>
      input.handler.tick ? input.handler.tick(input.nowMs, signal) : Promise.resolve(),
    ),
  },
  delays: {
    tick: ({ context }) => context.handler?.tickEveryMs ?? 1000,
  },
  guards: {
    stopRequested: ({ context }) => context.intent === "stop",
    pauseRequested: ({ context }) => context.intent === "pause",
    hasInbox: ({ context }) => context.inbox !== undefined,
    tickDue: ({ context }) => context.tickDue,
  },
  actions: {
    refreshStatus: assign({ status: ({ context }) => context.handler?.status() ?? {} }),
    pull: enqueueActions(({ enqueue }) =>
      enqueue.sendTo("consumer", { type: "PULL" } as PullEvent),
    ),
    fail: assign({ error: (_, params: { error: unknown }) => params.error }),
    scheduleTick: enqueueActions(({ context, enqueue }) => {
      if ((context.handler?.tickEveryMs ?? 0) > 0)
        enqueue.raise({ type: "TICK" }, { delay: "tick", id: "tick" });
    }),
  },
}).createMachine({
  id: "stage",
  context: ({ input }) => ({
    id: input.id,
    now: input.now,
    intent: "run",
    tickDue: false,
    status: {},
  }),
  initial: "preparing",
  on: {
    KILL: {
      target: ".failed",
      actions: assign({
        error: ({ event }) => killError(event),
      }),
    },
  },
  states: {
    preparing: {
      invoke: {
        src: "prepare",
        onDone: {
          target: "running",
          actions: [
            assign(({ event }) => ({
              handler: event.output.handler,
              consumer: event.output.consumer,
            })),
            "refreshStatus",
          ],
        },
        onError: {
          target: "failed",
          actions: { type: "fail", params: ({ event }) => ({ error: event.error }) },
        },
      },
      on: { STOP: { target: "stopped" } },
    },
    running: {
      invoke: {
        id: "consumer",
        src: "consumer",
        input: ({ context }) => context.consumer as ConsumerPlan,
      },
      // Ticks keep their period whatever the input does (a busy stage still ticks).
      entry: "scheduleTick",
      exit: [
        assign({ inbox: undefined, tickDue: false }),
        enqueueActions(({ enqueue }) => enqueue.cancel("tick")),
      ],
      on: {
        BATCH: { actions: assign({ inbox: ({ event }) => event.msgs }) },
        TICK: { actions: [assign({ tickDue: true }), "scheduleTick"] },
        CONSUMER_FAILED: {
          target: "failed",
          actions: { type: "fail", params: ({ event }) => ({ error: event.error }) },
        },
        PAUSE: { actions: assign({ intent: "pause" }) },
        STOP: { actions: assign({ intent: "stop" }) },
      },
      initial: "waiting",
      states: {
        waiting: {
          always: [
            { guard: "stopRequested", target: "#stage.stopped" },
            { guard: "pauseRequested", target: "#stage.paused" },
            { guard: "tickDue", target: "ticking", actions: assign({ tickDue: false }) },
            { guard: "hasInbox", target: "handling" },
          ],
        },
        handling: {
          invoke: {
            src: "handleBatch",
            input: ({ context }) => ({
              handler: context.handler as StageHandler,
              msgs: context.inbox ?? [],
            }),
            onDone: {
              target: "waiting",
              actions: [assign({ inbox: undefined }), "pull", "refreshStatus"],
            },
            onError: {
              target: "#stage.failed",
              actions: { type: "fail", params: ({ event }) => ({ error: event.error }) },
            },
          },
        },
        ticking: {
          invoke: {
            src: "tick",
            input: ({ context }) => ({
              handler: context.handler as StageHandler,
              nowMs: context.now(),
            }),
            onDone: { target: "waiting", actions: "refreshStatus" },
            onError: {
              target: "#stage.failed",
              actions: { type: "fail", params: ({ event }) => ({ error: event.error }) },
            },
          },
        },
      },
    },
    paused: {
      entry: assign({ intent: "run" }),
      on: {
        RESUME: { target: "running" },
        STOP: { target: "stopped" },
      },
    },
    stopped: { type: "final" },
    failed: { type: "final" },
  },
  output: ({ context }) => childOutput(context.error),
});

/** A stage actor whose handler `make` builds afresh on every start, reading through `js`. */
export function stageLogic(js: JetStreamClient, make: () => StageHandler) {
  return stageMachine.provide({
    actors: {
      consumer: streamConsumer(js),
      prepare: fromPromise(async ({ signal }) => {
        const handler = make();
        const consumer = await handler.prepare(signal);
        return { handler, consumer };
      }),
    },
  });
}

/** What every stage child takes from the composition root. */
export interface StageChildOptions {
  id: string;
  /** How long an orderly stop may take before the supervisor stops it outright. */
  shutdownMs: number;
  now: () => number;
}
