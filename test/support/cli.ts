import { type ChildProcessWithoutNullStreams, spawn } from "node:child_process";

/** Runs the `adclick` CLI from sources (as a separate process), like a user would. */
export function adclick(args: string[], env: NodeJS.ProcessEnv): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, ["--import", "tsx", "app/run.ts", ...args], {
    env: { ...process.env, ...env },
    stdio: ["pipe", "pipe", "pipe"],
  });
}

/** Runs a CLI command to completion: its exit code and output. */
export async function adclickRun(
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const p = adclick(args, env);
  let stdout = "";
  let stderr = "";
  p.stdout.on("data", (d) => {
    stdout += d;
  });
  p.stderr.on("data", (d) => {
    stderr += d;
  });
  const code = await new Promise<number | null>((r) => p.once("exit", r));
  return { code, stdout, stderr };
}

/** Resolves when the process prints a line matching `re` (rejects if it exits first). */
export function waitForOutput(
  p: ChildProcessWithoutNullStreams,
  re: RegExp,
  timeoutMs = 120_000,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let seen = "";
    const timer = setTimeout(
      () => reject(new Error(`timed out waiting for ${re}; output so far:\n${seen}`)),
      timeoutMs,
    );
    const onData = (d: Buffer) => {
      seen += d.toString();
      const m = re.exec(seen);
      if (m) {
        clearTimeout(timer);
        resolve(m[0]);
      }
    };
    p.stdout.on("data", onData);
    p.stderr.on("data", onData);
    p.once("exit", (code) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code}) before printing ${re}; output:\n${seen}`));
    });
  });
}
