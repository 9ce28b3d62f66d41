import { createServer } from "node:net";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { describe, expect, it } from "vitest";
import { createActor } from "xstate";
import { consoleServerChild } from "../../actors/console-server.js";

// The console-server actor: serves and says where; a console that cannot be served is shown,
// never a failure that could make the supervisor give up on the worker.

const folders = {
  staticDir: join(import.meta.dirname, "../../console"),
  uplotDir: join(import.meta.dirname, "../../node_modules/uplot/dist"),
};
const openNats = () => {
  let close: (e?: Error) => void = () => {};
  const closed = new Promise<Error | undefined>((r) => {
    close = r;
  });
  let isClosed = false;
  const nc = {
    closed: () => closed,
    drain: async () => {
      isClosed = true;
      close();
    },
    close: async () => {
      isClosed = true;
      close();
    },
    isClosed: () => isClosed,
  } as unknown as NatsConnection;
  return { nc, close };
};
const status = (a: { getSnapshot(): { context: unknown } }) =>
  (a.getSnapshot().context as { status: Record<string, unknown> }).status;
const until = async (ok: () => boolean) => {
  for (let i = 0; i < 200 && !ok(); i++) await new Promise((r) => setTimeout(r, 10));
};

function start(o: Partial<Parameters<typeof consoleServerChild>[0]>) {
  const log: string[] = [];
  const spec = consoleServerChild({
    id: "console-server",
    shutdownMs: 1000,
    host: "127.0.0.1",
    port: 0,
    connect: async () => openNats().nc,
    log: (m) => log.push(m),
    ...folders,
    ...o,
  });
  const actor = createActor(spec.logic, { input: spec.input }).start();
  return { actor, log };
}

describe("the console-server actor", () => {
  it("serves, reports its URL, and stops serving on STOP", async () => {
    const { actor } = start({});
    await until(() => typeof status(actor).url === "string");
    const url = String(status(actor).url);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    expect(status(actor)).toMatchObject({ ready: true, login: "none (loopback)" });
    expect((await fetch(url)).status).toBe(200);
    actor.send({ type: "STOP" });
    await new Promise((r) => setTimeout(r, 50));
    await expect(fetch(url)).rejects.toThrow();
  });

  it("says so when NATS refuses it, keeps trying, and serves once it gets in", async () => {
    let attempts = 0;
    const { actor, log } = start({
      retryMs: 20,
      connect: async () => {
        if (++attempts < 3) throw new Error("Authorization Violation");
        return openNats().nc;
      },
    });
    await until(() => status(actor).error !== undefined);
    expect(status(actor)).toMatchObject({ ready: true, url: null });
    expect(String(status(actor).error)).toMatch(/cannot connect to NATS as the query role/);
    await until(() => typeof status(actor).url === "string");
    expect(attempts).toBe(3);
    expect(actor.getSnapshot().status).toBe("active");
    expect(log).toHaveLength(1); // the same failure is logged once
    actor.send({ type: "STOP" });
  });

  it("closes its connection outright when the drain hangs (NATS down) on STOP", async () => {
    let closed = false;
    const hanging = {
      closed: () => new Promise(() => {}),
      drain: () => new Promise(() => {}),
      close: async () => {
        closed = true;
      },
      isClosed: () => closed,
    } as unknown as NatsConnection;
    const { actor } = start({ connect: async () => hanging });
    await until(() => typeof status(actor).url === "string");
    actor.send({ type: "STOP" });
    await new Promise((r) => setTimeout(r, 1000));
    expect(closed).toBe(false); // still draining
    await new Promise((r) => setTimeout(r, 800));
    expect(closed).toBe(true);
  });

  it("is not served, and does not fail, when its port is taken", async () => {
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, "127.0.0.1", r));
    const port = (taken.address() as { port: number }).port;
    const { actor, log } = start({ port });
    await until(() => status(actor).error !== undefined);
    expect(status(actor)).toEqual({
      ready: true,
      url: null,
      error: `port ${port} on 127.0.0.1 is taken`,
    });
    expect(actor.getSnapshot().status).toBe("active");
    expect(log).toEqual([`web console not served: port ${port} on 127.0.0.1 is taken`]);
    actor.send({ type: "STOP" });
    taken.close();
  });
});
