import { createServer, type Server } from "node:http";
import { collectDefaultMetrics, Registry } from "prom-client";

/**
 * One registry per process. Metrics are created once, at module load of the component that
 * owns them, and labelled by stream / partition / actor — never by ad_id (unbounded).
 */
export const registry = new Registry();
collectDefaultMetrics({ register: registry, prefix: "adclick_" });

export interface MetricsServer {
  port: number;
  close(): Promise<void>;
}

/** Serves GET /metrics (Prometheus text format) on the given port; 0 picks a free one. */
export function serveMetrics(port: number, host = "0.0.0.0"): Promise<MetricsServer> {
  const server: Server = createServer(async (req, res) => {
    if (req.method === "GET" && req.url?.split("?")[0] === "/metrics") {
      try {
        const body = await registry.metrics();
        res.writeHead(200, { "content-type": registry.contentType });
        res.end(body);
      } catch (err) {
        res.writeHead(500, { "content-type": "text/plain" });
        res.end(String(err));
      }
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found: try /metrics\n");
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      const addr = server.address();
      const bound = typeof addr === "object" && addr ? addr.port : port;
      resolve({
        port: bound,
        close: () => new Promise<void>((done) => server.close(() => done())),
      });
    });
  });
}
