import { describe, expect, it } from "vitest";
import { createActor, fromCallback } from "xstate";
import { resourceService, serviceLogic } from "../../actors/service.js";

// Service actors: ready once their callback says so, failed when it reports a failure,
// stopped (their clean-up run) on STOP.

const tick = () => new Promise((r) => setTimeout(r, 0));

describe("a service actor", () => {
  it("is ready once its service is up, and runs its clean-up on STOP", async () => {
    const log: string[] = [];
    const service = createActor(
      resourceService(
        async () => {
          log.push("started");
          return "svc";
        },
        (r) => {
          log.push(`stopped ${r}`);
        },
      ),
      { input: { id: "s" } },
    ).start();
    expect(service.getSnapshot().context.status).toEqual({ ready: false });
    await tick();
    expect(service.getSnapshot().context.status).toEqual({ ready: true });
    service.send({ type: "STOP" });
    expect(service.getSnapshot().output).toEqual({ failed: false });
    expect(log).toEqual(["started", "stopped svc"]);
  });

  it("adds what its service reports to its status, keeping it ready", async () => {
    let report: (s: Record<string, unknown>) => void = () => {};
    const service = createActor(
      resourceService(
        async (r) => {
          report = r;
          return "svc";
        },
        () => {},
      ),
      { input: { id: "s" } },
    ).start();
    await tick();
    report({ lastReport: { mismatchCount: 0 } });
    report({ lastError: "Cassandra timed out" });
    expect(service.getSnapshot().context.status).toEqual({
      ready: true,
      lastReport: { mismatchCount: 0 },
      lastError: "Cassandra timed out",
    });
  });

  it("fails when its service cannot start", async () => {
    const error = new Error("port taken");
    const service = createActor(
      resourceService(
        () => Promise.reject(error),
        () => {},
      ),
      { input: { id: "s" } },
    ).start();
    await tick();
    expect(service.getSnapshot().output).toEqual({ failed: true, error });
  });

  it("fails when its service reports it broke, and on KILL", async () => {
    let broke: () => void = () => {};
    const service = createActor(
      serviceLogic(
        fromCallback(({ sendBack }) => {
          broke = () => sendBack({ type: "SERVICE_FAILED", error: new Error("gone") });
        }),
      ),
      { input: { id: "s" } },
    ).start();
    broke();
    expect(service.getSnapshot().output?.failed).toBe(true);
    const killed = createActor(serviceLogic(fromCallback(() => {})), { input: { id: "k" } });
    killed.start();
    killed.send({ type: "KILL" });
    expect(killed.getSnapshot().output?.failed).toBe(true);
  });
});
