import type { NatsConnection } from "@nats-io/transport-node";
import { type EventObject, fromCallback } from "xstate";
import type { ConsoleBridge, ConsoleBridgeOptions } from "../src/console/bridge.js";
import { startConsoleBridge } from "../src/console/bridge.js";
import type { ChildSpec } from "../supervisor/supervisor.js";
import { serviceLogic } from "./service.js";

export interface ConsoleServerOptions
  extends Omit<ConsoleBridgeOptions, "nc" | "password" | "log"> {
  id: string;
  shutdownMs: number;
  /** Opens the console's own NATS connection (role query), closed when the actor stops. */
  connect: () => Promise<NatsConnection>;
  /** The password the console asks for (HTTP Basic, user `query`); undefined: none (loopback). */
  password?: () => string;
  log: (m: string) => void;
  /** How long to wait before trying again when the console cannot connect (default 10 s). */
  retryMs?: number;
}

/**
 * Drains the console's connection, or closes it outright when the drain does not finish within
 * 1.5 s (a server that is down: a drain would leave the client reconnecting, keeping the
 * process alive after its orderly stop).
 */
async function letGo(nc: NatsConnection): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    nc.drain().catch(() => {}),
    new Promise<void>((resolve) => {
      timer = setTimeout(resolve, 1500);
    }),
  ]);
  clearTimeout(timer);
  if (!nc.isClosed()) await nc.close().catch(() => {});
}

/**
 * The web console (src/console/bridge.ts) as a supervised service: it opens a NATS connection
 * of its own as the query role, serves the page and its API, and reports its URL in its status
 * (`adclick admin actors`, `adclick up`).
 *
 * The console is a window on the pipeline, never a reason for it to stop: a port another
 * process holds (or an address it cannot listen on), a login NATS refuses or a connection
 * closed for good is logged and shown in its status (`url: null`, `error`); it tries NATS
 * again by itself (every `retryMs`) instead of failing, since repeated failures would count
 * toward the supervisor's restart intensity and stop the whole worker.
 */
export function consoleServerChild(o: ConsoleServerOptions): ChildSpec {
  const { id, shutdownMs, connect, password, log, retryMs = 10_000, ...bridge } = o;
  const serve = fromCallback<EventObject, { id: string }>(({ sendBack }) => {
    let nc: NatsConnection | undefined;
    let server: ConsoleBridge | undefined;
    let stopped = false;
    let wake: (() => void) | undefined;
    const pause = (ms: number) =>
      new Promise<void>((resolve) => {
        const t = setTimeout(resolve, ms);
        wake = () => {
          clearTimeout(t);
          resolve();
        };
      });
    const release = async () => {
      const [s, c] = [server, nc];
      server = undefined;
      nc = undefined;
      await s?.close().catch(() => {});
      if (c) await letGo(c);
    };
    const notServed = (why: string) => {
      log(`web console not served: ${why}`);
      sendBack({ type: "SERVICE_READY", status: { url: null, error: why } });
    };

    const run = async () => {
      let said: string | undefined;
      while (!stopped) {
        try {
          nc = await connect();
        } catch (err) {
          const why = `cannot connect to NATS as the query role: ${(err as Error).message ?? err}; trying again every ${Math.round(retryMs / 1000)} s`;
          if (why !== said) notServed(why);
          said = why;
          await pause(retryMs);
          continue;
        }
        if (stopped) break;
        try {
          server = await startConsoleBridge({
            ...bridge,
            nc,
            ...(password ? { password: password() } : {}),
            log,
          });
        } catch (err) {
          await release();
          // A port another process serves (another worker's console), an address this machine
          // does not have: a setting to fix, not a reason to restart anything.
          notServed(
            (err as NodeJS.ErrnoException).code === "EADDRINUSE"
              ? `port ${bridge.port} on ${bridge.host} is taken`
              : `cannot listen on ${bridge.host}:${bridge.port}: ${(err as Error).message}`,
          );
          return;
        }
        if (stopped) break;
        said = undefined;
        sendBack({
          type: "SERVICE_READY",
          status: { url: server.url, login: password ? "query" : "none (loopback)" },
        });
        // A connection closed for good (reconnects are the client's business): start again.
        const closedWith = await nc.closed();
        if (stopped) break;
        await release();
        notServed(`its NATS connection closed (${closedWith ?? "no error"}); reconnecting`);
        await pause(Math.min(retryMs, 1000));
      }
    };
    run()
      .catch((error: unknown) => {
        // Not expected: a failure of the actor (the supervisor restarts it).
        if (!stopped) sendBack({ type: "SERVICE_FAILED", error });
      })
      .finally(() => {
        if (stopped) void release();
      });
    return () => {
      stopped = true;
      wake?.();
      void release();
    };
  });
  return {
    id,
    kind: "console-server",
    restart: "permanent",
    shutdownMs,
    logic: serviceLogic(serve),
    input: { id },
  };
}
