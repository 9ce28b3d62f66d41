/**
 * Summarises a V8 CPU profile (`node --cpu-prof` writes *.cpuprofile): self time per
 * function, the hottest first — the evidence behind every optimisation in
 * docs/benchmarks.md. Usage: `tsx tools/bench/profile-summary.ts FILE.cpuprofile [top]`.
 */
import { readFileSync } from "node:fs";
import { basename } from "node:path";

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
  hitCount?: number;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileRow {
  fn: string;
  where: string;
  selfMs: number;
  selfPct: number;
}

/** Self time per function (summed over call sites), hottest first. */
export function summariseProfile(path: string, top = 25): { totalMs: number; rows: ProfileRow[] } {
  const p = JSON.parse(readFileSync(path, "utf8")) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (let i = 0; i < p.samples.length; i++) {
    const id = p.samples[i] as number;
    selfUs.set(id, (selfUs.get(id) ?? 0) + (p.timeDeltas[i] ?? 0));
  }
  const byFn = new Map<string, { fn: string; where: string; us: number }>();
  let total = 0;
  for (const [id, us] of selfUs) {
    const n = byId.get(id);
    if (!n) continue;
    total += us;
    const fn = n.callFrame.functionName || "(anonymous)";
    const where = n.callFrame.url
      ? `${basename(n.callFrame.url)}:${n.callFrame.lineNumber + 1}`
      : "";
    const key = `${fn}@${where}`;
    const row = byFn.get(key) ?? { fn, where, us: 0 };
    row.us += us;
    byFn.set(key, row);
  }
  const rows = [...byFn.values()]
    .sort((a, b) => b.us - a.us)
    .slice(0, top)
    .map((r) => ({
      fn: r.fn,
      where: r.where,
      selfMs: Math.round(r.us / 1000),
      selfPct: Math.round((r.us / Math.max(1, total)) * 1000) / 10,
    }));
  return { totalMs: Math.round(total / 1000), rows };
}

export function formatProfile(s: { totalMs: number; rows: ProfileRow[] }): string {
  return [
    `total sampled ${s.totalMs} ms`,
    ...s.rows.map(
      (r) =>
        `${String(r.selfPct).padStart(5)}%  ${String(r.selfMs).padStart(7)} ms  ${r.fn}  ${r.where}`,
    ),
  ].join("\n");
}

if (process.argv[1] && /profile-summary\.(ts|js)$/.test(process.argv[1])) {
  const file = process.argv[2];
  if (!file) {
    console.error("usage: profile-summary FILE.cpuprofile [top]");
    process.exit(2);
  }
  console.log(formatProfile(summariseProfile(file, Number(process.argv[3] ?? 25))));
}
