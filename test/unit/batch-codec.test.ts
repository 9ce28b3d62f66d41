import { pack } from "msgpackr";
import { describe, expect, it } from "vitest";
import type { ClickEvent } from "../../src/model.js";
import {
  BatchDecodeError,
  decodeBatch,
  decodeBlock,
  decodeClickMessage,
  encodeBatch,
  encodeBlock,
  encodeClickMessage,
} from "../../src/wire/batch-codec.js";

const T0 = Date.UTC(2024, 6, 9);
const e = (i: number): ClickEvent => ({
  adId: `ad${i}`,
  timestampMs: T0 + i,
  userId: `u${i}`,
  ip: "10.0.0.1",
  country: "USA",
  eventId: `c:${i}`,
});

describe("click messages on the wire", () => {
  it.each([
    {
      why: "events with a mark",
      m: { source: "web-1:/a.log", progressMs: T0, events: [e(1), e(2)] },
    },
    { why: "a heartbeat (no events)", m: { source: "s", progressMs: T0 + 5, events: [] } },
    { why: "no progress yet", m: { source: "s", progressMs: null, events: [e(3)] } },
    { why: "ended", m: { source: "s", progressMs: T0, end: true, events: [] } },
    { why: "caught up", m: { source: "s", progressMs: T0, caughtUp: true, events: [e(4)] } },
    {
      why: "ended and caught up",
      m: { source: "s", progressMs: 1, end: true, caughtUp: true, events: [] },
    },
  ])("round-trips $why", ({ m }) => {
    const back = decodeClickMessage(encodeClickMessage(m));
    expect(back).toEqual({
      source: m.source,
      progressMs: m.progressMs,
      end: "end" in m && m.end === true,
      caughtUp: "caughtUp" in m && m.caughtUp === true,
      events: m.events,
    });
    expect(decodeBatch(encodeClickMessage(m))).toEqual(m.events);
  });

  it("reads a v1 batch of an older producer as the anonymous source", () => {
    const v1 = pack([1, [[e(1).adId, e(1).timestampMs, "u1", "10.0.0.1", "USA", "c:1"]]]);
    expect(decodeClickMessage(v1)).toEqual({
      source: "",
      progressMs: null,
      end: false,
      caughtUp: false,
      events: [e(1)],
    });
  });

  it("stores a non-finite progress as none", () => {
    const m = decodeClickMessage(
      encodeClickMessage({ source: "s", progressMs: Number.NaN, events: [] }),
    );
    expect(m.progressMs).toBeNull();
  });

  it.each([
    { why: "not msgpack", payload: new Uint8Array([0xc1]) },
    { why: "another version", payload: pack([9, []]) },
    { why: "a v2 without a source", payload: pack([2, 5, null, 0, []]) },
    { why: "a bad tuple", payload: pack([2, "s", null, 0, [["ad", "not a time"]]]) },
    { why: "a v3 block as a message", payload: encodeBlock([e(1)], [1]) },
  ])("refuses $why with a BatchDecodeError", ({ payload }) => {
    expect(() => decodeClickMessage(payload)).toThrow(BatchDecodeError);
  });
});

describe("raw-store blocks", () => {
  it("keeps one stream sequence per event", () => {
    const b = decodeBlock(encodeBlock([e(1), e(2)], [7, 9]));
    expect(b).toEqual({ events: [e(1), e(2)], streamSeqs: [7, 9] });
  });

  it("reads messages as blocks without sequences", () => {
    expect(decodeBlock(encodeBatch([e(1)]))).toEqual({ events: [e(1)], streamSeqs: null });
  });

  it("refuses a block whose sequences do not match its events", () => {
    expect(() => decodeBlock(pack([3, [], [1]]))).toThrow(BatchDecodeError);
  });
});
