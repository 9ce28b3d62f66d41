import { createServer } from "node:net";

/** Asks the OS for a free TCP port on the loopback interface. */
export function freePort(host = "127.0.0.1"): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, host, () => {
      const addr = srv.address();
      if (addr === null || typeof addr === "string") {
        srv.close();
        reject(new Error("no port assigned"));
        return;
      }
      const { port } = addr;
      srv.close(() => resolvePort(port));
    });
  });
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
