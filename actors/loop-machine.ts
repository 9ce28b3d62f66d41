import { assign, fromPromise, setup } from "xstate";

/**
 * The lifecycle every stream-driven actor shares: running ⇄ paused, then stopped (orderly)
 * or failed (its loop threw: the supervisor decides what happens next). The work itself is
 * a promise-returning loop that ends when its AbortSignal aborts — xstate aborts it when the
 * actor leaves `running` (pause, stop) — so pausing or stopping never cuts a batch in half:
 * unacknowledged messages are simply redelivered.
 */
export interface LoopInput {
  id: string;
  /** The actor's work; resolves when `signal` aborts, rejects on an unrecoverable error. */
  run: (signal: AbortSignal) => Promise<void>;
}

export interface LoopContext {
  id: string;
  run: LoopInput["run"];
  error?: unknown;
  startedAt?: number;
}

export type LoopEvent = { type: "PAUSE" } | { type: "RESUME" } | { type: "STOP" };

export const loopMachine = setup({
  types: {
    context: {} as LoopContext,
    events: {} as LoopEvent,
    input: {} as LoopInput,
  },
  actors: {
    work: fromPromise<void, { run: LoopInput["run"] }>(({ input, signal }) => input.run(signal)),
  },
}).createMachine({
  id: "loop",
  context: ({ input }) => ({ id: input.id, run: input.run }),
  initial: "running",
  states: {
    running: {
      invoke: {
        src: "work",
        input: ({ context }) => ({ run: context.run }),
        onDone: { target: "stopped" },
        onError: { target: "failed", actions: assign({ error: ({ event }) => event.error }) },
      },
      on: {
        PAUSE: { target: "paused" },
        STOP: { target: "stopped" },
      },
    },
    paused: {
      on: {
        RESUME: { target: "running" },
        STOP: { target: "stopped" },
      },
    },
    stopped: { type: "final" },
    failed: { type: "final" },
  },
});
