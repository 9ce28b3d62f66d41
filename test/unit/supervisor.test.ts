import { describe, expect, it } from "vitest";
import { assign, createActor, fromCallback, SimulatedClock, setup } from "xstate";
import {
  type ChildSpec,
  type SupervisorReport,
  type SupervisorStatus,
  type SupervisorStatusReply,
  supervisorMachine,
} from "../../supervisor/supervisor.js";

// The supervisor on a simulated clock: restarts, backoff, intensity and shutdown timeouts
// happen when the test moves the clock, never after a real sleep.

const policy = { maxRestarts: 3, withinMs: 60_000, baseBackoffMs: 100, maxBackoffMs: 1000 };

/** What the test child records, shared across its restarts. */
interface Journal {
  log: string[];
  starts: number;
  /** The first this-many starts fail at once. */
  failFirst: number;
  /** Ignores STOP (a child hung in its orderly stop). */
  hangOnStop: boolean;
}

const testChild = setup({
  types: {
    input: {} as { id: string; journal: Journal },
    context: {} as { id: string; journal: Journal; error?: string; status: { n: number } },
    events: {} as { type: "STOP" } | { type: "KILL" } | { type: "PAUSE" } | { type: "RESUME" },
  },
  guards: {
    failsNow: ({ context }) => context.journal.starts <= context.journal.failFirst,
    hangs: ({ context }) => context.journal.hangOnStop,
  },
}).createMachine({
  context: ({ input }) => {
    input.journal.starts++;
    input.journal.log.push(`start ${input.id}#${input.journal.starts}`);
    return { id: input.id, journal: input.journal, status: { n: input.journal.starts } };
  },
  initial: "running",
  states: {
    running: {
      always: { guard: "failsNow", target: "failed", actions: assign({ error: "boom" }) },
      on: {
        STOP: [
          { guard: "hangs" },
          {
            target: "stopped",
            actions: ({ context }) => context.journal.log.push(`stop ${context.id}`),
          },
        ],
        KILL: { target: "failed", actions: assign({ error: "killed" }) },
        PAUSE: { target: "paused" },
      },
    },
    paused: { on: { RESUME: "running", STOP: "stopped" } },
    stopped: { type: "final" },
    failed: { type: "final" },
  },
  output: ({ context }) => ({
    failed: context.error !== undefined,
    ...(context.error ? { error: new Error(context.error) } : {}),
  }),
});

function journal(o: Partial<Journal> = {}): Journal {
  return { log: [], starts: 0, failFirst: 0, hangOnStop: false, ...o };
}

function child(
  id: string,
  j: Journal,
  o: { restart?: ChildSpec["restart"]; shutdownMs?: number } = {},
): ChildSpec {
  return {
    id,
    kind: "test",
    restart: o.restart ?? "permanent",
    shutdownMs: o.shutdownMs ?? 5000,
    logic: testChild,
    input: { id, journal: j },
  };
}

function start(specs: ChildSpec[]) {
  const clock = new SimulatedClock();
  const reports: SupervisorReport[] = [];
  const sup = createActor(supervisorMachine, {
    clock,
    systemId: "supervisor",
    input: { specs, policy, now: () => clock.now(), random: () => 0.5 },
  });
  sup.on("*", (r) => reports.push(r));
  sup.start();
  const info = (id: string) => sup.getSnapshot().context.children[id];
  return { sup, clock, reports, info };
}

/** Asks the supervisor for its status by event, as the admin service does. */
function status(sup: ReturnType<typeof start>["sup"]): SupervisorStatus {
  let answer: SupervisorStatus | undefined;
  const inbox = createActor(
    fromCallback(({ receive }) => {
      receive((e) => {
        answer = (e as SupervisorStatusReply).status;
      });
    }),
  ).start();
  sup.send({ type: "STATUS", replyTo: inbox, requestId: "r1" });
  inbox.stop();
  if (!answer) throw new Error("no answer");
  return answer;
}

