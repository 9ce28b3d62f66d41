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
}

/**
 * The web console (src/console/bridge.ts) as a supervised service: it opens a NATS connection
 * of its own as the query role, serves the page and its API, and reports its URL in its status
 * (`adclick admin actors`, `adclick up`). A failure of the connection or the server fails the
 * actor, which the supervisor restarts. A port another process holds is not a failure of the
 * worker: the console says so in its status and the log, and is not served.
 */
export function consoleServerChild(o: ConsoleServerOptions): ChildSpec {
  const { id, shutdownMs, connect, password, log, ...bridge } = o;
  const serve = fromCallback<EventObject, { id: string }>(({ sendBack }) => {
    let nc: NatsConnection | undefined;
    let server: ConsoleBridge | undefined;
    let stopped = false;
    const release = () => {
      void server?.close().catch(() => {});
      void nc?.drain().catch(() => nc?.close().catch(() => {}));
      server = undefined;
      nc = undefined;
    };
    (async () => {
      nc = await connect();
      if (stopped) return release();
      // A connection that closes for good (not a reconnect) fails the actor: it restarts.
      void nc.closed().then((err) => {
        if (!stopped) sendBack({ type: "SERVICE_FAILED", error: err ?? new Error("NATS closed") });
      });
      try {
        server = await startConsoleBridge({
          ...bridge,
          nc,
          ...(password ? { password: password() } : {}),
          log,
        });
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code === "EADDRINUSE") {
          const why = `port ${bridge.port} on ${bridge.host} is taken: the web console is not served`;
          log(why);
          sendBack({ type: "SERVICE_READY", status: { url: null, error: why } });
          return;
        }
        throw err;
      }
      if (stopped) return release();
      sendBack({
        type: "SERVICE_READY",
        status: { url: server.url, login: password ? "query" : "none (loopback)" },
      });
    })().catch((error: unknown) => {
      release();
      if (!stopped) sendBack({ type: "SERVICE_FAILED", error });
    });
    return () => {
      stopped = true;
      release();
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
