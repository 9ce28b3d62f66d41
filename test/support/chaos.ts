import type { ChildProcessWithoutNullStreams } from "node:child_process";
import type { WriteStream } from "node:fs";
import { adclick } from "./cli.js";

/** Nearest-rank percentile (p in 0..100); undefined for no values. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length)));
  return sorted[rank - 1];
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Polls `check` until it returns true; rejects after `timeoutMs` saying what it waited for. */
export async function until(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  intervalMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const ok = async () => {
    try {
      return await check();
    } catch {
      return false;
    }
  };
  while (!(await ok())) {
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/** Resolves with the exit code (null when killed by a signal) once the process is gone. */
export function exited(p: ChildProcessWithoutNullStreams): Promise<number | null> {
  if (p.exitCode !== null || p.signalCode !== null) return Promise.resolve(p.exitCode);
  return new Promise((r) => p.once("exit", (code) => r(code)));
}

export function pipeLines(p: ChildProcessWithoutNullStreams, tag: string, log: WriteStream): void {
  let rest = "";
  const onData = (d: Buffer) => {
    const text = rest + d.toString();
    const lines = text.split("\n");
    rest = lines.pop() ?? "";
    const at = new Date().toISOString().slice(11, 23);
    for (const line of lines) log.write(`${at} ${tag} ${line}\n`);
  };
  p.stdout.on("data", onData);
  p.stderr.on("data", onData);
}

export interface ExitRecord {
  pid: number | undefined;
  code: number | null;
  signal: NodeJS.Signals | null;
}

/**
 * `adclick worker` as a separate process, restarted whenever it exits, until stop() — the
 * outer process manager (systemd's Restart=always) a supervisor escalates to.
 */
export class WorkerLoop {
  current: ChildProcessWithoutNullStreams | undefined;
  readonly exits: ExitRecord[] = [];
  starts = 0;
  private stopping = false;

  constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly log: WriteStream,
    private readonly restartDelayMs = 250,
  ) {}

  start(): ChildProcessWithoutNullStreams {
    const p = adclick(["worker"], this.env);
    this.starts++;
    this.current = p;
    pipeLines(p, `[worker ${p.pid}]`, this.log);
    p.once("exit", (code, signal) => {
      this.exits.push({ pid: p.pid, code, signal });
      this.log.write(`[loop] worker ${p.pid} exited (code ${code}, signal ${signal})\n`);
      if (this.current !== p) return; // handed over (see replace) or replaced already
      this.current = undefined;
      if (this.stopping) return;
      setTimeout(() => {
        if (!this.stopping && !this.current) this.start();
      }, this.restartDelayMs);
    });
    return p;
  }

  /** Hands the current process to the caller (no longer restarted) and starts a replacement. */
  replace(): ChildProcessWithoutNullStreams | undefined {
    const old = this.current;
    this.current = undefined;
    this.start();
    return old;
  }

  /** Orderly stop (SIGTERM, SIGKILL after a grace period); no more restarts. */
  async stop(graceMs = 20_000): Promise<void> {
    this.stopping = true;
    const p = this.current;
    if (!p) return;
    p.kill("SIGTERM");
    const timer = setTimeout(() => p.kill("SIGKILL"), graceMs);
    await exited(p);
    clearTimeout(timer);
  }
}

/**
 * Ships files one after another with `adclick ship` processes; a ship process that dies
 * (killed, or failing while NATS is down) is started again on the same file until it exits 0.
 */
export class ShipperLoop {
  current: { process: ChildProcessWithoutNullStreams; source: string; file: string } | undefined;
  runs = 0;
  failures = 0;
  private stopping = false;

  constructor(
    private readonly env: NodeJS.ProcessEnv,
    private readonly log: WriteStream,
    private readonly extraArgs: string[] = [],
  ) {}

  /** Ships one file to its end; resolves with the summary of the run that finished it. */
  async ship(file: string, source: string): Promise<Record<string, number>> {
    for (let attempt = 1; ; attempt++) {
      if (this.stopping) throw new Error("shipper loop stopped");
      const p = adclick(["ship", "--source", source, "--json", ...this.extraArgs, file], this.env);
      this.runs++;
      this.current = { process: p, source, file };
      let out = "";
      p.stdout.on("data", (d) => {
        out += d;
      });
      pipeLines(p, `[ship ${source} ${p.pid}]`, this.log);
      const code = await exited(p);
      this.current = undefined;
      if (code === 0) return JSON.parse(out.trim().split("\n").pop() as string);
      this.failures++;
      if (attempt >= 200) throw new Error(`shipping ${file} failed ${attempt} times`);
      await sleep(200);
    }
  }

  stop(): void {
    this.stopping = true;
    this.current?.process.kill("SIGKILL");
  }
}

/** Differences between two count maps: keys missing, extra or with another value. */
export interface CountDiff {
  missing: [string, number][];
  extra: [string, number][];
  different: [string, { stored: number; expected: number }][];
}

export function diffCounts(
  stored: ReadonlyMap<string, number>,
  expected: ReadonlyMap<string, number>,
): CountDiff {
  const d: CountDiff = { missing: [], extra: [], different: [] };
  for (const [k, v] of expected) {
    const s = stored.get(k);
    if (s === undefined) d.missing.push([k, v]);
    else if (s !== v) d.different.push([k, { stored: s, expected: v }]);
  }
  for (const [k, v] of stored) if (!expected.has(k)) d.extra.push([k, v]);
  return d;
}

export function diffSize(d: CountDiff): number {
  return d.missing.length + d.extra.length + d.different.length;
}
