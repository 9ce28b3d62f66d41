import { describe, expect, it } from "vitest";
import { chunkCut, fileSourceId, nextFileTurn, SpanCut } from "../../src/ingest/shipper.js";

const N = Number.NEGATIVE_INFINITY;
const MIN = 60_000;

describe("several files ship in turns, the one furthest behind first", () => {
  it.each([
    { files: [], next: -1, why: "no file" },
    { files: [{ progressMs: 5, ready: false }], next: -1, why: "none ready" },
    {
      files: [
        { progressMs: N, ready: true },
        { progressMs: N, ready: true },
      ],
      next: 0,
      why: "ties: the first",
    },
    {
      files: [
        { progressMs: 9, ready: true },
        { progressMs: N, ready: true },
      ],
      next: 1,
      why: "one not started yet",
    },
    {
      files: [
        { progressMs: 1, ready: false },
        { progressMs: 7, ready: true },
        { progressMs: 3, ready: true },
      ],
      next: 2,
      why: "the furthest behind of the ready ones",
    },
  ])("$why → $next", ({ files, next }) => {
    expect(nextFileTurn(files)).toBe(next);
  });

  it("keeps files within about one span of each other however their speeds differ", () => {
    // Four files of the same period: their event times, one line per second each.
    const lines = [0, 1, 2, 3].map(() => Array.from({ length: 3600 }, (_, i) => i * 1000));
    const at = [0, 0, 0, 0];
    const progress = [N, N, N, N];
    let maxSpread = 0;
    for (;;) {
      const i = nextFileTurn(
        at.map((a, f) => ({ progressMs: progress[f] as number, ready: a < 3600 })),
      );
      if (i < 0) break;
      const rest = (lines[i] as number[]).slice(at[i], (at[i] as number) + 700); // a byte-bounded read
      const cut = chunkCut(rest, progress[i] as number, MIN);
      at[i] = (at[i] as number) + cut;
      progress[i] = rest[cut - 1] as number;
      const done = progress.filter(Number.isFinite) as number[];
      if (done.length === 4) maxSpread = Math.max(maxSpread, Math.max(...done) - Math.min(...done));
    }
    expect(at).toEqual([3600, 3600, 3600, 3600]);
    expect(maxSpread).toBeLessThanOrEqual(MIN);
  });
});

describe("chunks are cut by event time", () => {
  it.each([
    { times: [0, 10, 20], from: N, span: 15, cut: 2, why: "from the first event: 20 ≥ 0 + 15" },
    { times: [0, 10, 20], from: N, span: 100, cut: 3, why: "all within the span" },
    {
      times: [100, 110],
      from: 50,
      span: 30,
      cut: 1,
      why: "at least one line, even past the limit",
    },
    {
      times: [undefined, 5, undefined, 40],
      from: 0,
      span: 30,
      cut: 3,
      why: "malformed and empty lines ride along",
    },
    { times: [undefined, undefined], from: N, span: 1, cut: 2, why: "no event at all: everything" },
    {
      times: [50, 10, 20, 81],
      from: N,
      span: 30,
      cut: 3,
      why: "disorder: the first line at or past the limit",
    },
  ])("$why", ({ times, from, span, cut }) => {
    expect(chunkCut(times, from, span)).toBe(cut);
    expect(spanCutAt(times, from, span)).toBe(cut);
  });

  it("cuts one line at a time where chunkCut cuts the whole chunk", () => {
    let seed = 7;
    const rand = () => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed / 2 ** 32;
    };
    for (let round = 0; round < 2000; round++) {
      const times = Array.from({ length: 1 + Math.floor(rand() * 12) }, () =>
        rand() < 0.2 ? undefined : Math.floor(rand() * 100),
      );
      const from = rand() < 0.5 ? N : Math.floor(rand() * 100);
      const span = Math.floor(rand() * 60);
      expect(spanCutAt(times, from, span)).toBe(chunkCut(times, from, span));
    }
  });
});

/** Where SpanCut, fed line by line as the shipper does, stops (the lines' count: no cut). */
function spanCutAt(times: readonly (number | undefined)[], from: number, span: number): number {
  const cut = new SpanCut(Number.isFinite(from) ? from : undefined, span);
  for (let i = 0; i < times.length; i++) {
    const t = times[i];
    if (t !== undefined && cut.before(i, t)) return i;
  }
  return times.length;
}

describe("file sources", () => {
  it("name the shipper's source and the file", () => {
    expect(fileSourceId("web-1", "/var/log/clicks.log")).toBe("web-1:/var/log/clicks.log");
  });
});
