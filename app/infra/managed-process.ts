import { type ChildProcess, spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { InfraError } from "../../src/errors.js";

export interface ManagedProcessOptions {
  /** A short name for messages, e.g. "nats-server". */
  name: string;
  command: string;
  args: string[];
  /** stdout and stderr go here (appended). */
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Detach so the process outlives this one. */
  detached?: boolean;
}

/**
 * Runs the command under a tiny bash watchdog in its own process group: if this (parent)
 * process dies without stopping it — a test runner killed by a timeout, say — the server
 * is stopped too instead of lingering with a gigabyte of heap. Signals go to the group.
 */
const WATCHDOG = `parent=$1; shift
"$@" & child=$!
trap 'kill -TERM $child 2>/dev/null; wait $child; exit' TERM INT
while kill -0 "$parent" 2>/dev/null && kill -0 $child 2>/dev/null; do sleep 1; done
kill -TERM $child 2>/dev/null; wait $child`;

/**
 * A server process we started: its exit is observed, `stop()` is idempotent (SIGTERM, then
 * SIGKILL after a grace period), `kill()` is a real crash (SIGKILL) for chaos tests, and
 * `closed()` resolves with the exit code once it is gone.
 */
export class ManagedProcess {
  readonly name: string;
  readonly logFile: string;
  private readonly child: ChildProcess;
  private readonly exited: Promise<number | null>;
  private exitCode: number | null | undefined;

  constructor(opts: ManagedProcessOptions) {
    this.name = opts.name;
    this.logFile = opts.logFile;
    const fd = openSync(opts.logFile, "a");
    try {
      const [command, args] = opts.detached
        ? [opts.command, opts.args]
        : ["bash", ["-c", WATCHDOG, "watchdog", String(process.pid), opts.command, ...opts.args]];
      this.child = spawn(command, args, {
        cwd: opts.cwd,
        env: opts.env ?? process.env,
        stdio: ["ignore", fd, fd],
        // Its own process group, so that a signal reaches the watchdog and the server.
        detached: true,
      });
    } finally {
      closeSync(fd);
    }
    this.exited = new Promise((resolve) => {
      this.child.once("exit", (code, signal) => {
        this.exitCode = code ?? (signal ? null : 0);
        resolve(this.exitCode);
      });
      this.child.once("error", () => {
        this.exitCode = -1;
        resolve(-1);
      });
    });
    if (opts.detached) this.child.unref();
  }

  private signal(sig: NodeJS.Signals): void {
    const pid = this.child.pid;
    if (pid === undefined) return;
    try {
      process.kill(-pid, sig);
    } catch {
      this.child.kill(sig);
    }
  }

  get pid(): number | undefined {
    return this.child.pid;
  }

  /** SIGKILL now, synchronously (a process about to exit cannot wait for an orderly stop). */
  killNow(): void {
    if (this.running) this.signal("SIGKILL");
  }

  get running(): boolean {
    return this.exitCode === undefined;
  }

  closed(): Promise<number | null> {
    return this.exited;
  }

  /** The last lines of the log, for error messages. */
  logTail(lines = 20): string {
    try {
      return readFileSync(this.logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
    } catch {
      return "(no log)";
    }
  }

  /**
   * Polls `ready` until it returns true; fails fast if the process exits first and says why
   * (with the log's tail), or after `timeoutMs`.
   */
  async waitUntil(
    ready: () => Promise<boolean>,
    timeoutMs: number,
    intervalMs = 200,
  ): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (!this.running) {
        throw new InfraError(
          "INFRA_START_FAILED",
          `${this.name} exited (code ${this.exitCode}) before it was ready; log ${this.logFile}:\n${this.logTail()}`,
        );
      }
      if (await ready().catch(() => false)) return;
      if (Date.now() > deadline) {
        throw new InfraError(
          "INFRA_START_FAILED",
          `${this.name} was not ready after ${timeoutMs} ms; log ${this.logFile}:\n${this.logTail()}`,
        );
      }
      await new Promise((r) => setTimeout(r, intervalMs));
    }
  }

  /** Orderly stop: SIGTERM, then SIGKILL after `graceMs`. Safe to call more than once. */
  async stop(graceMs = 10_000): Promise<void> {
    if (!this.running) return;
    this.signal("SIGTERM");
    const timer = setTimeout(() => this.signal("SIGKILL"), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  /** A crash: SIGKILL, no chance to clean up. */
  async kill(): Promise<void> {
    if (!this.running) return;
    this.signal("SIGKILL");
    await this.exited;
  }

  /** Freeze / thaw the process (SIGSTOP / SIGCONT), e.g. to simulate a long GC pause. */
  pause(): void {
    if (this.running) this.signal("SIGSTOP");
  }

  resume(): void {
    if (this.running) this.signal("SIGCONT");
  }
}
