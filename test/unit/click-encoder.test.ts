import { Packr } from "msgpackr";
import { describe, expect, it } from "vitest";
import { prng } from "../../src/gen/click-log.js";
import { PartitionBatches, partitionedMessages } from "../../src/ingest/route.js";
import type { ClickEvent } from "../../src/model.js";
import { decodeClickMessage, encodeClickMessage } from "../../src/wire/batch-codec.js";
import { encodeClickTuples } from "../../src/wire/click-encoder.js";

/** The reference: what batch-codec.ts packed with msgpackr before the hand-written encoder. */
const packr = new Packr({ useRecords: false, moreTypes: false });
const reference = (
  source: string,
  progress: number | null,
  flags: number,
  events: readonly ClickEvent[],
) =>
  packr.pack([
    2,
    source,
    progress,
    flags,
    events.map((e) => [e.adId, e.timestampMs, e.userId, e.ip, e.country, e.eventId]),
  ]);

const ALPHABETS = [
  "abcXYZ019_.:-",
  "é ü ß",
  "日本語テキスト",
  "😀👍",
  "\ud800x\udc00", // lone surrogates
];

function randomString(r: () => number): string {
  const lengths = [0, 1, 5, 16, 31, 32, 33, 63, 64, 65, 120, 255, 256, 300, 70_000];
  const n = lengths[Math.floor(r() * (r() < 0.99 ? 12 : lengths.length))] as number;
  const alphabet = ALPHABETS[Math.floor(r() * (r() < 0.6 ? 1 : ALPHABETS.length))] as string;
  const at = Math.floor(r() * alphabet.length);
  return (alphabet.slice(at) + alphabet.repeat(Math.ceil(n / alphabet.length) + 1)).slice(0, n);
}

const NUMBERS = [
  0,
  1,
  31,
  32,
  127,
  128,
  255,
  256,
  65_535,
  65_536,
  2 ** 32 - 1,
  2 ** 32,
  -1,
  -32,
  -33,
  -128,
  -129,
  -32_768,
  -32_769,
  -(2 ** 31),
  -(2 ** 31) - 1,
  1.5,
  -0,
  Number.MAX_SAFE_INTEGER,
  Date.UTC(2024, 6, 9),
  Date.UTC(2099, 11, 31, 23, 59, 59, 999),
  Number.NaN,
];

describe("the hand-written click encoder", () => {
  it("writes exactly msgpackr's bytes for strings, numbers and lengths of every kind", () => {
    const r = prng(42);
    for (let round = 0; round < 300; round++) {
      const count = [0, 1, 2, 15, 16, 17, 40][round % 7] as number;
      const events: ClickEvent[] = [];
      for (let i = 0; i < count; i++) {
        events.push({
          adId: randomString(r),
          timestampMs: NUMBERS[Math.floor(r() * NUMBERS.length)] as number,
          userId: randomString(r),
          ip: randomString(r),
          country: randomString(r),
          eventId: randomString(r),
        });
      }
      const progress = r() < 0.2 ? null : (NUMBERS[Math.floor(r() * NUMBERS.length)] as number);
      const source = randomString(r);
      const flags = Math.floor(r() * 4);
      const mine = encodeClickTuples(2, source, progress, flags, events);
      expect(
        Buffer.from(mine).equals(Buffer.from(reference(source, progress, flags, events))),
      ).toBe(true);
    }
  });

  it("writes msgpackr's array header of 65,536 events and more", () => {
    const e: ClickEvent = {
      adId: "a",
      timestampMs: 1,
      userId: "u",
      ip: "i",
      country: "c",
      eventId: "e",
    };
    const events = Array.from({ length: 65_537 }, () => e);
    const mine = encodeClickTuples(2, "s", 5, 0, events);
    expect(Buffer.from(mine).equals(Buffer.from(reference("s", 5, 0, events)))).toBe(true);
  });

  it("keeps every message it returned intact while it writes more", () => {
    const ev = (i: number): ClickEvent => ({
      adId: `ad${i}`,
      timestampMs: Date.UTC(2024, 6, 9) + i,
      userId: `u${i}`,
      ip: "10.0.0.1",
      country: "USA",
      eventId: `c:${i}`,
    });
    const messages = Array.from({ length: 200 }, (_, k) => {
      const events = Array.from({ length: 50 + k }, (_, i) => ev(k * 1000 + i));
      return { events, bytes: encodeClickMessage({ source: `s${k}`, progressMs: k, events }) };
    });
    for (const m of messages) expect(decodeClickMessage(m.bytes).events).toEqual(m.events);
  });

  it("builds, one event at a time, the messages partitionedMessages builds", () => {
    const r = prng(9);
    for (const [count, max, caughtUp] of [
      [0, 10, false],
      [1, 10, true],
      [500, 7, false],
      [2000, 4000, true],
      [2000, 40, true],
    ] as const) {
      const events: ClickEvent[] = Array.from({ length: count }, (_, i) => ({
        adId: `ad${Math.floor(r() * 300)}`,
        timestampMs: Date.UTC(2024, 6, 9) + Math.floor(r() * 60_000),
        userId: `user-${i}`,
        ip: r() < 0.5 ? "10.1.2.3" : "2001:db8::1",
        country: "USA",
        eventId: r() < 0.5 ? `c:clk-${i}` : `o:${i.toString(36).padStart(16, "x")}`,
      }));
      const mark = { source: "web-1:/var/log/é.log", progressMs: 1_720_483_200_000, caughtUp };
      const batches = new PartitionBatches(16, max);
      for (const e of events) batches.add(e, mark.source, mark.progressMs);
      const mine = batches.finish("s:tag:0-99", mark.source, mark.progressMs, caughtUp);
      const theirs = partitionedMessages(events, 16, "s:tag:0-99", max, mark);
      expect(mine.map((m) => ({ ...m, payload: Buffer.from(m.payload).toString("hex") }))).toEqual(
        theirs.map((m) => ({ ...m, payload: Buffer.from(m.payload).toString("hex") })),
      );
    }
  });
});
