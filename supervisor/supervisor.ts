import {
  type AnyActorLogic,
  type AnyActorRef,
  type AnyEventObject,
  enqueueActions,
  setup,
} from "xstate";
import { ActorKilledError } from "../src/errors.js";
import {
  admitRestart,
  backoffMs,
  DEFAULT_RESTART_POLICY,
  type RestartPolicy,
} from "./intensity.js";

/** OTP's restart types: permanent always, transient after a failure, temporary never. */
export type RestartType = "permanent" | "transient" | "temporary";

/**
 * What the supervisor needs to (re)start a child, like an OTP child spec. The logic is
 * started afresh on every start, so a restarted actor restores from its snapshot instead of
 * resuming with possibly corrupt state. Every child speaks {@link ChildCommand} and ends in a
 * final state whose output is a {@link ChildOutput}.
 */
export interface ChildSpec {
  id: string;
  kind: string;
  partition?: number;
  restart: RestartType;
  /** How long an orderly stop may take; a child still running then is stopped outright. */
  shutdownMs: number;
  logic: AnyActorLogic;
  input?: unknown;
}

/** The commands every child takes. KILL is a crash: no orderly stop, no final snapshot. */
export type ChildCommand =
  | { type: "PAUSE" }
  | { type: "RESUME" }
  | { type: "STOP" }
  | { type: "KILL"; reason?: string };

/** Every child's final output. */
export interface ChildOutput {
  failed: boolean;
  error?: unknown;
}

/** A child's final output from the error it ended with (none: an orderly stop). */
export function childOutput(error: unknown): ChildOutput {
  return error === undefined ? { failed: false } : { failed: true, error };
}

/** The error a child ends with when it takes a KILL (a crash: no orderly stop). */
export function killError(event: { type: string; reason?: string }): ActorKilledError {
  return new ActorKilledError(event.type === "KILL" ? (event.reason ?? "killed") : "killed");
}

export type ChildState =
  | "running"
  | "paused"
  | "restarting"
  | "stopping"
  | "stopped"
  | "failed"
  | "killed";

export interface ChildInfo {
  id: string;
  kind: string;
  partition?: number;
  state: ChildState;
  restarts: number;
  lastError?: string;
  startedAtMs: number;
  /** Times of the restarts within the intensity period. */
  history: number[];
}

/** The supervisor's answer to STATUS: its state and every child with the child's own status. */
export interface SupervisorStatus {
  state: "running" | "stopping" | "stopped" | "escalated";
  escalation?: string;
  children: (Omit<ChildInfo, "history"> & { status?: Record<string, unknown> })[];
}

export type SupervisorEvent =
  | { type: "STATUS"; replyTo: AnyActorRef; requestId: string }
  | { type: "KILL" | "PAUSE" | "RESUME"; id: string }
  /** Passes an event on to a child (e.g. snapshot-now with its reply address). */
  | { type: "FORWARD"; id: string; event: AnyEventObject }
  | { type: "RESTART"; id: string }
  | { type: "SHUTDOWN_TIMEOUT"; id: string }
  | { type: "STOP" }
  | { type: `xstate.done.actor.${string}`; output?: ChildOutput }
  | { type: `xstate.error.actor.${string}`; error: unknown };

/** What the supervisor tells its listeners (`actor.on(...)`): logs and metrics, not decisions. */
export type SupervisorReport =
  | { type: "child_failed"; id: string; error: string; restartInMs: number }
  | { type: "child_restarted"; id: string; restarts: number }
  | { type: "child_killed"; id: string; afterMs: number }
  | { type: "escalated"; reason: string };

/** The reply to STATUS, sent to its `replyTo`. */
export interface SupervisorStatusReply {
  type: "SUPERVISOR_STATUS";
  requestId: string;
  status: SupervisorStatus;
}

export interface SupervisorInput {
  specs: ChildSpec[];
  policy?: RestartPolicy;
  /** Wall clock for start times and the restart intensity (tests pass a simulated one). */
  now?: () => number;
  /** Randomness for backoff jitter (tests pass a fixed one). */
  random?: () => number;
}

interface SupervisorContext {
  specs: ChildSpec[];
  policy: RestartPolicy;
  now: () => number;
  random: () => number;
  children: Record<string, ChildInfo>;
  escalation?: string;
}

const ALIVE: readonly ChildState[] = ["running", "paused", "stopping"];
const isAlive = (i: ChildInfo | undefined) => i !== undefined && ALIVE.includes(i.state);

function errorText(e: unknown): string {
  return e instanceof Error ? `${e.name}: ${e.message}` : String(e);
}

function childIdOf(eventType: string): string {
  return eventType.replace(/^xstate\.(done|error)\.actor\./, "");
}

/** How a child ended, from its done or error event. */
function exitOf(event: AnyEventObject): { failed: boolean; error?: unknown } {
  if (event.type.startsWith("xstate.error.actor.")) return { failed: true, error: event.error };
  const out = event.output as ChildOutput | undefined;
  return { failed: out?.failed ?? false, error: out?.error };
}

