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
  /**
   * For a dynamic child (started with START_CHILD) that finished its work for good, e.g. a
   * hot-ad shard whose epoch ended: when it ends normally and its restart type does not
   * restart it (transient, temporary), its spec and entry are removed, as after STOP_CHILD.
   */
  removeWhenDone?: boolean;
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
  /** Started with START_CHILD rather than from the input's specs. */
  dynamic?: true;
  /** Being stopped by STOP_CHILD: when it ends it is removed, never restarted. */
  removing?: true;
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
  /** Adds a child (OTP's start_child); answered with {@link ChildStarted}. */
  | { type: "START_CHILD"; spec: ChildSpec; replyTo?: AnyActorRef; requestId?: string }
  /**
   * Stops one child in order and forgets it (OTP's terminate_child + delete_child);
   * answered with {@link ChildStopped} once it has ended.
   */
  | { type: "STOP_CHILD"; id: string; replyTo?: AnyActorRef; requestId?: string }
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

/** The reply to START_CHILD, sent to its `replyTo`. */
export interface ChildStarted {
  type: "CHILD_STARTED";
  requestId?: string;
  id: string;
  ok: boolean;
  /** Why not: "already running" (a live child has the id) or "stopping" (the supervisor is). */
  error?: string;
}

/**
 * The reply to STOP_CHILD, sent to its `replyTo` once the child has ended (stopped, failed
 * or stopped outright after its shutdown time: all ok) and been removed.
 */
export interface ChildStopped {
  type: "CHILD_STOPPED";
  requestId?: string;
  id: string;
  ok: boolean;
  /** Why not: "not found" (no child has the id) or "stopping" (the supervisor is). */
  error?: string;
}

