import { timingSafeEqual } from "node:crypto";
import { readFile } from "node:fs/promises";
import {
  createServer,
  type IncomingMessage,
  type OutgoingHttpHeaders,
  type Server,
  type ServerResponse,
} from "node:http";
import { extname, join } from "node:path";
import type { Msg, NatsConnection } from "@nats-io/transport-node";
import { Counter, Gauge, Histogram } from "prom-client";
import type { AdclickErrorCode } from "../errors.js";
import { registry } from "../metrics/registry.js";
import { serviceErrorOf, serviceStatusOf } from "../wire/service-errors.js";

/**
 * The web console's server-side bridge: static files (the page, uPlot) and a small HTTP API
 * that passes the page's questions to the same NATS APIs every client uses — adclick.query.*
 * and the read-only admin subjects adclick.admin.status / .actors — over a connection of the
 * query role. There is no second data path: what the page shows is what those answer.
 *
 *   GET /api/top?…, /api/series?…, /api/count?…  the query's JSON, as the service answers it
 *   GET /api/health                               {"status": [...], "actors": [...]} (every worker)
 *   GET /api/events?<top parameters>              Server-Sent Events: `top` every ~2 s, `health` every ~5 s
 */

const requests = new Counter({
  name: "adclick_console_requests_total",
  help: "Web console HTTP requests, by route and HTTP status",
  labelNames: ["route", "status"] as const,
  registers: [registry],
});
const latency = new Histogram({
  name: "adclick_console_request_seconds",
  help: "Web console HTTP request latency (for /api/events: until the stream opens), by route",
  labelNames: ["route"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});
const openStreams = new Gauge({
  name: "adclick_console_event_streams",
  help: "Web console event streams (/api/events) open now",
  registers: [registry],
});

/** A query parameter the page may send, per endpoint (anything else is refused with 400). */
const RANGE_PARAMS = ["minutes", "from", "to"] as const;
const FILTER_PARAMS = ["country", "ip", "user_id"] as const;
export const QUERY_PARAMS = {
  top: ["n", ...RANGE_PARAMS, ...FILTER_PARAMS],
  series: ["ad_id", ...RANGE_PARAMS, ...FILTER_PARAMS],
  count: ["ad_id", ...RANGE_PARAMS, ...FILTER_PARAMS],
} as const;
export type QueryKind = keyof typeof QUERY_PARAMS;

const MAX_URL_LENGTH = 4096;
const MAX_STREAMS = 64;

export interface ConsoleBridgeOptions {
  /** A connection of the query role: its own, never the worker's. */
  nc: NatsConnection;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** When set, every request needs HTTP Basic auth as user `query` with this password. */
  password?: string;
  /** The page: index.html, app.js, style.css. */
  staticDir: string;
  /** uPlot's dist folder (node_modules/uplot/dist). */
  uplotDir: string;
  /** How long a NATS request may take before the page is told the service did not answer. */
  requestTimeoutMs?: number;
  /** How long the admin list commands gather the workers' replies. */
  adminWaitMs?: number;
  topEveryMs?: number;
  healthEveryMs?: number;
  log?: (m: string) => void;
}

export interface ConsoleBridge {
  /** The address the console is served at, e.g. http://127.0.0.1:8480/. */
  url: string;
  port: number;
  close(): Promise<void>;
}

/** An error the bridge answers itself (bad parameters, the service not answering). */
class BridgeError extends Error {
  constructor(
    readonly code: AdclickErrorCode,
    message: string,
  ) {
    super(message);
  }
}

/** A reply to pass on: the HTTP status and the JSON text. */
interface Answer {
  status: number;
  body: string;
}

function errorAnswer(code: AdclickErrorCode, message: string): Answer {
  return { status: serviceStatusOf(code), body: JSON.stringify({ error: { code, message } }) };
}

/**
 * The NATS request body for the page's parameters: numbers where the API wants numbers
 * (`n`, `minutes`; anything else is passed as text, so the service says what is wrong with it),
 * the filters in `filter`. Unknown or repeated parameters are refused here.
 */
export function queryBodyOf(kind: QueryKind, params: URLSearchParams): Record<string, unknown> {
  const allowed: readonly string[] = QUERY_PARAMS[kind];
  const body: Record<string, unknown> = {};
  const filter: Record<string, string> = {};
  const seen = new Set<string>();
  for (const [k, v] of params) {
    if (!allowed.includes(k))
      throw new BridgeError(
        "BAD_REQUEST",
        `unknown parameter "${k}" for ${kind}; allowed: ${allowed.join(", ")}`,
      );
    if (seen.has(k)) throw new BridgeError("BAD_REQUEST", `parameter "${k}" is given twice`);
    seen.add(k);
    if (v === "") continue; // an empty form field: not given
    if ((FILTER_PARAMS as readonly string[]).includes(k)) filter[k] = v;
    else if (k === "n" || k === "minutes") body[k] = /^-?\d{1,15}$/.test(v.trim()) ? Number(v) : v;
    else body[k] = v;
  }
  if (Object.keys(filter).length > 0) body.filter = filter;
  return body;
}

/**
 * Whether a Host header names this machine's loopback (localhost, 127.x.y.z, [::1]), with any
 * port. A console without a password answers only those: a page elsewhere that points a name
 * of its own at 127.0.0.1 (DNS rebinding) gets nothing.
 */
export function isLoopbackHostHeader(host: string | undefined): boolean {
  if (!host) return false;
  const name = host.startsWith("[") ? host.slice(0, host.indexOf("]") + 1) : host.split(":")[0];
  return (
    name === "localhost" || name === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(name ?? "")
  );
}

/** Whether `header` carries HTTP Basic credentials user `query` with `password`. */
export function basicAuthOk(header: string | undefined, password: string): boolean {
  const m = /^Basic\s+([A-Za-z0-9+/=]+)\s*$/i.exec(header ?? "");
  if (!m?.[1]) return false;
  const text = Buffer.from(m[1], "base64").toString("utf8");
  const colon = text.indexOf(":");
  if (colon < 0) return false;
  const user = text.slice(0, colon);
  const given = Buffer.from(text.slice(colon + 1));
  const want = Buffer.from(password);
  // Compare in constant time (lengths first: timingSafeEqual needs equal lengths).
  const same = given.length === want.length && timingSafeEqual(given, want);
  return user === "query" && same;
}

const CONTENT_TYPES: Record<string, string> = {
  ".html": "text/html; charset=utf-8",
  ".js": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8",
  ".png": "image/png",
};

/** Starts the console's HTTP server; resolves once it listens. */
export async function startConsoleBridge(o: ConsoleBridgeOptions): Promise<ConsoleBridge> {
  const timeoutMs = o.requestTimeoutMs ?? 5000;
  const adminWaitMs = o.adminWaitMs ?? 1500;
  const topEveryMs = o.topEveryMs ?? 2000;
  const healthEveryMs = o.healthEveryMs ?? 5000;
  const log = o.log ?? (() => {});
  const STATIC: Record<string, string> = {
    "/": join(o.staticDir, "index.html"),
    "/index.html": join(o.staticDir, "index.html"),
    "/app.js": join(o.staticDir, "app.js"),
    "/style.css": join(o.staticDir, "style.css"),
    "/vendor/uPlot.iife.min.js": join(o.uplotDir, "uPlot.iife.min.js"),
    "/vendor/uPlot.min.css": join(o.uplotDir, "uPlot.min.css"),
  };
  const streams = new Set<() => void>();

  /** One query over NATS, its reply passed on as it came (an error reply with its status). */
  async function query(kind: QueryKind, params: URLSearchParams): Promise<Answer> {
    let body: Record<string, unknown>;
    try {
      body = queryBodyOf(kind, params);
    } catch (e) {
      if (e instanceof BridgeError) return errorAnswer(e.code, e.message);
      throw e;
    }
    let msg: Msg;
    try {
      msg = await o.nc.request(`adclick.query.${kind}`, JSON.stringify(body), {
        timeout: timeoutMs,
      });
    } catch (e) {
      return unavailable(`adclick.query.${kind}`, e);
    }
    const error = serviceErrorOf(msg);
    if (!error) return { status: 200, body: msg.string() };
    const status = error.code ? serviceStatusOf(error.code) : error.status;
    // The service's own JSON body when it sent one; else the same shape from its headers.
    let text = msg.string();
    try {
      const parsed = JSON.parse(text) as { error?: { message?: unknown } };
      if (typeof parsed?.error?.message !== "string") throw new Error("no error body");
    } catch {
      text = JSON.stringify({ error: { code: error.code ?? "INTERNAL", message: error.message } });
    }
    return { status, body: text };
  }

  function unavailable(subject: string, e: unknown): Answer {
    const s = String((e as Error)?.message ?? e);
    if (/no responders|503/i.test(s) || (e as Error)?.name === "NoRespondersError")
      return errorAnswer("UNAVAILABLE", `nothing answers ${subject}: is a query role running?`);
    if (/timeout/i.test(s) || (e as Error)?.name === "TimeoutError")
      return errorAnswer("UNAVAILABLE", `${subject} did not answer within ${timeoutMs} ms`);
    return errorAnswer("UNAVAILABLE", `${subject} failed: ${s}`);
  }

  /** Every worker's reply to a read-only admin list command (as `adclick admin` gathers them). */
  async function adminList(cmd: "status" | "actors"): Promise<unknown[]> {
    const replies: unknown[] = [];
    const it = await o.nc.requestMany(`adclick.admin.${cmd}`, "{}", {
      strategy: "stall",
      stall: 300,
      maxWait: adminWaitMs,
    });
    for await (const m of it) {
      const error = serviceErrorOf(m);
      if (error) throw new BridgeError(error.code ?? "INTERNAL", error.message);
      if (m.data.length > 0) replies.push(m.json());
    }
    return replies;
  }

  async function health(): Promise<Answer> {
    try {
      const [status, actors] = await Promise.all([adminList("status"), adminList("actors")]);
      if (status.length === 0)
        return errorAnswer("UNAVAILABLE", "no worker answered adclick.admin.status");
      return { status: 200, body: JSON.stringify({ status, actors: actors.flat() }) };
    } catch (e) {
      if (e instanceof BridgeError) return errorAnswer(e.code, e.message);
      return unavailable("adclick.admin.status", e);
    }
  }

  function send(res: ServerResponse, a: Answer, headers: OutgoingHttpHeaders = {}): void {
    res.writeHead(a.status, {
      "content-type": "application/json; charset=utf-8",
      "cache-control": "no-store",
      ...headers,
    });
    res.end(a.body);
  }

  /** SSE: `top` events every topEveryMs, `health` every healthEveryMs, until the client leaves. */
  function events(req: IncomingMessage, res: ServerResponse, params: URLSearchParams): void {
    if (streams.size >= MAX_STREAMS) {
      send(res, errorAnswer("UNAVAILABLE", `too many open consoles (${MAX_STREAMS})`));
      return;
    }
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    res.write("retry: 2000\n\n");
    let open = true;
    const timers: ReturnType<typeof setTimeout>[] = [];
    const emit = (event: string, a: Answer) => {
      if (open) res.write(`event: ${event}\ndata: ${a.body.replace(/\n/g, "")}\n\n`);
    };
    // Each loop asks again only after its previous answer: a slow service is not piled on.
    const loop = (everyMs: number, ask: () => Promise<Answer>, event: string) => {
      const tick = async () => {
        if (!open) return;
        const a = await ask().catch((e: unknown) => unavailable(event, e));
        emit(event, a);
        if (open) timers.push(setTimeout(tick, everyMs));
      };
      void tick();
    };
    const stop = () => {
      if (!open) return;
      open = false;
      for (const t of timers) clearTimeout(t);
      streams.delete(stop);
      openStreams.set(streams.size);
      res.end();
    };
    streams.add(stop);
    openStreams.set(streams.size);
    req.on("close", stop);
    res.on("error", stop);
    loop(topEveryMs, () => query("top", params), "top");
    loop(healthEveryMs, health, "health");
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<string> {
    if ((req.url ?? "").length > MAX_URL_LENGTH) {
      send(res, errorAnswer("BAD_REQUEST", `the URL is longer than ${MAX_URL_LENGTH} characters`));
      return "other";
    }
    const url = new URL(req.url ?? "/", "http://console");
    const path = url.pathname;
    const route = path.startsWith("/api/") ? path.slice(5) : STATIC[path] ? "static" : "other";
    if (o.password !== undefined && !basicAuthOk(req.headers.authorization, o.password)) {
      send(
        res,
        errorAnswer(
          "AUTH_FAILED",
          'this console needs a login: user "query" and the console password (console.password in AdClick\'s credentials folder)',
        ),
        { "www-authenticate": 'Basic realm="AdClick console", charset="UTF-8"' },
      );
      return route;
    }
    if (o.password === undefined && !isLoopbackHostHeader(req.headers.host)) {
      send(
        res,
        errorAnswer(
          "PERMISSION_DENIED",
          "this console listens on loopback and answers only to localhost, 127.0.0.1 or [::1]; to serve other names, set ADCLICK_CONSOLE_HOST (it then asks for the query login)",
        ),
      );
      return route;
    }
    if (req.method !== "GET" && req.method !== "HEAD") {
      const refused = errorAnswer(
        "BAD_REQUEST",
        `${req.method} is not served: the console only reads`,
      );
      send(res, { ...refused, status: 405 }, { allow: "GET, HEAD" });
      return route;
    }
    if (Number(req.headers["content-length"] ?? 0) > 0) {
      send(res, errorAnswer("BAD_REQUEST", "the console takes no request bodies"));
      return route;
    }
    const file = STATIC[path];
    if (file) {
      try {
        const data = await readFile(file);
        res.writeHead(200, {
          "content-type": CONTENT_TYPES[extname(file)] ?? "application/octet-stream",
          "cache-control": "no-cache",
          "x-content-type-options": "nosniff",
        });
        res.end(req.method === "HEAD" ? undefined : data);
      } catch (e) {
        send(res, errorAnswer("INTERNAL", `cannot read ${path}: ${(e as Error).message}`));
      }
      return route;
    }
    switch (route) {
      case "top":
      case "series":
      case "count":
        send(res, await query(route, url.searchParams));
        return route;
      case "health":
        if ([...url.searchParams].length > 0) {
          send(res, errorAnswer("BAD_REQUEST", "/api/health takes no parameters"));
          return route;
        }
        send(res, await health());
        return route;
      case "events":
        try {
          queryBodyOf("top", url.searchParams);
        } catch (e) {
          if (!(e instanceof BridgeError)) throw e;
          send(res, errorAnswer(e.code, e.message));
          return route;
        }
        events(req, res, url.searchParams);
        return route;
      default:
        send(
          res,
          errorAnswer(
            "NOT_FOUND",
            `nothing at ${path.slice(0, 200)}: the console is at /, its API at /api/top, /api/series, /api/count, /api/health, /api/events`,
          ),
        );
        return path.startsWith("/api/") ? "api-other" : "other";
    }
  }

  const server: Server = createServer((req, res) => {
    const started = performance.now();
    handle(req, res)
      .catch((e: unknown) => {
        // Never crash the process for one request.
        log(`console: ${req.method} ${req.url?.slice(0, 200)} failed: ${e}`);
        if (!res.headersSent) send(res, errorAnswer("INTERNAL", String(e)));
        else res.end();
        return "other";
      })
      .then((route) => {
        const known = ["static", "top", "series", "count", "health", "events", "api-other"];
        const label = known.includes(route) ? route : "other";
        requests.inc({ route: label, status: String(res.statusCode) });
        latency.observe({ route: label }, (performance.now() - started) / 1000);
      });
  });
  server.on("clientError", (_err, socket) => {
    if (socket.writable) socket.end("HTTP/1.1 400 Bad Request\r\n\r\n");
    else socket.destroy();
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(o.port, o.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  server.on("error", (e) => log(`console: ${e}`));
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : o.port;
  const hostPart = o.host.includes(":") ? `[${o.host}]` : o.host;
  return {
    url: `http://${hostPart}:${port}/`,
    port,
    close: () =>
      new Promise<void>((done) => {
        for (const stop of [...streams]) stop();
        server.close(() => done());
        server.closeAllConnections();
      }),
  };
}
