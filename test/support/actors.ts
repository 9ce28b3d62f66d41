import { type AnyActorRef, createActor, fromCallback } from "xstate";
import type { SnapshotDone } from "../../actors/aggregator.js";
import type { AggregatorStatus } from "../../src/aggregate/aggregator-core.js";
import type { ChildOutput, ChildSpec, SupervisorStatus } from "../../supervisor/supervisor.js";

/**
 * A child spec's actor started on its own, outside a supervisor (tests). `done` resolves when
 * it stops and rejects with its error when it fails; `stop()` is orderly, `kill()` a crash.
 */
export function runActor(spec: ChildSpec) {
  const actor = createActor(spec.logic, { input: spec.input as never, systemId: spec.id });
  const done = new Promise<void>((resolve, reject) => {
    actor.subscribe({
      complete: () => {
        const out = actor.getSnapshot().output as ChildOutput | undefined;
        if (out?.failed) reject(out.error);
        else resolve();
      },
      error: (e) => reject(e),
    });
  });
  done.catch(() => {});
  actor.start();
  const settled = () =>
    done.then(
      () => undefined,
      () => undefined,
    );
  return {
    actor,
    done,
    /** The status the supervisor would show. */
    status: () =>
      (actor.getSnapshot() as { context: { status: Record<string, unknown> } }).context.status,
    stop: async () => {
      actor.send({ type: "STOP" });
      await done;
    },
    kill: async () => {
      actor.send({ type: "KILL", reason: "killed by the test" });
      await settled();
    },
    /** SNAPSHOT_NOW with a reply; rejects with the reported error. */
    snapshotNow: () =>
      new Promise<void>((resolve, reject) => {
        let inbox: AnyActorRef;
        inbox = createActor(
          fromCallback(({ receive }) => {
            receive((e) => {
              const d = e as SnapshotDone;
              queueMicrotask(() => inbox.stop());
              if (d.ok) resolve();
              else reject(Object.assign(new Error(d.error ?? "snapshot failed"), { code: d.code }));
            });
          }),
        ).start();
        actor.send({ type: "SNAPSHOT_NOW", replyTo: inbox, requestId: "test" } as never);
      }),
  };
}

export type RunningActor = ReturnType<typeof runActor>;

/** What every child spec takes from a composition root, as tests give it. */
export const CHILD = { shutdownMs: 5000, now: Date.now };

/** The status of each aggregator of a supervisor status that runs its partition (not standby). */
export function runningAggregators(s: SupervisorStatus): AggregatorStatus[] {
  return s.children.flatMap((c) =>
    c.kind === "aggregator" && c.status && "lastSeq" in c.status
      ? [c.status as unknown as AggregatorStatus]
      : [],
  );
}