/** Where to send a {@link ChildStopped} when the child has ended. */
interface StopWaiter {
  replyTo: AnyActorRef;
  requestId?: string;
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
  /** STOP_CHILD requests waiting for their child to end, by child id. */
  stopWaiters: Record<string, StopWaiter[]>;
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
const restartTimer = (id: string) => `restart:${id}`;

function childStarted(
  event: { requestId?: string },
  id: string,
  ok: boolean,
  error?: string,
): ChildStarted {
  return {
    type: "CHILD_STARTED",
    ...(event.requestId !== undefined ? { requestId: event.requestId } : {}),
    id,
    ok,
    ...(error !== undefined ? { error } : {}),
  };
}

function childStopped(
  event: { requestId?: string },
  id: string,
  ok: boolean,
  error?: string,
): ChildStopped {
  return {
    type: "CHILD_STOPPED",
    ...(event.requestId !== undefined ? { requestId: event.requestId } : {}),
    id,
    ok,
    ...(error !== undefined ? { error } : {}),
  };
}

/**
 * The supervisor, in the OTP mould: starts its children in order, restarts them one_for_one
 * within a restart intensity and with jittered backoff, passes admin commands on, and on STOP
 * asks every child to stop, stopping outright any that has not finished within its spec's
 * shutdown time. When a child exceeds the intensity it stops everything and ends in
 * `escalated`: the process should exit and be restarted from outside.
 *
 * Children can also be added and removed while it runs, like OTP's start_child and
 * terminate_child + delete_child: START_CHILD adds a spec and starts it (then it is
 * supervised, stopped and counted towards the intensity like the others); STOP_CHILD stops
 * one child in order (stopped outright after its shutdown time) and then forgets it, so it
 * is neither restarted nor listed. A dynamic child whose spec says `removeWhenDone` is
 * forgotten as well when it ends normally without a restart.
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
    startChild: enqueueActions(
      ({ context, enqueue }, params: { id: string; dynamic?: boolean }) => {
        const spec = context.specs.find((s) => s.id === params.id);
        if (!spec) return;
        // Registered under its id, so that other actors can address it (system.get(id)).
        const options = { id: spec.id, systemId: spec.id, input: spec.input };
        enqueue.spawnChild(spec.logic as never, options as never);
        const prev = context.children[spec.id];
        const dynamic = params.dynamic ?? prev?.dynamic ?? false;
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
              ...(dynamic ? { dynamic: true as const } : {}),
            },
          }),
        });
      },
    ),
    // A child ended while running: restart it (per its restart type, within the intensity,
    // after a jittered backoff) or escalate.
    childExited: enqueueActions(({ context, event, enqueue }) => {
      const id = childIdOf(event.type);
      const spec = context.specs.find((s) => s.id === id);
      const info = context.children[id];
      if (!spec || !info) return;
      // Stopped by STOP_CHILD (or killed meanwhile): gone for good, whatever its restart type.
      if (info.removing) {
        removeChild(enqueue, context, id);
        return;
      }
      const exit = exitOf(event);
      const restart = spec.restart === "permanent" || (spec.restart === "transient" && exit.failed);
      const exited = exitedChildren(context.children, id, exit)[id] as ChildInfo;
      if (!restart) {
        if (info.dynamic && spec.removeWhenDone && !exit.failed) {
          removeChild(enqueue, context, id);
          return;
        }
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
      enqueue.raise({ type: "RESTART", id }, { delay, id: restartTimer(id) });
    }),
    // A child ended while stopping: it is stopped (or failed); its shutdown timer is off.
    childStopped: enqueueActions(({ context, event, enqueue }) => {
      const id = childIdOf(event.type);
      if (context.children[id]?.removing) {
        removeChild(enqueue, context, id);
        return;
      }
      const exit = exitOf(event);
      enqueue.cancel(shutdownTimer(id));
      enqueue.assign({ children: ({ context: c }) => exitedChildren(c.children, id, exit) });
    }),
    // The shutdown time of a child asked to stop has passed: stop it outright.
    killChild: enqueueActions(({ context, enqueue }, params: { id: string }) => {
      const { id } = params;
      const spec = context.specs.find((s) => s.id === id);
      const afterMs = spec?.shutdownMs ?? 0;
      const removing = context.children[id]?.removing === true;
      enqueue.stopChild(id);
      enqueue.assign({
        children: ({ context: c }) => ({
          ...c.children,
          [id]: {
            ...(c.children[id] as ChildInfo),
            state: "killed",
            lastError: `did not stop within ${afterMs} ms`,
          },
        }),
      });
      enqueue.emit({ type: "child_killed", id, afterMs });
      if (removing) removeChild(enqueue, context, id);
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
    stopWaiters: {},
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
        START_CHILD: {
          actions: enqueueActions(({ context, event, enqueue }) => {
            const { spec } = event;
            const info = context.children[spec.id];
            if (isAlive(info) || info?.state === "restarting") {
              if (event.replyTo) {
                enqueue.sendTo(
                  event.replyTo,
                  childStarted(event, spec.id, false, "already running"),
                );
              }
              return;
            }
            // A new id is added at the end; an ended child's spec is replaced in place.
            enqueue.assign({
              specs: ({ context: c }) =>
                c.specs.some((s) => s.id === spec.id)
                  ? c.specs.map((s) => (s.id === spec.id ? spec : s))
                  : [...c.specs, spec],
            });
            enqueue({ type: "startChild", params: { id: spec.id, dynamic: true } });
            if (event.replyTo) enqueue.sendTo(event.replyTo, childStarted(event, spec.id, true));
          }),
        },
        STOP_CHILD: {
          actions: enqueueActions(({ context, event, enqueue }) => {
            const { id } = event;
            const info = context.children[id];
            const spec = context.specs.find((s) => s.id === id);
            if (!info || !spec) {
              if (event.replyTo)
                enqueue.sendTo(event.replyTo, childStopped(event, id, false, "not found"));
              return;
            }
            // Not running (ended, or waiting for a restart, which is cancelled): gone at once.
            if (!isAlive(info)) {
              removeChild(enqueue, context, id);
              if (event.replyTo) enqueue.sendTo(event.replyTo, childStopped(event, id, true));
              return;
            }
            // Told when it has ended (already on its way out or not).
            if (event.replyTo) {
              const waiter: StopWaiter = {
                replyTo: event.replyTo,
                ...(event.requestId !== undefined ? { requestId: event.requestId } : {}),
              };
              enqueue.assign({
                stopWaiters: ({ context: c }) => ({
                  ...c.stopWaiters,
                  [id]: [...(c.stopWaiters[id] ?? []), waiter],
                }),
              });
            }
            if (info.removing) return;
            enqueue.sendTo(id, { type: "STOP" });
            enqueue.raise(
              { type: "SHUTDOWN_TIMEOUT", id },
              { delay: spec.shutdownMs, id: shutdownTimer(id) },
            );
            enqueue.assign({
              children: ({ context: c }) => ({
                ...c.children,
                [id]: { ...(c.children[id] as ChildInfo), state: "stopping", removing: true },
              }),
            });
          }),
        },
        SHUTDOWN_TIMEOUT: {
          guard: ({ context, event }) =>
            context.children[event.id]?.removing === true && isAlive(context.children[event.id]),
          actions: { type: "killChild", params: ({ event }) => ({ id: event.id }) },
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
            enqueue.cancel(restartTimer(spec.id));
            enqueue.assign({
              children: ({ context: c }) => withState(c.children, spec.id, "stopped"),
            });
          }
          // Not alive, or already asked by STOP_CHILD (its shutdown timer is running).
          if (!isAlive(info) || info?.state === "stopping") continue;
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
          actions: { type: "killChild", params: ({ event }) => ({ id: event.id }) },
        },
        START_CHILD: {
          actions: enqueueActions(({ event, enqueue }) => {
            if (event.replyTo) {
              enqueue.sendTo(event.replyTo, childStarted(event, event.spec.id, false, "stopping"));
            }
          }),
        },
        STOP_CHILD: {
          actions: enqueueActions(({ event, enqueue }) => {
            if (event.replyTo) {
              enqueue.sendTo(event.replyTo, childStopped(event, event.id, false, "stopping"));
            }
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

/** The part of `enqueueActions`' queue that {@link removeChild} uses. */
interface RemovalQueue {
  cancel(id: string): void;
  sendTo(to: AnyActorRef, event: AnyEventObject): void;
  assign(f: (a: { context: SupervisorContext }) => Partial<SupervisorContext>): void;
}

/**
 * Forgets a child that has ended (or will not start again), as OTP's delete_child: its spec
 * and entry go, its timers are off, and whoever asked for its stop is told.
 */
function removeChild(enqueue: RemovalQueue, context: SupervisorContext, id: string): void {
  enqueue.cancel(shutdownTimer(id));
  enqueue.cancel(restartTimer(id));
  for (const w of context.stopWaiters[id] ?? []) {
    enqueue.sendTo(w.replyTo, childStopped(w, id, true));
  }
  enqueue.assign(({ context: c }) => {
    const { [id]: _gone, ...children } = c.children;
    const { [id]: _told, ...stopWaiters } = c.stopWaiters;
    return { specs: c.specs.filter((s) => s.id !== id), children, stopWaiters };
  });
}

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
