import { assign, createActor, fromPromise, setup } from "xstate";

/**
 * The lifecycle every stream-driven actor shares: running ⇄ paused, then stopped (orderly)
 * or failed (its loop threw). The work itself is a promise-returning loop that ends when its
 * AbortSignal aborts — xstate aborts it when the actor leaves `running` (pause, stop) — so
 * pausing or stopping never cuts a batch in half: unacknowledged messages are redelivered.
 * The final state's output tells a supervisor whether the actor stopped or failed.
 */
export interface LoopInput {
  id: string;
  /** The actor's work; resolves when `signal` aborts, rejects on an unrecoverable error. */
  run: (signal: AbortSignal) => Promise<void>;
}

export interface LoopContext {
  id: string;
  run: LoopInput["run"];
  /** Aborts the current run: PAUSE and STOP ask the loop to finish its batch and return. */
  controller: AbortController;
  /** What to do once the current run returns. */
  intent: "run" | "pause" | "stop";
  error?: unknown;
}

export interface LoopOutput {
  id: string;
  failed: boolean;
  error?: unknown;
}

export type LoopEvent = { type: "PAUSE" } | { type: "RESUME" } | { type: "STOP" };

export const loopMachine = setup({
  types: {
    context: {} as LoopContext,
    events: {} as LoopEvent,
    input: {} as LoopInput,
    output: {} as LoopOutput,
  },
  actors: {
    work: fromPromise<void, { run: LoopInput["run"]; signal: AbortSignal }>(({ input, signal }) =>
      input.run(AbortSignal.any([signal, input.signal])),
    ),
  },
  actions: {
    abortRun: ({ context }) => context.controller.abort(),
  },
  guards: {
    pauseRequested: ({ context }) => context.intent === "pause",
  },
}).createMachine({
  id: "loop",
  context: ({ input }) => ({
    id: input.id,
    run: input.run,
    controller: new AbortController(),
    intent: "run",
  }),
  initial: "active",
  states: {
    // The loop runs (or is finishing its batch after PAUSE / STOP); leaving this state only
    // when the run has returned means a stop always waits for the final snapshot.
    active: {
      entry: assign({ controller: () => new AbortController(), intent: "run" }),
      invoke: {
        src: "work",
        input: ({ context }) => ({ run: context.run, signal: context.controller.signal }),
        onDone: [{ guard: "pauseRequested", target: "paused" }, { target: "stopped" }],
        onError: { target: "failed", actions: assign({ error: ({ event }) => event.error }) },
      },
      on: {
        PAUSE: {
          guard: ({ context }) => context.intent === "run",
          actions: [assign({ intent: "pause" }), "abortRun"],
        },
        STOP: { actions: [assign({ intent: "stop" }), "abortRun"] },
      },
    },
    paused: {
      on: {
        RESUME: { target: "active" },
        STOP: { target: "stopped" },
      },
    },
    stopped: { type: "final" },
    failed: { type: "final" },
  },
  output: ({ context }) => ({
    id: context.id,
    failed: context.error !== undefined,
    error: context.error,
  }),
});

/**
 * What a supervisor needs to (re)start an actor, like an OTP child spec. `start` builds the
 * actor's work afresh every time, so a restarted actor restores from its snapshot instead of
 * resuming with possibly corrupt state.
 */
export interface ChildSpec {
  id: string;
  kind: "map" | "raw-writer" | "aggregator" | "reducer" | "aggregate-writer" | "late-repair";
  partition?: number;
  /** permanent: always restarted; transient: restarted only after a failure; temporary: never. */
  restart: "permanent" | "transient" | "temporary";
  start: () => ChildWork;
}

export interface ChildWork {
  run: (signal: AbortSignal) => Promise<void>;
  /** A live status object for `admin actors` (lag, watermark, ...). */
  status?: () => Record<string, unknown>;
  /** Makes the work fail at once, skipping its orderly stop (admin kill, chaos tests). */
  crash?: () => void;
}

/** The reason a killed actor's work is aborted with: it must not stop in an orderly way. */
export class ActorKilledError extends Error {
  readonly code = "ACTOR_KILLED";
}

/**
 * Wraps a run so that `crash()` aborts it as a crash: runners see ActorKilledError as the
 * signal's reason (code ACTOR_KILLED) and skip their orderly stop (no final snapshot), and the run
 * rejects so the supervisor restarts the actor from its last snapshot.
 */
export function crashable(
  run: (signal: AbortSignal) => Promise<void>,
  status?: () => Record<string, unknown>,
): ChildWork {
  const killer = new AbortController();
  return {
    run: async (signal) => {
      await run(AbortSignal.any([signal, killer.signal]));
      if (killer.signal.aborted) throw killer.signal.reason;
    },
    crash: () => killer.abort(new ActorKilledError("killed by an admin command")),
    status,
  };
}

/** Runs a child spec on its own, outside a supervisor (tests, tools). */
export function startStandalone(spec: ChildSpec) {
  const work = spec.start();
  const actor = createLoopActor(spec.id, work.run);
  actor.start();
  return { actor, work };
}

/** An actor running `run` under the shared lifecycle (not started yet). */
export function createLoopActor(id: string, run: LoopInput["run"]) {
  return createActor(loopMachine, { id, input: { id, run } });
}
