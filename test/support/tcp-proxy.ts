import { createServer, type Server, type Socket, connect as tcpConnect } from "node:net";

/**
 * A tiny TCP forwarder on 127.0.0.1 in front of host:port, for tests that need a server to
 * stop answering without disturbing it (the shared test Cassandra, say).
 *
 * `freeze()` behaves like a SIGSTOPped server: every socket stays open, but no byte is
 * forwarded either way and nothing more is read; connections opened while frozen are
 * accepted (as the kernel accepts them for a stopped process) and wait. `thaw()` resumes
 * everything, `close()` drops every connection and stops listening.
 */
export interface TcpProxy {
  /** The local port to point clients at. */
  readonly port: number;
  /** "127.0.0.1:<port>". */
  readonly address: string;
  readonly frozen: boolean;
  /** Connections accepted so far (for assertions that traffic went through the proxy). */
  readonly connections: number;
  freeze(): void;
  thaw(): void;
  close(): Promise<void>;
}

interface Pair {
  client: Socket;
  upstream?: Socket;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const pairs = new Set<Pair>();
  let frozen = false;
  let closed = false;
  let accepted = 0;

  /** Forwards from → to; pauses `from` under backpressure, and whenever frozen. */
  const forward = (from: Socket, to: Socket) => {
    from.on("data", (chunk: Buffer) => {
      // A chunk read just before freeze() is still delivered; nothing more is read after.
      if (!to.write(chunk) || frozen) from.pause();
    });
    to.on("drain", () => {
      if (!frozen) from.resume();
    });
  };

  const connectUpstream = (pair: Pair) => {
    const upstream = tcpConnect(target.port, target.host);
    pair.upstream = upstream;
    upstream.setNoDelay(true);
    forward(pair.client, upstream);
    forward(upstream, pair.client);
    const drop = () => {
      pair.client.destroy();
      upstream.destroy();
      pairs.delete(pair);
    };
    upstream.on("error", drop);
    upstream.on("close", drop);
    pair.client.on("error", drop);
    pair.client.on("close", drop);
    if (frozen) upstream.pause();
    else pair.client.resume();
  };

  const server: Server = createServer({ pauseOnConnect: true }, (client) => {
    accepted++;
    client.setNoDelay(true);
    const pair: Pair = { client };
    pairs.add(pair);
    if (closed) {
      client.destroy();
      return;
    }
    // Accepted but silent while frozen: upstream is connected on thaw.
    if (frozen) {
      client.on("error", () => {});
      client.on("close", () => pairs.delete(pair));
      return;
    }
    connectUpstream(pair);
  });

  const port = await new Promise<number>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const a = server.address();
      if (a === null || typeof a === "string") reject(new Error("tcp-proxy: no port"));
      else resolve(a.port);
    });
  });

  return {
    port,
    address: `127.0.0.1:${port}`,
    get frozen() {
      return frozen;
    },
    get connections() {
      return accepted;
    },
    freeze() {
      frozen = true;
      for (const p of pairs) {
        p.client.pause();
        p.upstream?.pause();
      }
    },
    thaw() {
      if (!frozen) return;
      frozen = false;
      for (const p of pairs) {
        if (p.client.destroyed) continue;
        if (!p.upstream) connectUpstream(p);
        else {
          p.client.resume();
          p.upstream.resume();
        }
      }
    },
    async close() {
      if (closed) return;
      closed = true;
      for (const p of pairs) {
        p.client.destroy();
        p.upstream?.destroy();
      }
      pairs.clear();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
