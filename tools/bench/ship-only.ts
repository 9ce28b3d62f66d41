/**
 * The shipping path alone: `adclick ship` processes (one per log file) against a fresh
 * nats-server with the project's config (sync_interval: always) and stream layout, no worker,
 * no Cassandra. Prints events/s acknowledged (wall time from spawn to the last exit, and the
 * shippers' own time without process start) and CPU seconds of the shippers and of
 * nats-server.
 *
 *   node --import tsx tools/bench/ship-only.ts [--lines 3000000] [--shippers 2] [--reps 1]
 *     [--root DIR ...] [--profile DIR] [--ship-arg ARG ...] [--env NAME=VALUE ...]
 *
 * Several --root folders (checkouts of the project, e.g. a baseline copy) are run in turn,
 * alternating, on the same input: compare them as ratios on a noisy machine. The input is
 * cached in $TMPDIR/adclick-ship-input-<lines>x<shippers>.
 */

import { spawn } from "node:child_process";
import { existsSync, mkdirSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { ensureLayout } from "../../app/cli/layout.js";
import { natsFor } from "../../app/connections.js";
import { startNatsServer } from "../../app/infra/nats-server.js";
import { projectRoot } from "../../app/infra/paths.js";
import { loadConfig } from "../../src/config.js";
import { DEFAULT_BOOK, writeBookLogs } from "./book.js";
import { childPid, ProcSampler } from "./procs.js";

function arg(name: string, dflt: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? dflt) : dflt;
}
function args(name: string): string[] {
  const out: string[] = [];
  for (let i = 0; i < process.argv.length; i++) {
    if (process.argv[i] === `--${name}`) out.push(process.argv[i + 1] ?? "");
  }
  return out;
}

const lines = Number(arg("lines", "3000000"));
const shippers = Number(arg("shippers", "2"));
const reps = Number(arg("reps", "1"));
const roots = args("root").map((r) => resolve(r));
if (roots.length === 0) roots.push(projectRoot());
const profileDir = process.argv.includes("--profile") ? resolve(arg("profile", "")) : undefined;
const extraEnv = Object.fromEntries(
  args("env").map((kv) => [kv.slice(0, kv.indexOf("=")), kv.slice(kv.indexOf("=") + 1)]),
);

/** Extra arguments of `adclick ship` (--ship-arg --chunk-bytes=4194304). */
const shipArgs = args("ship-arg");

const inputDir = join(tmpdir(), `adclick-ship-input-${lines}x${shippers}`);
const files = Array.from({ length: shippers }, (_, i) => join(inputDir, `web-${i}.log`));
if (!files.every((f) => existsSync(f))) {
  mkdirSync(inputDir, { recursive: true });
  console.log(`writing ${lines} lines into ${shippers} files in ${inputDir}`);
  writeBookLogs({ ...DEFAULT_BOOK, lines, eventRatePerSec: lines / 60 }, files);
}
const bytes = files.reduce((n, f) => n + statSync(f).size, 0);

interface Run {
  root: string;
  events: number;
  wallS: number;
  selfS: number;
  shipCpuS: number;
  natsCpuS: number;
}

async function runOnce(root: string, rep: number): Promise<Run> {
  const work = join(tmpdir(), `adclick-ship-only-${process.pid}`);
  rmSync(work, { recursive: true, force: true });
  mkdirSync(work, { recursive: true });
  const nats = await startNatsServer({ storeDir: join(work, "nats") });
  const sampler = new ProcSampler(100);
  const natsPid = childPid(nats.process.pid ?? 0);
  sampler.track("nats", "nats", natsPid);
  try {
    const env = {
      ...process.env,
      ADCLICK_NATS_URL: nats.url,
      ADCLICK_PARTITIONS: "16",
      ADCLICK_METRICS_PORT: "0",
      ...extraEnv,
    };
    // The layout first (a worker's job: a shipper may not create streams), so the shippers
    // measure shipping only.
    const admin = await natsFor(
      loadConfig(env, { natsServers: [nats.url] }),
      "bench-ship-only-layout",
      "admin",
    );
    try {
      await ensureLayout(admin, loadConfig(env, { natsServers: [nats.url] }));
    } finally {
      await admin.close();
    }
    const cpu0 = sampler.cpu().get("nats") ?? 0;
    const t0 = performance.now();
    const procs = files.map((f, i) => {
      const prof = profileDir
        ? ["--cpu-prof", `--cpu-prof-dir=${join(profileDir, `${rep}-${i}`)}`]
        : [];
      const c = spawn(
        process.execPath,
        [
          ...prof,
          "--import",
          "tsx",
          join(root, "app", "run.ts"),
          "ship",
          "--source",
          `web-${i}`,
          "--json",
          ...shipArgs,
          f,
        ],
        { cwd: root, env, stdio: ["ignore", "pipe", "inherit"] },
      );
      sampler.track(`ship-${i}`, "ship", c.pid);
      let out = "";
      c.stdout.on("data", (d: Buffer) => {
        out += d.toString();
      });
      return new Promise<{ events: number; seconds: number; cpu: number }>((res, rej) => {
        let cpu = 0;
        const t = setInterval(() => {
          cpu = sampler.cpu().get(`ship-${i}`) ?? cpu;
        }, 100);
        c.once("exit", (code) => {
          clearInterval(t);
          if (code !== 0) return rej(new Error(`ship-${i}: exit ${code}`));
          const j = JSON.parse(out.trim().split("\n").pop() ?? "{}");
          res({ events: j.events, seconds: j.seconds, cpu });
        });
      });
    });
    const done = await Promise.all(procs);
    const wallS = (performance.now() - t0) / 1000;
    const natsCpuS = (sampler.cpu().get("nats") ?? 0) - cpu0;
    return {
      root,
      events: done.reduce((n, d) => n + d.events, 0),
      wallS,
      selfS: Math.max(...done.map((d) => d.seconds)),
      shipCpuS: done.reduce((n, d) => n + d.cpu, 0),
      natsCpuS,
    };
  } finally {
    sampler.stop();
    await nats.stop();
    rmSync(work, { recursive: true, force: true });
  }
}

console.log(`${lines} lines, ${(bytes / 1e6).toFixed(0)} MB, ${shippers} shipper(s)`);
for (let rep = 0; rep < reps; rep++) {
  for (const root of roots) {
    const r = await runOnce(root, rep);
    const perM = (s: number) => ((s / lines) * 1e6).toFixed(2);
    console.log(
      `${root}: ${r.events} events; wall ${r.wallS.toFixed(2)} s (${Math.round(r.events / r.wallS)}/s), shippers' own ${r.selfS.toFixed(2)} s (${Math.round(r.events / r.selfS)}/s); CPU s per 1M lines: shippers ${perM(r.shipCpuS)}, nats-server ${perM(r.natsCpuS)}`,
    );
  }
}