describe("the supervisor", () => {
  it("starts its children in order and stops them all on STOP", () => {
    const j = journal();
    const { sup, info } = start([child("a", j), child("b", j), child("c", j)]);
    expect(j.log).toEqual(["start a#1", "start b#2", "start c#3"]);
    expect(info("b")?.state).toBe("running");
    sup.send({ type: "STOP" });
    expect(sup.getSnapshot().value).toBe("stopped");
    expect(sup.getSnapshot().status).toBe("done");
    expect(j.log.slice(3)).toEqual(["stop c", "stop b", "stop a"]);
    expect(["a", "b", "c"].map((id) => info(id)?.state)).toEqual(["stopped", "stopped", "stopped"]);
  });

  it("restarts a failed child one_for_one after a jittered backoff, leaving its siblings alone", () => {
    const a = journal();
    const b = journal({ failFirst: 2 });
    const { clock, reports, info } = start([child("a", a), child("b", b)]);
    // b failed at once; its restart waits for the backoff: 100·2^0 with jitter 0.5 → 75 ms.
    expect(info("b")?.state).toBe("restarting");
    expect(reports[0]).toEqual({
      type: "child_failed",
      id: "b",
      error: "Error: boom",
      restartInMs: 75,
    });
    clock.increment(74);
    expect(b.starts).toBe(1);
    clock.increment(1);
    expect(b.starts).toBe(2); // failed again: the second backoff doubles (150 ms)
    expect(reports.at(-1)).toMatchObject({ type: "child_failed", id: "b", restartInMs: 150 });
    clock.increment(150);
    expect(b.starts).toBe(3);
    expect(info("b")).toMatchObject({ state: "running", restarts: 2, lastError: "Error: boom" });
    expect(a.starts).toBe(1);
    expect(info("a")?.state).toBe("running");
    expect(reports.filter((r) => r.type === "child_restarted")).toHaveLength(2);
  });

  it("escalates when a child exceeds the restart intensity: stops everything, ends escalated", () => {
    const a = journal();
    const b = journal({ failFirst: 100 });
    const { sup, clock, reports } = start([child("a", a), child("b", b)]);
    for (let i = 0; i < 10; i++) clock.increment(1000);
    expect(b.starts).toBe(4); // the first start and three restarts
    expect(sup.getSnapshot().value).toBe("escalated");
    const escalated = reports.find((r) => r.type === "escalated");
    expect(escalated).toMatchObject({ type: "escalated" });
    expect((escalated as { reason: string }).reason).toMatch(/b failed 3 times within 60000 ms/);
    expect(a.log).toContain("stop a");
    expect(sup.getSnapshot().context.escalation).toMatch(/^b failed/);
  });

  it("counts restarts within the intensity period only", () => {
    const b = journal({ failFirst: 5 });
    const { sup, clock } = start([child("b", b)]);
    // Spread over more than the period: never 3 restarts within 60 s.
    for (let i = 0; i < 8; i++) clock.increment(40_000);
    expect(b.starts).toBe(6);
    expect(sup.getSnapshot().value).toBe("running");
  });

  it("stops outright a child that does not stop within its shutdown time", () => {
    const hung = journal({ hangOnStop: true });
    const fine = journal();
    const { sup, clock, reports, info } = start([
      child("fine", fine),
      child("hung", hung, { shutdownMs: 2000 }),
    ]);
    sup.send({ type: "STOP" });
    expect(sup.getSnapshot().value).toBe("stopping");
    expect(info("fine")?.state).toBe("stopped");
    clock.increment(1999);
    expect(sup.getSnapshot().value).toBe("stopping");
    clock.increment(1);
    expect(sup.getSnapshot().value).toBe("stopped");
    expect(info("hung")).toMatchObject({
      state: "killed",
      lastError: "did not stop within 2000 ms",
    });
    expect(reports).toContainEqual({ type: "child_killed", id: "hung", afterMs: 2000 });
  });

  it("applies restart types: transient only after a failure, temporary never", () => {
    const t = journal({ failFirst: 1 });
    const tmp = journal({ failFirst: 1 });
    const { clock, info } = start([
      child("transient", t, { restart: "transient" }),
      child("temporary", tmp, { restart: "temporary" }),
    ]);
    clock.increment(1000);
    expect(t.starts).toBe(2);
    expect(info("transient")?.state).toBe("running");
    expect(tmp.starts).toBe(1);
    expect(info("temporary")?.state).toBe("failed");
  });

  it("passes kill, pause and resume on, and answers status by event", () => {
    const a = journal();
    const { sup, clock, info } = start([child("a", a)]);
    sup.send({ type: "PAUSE", id: "a" });
    expect(info("a")?.state).toBe("paused");
    expect(status(sup).children[0]).toMatchObject({ id: "a", state: "paused", status: { n: 1 } });
    sup.send({ type: "RESUME", id: "a" });
    expect(info("a")?.state).toBe("running");
    sup.send({ type: "KILL", id: "a" });
    expect(info("a")).toMatchObject({ state: "restarting", lastError: "Error: killed" });
    clock.increment(1000);
    expect(a.starts).toBe(2);
    const s = status(sup);
    expect(s.state).toBe("running");
    expect(s.children[0]).toMatchObject({
      id: "a",
      state: "running",
      restarts: 1,
      status: { n: 2 },
    });
    // Commands for children it does not have change nothing.
    sup.send({ type: "KILL", id: "nobody" });
    expect(Object.keys(sup.getSnapshot().context.children)).toEqual(["a"]);
  });

  it("cancels pending restarts when it stops", () => {
    const b = journal({ failFirst: 1 });
    const { sup, clock, info } = start([child("b", b)]);
    expect(info("b")?.state).toBe("restarting");
    sup.send({ type: "STOP" });
    expect(sup.getSnapshot().value).toBe("stopped");
    clock.increment(10_000);
    expect(b.starts).toBe(1);
  });
});
