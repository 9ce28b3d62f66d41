import { assign, type CallbackActorLogic, type EventObject, fromCallback, setup } from "xstate";
import {
  type ChildCommand,
  type ChildOutput,
  childOutput,
  killError,
} from "../supervisor/supervisor.js";

/** Sent by a service's callback: its endpoints are up, or the service itself broke. */
export type ServiceReport =
  | { type: "SERVICE_READY"; status?: Record<string, unknown> }
  | { type: "SERVICE_STATUS"; status: Record<string, unknown> }
  | { type: "SERVICE_FAILED"; error: unknown };

type ServiceEvent = ChildCommand | ServiceReport;

/**
 * The actor of a long-lived service (the query and admin services, the live server, the
 * reconciliation schedule, /metrics): it runs `serve` — a callback actor that starts the
 * service and whose clean-up stops it — until STOP, and fails if the service reports it broke
 * (the supervisor then restarts it). Pausing a service is not offered.
 */
export const serviceMachine = setup({
  types: {
    context: {} as {
      id: string;
      error?: unknown;
      status: { ready: boolean } & Record<string, unknown>;
    },
    events: {} as ServiceEvent,
    input: {} as { id: string },
    output: {} as ChildOutput,
  },
  actors: {
    serve: fromCallback<EventObject, { id: string }>(({ sendBack }) => {
      sendBack({ type: "SERVICE_FAILED", error: new Error("no service provided") });
    }),
  },
}).createMachine({
  id: "service",
  context: ({ input }) => ({ id: input.id, status: { ready: false } }),
  initial: "running",
  states: {
    running: {
      invoke: { id: "serve", src: "serve", input: ({ context }) => ({ id: context.id }) },
      on: {
        STOP: { target: "stopped" },
        KILL: {
          target: "failed",
          actions: assign({
            error: ({ event }) => killError(event),
          }),
        },
        // A service may say more about itself (e.g. the console its URL): `admin actors` shows it.
        SERVICE_READY: {
          actions: assign({ status: ({ event }) => ({ ...event.status, ready: true }) }),
        },
        // What it has done since (e.g. the reconciliation schedule's last run).
        SERVICE_STATUS: {
          actions: assign({
            status: ({ context, event }) => ({ ...context.status, ...event.status }),
          }),
        },
        SERVICE_FAILED: {
          target: "failed",
          actions: assign({ error: ({ event }) => event.error }),
        },
      },
    },
    stopped: { type: "final" },
    failed: { type: "final" },
  },
  output: ({ context }) => childOutput(context.error),
});

/** A service actor running the given callback logic. */
export function serviceLogic(serve: CallbackActorLogic<EventObject, { id: string }>) {
  return serviceMachine.provide({ actors: { serve } });
}

/**
 * A service started and stopped by promises (a NATS micro service, an HTTP server, a
 * schedule). A failed start fails the actor. `report` adds to the actor's status (what
 * `adclick admin actors` shows), e.g. a schedule's last result.
 */
export function resourceService<R>(
  start: (report: (status: Record<string, unknown>) => void) => Promise<R>,
  stop: (resource: R) => Promise<unknown> | unknown,
) {
  return serviceLogic(
    fromCallback(({ sendBack }) => {
      let resource: R | undefined;
      let stopped = false;
      start((status) => {
        if (!stopped) sendBack({ type: "SERVICE_STATUS", status });
      }).then(
        (r) => {
          if (stopped) void Promise.resolve(stop(r)).catch(() => {});
          else {
            resource = r;
            sendBack({ type: "SERVICE_READY" });
          }
        },
        (error: unknown) => sendBack({ type: "SERVICE_FAILED", error }),
      );
      return () => {
        stopped = true;
        if (resource !== undefined) void Promise.resolve(stop(resource)).catch(() => {});
      };
    }),
  );
}
