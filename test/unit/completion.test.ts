import { describe, expect, it } from "vitest";
import {
  completionOf,
  type MinuteLifecycle,
  minuteLifecycle,
  type PartitionProgress,
  partitionProgressOf,
} from "../../src/query/completion.js";

const MIN = 60_000;
const T0 = Date.UTC(2024, 6, 9, 10);
const N = Number.NEGATIVE_INFINITY;

const p = (stored: number, complete: number, behind: PartitionProgress["behind"] = []) => ({
  storedThroughMs: stored,
  completeThroughMs: complete,
  behind,
});

describe("a partition's progress from the store", () => {
  it.each([
    { closed: undefined, c: undefined, want: p(N, N), why: "nothing stored yet" },
    { closed: T0, c: undefined, want: p(T0, T0), why: "an older build: complete as far as closed" },
    {
      closed: T0,
      c: { completeThroughMs: T0 - MIN, behind: [{ source: "a", progressMs: T0 - MIN }] },
      want: p(T0, T0 - MIN, [{ source: "a", progressMs: T0 - MIN }]),
      why: "a source behind",
    },
    {
      closed: T0,
      c: { completeThroughMs: T0 + MIN, behind: [] },
      want: p(T0, T0),
      why: "never complete past what is stored",
    },
    {
      closed: T0,
      c: { completeThroughMs: null, behind: [{ source: "a", progressMs: null }] },
      want: p(T0, N, [{ source: "a", progressMs: null }]),
      why: "a lagging source with no progress at all",
    },
  ])("$why", ({ closed, c, want }) => {
    expect(partitionProgressOf(closed, c)).toEqual(want);
  });
});

describe("the minute lifecycle", () => {
  it.each<{ m: number; rev: number | null; live: boolean; state: MinuteLifecycle; why: string }>([
    { m: T0 + 5 * MIN, rev: null, live: false, state: "open", why: "not stored, live open" },
    {
      m: T0 + 5 * MIN,
      rev: null,
      live: true,
      state: "closed",
      why: "not stored, watermark passed",
    },
    {
      m: T0 + 2 * MIN,
      rev: 1,
      live: false,
      state: "closed",
      why: "stored, a source still behind it",
    },
    { m: T0 - MIN, rev: 1, live: false, state: "final", why: "stored and complete" },
    { m: T0 - MIN, rev: null, live: false, state: "final", why: "stored and complete, no clicks" },
    { m: T0 - MIN, rev: 3, live: false, state: "amended", why: "final, revision 3" },
    {
      m: T0 - 2 * MIN,
      rev: 1_000_000_123,
      live: false,
      state: "amended",
      why: "repaired from the raw store",
    },
  ])("$why: $state", ({ m, rev, live, state }) => {
    expect(minuteLifecycle(m, p(T0 + 3 * MIN, T0), rev, live)).toBe(state);
  });
});

describe("a reply's completion", () => {
  it("is final when every partition asked is complete through the range's end", () => {
    expect(completionOf([p(T0, T0), p(T0 + MIN, T0 + MIN)], T0, [1, 2])).toEqual({
      final: true,
      revision: 2,
      complete_through: "2024-07-09T10:00:00Z",
      sources_behind: [],
    });
  });

  it("lists the sources behind, each once at its slowest, slowest first", () => {
    const c = completionOf(
      [
        p(T0 + 5 * MIN, T0, [
          { source: "b", progressMs: T0 + MIN },
          { source: "a", progressMs: T0 },
        ]),
        p(T0 + 5 * MIN, T0 + MIN, [{ source: "b", progressMs: T0 - MIN }]),
        p(T0 + 5 * MIN, T0 + 5 * MIN, [{ source: "c", progressMs: null }]),
      ],
      T0 + 5 * MIN,
      [],
    );
    expect(c).toEqual({
      final: false,
      revision: null,
      complete_through: "2024-07-09T10:00:00Z",
      sources_behind: [
        { source: "c", progress: null },
        { source: "b", progress: "2024-07-09T09:59:00Z" },
        { source: "a", progress: "2024-07-09T10:00:00Z" },
      ],
    });
  });

  it("says nothing is complete when a partition never reported", () => {
    expect(completionOf([p(N, N), p(T0, T0)], T0, [])).toMatchObject({
      final: false,
      complete_through: null,
    });
  });
});
