import { describe, expect, it } from "vitest";
import { DEFAULT_ID_CHUNK_CAPACITY, IdSet, WindowDedupe } from "../../src/windows/dedupe.js";

describe("IdSet", () => {
  it.each([
    { ids: ["a", "b", "c"], added: [true, true, true], size: 3, why: "distinct ids are all new" },
    { ids: ["a", "a"], added: [true, false], size: 1, why: "a repeated id is a duplicate" },
    { ids: ["a", "b", "a", "b"], added: [true, true, false, false], size: 2, why: "interleaved" },
    { ids: ["", ""], added: [true, false], size: 1, why: "the empty id is an id too" },
    { ids: ["A", "a"], added: [true, true], size: 2, why: "ids are case-sensitive" },
  ])("reports new ids as added ($why)", ({ ids, added, size }) => {
    const s = new IdSet();
    expect(ids.map((id) => s.add(id))).toEqual(added);
    expect(s.size).toBe(size);
  });

  it.each([1, 2, 3, 7])("dedupes across chunks when a chunk holds at most %i ids", (capacity) => {
    const s = new IdSet(capacity);
    for (let i = 0; i < 20; i++) expect(s.add(`id-${i}`)).toBe(true);
    for (let i = 0; i < 20; i++) {
      expect(s.has(`id-${i}`)).toBe(true);
      expect(s.add(`id-${i}`)).toBe(false);
    }
    expect(s.has("id-20")).toBe(false);
    expect(s.size).toBe(20);
    expect([...s.values()]).toEqual(Array.from({ length: 20 }, (_, i) => `id-${i}`));
  });

  it("keeps chunks below V8's 2^24 Set limit by default", () => {
    expect(DEFAULT_ID_CHUNK_CAPACITY).toBeLessThan(2 ** 24);
  });

  it.each([0, -1, 1.5])("rejects a chunk capacity of %s", (capacity) => {
    expect(() => new IdSet(capacity)).toThrow(RangeError);
  });
});

describe("WindowDedupe", () => {
  it("counts the same id once within a window", () => {
    const d = new WindowDedupe();
    expect(d.firstSeen(0, "e1")).toBe(true);
    expect(d.firstSeen(0, "e1")).toBe(false);
    expect(d.firstSeen(0, "e2")).toBe(true);
    expect(d.idCount).toBe(2);
  });

  it("keeps windows apart: an id reused in another window is new there", () => {
    const d = new WindowDedupe();
    expect(d.firstSeen(0, "e1")).toBe(true);
    expect(d.firstSeen(60_000, "e1")).toBe(true);
    expect(d.firstSeen(60_000, "e1")).toBe(false);
    expect(d.windowCount).toBe(2);
  });

  it("forgets a purged window's ids and only that window's", () => {
    const d = new WindowDedupe();
    d.firstSeen(0, "e1");
    d.firstSeen(60_000, "e2");
    d.forget(0);
    expect(d.windowCount).toBe(1);
    expect(d.firstSeen(0, "e1")).toBe(true);
    expect(d.firstSeen(60_000, "e2")).toBe(false);
  });

  it("hands out one id set per window that hot paths can hold on to", () => {
    const d = new WindowDedupe();
    const ids = d.idsFor(120_000);
    expect(d.idsFor(120_000)).toBe(ids);
    ids.add("x");
    expect(d.firstSeen(120_000, "x")).toBe(false);
  });

  it("spreads a window's ids over chunks with a small capacity", () => {
    const d = new WindowDedupe(2);
    for (let i = 0; i < 9; i++) expect(d.firstSeen(0, `e${i}`)).toBe(true);
    for (let i = 0; i < 9; i++) expect(d.firstSeen(0, `e${i}`)).toBe(false);
    expect(d.idCount).toBe(9);
  });
});
