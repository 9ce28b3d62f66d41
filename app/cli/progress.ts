/**
 * A one-line progress bar for long jobs, redrawn in place on a terminal (stderr) and silent
 * elsewhere (logs and pipes get the final summary only).
 */
export class ProgressBar {
  private lastDraw = 0;
  private readonly started = Date.now();
  private readonly tty: boolean;

  constructor(
    private readonly label: string,
    private readonly stream: NodeJS.WriteStream = process.stderr,
  ) {
    this.tty = Boolean(stream.isTTY);
  }

  /** `done` and `total` in the job's unit; `extra` is appended (counts, rates). */
  update(done: number, total: number, extra = "", force = false): void {
    if (!this.tty) return;
    const now = Date.now();
    if (!force && now - this.lastDraw < 100) return;
    this.lastDraw = now;
    const width = 30;
    const frac = total > 0 ? Math.min(1, done / total) : 0;
    const filled = Math.round(frac * width);
    const bar = `${"█".repeat(filled)}${"░".repeat(width - filled)}`;
    this.stream.write(
      `\r${this.label} ${bar} ${(frac * 100).toFixed(0).padStart(3)}% ${extra}\x1b[K`,
    );
  }

  finish(): void {
    if (this.tty) this.stream.write("\n");
  }

  elapsedSeconds(): number {
    return (Date.now() - this.started) / 1000;
  }
}

export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  if (n < 1024 ** 2) return `${(n / 1024).toFixed(1)} KiB`;
  if (n < 1024 ** 3) return `${(n / 1024 ** 2).toFixed(1)} MiB`;
  return `${(n / 1024 ** 3).toFixed(2)} GiB`;
}
