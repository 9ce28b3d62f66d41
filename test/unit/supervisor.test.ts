import { describe, expect, it } from "vitest";
import { assign, createActor, fromCallback, SimulatedClock, setup } from "xstate";
import {
  type ChildSpec,
  type ChildStarted,
  type ChildStopped,
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
  o: { restart?: ChildSpec["restart"]; shutdownMs?: number; removeWhenDone?: boolean } = {},
): ChildSpec {
  return {
    id,
    kind: "test",
    restart: o.restart ?? "permanent",
    shutdownMs: o.shutdownMs ?? 5000,
    logic: testChild,
    input: { id, journal: j },
    ...(o.removeWhenDone !== undefined ? { removeWhenDone: o.removeWhenDone } : {}),
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

/** An actor that keeps every event sent to it (the replies to START_CHILD and STOP_CHILD). */
function inbox() {
  const got: (ChildStarted | ChildStopped)[] = [];
  const ref = createActor(
    fromCallback(({ receive }) => {
      receive((e) => {
        got.push(e as ChildStarted | ChildStopped);
      });
    }),
  ).start();
  return { ref, got };
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

describe("the supervisor's dynamic children", () => {
  it("starts a child on START_CHILD, answers, and lists it in STATUS", () => {
    const a = journal();
    const d = journal();
    const { sup, info } = start([child("a", a)]);
    const box = inbox();
    sup.send({ type: "START_CHILD", spec: child("d", d), replyTo: box.ref, requestId: "s1" });
    expect(box.got).toEqual([{ type: "CHILD_STARTED", requestId: "s1", id: "d", ok: true }]);
    expect(d.log).toEqual(["start d#1"]);
    expect(info("d")).toMatchObject({ state: "running", restarts: 0, dynamic: true });
    expect(sup.getSnapshot().context.specs.map((s) => s.id)).toEqual(["a", "d"]);
    expect(status(sup).children.map((c) => [c.id, c.state])).toEqual([
      ["a", "running"],
      ["d", "running"],
    ]);
    expect(status(sup).children[1]).toMatchObject({ id: "d", status: { n: 1 } });
    // Registered under its id, as static children are.
    expect(sup.system.get("d")).toBeDefined();
  });

  it("refuses a second START_CHILD for a live id, and starts again one that has ended", () => {
    const d = journal();
    const { sup, info } = start([]);
    const box = inbox();
    sup.send({ type: "START_CHILD", spec: child("d", d, { restart: "temporary" }) });
    sup.send({ type: "START_CHILD", spec: child("d", d), replyTo: box.ref, requestId: "s2" });
    expect(box.got).toEqual([
      { type: "CHILD_STARTED", requestId: "s2", id: "d", ok: false, error: "already running" },
    ]);
    expect(d.starts).toBe(1);
    // A temporary child that failed stays ended; a new spec for its id replaces it.
    sup.send({ type: "KILL", id: "d" });
    expect(info("d")?.state).toBe("failed");
    sup.send({ type: "START_CHILD", spec: child("d", d), replyTo: box.ref, requestId: "s3" });
    expect(box.got.at(-1)).toEqual({ type: "CHILD_STARTED", requestId: "s3", id: "d", ok: true });
    expect(d.starts).toBe(2);
    expect(info("d")).toMatchObject({ state: "running", lastError: "Error: killed" });
    expect(sup.getSnapshot().context.specs).toHaveLength(1);
    expect(sup.getSnapshot().context.specs[0]?.restart).toBe("permanent");
  });

  it("restarts a failing dynamic child with backoff, as a static one", () => {
    const d = journal({ failFirst: 2 });
    const { sup, clock, reports, info } = start([]);
    sup.send({ type: "START_CHILD", spec: child("d", d) });
    expect(info("d")?.state).toBe("restarting");
    expect(reports[0]).toEqual({
      type: "child_failed",
      id: "d",
      error: "Error: boom",
      restartInMs: 75,
    });
    clock.increment(75);
    expect(d.starts).toBe(2);
    expect(reports.at(-1)).toMatchObject({ type: "child_failed", id: "d", restartInMs: 150 });
    clock.increment(150);
    expect(d.starts).toBe(3);
    expect(info("d")).toMatchObject({ state: "running", restarts: 2, dynamic: true });
  });

  it("escalates when a dynamic child exceeds the restart intensity", () => {
    const a = journal();
    const d = journal({ failFirst: 100 });
    const { sup, clock, reports } = start([child("a", a)]);
    sup.send({ type: "START_CHILD", spec: child("d", d) });
    for (let i = 0; i < 10; i++) clock.increment(1000);
    expect(d.starts).toBe(4);
    expect(sup.getSnapshot().value).toBe("escalated");
    expect(reports.find((r) => r.type === "escalated")).toMatchObject({
      reason: expect.stringMatching(/^d failed 3 times within 60000 ms/),
    });
    expect(a.log).toContain("stop a");
  });

  it.each([
    { name: "a dynamic child", dynamic: true },
    { name: "a static child", dynamic: false },
  ])("STOP_CHILD stops $name in order and forgets it: no restart, not in STATUS", ({ dynamic }) => {
    const a = journal();
    const d = journal();
    const { sup, clock, reports, info } = start(
      dynamic ? [child("a", a)] : [child("a", a), child("d", d)],
    );
    if (dynamic) sup.send({ type: "START_CHILD", spec: child("d", d) });
    const box = inbox();
    sup.send({ type: "STOP_CHILD", id: "d", replyTo: box.ref, requestId: "x1" });
    expect(d.log).toEqual(["start d#1", "stop d"]);
    expect(box.got).toEqual([{ type: "CHILD_STOPPED", requestId: "x1", id: "d", ok: true }]);
    expect(info("d")).toBeUndefined();
    expect(sup.getSnapshot().context.specs.map((s) => s.id)).toEqual(["a"]);
    expect(status(sup).children.map((c) => c.id)).toEqual(["a"]);
    clock.increment(60_000);
    expect(d.starts).toBe(1);
    expect(reports).toEqual([]);
    expect(sup.getSnapshot().value).toBe("running");
    // The supervisor still stops at once: the removed child does not hold it up.
    sup.send({ type: "STOP" });
    expect(sup.getSnapshot().value).toBe("stopped");
  });

  it("STOP_CHILD stops outright a child that ignores STOP after its shutdown time, then forgets it", () => {
    const d = journal({ hangOnStop: true });
    const { sup, clock, reports, info } = start([]);
    sup.send({ type: "START_CHILD", spec: child("d", d, { shutdownMs: 2000 }) });
    const box = inbox();
    sup.send({ type: "STOP_CHILD", id: "d", replyTo: box.ref, requestId: "x2" });
    expect(info("d")).toMatchObject({ state: "stopping", removing: true });
    expect(status(sup).children).toMatchObject([{ id: "d", state: "stopping" }]);
    // A second request waits for the same end.
    sup.send({ type: "STOP_CHILD", id: "d", replyTo: box.ref, requestId: "x3" });
    clock.increment(1999);
    expect(box.got).toEqual([]);
    expect(Object.keys(sup.getSnapshot().children)).toEqual(["d"]);
    clock.increment(1);
    expect(reports).toContainEqual({ type: "child_killed", id: "d", afterMs: 2000 });
    expect(box.got).toEqual([
      { type: "CHILD_STOPPED", requestId: "x2", id: "d", ok: true },
      { type: "CHILD_STOPPED", requestId: "x3", id: "d", ok: true },
    ]);
    expect(info("d")).toBeUndefined();
    expect(Object.keys(sup.getSnapshot().children)).toEqual([]);
    expect(sup.getSnapshot().context.specs).toEqual([]);
    clock.increment(60_000);
    expect(d.starts).toBe(1);
  });

  it("STOP_CHILD of a child being stopped that then crashes: forgotten, not restarted", () => {
    const d = journal({ hangOnStop: true });
    const { sup, clock, reports, info } = start([]);
    sup.send({ type: "START_CHILD", spec: child("d", d, { shutdownMs: 2000 }) });
    const box = inbox();
    sup.send({ type: "STOP_CHILD", id: "d", replyTo: box.ref, requestId: "x4" });
    sup.send({ type: "KILL", id: "d" });
    expect(info("d")).toBeUndefined();
    expect(box.got).toEqual([{ type: "CHILD_STOPPED", requestId: "x4", id: "d", ok: true }]);
    clock.increment(60_000);
    expect(d.starts).toBe(1);
    expect(reports).toEqual([]); // no restart, and the shutdown timer was cancelled
  });

  it.each([
    { name: "in running", stopFirst: false, error: "not found" },
    { name: "while the supervisor stops", stopFirst: true, error: "stopping" },
  ])("refuses STOP_CHILD of an unknown id and START_CHILD $name", ({ stopFirst, error }) => {
    const hung = journal({ hangOnStop: true });
    const { sup } = start([child("hung", hung)]);
    if (stopFirst) sup.send({ type: "STOP" });
    const box = inbox();
    sup.send({ type: "STOP_CHILD", id: "nobody", replyTo: box.ref, requestId: "x5" });
    expect(box.got).toEqual([
      { type: "CHILD_STOPPED", requestId: "x5", id: "nobody", ok: false, error },
    ]);
    if (!stopFirst) return;
    const d = journal();
    sup.send({ type: "START_CHILD", spec: child("d", d), replyTo: box.ref, requestId: "s4" });
    expect(box.got.at(-1)).toEqual({
      type: "CHILD_STARTED",
      requestId: "s4",
      id: "d",
      ok: false,
      error: "stopping",
    });
    expect(d.starts).toBe(0);
  });

  it("stops dynamic children on STOP, with their own shutdown time", () => {
    const a = journal();
    const d = journal();
    const h = journal({ hangOnStop: true });
    const { sup, clock, reports, info } = start([child("a", a)]);
    sup.send({ type: "START_CHILD", spec: child("d", d) });
    sup.send({ type: "START_CHILD", spec: child("h", h, { shutdownMs: 300 }) });
    sup.send({ type: "STOP" });
    expect(d.log).toContain("stop d");
    expect(info("d")?.state).toBe("stopped");
    expect(sup.getSnapshot().value).toBe("stopping");
    clock.increment(300);
    expect(sup.getSnapshot().value).toBe("stopped");
    expect(reports).toContainEqual({ type: "child_killed", id: "h", afterMs: 300 });
  });

  it("a STOP_CHILD in progress when the supervisor stops: its own timer, answered, forgotten", () => {
    const h = journal({ hangOnStop: true });
    const { sup, clock, reports, info } = start([]);
    sup.send({ type: "START_CHILD", spec: child("h", h, { shutdownMs: 1000 }) });
    const box = inbox();
    sup.send({ type: "STOP_CHILD", id: "h", replyTo: box.ref, requestId: "x6" });
    clock.increment(600);
    sup.send({ type: "STOP" });
    clock.increment(400); // the STOP_CHILD's timer, not a new one from STOP
    expect(reports.filter((r) => r.type === "child_killed")).toEqual([
      { type: "child_killed", id: "h", afterMs: 1000 },
    ]);
    expect(box.got).toEqual([{ type: "CHILD_STOPPED", requestId: "x6", id: "h", ok: true }]);
    expect(info("h")).toBeUndefined();
    expect(sup.getSnapshot().value).toBe("stopped");
  });

  it.each([
    {
      name: "transient, removeWhenDone, ends normally",
      restart: "transient",
      removeWhenDone: true,
      fail: false,
      gone: true,
    },
    {
      name: "temporary, removeWhenDone, ends normally",
      restart: "temporary",
      removeWhenDone: true,
      fail: false,
      gone: true,
    },
    {
      name: "transient, no removeWhenDone",
      restart: "transient",
      removeWhenDone: false,
      fail: false,
      gone: false,
    },
    {
      name: "transient, removeWhenDone, fails: restarted",
      restart: "transient",
      removeWhenDone: true,
      fail: true,
      gone: false,
    },
  ] as const)("a dynamic child, $name", ({ restart, removeWhenDone, fail, gone }) => {
    const d = journal();
    const { sup, clock, info } = start([]);
    sup.send({ type: "START_CHILD", spec: child("d", d, { restart, removeWhenDone }) });
    // Ends by itself: an orderly end is the child's own STOP (forwarded, so not STOP_CHILD).
    sup.send(
      fail ? { type: "KILL", id: "d" } : { type: "FORWARD", id: "d", event: { type: "STOP" } },
    );
    clock.increment(1000);
    if (gone) {
      expect(info("d")).toBeUndefined();
      expect(sup.getSnapshot().context.specs).toEqual([]);
      expect(status(sup).children).toEqual([]);
    } else {
      expect(info("d")?.state).toBe(fail ? "running" : "stopped");
      expect(status(sup).children.map((c) => c.id)).toEqual(["d"]);
    }
    expect(d.starts).toBe(fail ? 2 : 1);
  });

  it("keeps a static removeWhenDone child that ends (only dynamic children are forgotten)", () => {
    const s = journal();
    const { sup, info } = start([child("s", s, { restart: "transient", removeWhenDone: true })]);
    sup.send({ type: "FORWARD", id: "s", event: { type: "STOP" } });
    expect(info("s")?.state).toBe("stopped");
  });

  it("STOP_CHILD of a child waiting for its restart cancels the restart and forgets it", () => {
    const d = journal({ failFirst: 1 });
    const { sup, clock, reports, info } = start([]);
    sup.send({ type: "START_CHILD", spec: child("d", d) });
    expect(info("d")?.state).toBe("restarting");
    const box = inbox();
    sup.send({ type: "STOP_CHILD", id: "d", replyTo: box.ref, requestId: "x7" });
    expect(box.got).toEqual([{ type: "CHILD_STOPPED", requestId: "x7", id: "d", ok: true }]);
    expect(info("d")).toBeUndefined();
    clock.increment(10_000);
    expect(d.starts).toBe(1);
    expect(reports.filter((r) => r.type === "child_restarted")).toEqual([]);
    // The id is free again.
    sup.send({ type: "START_CHILD", spec: child("d", journal()), replyTo: box.ref });
    expect(box.got.at(-1)).toEqual({ type: "CHILD_STARTED", id: "d", ok: true });
    expect(info("d")).toMatchObject({ state: "running", restarts: 0 });
  });
});
