/**
 * The benchmark's processes: `adclick` commands started as real processes (a worker, the
 * shippers), and a sampler of every process's memory and CPU from /proc (peak RSS is the
 * kernel's own high-water mark, VmHWM).
 */
import { type ChildProcess, spawn } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { projectRoot } from "../../app/infra/paths.js";

/** How to run the `adclick` CLI as a process: from sources (tsx) or the built dist/. */
export function adclickCommand(): { command: string; args: string[] } {
  const root = projectRoot();
  const fromSources = fileURLToPath(import.meta.url).endsWith(".ts");
  if (!fromSources && existsSync(join(root, "dist", "app", "run.js"))) {
    return { command: process.execPath, args: [join(root, "dist", "app", "run.js")] };
  }
  return {
    command: process.execPath,
    args: ["--import", "tsx", join(root, "app", "run.ts")],
  };
}

export interface AdclickProcess {
  name: string;
  child: ChildProcess;
  output(): string;
  exited: Promise<number | null>;
  /** Resolves when the output matches `re` (rejects when the process exits first). */
  waitFor(re: RegExp, timeoutMs: number): Promise<void>;
}

export function startAdclick(
  name: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  nodeArgs: string[] = [],
): AdclickProcess {
  const cmd = adclickCommand();
  const child = spawn(cmd.command, [...nodeArgs, ...cmd.args, ...args], {
    cwd: projectRoot(),
    env: { ...process.env, ...env },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  const listeners = new Set<() => void>();
  const onData = (d: Buffer) => {
    out += d.toString();
    if (out.length > 2_000_000) out = out.slice(-1_000_000);
    for (const l of listeners) l();
  };
  child.stdout?.on("data", onData);
  child.stderr?.on("data", onData);
  const exited = new Promise<number | null>((resolve) => child.once("exit", (c) => resolve(c)));
  return {
    name,
    child,
    output: () => out,
    exited,
    waitFor(re, timeoutMs) {
      return new Promise((resolve, reject) => {
        const done = (err?: Error) => {
          clearTimeout(timer);
          listeners.delete(check);
          if (err) reject(err);
          else resolve();
        };
        const check = () => {
          if (re.test(out)) done();
        };
        const timer = setTimeout(
          () =>
            done(new Error(`${name}: timed out waiting for ${re}; output:\n${out.slice(-3000)}`)),
          timeoutMs,
        );
        listeners.add(check);
        void exited.then((code) =>
          done(new Error(`${name} exited (${code}) before ${re}; output:\n${out.slice(-3000)}`)),
        );
        check();
      });
    },
  };
}

/** Stops a process with SIGINT (orderly), then SIGKILL after `graceMs`. */
export async function stopProcess(p: AdclickProcess, graceMs = 20_000): Promise<number | null> {
  if (p.child.exitCode !== null || p.child.signalCode !== null) return p.child.exitCode;
  p.child.kill("SIGINT");
  const timer = setTimeout(() => p.child.kill("SIGKILL"), graceMs);
  const code = await p.exited;
  clearTimeout(timer);
  return code;
}

/** The first child of a process (the server under a launcher's watchdog shell). */
export function childPid(pid: number): number | undefined {
  try {
    const kids = readFileSync(`/proc/${pid}/task/${pid}/children`, "utf8").trim().split(/\s+/);
    const first = Number(kids[0]);
    return Number.isInteger(first) && first > 0 ? first : undefined;
  } catch {
    return undefined;
  }
}

export interface ProcStats {
  name: string;
  kind: string;
  pid: number;
  /** Largest resident set seen (VmHWM), bytes. */
  peakRssBytes: number;
  /** CPU seconds (user + system) at the last sample. */
  cpuSeconds: number;
}

const CLK_TCK = 100;

function readProc(pid: number): { hwm: number; cpu: number } | undefined {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const hwm = /VmHWM:\s+(\d+) kB/.exec(status);
    const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
    const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
    const cpu = (Number(fields[11]) + Number(fields[12])) / CLK_TCK;
    return { hwm: hwm ? Number(hwm[1]) * 1024 : 0, cpu };
  } catch {
    return undefined;
  }
}

/** Samples processes' peak RSS and CPU time every `everyMs` (processes may come and go). */
export class ProcSampler {
  private readonly procs = new Map<string, ProcStats>();
  private readonly timer: NodeJS.Timeout;

  constructor(everyMs = 250) {
    this.timer = setInterval(() => this.sample(), everyMs);
    this.timer.unref();
  }

  track(name: string, kind: string, pid: number | undefined): void {
    if (pid === undefined) return;
    this.procs.set(name, { name, kind, pid, peakRssBytes: 0, cpuSeconds: 0 });
    this.sample();
  }

  sample(): void {
    for (const p of this.procs.values()) {
      const r = readProc(p.pid);
      if (!r) continue;
      p.peakRssBytes = Math.max(p.peakRssBytes, r.hwm);
      p.cpuSeconds = r.cpu;
    }
  }

  /** CPU seconds of each process now (for per-phase deltas). */
  cpu(): Map<string, number> {
    this.sample();
    return new Map([...this.procs.values()].map((p) => [p.name, p.cpuSeconds]));
  }

  stats(): ProcStats[] {
    this.sample();
    return [...this.procs.values()].map((p) => ({ ...p }));
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

/** Sums the samples of a Prometheus counter or gauge in `text`, optionally filtered by label text. */
export function metricSum(text: string, name: string, labelFilter?: string): number {
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const rest = line.slice(name.length);
    if (rest[0] !== "{" && rest[0] !== " ") continue;
    if (labelFilter && !rest.includes(labelFilter)) continue;
    const v = Number(line.slice(line.lastIndexOf(" ") + 1));
    if (Number.isFinite(v)) sum += v;
  }
  return sum;
}

export async function scrape(port: number): Promise<string> {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/metrics`);
    return await res.text();
  } catch {
    return "";
  }
}
