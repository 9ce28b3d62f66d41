import { type ActorRefFrom, assign, enqueueActions, setup } from "xstate";
import {
  type ChildSpec,
  type ChildWork,
  type LoopOutput,
  loopMachine,
} from "../actors/loop-machine.js";
import {
  admitRestart,
  backoffMs,
  DEFAULT_RESTART_POLICY,
  type RestartPolicy,
} from "./intensity.js";

export type { ChildSpec, ChildWork };

export interface ChildInfo {
  id: string;
  kind: string;
  partition?: number;
  state: "running" | "paused" | "restarting" | "stopped" | "failed";
  restarts: number;
  lastError?: string;
  startedAtMs: number;
}

export interface SupervisorInput {
  specs: ChildSpec[];
  policy?: RestartPolicy;
  /** Randomness for backoff jitter (tests pass a fixed one). */
  random?: () => number;
  /** Called with a structured report whenever a child fails, restarts or the supervisor gives up. */
  report?: (r: SupervisorReport) => void;
}

export type SupervisorReport =
  | { kind: "child_failed"; id: string; error: string; restartInMs?: number }
  | { kind: "child_restarted"; id: string; restarts: number }
  | { kind: "escalated"; reason: string };

/** Sent by xstate when a child reaches its final state (stopped or failed). */
export type ChildDoneEvent = { type: `xstate.done.actor.${string}`; output: LoopOutput };

export type SupervisorEvent =
  | ChildDoneEvent
  | { type: "RESTART"; id: string }
  | { type: "KILL"; id: string }
  | { type: "PAUSE"; id: string }
  | { type: "RESUME"; id: string }
  | { type: "STOP" };

type ChildRef = ActorRefFrom<typeof loopMachine>;

interface SupervisorContext {
  specs: ChildSpec[];
  policy: RestartPolicy;
  random: () => number;
  report: (r: SupervisorReport) => void;
  work: Record<string, ChildWork>;
  refs: Record<string, ChildRef>;
  info: Record<string, ChildInfo>;
  history: Record<string, number[]>;
  escalation?: string;
}

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

/**
 * The supervisor: starts its children in order, restarts them one_for_one with restart
 * intensity and jittered backoff, passes admin commands on (pause, resume, kill), and stops
 * them in reverse order. When a child exceeds the intensity it stops everything and ends in
 * `escalated`, saying why: the process should exit and be restarted from outside.
 */
export const supervisorMachine = setup({
  types: {
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    input: {} as SupervisorInput,
  },
  actors: { loop: loopMachine },
  actions: {
    startChild: assign(({ context, spawn }, params: { id: string }) => {
      const spec = context.specs.find((s) => s.id === params.id);
      if (!spec) return {};
      const work = spec.start();
      const ref: ChildRef = spawn("loop", { id: spec.id, input: { id: spec.id, run: work.run } });
      const prev = context.info[spec.id];
      return {
        work: { ...context.work, [spec.id]: work },
        refs: { ...context.refs, [spec.id]: ref },
        info: {
          ...context.info,
          [spec.id]: {
            id: spec.id,
            kind: spec.kind,
            partition: spec.partition,
            state: "running" as const,
            restarts: prev?.restarts ?? 0,
            lastError: prev?.lastError,
            startedAtMs: Date.now(),
          },
        },
      };
    }),
  },
}).createMachine({
  id: "supervisor",
  context: ({ input }) => ({
    specs: input.specs,
    policy: input.policy ?? DEFAULT_RESTART_POLICY,
    random: input.random ?? Math.random,
    report: input.report ?? (() => {}),
    work: {},
    refs: {},
    info: {},
    history: {},
  }),
  initial: "running",
  states: {
    running: {
      entry: enqueueActions(({ context, enqueue }) => {
        for (const spec of context.specs) enqueue({ type: "startChild", params: { id: spec.id } });
      }),
      on: {
        RESTART: {
          actions: enqueueActions(({ context, event, enqueue }) => {
            if (context.info[event.id]?.state !== "restarting") return;
            enqueue({ type: "startChild", params: { id: event.id } });
            context.report({
              kind: "child_restarted",
              id: event.id,
              restarts: context.info[event.id]?.restarts ?? 0,
            });
          }),
        },
        KILL: {
          actions: ({ context, event }) => {
            const w = context.work[event.id];
            if (w?.crash) w.crash();
            else context.refs[event.id]?.send({ type: "STOP" });
          },
        },
        PAUSE: {
          actions: ({ context, event }) => {
            context.refs[event.id]?.send({ type: "PAUSE" });
            const i = context.info[event.id];
            if (i?.state === "running") i.state = "paused";
          },
        },
        RESUME: {
          actions: ({ context, event }) => {
            context.refs[event.id]?.send({ type: "RESUME" });
            const i = context.info[event.id];
            if (i?.state === "paused") i.state = "running";
          },
        },
        STOP: { target: "stopping" },
        "xstate.done.actor.*": [
          {
            guard: ({ context }) => context.escalation !== undefined,
            target: "escalating",
          },
          {
            actions: enqueueActions(({ context, event, enqueue }) => {
              const id = event.type.slice("xstate.done.actor.".length);
              const out = event.output;
              const spec = context.specs.find((s) => s.id === id);
              const info = context.info[id];
              if (!spec || !info) return;
              delete context.refs[id];
              const failed = out?.failed ?? false;
              info.state = failed ? "failed" : "stopped";
              if (failed) info.lastError = errorText(out.error);
              const restart =
                spec.restart === "permanent" || (spec.restart === "transient" && failed);
              if (!restart) return;
              const now = Date.now();
              const decision = admitRestart(context.history[id] ?? [], now, context.policy);
              context.history[id] = decision.history;
              if (!decision.allowed) {
                context.escalation = `${id} failed ${context.policy.maxRestarts} times within ${context.policy.withinMs} ms (last: ${info.lastError ?? "stopped"})`;
                context.report({ kind: "escalated", reason: context.escalation });
                enqueue.raise({ type: "STOP" });
                return;
              }
              const delay = backoffMs(decision.history.length, context.policy, context.random);
              info.state = "restarting";
              info.restarts++;
              context.report({
                kind: "child_failed",
                id,
                error: info.lastError ?? "stopped",
                restartInMs: delay,
              });
              enqueue.raise({ type: "RESTART", id }, { delay });
            }),
          },
        ],
      },
    },
    stopping: {
      // Reverse start order; each child finishes its batch and takes its final snapshot.
      entry: ({ context }) => {
        for (const spec of [...context.specs].reverse())
          context.refs[spec.id]?.send({ type: "STOP" });
      },
      always: [
        {
          guard: ({ context }) =>
            Object.keys(context.refs).length === 0 && context.escalation !== undefined,
          target: "escalated",
        },
        { guard: ({ context }) => Object.keys(context.refs).length === 0, target: "stopped" },
      ],
      on: {
        "xstate.done.actor.*": {
          actions: ({ context, event }) => {
            const id = event.type.slice("xstate.done.actor.".length);
            delete context.refs[id];
            const info = context.info[id];
            if (info && info.state !== "failed") info.state = "stopped";
          },
          reenter: true,
          target: "stopping",
        },
      },
    },
    escalating: { always: { target: "stopping" } },
    stopped: { type: "final" },
    escalated: { type: "final" },
  },
});
