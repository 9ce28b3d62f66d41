import { describe, expect, it } from "vitest";
import { createActor, waitFor } from "xstate";
import {
  type ChildSpec,
  type SupervisorReport,
  supervisorMachine,
} from "../../supervisor/supervisor.js";

const fastPolicy = { maxRestarts: 3, withinMs: 60_000, baseBackoffMs: 5, maxBackoffMs: 20 };

/** A child whose run records its lifecycle and ends when aborted (or fails on demand). */
function recordingChild(
  id: string,
  log: string[],
  opts: { failTimes?: number; stopDelayMs?: number } = {},
): ChildSpec {
  let starts = 0;
  return {
    id,
    kind: "map",
    restart: "permanent",
    start: () => {
      const n = ++starts;
      let crash: (() => void) | undefined;
      return {
        run: (signal) =>
          new Promise<void>((resolve, reject) => {
            log.push(`start ${id}#${n}`);
            if (n <= (opts.failTimes ?? 0)) {
              setTimeout(() => reject(new Error(`boom ${n}`)), 1);
              return;
            }
            crash = () => reject(new Error("killed"));
            signal.addEventListener("abort", () =>
              setTimeout(() => {
                log.push(`stop ${id}#${n}`);
                resolve();
              }, opts.stopDelayMs ?? 0),
            );
          }),
        crash: () => crash?.(),
      };
    },
  };
}

describe("the supervisor", () => {
  it("starts children in order and stops them in reverse order, waiting for each to finish", async () => {
    const log: string[] = [];
    const sup = createActor(supervisorMachine, {
      input: {
        specs: ["a", "b", "c"].map((id) => recordingChild(id, log, { stopDelayMs: 10 })),
        policy: fastPolicy,
      },
    }).start();
    await new Promise((r) => setTimeout(r, 20));
    expect(log).toEqual(["start a#1", "start b#1", "start c#1"]);
    sup.send({ type: "STOP" });
    await waitFor(sup, (s) => s.status === "done", { timeout: 2000 });
    expect(sup.getSnapshot().value).toBe("stopped");
    expect(log.slice(3)).toEqual(["stop c#1", "stop b#1", "stop a#1"]);
  });

  it("restarts a failed child one_for_one with backoff, leaving its siblings alone", async () => {
    const log: string[] = [];
    const reports: SupervisorReport[] = [];
    const sup = createActor(supervisorMachine, {
      input: {
        specs: [recordingChild("a", log), recordingChild("b", log, { failTimes: 2 })],
        policy: fastPolicy,
        random: () => 0.5,
        report: (r) => reports.push(r),
      },
    }).start();
    await waitFor(
      sup,
      (s) => s.context.info.b?.state === "running" && s.context.info.b.restarts === 2,
      { timeout: 2000 },
    );
    expect(log.filter((l) => l.startsWith("start a"))).toEqual(["start a#1"]);
    expect(log.filter((l) => l.startsWith("start b"))).toEqual([
      "start b#1",
      "start b#2",
      "start b#3",
    ]);
    expect(
      reports.filter((r) => r.kind === "child_failed").map((r) => (r as { error: string }).error),
    ).toEqual(["Error: boom 1", "Error: boom 2"]);
    sup.send({ type: "STOP" });
    await waitFor(sup, (s) => s.status === "done", { timeout: 2000 });
  });

  it("gives up and escalates when a child fails more often than the intensity allows", async () => {
    const log: string[] = [];
    const reports: SupervisorReport[] = [];
    const sup = createActor(supervisorMachine, {
      input: {
        specs: [recordingChild("a", log), recordingChild("flaky", log, { failTimes: 100 })],
        policy: fastPolicy,
        report: (r) => reports.push(r),
      },
    }).start();
    await waitFor(sup, (s) => s.status === "done", { timeout: 3000 });
    expect(sup.getSnapshot().value).toBe("escalated");
    expect(reports.at(-1)).toMatchObject({ kind: "escalated" });
    expect((reports.at(-1) as { reason: string }).reason).toMatch(
      /flaky failed 3 times within 60000 ms/,
    );
    // 1 start + 3 restarts, then the healthy sibling is stopped too.
    expect(log.filter((l) => l.startsWith("start flaky"))).toHaveLength(4);
    expect(log).toContain("stop a#1");
  });

  it("restarts a killed child from scratch and passes pause and resume on", async () => {
    const log: string[] = [];
    const sup = createActor(supervisorMachine, {
      input: { specs: [recordingChild("a", log)], policy: fastPolicy },
    }).start();
    await new Promise((r) => setTimeout(r, 10));
    sup.send({ type: "KILL", id: "a" });
    await waitFor(
      sup,
      (s) => s.context.info.a?.restarts === 1 && s.context.info.a.state === "running",
      { timeout: 2000 },
    );
    expect(log).toEqual(["start a#1", "start a#2"]); // a crash: no orderly stop of #1
    expect(sup.getSnapshot().context.info.a?.lastError).toBe("Error: killed");
    sup.send({ type: "PAUSE", id: "a" });
    const child = () => {
      const ref = sup.getSnapshot().children.a;
      if (!ref) throw new Error("child a is not running");
      return ref;
    };
    await waitFor(child(), (s) => s.value === "paused", { timeout: 2000 });
    expect(sup.getSnapshot().context.info.a?.state).toBe("paused");
    sup.send({ type: "RESUME", id: "a" });
    await waitFor(child(), (s) => s.value === "active", { timeout: 2000 });
    expect(log).toEqual(["start a#1", "start a#2", "stop a#2", "start a#2"]);
    sup.send({ type: "STOP" });
    await waitFor(sup, (s) => s.status === "done", { timeout: 2000 });
  });
});
