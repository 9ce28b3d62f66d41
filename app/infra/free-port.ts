import { readFileSync } from "node:fs";
import { createServer } from "node:net";

/**
 * The first port of the kernel's ephemeral range (outgoing connections' local ports), 32768
 * when it cannot be read. Ports below it are never handed to a client socket.
 */
function ephemeralLow(): number {
  try {
    const [low] = readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8")
      .trim()
      .split(/\s+/);
    const n = Number(low);
    return Number.isInteger(n) && n > 1024 ? n : 32768;
  } catch {
    return 32768;
  }
}

/** Binds host:port (0: any) and releases it; resolves the port bound, or undefined. */
function tryBind(host: string, port: number): Promise<number | undefined> {
  return new Promise((done) => {
    const srv = createServer();
    srv.unref();
    srv.once("error", () => done(undefined));
    srv.listen(port, host, () => {
      const addr = srv.address();
      const bound = addr !== null && typeof addr !== "string" ? addr.port : undefined;
      srv.close(() => done(bound));
    });
  });
}

/**
 * A free TCP port on the loopback interface for a server of ours. Drawn at random from
 * 20000 up to the kernel's ephemeral range rather than from the OS (port 0, which hands out
 * ephemeral ports): a server restarted on its port — a nats-server after a crash — would
 * otherwise find it, or its monitoring port, taken meanwhile by some client connection's
 * local port. Falls back to an OS-assigned port when no drawn port binds.
 */
export async function freePort(host = "127.0.0.1"): Promise<number> {
  const low = 20_000;
  const high = ephemeralLow() - 1;
  if (high > low) {
    for (let i = 0; i < 50; i++) {
      const port = low + Math.floor(Math.random() * (high - low + 1));
      if ((await tryBind(host, port)) !== undefined) return port;
    }
  }
  const port = await tryBind(host, 0);
  if (port === undefined) throw new Error(`no free TCP port on ${host}`);
  return port;
}

/** True when host:port can be bound now. */
export async function canBind(host: string, port: number): Promise<boolean> {
  return (await tryBind(host, port)) !== undefined;
}

/** True when something accepts TCP connections at host:port. */
export async function isListening(host: string, port: number, timeoutMs = 500): Promise<boolean> {
  const { Socket } = await import("node:net");
  return new Promise((done) => {
    const s = new Socket();
    const finish = (ok: boolean) => {
      s.destroy();
      done(ok);
    };
    s.setTimeout(timeoutMs, () => finish(false));
    s.once("error", () => finish(false));
    s.connect(port, host, () => finish(true));
  });
}
