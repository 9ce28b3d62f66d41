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

  // Every class of id the compact encoding distinguishes, and the neighbours that must not
  // collide with them: derived ids (96 bits), derived-looking ids that are not base64url,
  // short ASCII ids (7 bits a character), ids one character longer than that, non-ASCII.
  const DERIVED = "o:AbCdEfGhIjKlMn-_";
  it.each([
    { a: DERIVED, b: "o:AbCdEfGhIjKlMn-A", why: "derived ids differing in the last character" },
    { a: DERIVED, b: "o:AbCdEfGhIjKlMn-!", why: "a derived id and a non-base64url look-alike" },
    { a: "o:AAAAAAAAAAAAAAAA", b: "", why: "an all-zero derived id and the empty id" },
    { a: "c:clk-7-12345678", b: "c:clk-7-1234567", why: "16 and 15 characters" },
    { a: "c:clk-7-12345678", b: "c:clk-7-123456789", why: "16 and 17 characters" },
    { a: "ab", b: "ab\u0001", why: "a trailing U+0001 is a character, not padding" },
    { a: "abcd", b: "abcd\u0001", why: "the same at a word boundary" },
    { a: "a", b: "\u0001a", why: "a leading U+0001" },
    { a: "café", b: "cafe", why: "a non-ASCII id and its ASCII look-alike" },
    { a: "c:é-1", b: "c:e-1", why: "a short non-ASCII id" },
    { a: "x\u0000", b: "x", why: "U+0000 is kept as a string, never as padding" },
    { a: "o:AbCdEfGhIjKlMnOp", b: "AbCdEfGhIjKlMnOp", why: "a derived id and its bare base64" },
  ])("keeps apart $why", ({ a, b }) => {
    const s = new IdSet();
    expect(s.add(a)).toBe(true);
    expect(s.has(b)).toBe(false);
    expect(s.add(b)).toBe(true);
    expect(s.add(a)).toBe(false);
    expect(s.add(b)).toBe(false);
    expect(s.size).toBe(2);
    expect([...s.values()]).toEqual([a, b]);
    const copy = new IdSet();
    copy.addCompact(JSON.parse(JSON.stringify(s.toCompact())));
    expect([...copy.values()].sort()).toEqual([a, b].sort());
    expect(copy.add(a)).toBe(false);
    expect(copy.add(b)).toBe(false);
  });

  it("agrees with a Set<string> on 200k random ids of every class, through growth and a compact copy", () => {
    let seed = 12345;
    const rand = (n: number) => {
      seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
      return seed % n;
    };
    const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    const randomId = (): string => {
      switch (rand(5)) {
        case 0: // derived, drawn from a small space so that repeats happen
          return `o:${Array.from({ length: 16 }, (_, i) => (i < 13 ? "A" : B64[rand(64)])).join("")}`;
        case 1:
          return `c:${rand(20_000)}`;
        case 2:
          return `c:clk-${rand(100)}-${"x".repeat(rand(12))}`; // 8 to 19 characters
        case 3:
          return `ü-${rand(500)}`;
        default:
          return String.fromCharCode(1 + rand(127)) + String.fromCharCode(1 + rand(127));
      }
    };
    const s = new IdSet();
    const ref = new Set<string>();
    for (let i = 0; i < 200_000; i++) {
      const id = randomId();
      const fresh = !ref.has(id);
      ref.add(id);
      if (s.add(id) !== fresh) throw new Error(`add(${JSON.stringify(id)}) disagreed at ${i}`);
    }
    expect(s.size).toBe(ref.size);
    expect([...s.values()]).toEqual([...ref]);
    const copy = new IdSet();
    copy.addCompact(s.toCompact());
    expect(copy.size).toBe(ref.size);
    for (const id of ref) if (!copy.has(id)) throw new Error(`copy lost ${JSON.stringify(id)}`);
    for (let i = 0; i < 10_000; i++) {
      const id = randomId();
      expect(copy.has(id)).toBe(ref.has(id));
    }
  });
});

describe("IdSet.compact", () => {
  it.each([0, 1, 12, 13, 24, 25, 1_000, 30_000])(
    "keeps %i ids, their order and every answer, and takes new ids after, through growth",
    (n) => {
      const ids = Array.from({ length: n }, (_, i) =>
        i % 3 === 0
          ? `c:clk-7-${i}`
          : i % 3 === 1
            ? `o:AAAAAAAAAA${String(i).padStart(6, "0")}`
            : `long-id-${i}-${"x".repeat(20)}`,
      );
      const s = new IdSet();
      for (const id of ids) s.add(id);
      const bytes = s.bytes;
      const compact = s.toCompact();
      s.compact();
      expect(s.bytes).toBeLessThanOrEqual(bytes);
      expect(s.size).toBe(n);
      expect([...s.values()]).toEqual(ids);
      expect(s.toCompact()).toEqual(compact);
      expect(ids.filter((id) => s.add(id))).toEqual([]);
      expect(s.has("c:clk-7-x")).toBe(false);
      const more = Array.from({ length: 2 * n + 40 }, (_, i) => `c:late-${i}`);
      expect(more.map((id) => s.add(id)).every(Boolean)).toBe(true);
      expect(s.size).toBe(3 * n + 40);
      expect([...s.values()]).toEqual([...ids, ...more]);
      expect([...ids, ...more].every((id) => s.has(id))).toBe(true);
    },
  );
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
