import { describe, expect, it } from "vitest";
import { type AssignmentInput, assignPartitions } from "../../src/leases/assignment.js";

const range = (n: number) => Array.from({ length: n }, (_, i) => i);
const counts = (a: Map<number, string>) => {
  const c: Record<string, number> = {};
  for (const id of a.values()) c[id] = (c[id] ?? 0) + 1;
  return c;
};
const holders = (entries: [number, string][]) => new Map(entries);
const heldBy = (id: string, ps: number[]): [number, string][] => ps.map((p) => [p, id]);

describe("assignPartitions: fair, sticky, deterministic", () => {
  const cases: {
    name: string;
    input: AssignmentInput;
    counts: Record<string, number>;
    kept?: [number, string][];
  }[] = [
    {
      name: "one worker takes everything",
      input: { partitions: range(16), workers: [{ id: "a" }], holders: holders([]) },
      counts: { a: 16 },
    },
    {
      name: "a second worker joins: the holder keeps its lowest half, the joiner gets the rest",
      input: {
        partitions: range(16),
        workers: [{ id: "a" }, { id: "b" }],
        holders: holders(heldBy("a", range(16))),
      },
      counts: { a: 8, b: 8 },
      kept: heldBy("a", range(8)),
    },
    {
      name: "a third joins two balanced holders: 6/5/5, quotas by id, each keeps its own",
      input: {
        partitions: range(16),
        workers: [{ id: "c" }, { id: "a" }, { id: "b" }],
        holders: holders([...heldBy("a", range(8)), ...heldBy("b", range(16).slice(8))]),
      },
      counts: { a: 6, b: 5, c: 5 },
      kept: [...heldBy("a", range(6)), ...heldBy("b", [8, 9, 10, 11, 12])],
    },
    {
      name: "a leaver's partitions go to the others without moving theirs",
      input: {
        partitions: range(16),
        workers: [{ id: "a" }, { id: "c" }],
        holders: holders([
          ...heldBy("a", [0, 1, 2, 3, 4, 5]),
          ...heldBy("b", [6, 7, 8, 9, 10]),
          ...heldBy("c", [11, 12, 13, 14, 15]),
        ]),
      },
      counts: { a: 8, c: 8 },
      kept: [...heldBy("a", [0, 1, 2, 3, 4, 5]), ...heldBy("c", [11, 12, 13, 14, 15])],
    },
    {
      name: "mid-hand-over (some partitions free) the target is the same",
      input: {
        partitions: range(16),
        workers: [{ id: "a" }, { id: "b" }, { id: "c" }],
        holders: holders([...heldBy("a", [0, 1, 2, 3, 4, 5]), ...heldBy("b", [8, 9, 10, 11, 12])]),
      },
      counts: { a: 6, b: 5, c: 5 },
      kept: [...heldBy("c", [6, 7, 13, 14, 15])],
    },
    {
      name: "offers restrict: a worker offering 0-3 gets only those",
      input: {
        partitions: range(8),
        workers: [{ id: "a", offers: [0, 1, 2, 3] }, { id: "b" }],
        holders: holders([]),
      },
      counts: { a: 4, b: 4 },
    },
    {
      name: "a partition nobody offers stays unassigned",
      input: {
        partitions: range(4),
        workers: [{ id: "a", offers: [0, 1] }],
        holders: holders([]),
      },
      counts: { a: 2 },
    },
    {
      name: "a holder no longer offering its partition loses it",
      input: {
        partitions: range(2),
        workers: [{ id: "a", offers: [0] }, { id: "b" }],
        holders: holders(heldBy("a", [0, 1])),
      },
      counts: { a: 1, b: 1 },
      kept: [
        [0, "a"],
        [1, "b"],
      ],
    },
    {
      name: "more workers than partitions: one each, the rest idle",
      input: {
        partitions: range(2),
        workers: [{ id: "a" }, { id: "b" }, { id: "c" }],
        holders: holders(heldBy("c", [0])),
      },
      counts: { a: 1, c: 1 },
      kept: [[0, "c"]],
    },
    {
      name: "no workers: nothing assigned",
      input: { partitions: range(4), workers: [], holders: holders(heldBy("x", [0])) },
      counts: {},
    },
    {
      name: "uneven offers: the only eligible worker takes over its quota",
      input: {
        partitions: range(6),
        workers: [
          { id: "a", offers: [0, 1, 2, 3, 4, 5] },
          { id: "b", offers: [0] },
        ],
        holders: holders([]),
      },
      counts: { a: 5, b: 1 },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const a = assignPartitions(c.input);
      expect(counts(a)).toEqual(c.counts);
      for (const [p, id] of c.kept ?? []) expect(a.get(p)).toBe(id);
      for (const [p, id] of a) {
        const w = c.input.workers.find((x) => x.id === id);
        expect(w?.offers === undefined || w.offers.includes(p)).toBe(true);
      }
    });
  }

  it("is the same whatever order the workers and holders come in", () => {
    const input: AssignmentInput = {
      partitions: range(13),
      workers: [{ id: "w3" }, { id: "w1" }, { id: "w2" }, { id: "w4", offers: [1, 5, 9] }],
      holders: holders([...heldBy("w2", [0, 1, 2, 3, 4, 5, 6]), ...heldBy("gone", [7, 8])]),
    };
    const want = assignPartitions(input);
    const shuffled: AssignmentInput = {
      partitions: [...input.partitions].reverse(),
      workers: [...input.workers].reverse(),
      holders: new Map([...input.holders].reverse()),
    };
    expect([...assignPartitions(shuffled)].sort((x, y) => x[0] - y[0])).toEqual(
      [...want].sort((x, y) => x[0] - y[0]),
    );
  });

  it("is stable: once every partition is held as assigned, the assignment keeps it", () => {
    for (let workers = 1; workers <= 5; workers++) {
      for (const n of [1, 4, 16, 17]) {
        const ws = range(workers).map((i) => ({ id: `w${i}` }));
        let held = new Map<number, string>();
        // Start from everything on w0, then let the holders follow the assignment.
        for (const p of range(n)) held.set(p, "w0");
        for (let round = 0; round < 3; round++) {
          const a = assignPartitions({ partitions: range(n), workers: ws, holders: held });
          held = a;
        }
        const final = assignPartitions({ partitions: range(n), workers: ws, holders: held });
        expect(final).toEqual(held);
        const c = Object.values(counts(final));
        expect(Math.max(...c) - Math.min(...c)).toBeLessThanOrEqual(1);
        expect(c.reduce((x, y) => x + y, 0)).toBe(n);
      }
    }
  });
});
