import type { ChildProcessWithoutNullStreams } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, afterEach, describe, expect, inject, it } from "vitest";
import { ensureLayout } from "../../app/cli/layout.js";
import { defaultCredentialsDir } from "../../app/infra/credentials.js";
import { canBind, freePort, isListening } from "../../app/infra/free-port.js";
import { type NatsServerHandle, startNatsServer } from "../../app/infra/nats-server.js";
import { STREAMS } from "../../nats/layout.js";
import { loadConfig } from "../../src/config.js";
import { generateClickLog } from "../../src/gen/click-log.js";
import { RAW_WRITER_DURABLE } from "../../src/ingest/raw-writer.js";
import { connectNats } from "../../src/nats/connect.js";
import { harnessNatsAuth, natsLogin, uniqueName } from "../harness/servers.js";
import { until } from "../support/chaos.js";
import { adclick, adclickRun, waitForOutput } from "../support/cli.js";
import { startTcpProxy, type TcpProxy } from "../support/tcp-proxy.js";

/**
 * After SIGINT or SIGTERM, `adclick up`, `adclick worker` and `adclick ship` exit within 10 s
 * whatever state NATS and Cassandra are in (dead, frozen), and stop the servers they started.
 * Each test prints the measured stop time ("[shutdown] ... exited N ms after SIG...").
 *
 * Servers: a nats-server of the test's own (killed with SIGKILL), the run's shared test
 * Cassandra — frozen for one test through a TCP proxy (test/support/tcp-proxy.ts) so that the
 * shared node itself is never disturbed.
 */

const STOP_BOUND_MS = 10_000;
/** How long a process that overruns the bound is still watched, to report how long it hangs. */
const OBSERVE_MS = 30_000;

interface Watched {
  p: ChildProcessWithoutNullStreams;
  /** Everything it printed so far. */
  output: () => string;
}

function watch(p: ChildProcessWithoutNullStreams): Watched {
  let out = "";
  p.stdout.on("data", (d) => {
    out += d;
  });
  p.stderr.on("data", (d) => {
    out += d;
  });
  return { p, output: () => out };
}

const running = new Set<ChildProcessWithoutNullStreams>();

function start(args: string[], env: NodeJS.ProcessEnv): Watched {
  const p = adclick(args, env);
  running.add(p);
  p.once("exit", () => running.delete(p));
  return watch(p);
}

function gone(p: ChildProcessWithoutNullStreams): boolean {
  return p.exitCode !== null || p.signalCode !== null;
}

/**
 * Sends `signal` and measures how long the process takes to exit: milliseconds, or undefined
 * when it is still running after OBSERVE_MS (then it is SIGKILLed).
 */
async function stopTime(
  w: Watched,
  signal: NodeJS.Signals,
  label: string,
): Promise<{ ms: number | undefined; code: number | null; signal: NodeJS.Signals | null }> {
  const { p } = w;
  if (gone(p)) {
    console.log(`[shutdown] ${label}: had exited already (code ${p.exitCode}) before ${signal}`);
    return { ms: 0, code: p.exitCode, signal: p.signalCode };
  }
  const t0 = performance.now();
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    p.once("exit", (code, sig) => r({ code, signal: sig })),
  );
  p.kill(signal);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const result = await Promise.race([
    exit.then((e) => ({ ...e, ms: performance.now() - t0 })),
    new Promise<undefined>((r) => {
      timer = setTimeout(() => r(undefined), OBSERVE_MS);
    }),
  ]);
  clearTimeout(timer);
  if (result === undefined) {
    console.log(
      `[shutdown] ${label}: still running ${OBSERVE_MS} ms after ${signal}; output:\n${w.output()}`,
    );
    p.kill("SIGKILL");
    await exit;
    return { ms: undefined, code: null, signal: "SIGKILL" };
  }
  console.log(
    `[shutdown] ${label}: exited ${Math.round(result.ms)} ms after ${signal} (code ${result.code}, signal ${result.signal})`,
  );
  if (result.ms > STOP_BOUND_MS) console.log(`[shutdown] ${label} output:\n${w.output()}`);
  return result;
}

