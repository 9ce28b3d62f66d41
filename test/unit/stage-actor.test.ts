import type { JsMsg } from "@nats-io/jetstream";
import { describe, expect, it } from "vitest";
import { createActor, fromCallback, fromPromise, SimulatedClock } from "xstate";
import { type StagePrepared, stageMachine } from "../../actors/stage.js";
import type { ConsumerEvent, PullEvent } from "../../actors/stream-consumer.js";
import type { ConsumerPlan, StageHandler } from "../../src/nats/stage-handler.js";

// A stage actor with a recording handler, a consumer the test feeds, and a simulated clock.

function start(o: { tickEveryMs?: number } = {}) {
  const clock = new SimulatedClock();
  const log: string[] = [];
  let release: () => void = () => {};
  let hold = false;
  const handler: StageHandler = {
    prepare: async () => ({ kind: "durable", stream: "S", durable: "d", maxBatch: 8 }),
    handle: async (msgs) => {
      log.push(`handle ${msgs.length}`);
      if (hold) await new Promise<void>((r) => (release = r));
      log.push("handled");
    },
    ...(o.tickEveryMs
      ? {
          tickEveryMs: o.tickEveryMs,
          tick: async (nowMs: number) => {
            log.push(`tick ${nowMs}`);
          },
        }
      : {}),
    status: () => ({ handled: log.filter((l) => l === "handled").length }),
  };
  let feed: (e: ConsumerEvent) => void = () => {};
  const logic = stageMachine.provide({
    actors: {
      prepare: fromPromise<StagePrepared>(async () => ({
        handler,
        consumer: await handler.prepare(new AbortController().signal),
      })),
      consumer: fromCallback<PullEvent, ConsumerPlan, ConsumerEvent>(({ sendBack, receive }) => {
        feed = sendBack;
        receive(() => log.push("pull"));
      }),
    },
  });
  const actor = createActor(logic, { clock, input: { id: "stage", now: () => clock.now() } });
  actor.start();
  const settle = () => new Promise((r) => setTimeout(r, 0));
  return {
    actor,
    clock,
    log,
    settle,
    batch: async (n: number) => {
      feed({ type: "BATCH", msgs: Array.from({ length: n }, () => ({}) as JsMsg) });
      await settle();
    },
    holdNext: () => {
      hold = true;
    },
    release: async () => {
      hold = false;
      release();
      await settle();
    },
  };
}

describe("a stage actor", () => {
  it("handles one batch at a time and pulls the next when done", async () => {
    const s = start();
    await s.settle();
    await s.batch(3);
    await s.batch(2);
    expect(s.log).toEqual(["handle 3", "handled", "pull", "handle 2", "handled", "pull"]);
    expect(s.actor.getSnapshot().context.status).toEqual({ handled: 2 });
  });

  it("stops between batches: a STOP during a batch waits for it", async () => {
    const s = start();
    await s.settle();
    s.holdNext();
    await s.batch(1);
    s.actor.send({ type: "STOP" });
    await s.settle();
    expect(s.actor.getSnapshot().status).toBe("active");
    await s.release();
    expect(s.actor.getSnapshot().status).toBe("done");
    expect(s.actor.getSnapshot().output).toEqual({ failed: false });
    expect(s.log).toContain("handled");
  });

  it("keeps its tick period while batches flow, running a due tick after the batch", async () => {
    const s = start({ tickEveryMs: 1000 });
    await s.settle();
    s.holdNext();
    await s.batch(1);
    s.clock.increment(1000); // due while the batch is handled
    await s.settle();
    expect(s.log.some((l) => l.startsWith("tick"))).toBe(false);
    await s.release();
    expect(s.log.filter((l) => l.startsWith("tick"))).toEqual(["tick 1000"]);
    s.clock.increment(1000);
    await s.settle();
    expect(s.log.filter((l) => l.startsWith("tick"))).toEqual(["tick 1000", "tick 2000"]);
  });

  it("pauses between batches and resumes with a fresh consumer", async () => {
    const s = start();
    await s.settle();
    s.actor.send({ type: "PAUSE" });
    await s.settle();
    expect(s.actor.getSnapshot().value).toBe("paused");
    s.actor.send({ type: "RESUME" });
    await s.settle();
    await s.batch(4);
    expect(s.log).toEqual(["handle 4", "handled", "pull"]);
  });

  it("fails when its consumer fails", async () => {
    const s = start();
    await s.settle();
    const error = new Error("consumer deleted");
    s.actor.send({ type: "CONSUMER_FAILED", error });
    expect(s.actor.getSnapshot().output).toEqual({ failed: true, error });
  });
});