const shutdownTimer = (id: string) => `shutdown:${id}`;

/**
 * The supervisor, in the OTP mould: starts its children in order, restarts them one_for_one
 * within a restart intensity and with jittered backoff, passes admin commands on, and on STOP
 * asks every child to stop, stopping outright any that has not finished within its spec's
 * shutdown time. When a child exceeds the intensity it stops everything and ends in
 * `escalated`: the process should exit and be restarted from outside.
 *
 * Pure: context changes only through `assign`, time comes from the injected `now` and the
 * actor system's clock (delays), randomness is injected, and reports are emitted events.
 */
export const supervisorMachine = setup({
  types: {
    context: {} as SupervisorContext,
    events: {} as SupervisorEvent,
    input: {} as SupervisorInput,
    emitted: {} as SupervisorReport,
  },
  actions: {
    startChild: enqueueActions(({ context, enqueue }, params: { id: string }) => {
      const spec = context.specs.find((s) => s.id === params.id);
      if (!spec) return;
      // Registered under its id, so that other actors can address it (system.get(id)).
      const options = { id: spec.id, systemId: spec.id, input: spec.input };
      enqueue.spawnChild(spec.logic as never, options as never);
      const prev = context.children[spec.id];
      enqueue.assign({
        children: ({ context: c }) => ({
          ...c.children,
          [spec.id]: {
            id: spec.id,
            kind: spec.kind,
            ...(spec.partition !== undefined ? { partition: spec.partition } : {}),
            state: "running",
            restarts: prev?.restarts ?? 0,
            ...(prev?.lastError ? { lastError: prev.lastError } : {}),
            startedAtMs: c.now(),
            history: prev?.history ?? [],
          },
        }),
      });
    }),
    // A child ended while running: restart it (per its restart type, within the intensity,
    // after a jittered backoff) or escalate.
    childExited: enqueueActions(({ context, event, enqueue }) => {
      const id = childIdOf(event.type);
      const spec = context.specs.find((s) => s.id === id);
      const info = context.children[id];
      if (!spec || !info) return;
      const exit = exitOf(event);
      const restart = spec.restart === "permanent" || (spec.restart === "transient" && exit.failed);
      const exited = exitedChildren(context.children, id, exit)[id] as ChildInfo;
      if (!restart) {
        enqueue.assign({ children: ({ context: c }) => ({ ...c.children, [id]: exited }) });
        return;
      }
      const decision = admitRestart(info.history, context.now(), context.policy);
      if (!decision.allowed) {
        const reason = `${id} failed ${context.policy.maxRestarts} times within ${context.policy.withinMs} ms (last: ${exited.lastError ?? "stopped"})`;
        enqueue.assign({
          children: ({ context: c }) => ({
            ...c.children,
            [id]: { ...exited, history: decision.history },
          }),
          escalation: reason,
        });
        enqueue.emit({ type: "escalated", reason });
        enqueue.raise({ type: "STOP" });
        return;
      }
      const delay = backoffMs(decision.history.length, context.policy, context.random);
      enqueue.assign({
        children: ({ context: c }) => ({
          ...c.children,
          [id]: {
            ...exited,
            state: "restarting",
            restarts: exited.restarts + 1,
            history: decision.history,
          },
        }),
      });
      enqueue.emit({
        type: "child_failed",
        id,
        error: exited.lastError ?? "stopped",
        restartInMs: delay,
      });
      enqueue.raise({ type: "RESTART", id }, { delay, id: `restart:${id}` });
    }),
    // A child ended while stopping: it is stopped (or failed); its shutdown timer is off.
    childStopped: enqueueActions(({ event, enqueue }) => {
      const id = childIdOf(event.type);
      const exit = exitOf(event);
      enqueue.cancel(shutdownTimer(id));
      enqueue.assign({ children: ({ context: c }) => exitedChildren(c.children, id, exit) });
    }),
    answerStatus: enqueueActions(({ context, event, self, enqueue }) => {
      if (event.type !== "STATUS") return;
      const value = self.getSnapshot().value as string;
      const children = Object.values(context.children).map(({ history: _h, ...info }) => {
        const ref = self.getSnapshot().children[info.id] as AnyActorRef | undefined;
        const status = ALIVE.includes(info.state)
          ? (ref?.getSnapshot()?.context?.status as Record<string, unknown> | undefined)
          : undefined;
        return status ? { ...info, status } : info;
      });
      const reply: SupervisorStatusReply = {
        type: "SUPERVISOR_STATUS",
        requestId: event.requestId,
        status: {
          state: value as SupervisorStatus["state"],
          ...(context.escalation ? { escalation: context.escalation } : {}),
          children,
        },
      };
      enqueue.sendTo(event.replyTo, reply);
    }),
  },
  guards: {
    allExited: ({ context }) => !Object.values(context.children).some(isAlive),
    escalatedAndAllExited: ({ context }) =>
      context.escalation !== undefined && !Object.values(context.children).some(isAlive),
  },
}).createMachine({
  id: "supervisor",
  context: ({ input }) => ({
    specs: input.specs,
    policy: input.policy ?? DEFAULT_RESTART_POLICY,
    now: input.now ?? Date.now,
    random: input.random ?? Math.random,
    children: {},
  }),
  initial: "running",
  on: {
    STATUS: { actions: "answerStatus" },
  },
  states: {
    running: {
      entry: enqueueActions(({ context, enqueue }) => {
        for (const spec of context.specs) enqueue({ type: "startChild", params: { id: spec.id } });
      }),
      on: {
        RESTART: {
          guard: ({ context, event }) => context.children[event.id]?.state === "restarting",
          actions: [
            { type: "startChild", params: ({ event }) => ({ id: event.id }) },
            enqueueActions(({ context, event, enqueue }) => {
              enqueue.emit({
                type: "child_restarted",
                id: event.id,
                restarts: context.children[event.id]?.restarts ?? 0,
              });
            }),
          ],
        },
        KILL: {
          guard: ({ context, event }) => isAlive(context.children[event.id]),
          actions: enqueueActions(({ event, enqueue }) => {
            enqueue.sendTo(event.id, { type: "KILL", reason: "killed by an admin command" });
          }),
        },
        PAUSE: {
          guard: ({ context, event }) => context.children[event.id]?.state === "running",
          actions: enqueueActions(({ event, enqueue }) => {
            enqueue.sendTo(event.id, { type: "PAUSE" });
            enqueue.assign({
              children: ({ context: c }) => withState(c.children, event.id, "paused"),
            });
          }),
        },
        RESUME: {
          guard: ({ context, event }) => context.children[event.id]?.state === "paused",
          actions: enqueueActions(({ event, enqueue }) => {
            enqueue.sendTo(event.id, { type: "RESUME" });
            enqueue.assign({
              children: ({ context: c }) => withState(c.children, event.id, "running"),
            });
          }),
        },
        FORWARD: {
          guard: ({ context, event }) => isAlive(context.children[event.id]),
          actions: enqueueActions(({ event, enqueue }) => enqueue.sendTo(event.id, event.event)),
        },
        STOP: { target: "stopping" },
        "xstate.done.actor.*": { actions: "childExited" },
        "xstate.error.actor.*": { actions: "childExited" },
      },
    },
    stopping: {
      // Every child is asked at once (each one's unfinished input is redelivered or
      // replayed, so no order is needed for correctness); each has its own shutdown time.
      entry: enqueueActions(({ context, enqueue }) => {
        for (const spec of [...context.specs].reverse()) {
          const info = context.children[spec.id];
          if (info?.state === "restarting") {
            enqueue.cancel(`restart:${spec.id}`);
            enqueue.assign({
              children: ({ context: c }) => withState(c.children, spec.id, "stopped"),
            });
          }
          if (!isAlive(info)) continue;
          enqueue.sendTo(spec.id, { type: "STOP" });
          enqueue.raise(
            { type: "SHUTDOWN_TIMEOUT", id: spec.id },
            { delay: spec.shutdownMs, id: shutdownTimer(spec.id) },
          );
          enqueue.assign({
            children: ({ context: c }) => withState(c.children, spec.id, "stopping"),
          });
        }
      }),
      always: [
        { guard: "escalatedAndAllExited", target: "escalated" },
        { guard: "allExited", target: "stopped" },
      ],
      on: {
        SHUTDOWN_TIMEOUT: {
          guard: ({ context, event }) => isAlive(context.children[event.id]),
          actions: enqueueActions(({ context, event, enqueue }) => {
            const spec = context.specs.find((s) => s.id === event.id);
            const afterMs = spec?.shutdownMs ?? 0;
            enqueue.stopChild(event.id);
            enqueue.assign({
              children: ({ context: c }) => ({
                ...c.children,
                [event.id]: {
                  ...(c.children[event.id] as ChildInfo),
                  state: "killed",
                  lastError: `did not stop within ${afterMs} ms`,
                },
              }),
            });
            enqueue.emit({ type: "child_killed", id: event.id, afterMs });
          }),
        },
        "xstate.done.actor.*": { actions: "childStopped" },
        "xstate.error.actor.*": { actions: "childStopped" },
      },
    },
    stopped: { type: "final" },
    escalated: { type: "final" },
  },
});

function withState(
  children: Record<string, ChildInfo>,
  id: string,
  state: ChildState,
): Record<string, ChildInfo> {
  const info = children[id];
  return info ? { ...children, [id]: { ...info, state } } : children;
}

function exitedChildren(
  children: Record<string, ChildInfo>,
  id: string,
  exit: { failed: boolean; error?: unknown },
): Record<string, ChildInfo> {
  const info = children[id];
  if (!info) return children;
  return {
    ...children,
    [id]: {
      ...info,
      state: exit.failed ? "failed" : "stopped",
      ...(exit.failed ? { lastError: errorText(exit.error) } : {}),
    },
  };
}