/** Processes whose command line contains `needle` (pid and command line), from /proc. */
function processesWith(needle: string): { pid: number; cmd: string }[] {
  const found: { pid: number; cmd: string }[] = [];
  for (const entry of readdirSync("/proc")) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const cmd = readFileSync(`/proc/${entry}/cmdline`, "utf8").split("\0").join(" ");
      if (cmd.includes(needle)) found.push({ pid: Number(entry), cmd });
    } catch {
      // gone meanwhile
    }
  }
  return found;
}

describe("adclick up, worker and ship stop within 10 s of SIGINT / SIGTERM", () => {
  const dir = mkdtempSync(join(tmpdir(), "adclick-shutdown-"));
  const cleanups: (() => Promise<void> | void)[] = [];

  afterEach(async () => {
    for (const p of running) p.kill("SIGKILL");
    for (const c of cleanups.splice(0).reverse()) await c();
  }, 60_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  function baseEnv(): NodeJS.ProcessEnv {
    const { contactPoint, localDataCenter } = inject("cassandra");
    return {
      ADCLICK_CASSANDRA: contactPoint,
      ADCLICK_CASSANDRA_DC: localDataCenter,
      ADCLICK_KEYSPACE: uniqueName("shutdown"),
      ADCLICK_PARTITIONS: "2",
      ADCLICK_METRICS_PORT: "0",
      ADCLICK_DATA_DIR: join(dir, uniqueName("data")),
      // The servers already running (the shared Cassandra node) know these credentials.
      ADCLICK_CREDENTIALS_DIR: defaultCredentialsDir(),
    };
  }

  async function ownNats(): Promise<NatsServerHandle> {
    const nats = await startNatsServer({ auth: harnessNatsAuth() });
    cleanups.push(() => nats.stop());
    return nats;
  }

  it("(a) worker: nats-server killed, then SIGINT", { timeout: 180_000 }, async () => {
    const nats = await ownNats();
    const worker = start(["worker"], { ...baseEnv(), ADCLICK_NATS_URL: nats.url });
    await waitForOutput(worker.p, /\[worker\] running \d+ actors/);

    await nats.process.kill();
    const stopped = await stopTime(worker, "SIGINT", "(a) worker, NATS dead, SIGINT");
    expect(stopped.ms, worker.output()).toBeDefined();
    expect(stopped.ms as number).toBeLessThanOrEqual(STOP_BOUND_MS);
  });

  it("(b) worker: Cassandra frozen, then SIGTERM", { timeout: 180_000 }, async () => {
    const nats = await ownNats();
    const { contactPoint } = inject("cassandra");
    const [host = "127.0.0.1", port = "9042"] = contactPoint.split(":");
    const proxy: TcpProxy = await startTcpProxy({ host, port: Number(port) });
    cleanups.push(() => proxy.close());
    const worker = start(["worker"], {
      ...baseEnv(),
      ADCLICK_NATS_URL: nats.url,
      ADCLICK_CASSANDRA: proxy.address,
    });
    await waitForOutput(worker.p, /\[worker\] running \d+ actors/);
    // The worker's CQL traffic goes through the proxy (the driver finds no other node).
    expect(proxy.connections).toBeGreaterThan(0);

    proxy.freeze();
    // Clicks arrive while Cassandra is frozen: the raw writer takes a batch whose write
    // cannot finish (a stop must not wait for it).
    const log = join(dir, "small.log");
    writeFileSync(
      log,
      generateClickLog({ lines: 2000, seed: 3, startMs: Date.now() - 120_000 }).text,
    );
    const shipped = await adclickRun(["ship", "--source", "b", "--json", log], {
      ADCLICK_NATS_URL: nats.url,
      ADCLICK_PARTITIONS: "2",
    });
    expect(shipped.code, shipped.stderr).toBe(0);
    const nc = await connectNats({ servers: [nats.url], name: "shutdown-test", ...natsLogin() });
    try {
      const jsm = await jetstreamManager(nc);
      await until(
        "a raw-writer batch in flight (delivered, not acknowledged)",
        async () =>
          (await jsm.consumers.info(STREAMS.clicks, RAW_WRITER_DURABLE)).num_ack_pending > 0,
        60_000,
      );
    } finally {
      await nc.close();
    }

    const stopped = await stopTime(worker, "SIGTERM", "(b) worker, Cassandra frozen, SIGTERM");
    expect(stopped.ms, worker.output()).toBeDefined();
    expect(stopped.ms as number).toBeLessThanOrEqual(STOP_BOUND_MS);
  });

  it("(c) up: the nats-server it started is killed, then SIGINT; what it started is gone", {
    timeout: 420_000,
  }, async () => {
    const env = baseEnv();
    // `up` starts nats-server with its monitoring on the fixed port 8222
    // (app/infra/local-stack.ts): wait while another suite's `up` holds it.
    await until(
      "port 8222 free for up's nats-server",
      () => canBind("127.0.0.1", 8222),
      180_000,
      500,
    );
    const natsPort = await freePort();
    const up = start(["up", "--refresh", "3600"], {
      ...env,
      ADCLICK_NATS_URL: `nats://127.0.0.1:${natsPort}`,
    });
    await waitForOutput(up.p, /\[up\] healthy/);
    expect(up.output()).toMatch(/NATS: nothing at .*starting nats-server/);
    expect(up.output()).toMatch(/Cassandra: using the node at/);

    // The nats-server `up` started (and its watchdog): found by the store under the data dir.
    const storeDir = join(env.ADCLICK_DATA_DIR as string, "nats");
    const started = processesWith(`-sd ${storeDir}`);
    const server = started.find((x) => /nats-server\s/.test(x.cmd) && !/watchdog/.test(x.cmd));
    expect(server, JSON.stringify(started)).toBeDefined();
    process.kill(server?.pid as number, "SIGKILL");
    await until(
      "the killed nats-server is gone",
      async () => !(await isListening("127.0.0.1", natsPort)),
      10_000,
    );

    const stopped = await stopTime(up, "SIGINT", "(c) up, its nats-server killed, SIGINT");
    expect(stopped.ms, up.output()).toBeDefined();
    expect(stopped.ms as number).toBeLessThanOrEqual(STOP_BOUND_MS);
    // Nothing it started is left (the watchdog follows its server within a second).
    await until(
      "the servers `up` started are gone",
      () => processesWith(storeDir).length === 0,
      5000,
    );
  });

  /** Ships a big log (with `flags`), kills nats-server once clicks are stored, then SIGINT. */
  async function shipThenKillNats(flags: string[], label: string): Promise<void> {
    const nats = await ownNats();
    let shipping: ReturnType<typeof start> | undefined;
    const file = join(dir, uniqueName("big"));
    writeFileSync(
      file,
      generateClickLog({ lines: 400_000, seed: 7, startMs: Date.UTC(2024, 6, 9, 10) }).text,
    );
    const nc = await connectNats({ servers: [nats.url], name: "shutdown-test", ...natsLogin() });
    try {
      // The streams a worker would have created: a shipper may not create them.
      await ensureLayout(nc, loadConfig({}, { natsServers: [nats.url], partitions: 2 }));
      const ship = start(["ship", "--source", "big", "--json", ...flags, file], {
        ...baseEnv(),
        ADCLICK_NATS_URL: nats.url,
      });
      shipping = ship;
      // Mid-ship: some clicks are stored, the shipper is still running.
      const jsm = await jetstreamManager(nc);
      await until(
        "the first shipped clicks in CLICKS",
        async () => (await jsm.streams.info(STREAMS.clicks)).state.messages > 0,
        60_000,
        50,
      );
    } finally {
      await nc.close();
    }
    const ship = shipping as NonNullable<typeof shipping>;
    expect(gone(ship.p), ship.output()).toBe(false);

    await nats.process.kill();
    const stopped = await stopTime(ship, "SIGINT", label);
    expect(stopped.ms, ship.output()).toBeDefined();
    expect(stopped.ms as number).toBeLessThanOrEqual(STOP_BOUND_MS);
  }

  it("(d) ship of a big log: nats-server killed mid-ship, then SIGINT", {
    timeout: 180_000,
  }, async () => {
    await shipThenKillNats([], "(d) ship, NATS killed mid-ship, SIGINT");
  });

  it("(e) ship --follow: nats-server killed mid-ship, then SIGINT", {
    timeout: 180_000,
  }, async () => {
    await shipThenKillNats(["--follow"], "(e) ship --follow, NATS killed mid-ship, SIGINT");
  });
});
