import { describe, expect, it } from "vitest";
import { parseClickObject } from "../../src/parse/click-line.js";

const loc = { source: "ingest", file: "INGEST", byteOffset: 42, lineNo: 1 };
const good = {
  ad_id: "ad001",
  timestamp: "2024-07-09 00:00:01",
  user_id: "user-1",
  ip: "207.148.22.22",
  country: "usa",
};

describe("parseClickObject", () => {
  it("accepts a click in wire names and normalises it like a log line", () => {
    const r = parseClickObject({ ...good, click_id: "k-1" }, loc);
    expect(r).toEqual({
      ok: true,
      event: {
        adId: "ad001",
        timestampMs: Date.UTC(2024, 6, 9, 0, 0, 1),
        userId: "user-1",
        ip: "207.148.22.22",
        country: "USA",
        eventId: "c:k-1",
      },
    });
  });

  it.each([
    [
      "an ISO timestamp with milliseconds",
      { timestamp: "2024-07-09T00:00:01.250Z" },
      Date.UTC(2024, 6, 9, 0, 0, 1, 250),
    ],
    ["epoch milliseconds", { timestamp: Date.UTC(2024, 6, 9) }, Date.UTC(2024, 6, 9)],
  ])("accepts %s", (_name, patch, ts) => {
    const r = parseClickObject({ ...good, ...patch }, loc);
    expect(r.ok && r.event.timestampMs).toBe(ts);
  });

  it("derives the identity from the location when there is no click_id", () => {
    const a = parseClickObject(good, loc);
    const b = parseClickObject(good, { ...loc, byteOffset: 43 });
    expect(a.ok && a.event.eventId.startsWith("o:")).toBe(true);
    expect(a.ok && b.ok && a.event.eventId !== b.event.eventId).toBe(true);
  });

  it.each([
    ["a string", "ad001", "FIELD_COUNT"],
    ["null", null, "FIELD_COUNT"],
    ["an array", [good], "FIELD_COUNT"],
    ["an unknown field", { ...good, os: "ios" }, "FIELD_COUNT"],
    ["a missing ad_id", { ...good, ad_id: undefined }, "BAD_AD_ID"],
    ["a numeric ad_id", { ...good, ad_id: 1 }, "BAD_AD_ID"],
    ["a bad date", { ...good, timestamp: "2024-02-30 00:00:00" }, "BAD_TIMESTAMP"],
    ["a fractional epoch", { ...good, timestamp: 1.5 }, "BAD_TIMESTAMP"],
    ["an epoch in 1970", { ...good, timestamp: 0 }, "BAD_TIMESTAMP"],
    ["a user_id with a space", { ...good, user_id: "a b" }, "BAD_USER_ID"],
    ["a bad ip", { ...good, ip: "1.2.3.256" }, "BAD_IP"],
    ["a country with digits", { ...good, country: "U5A" }, "BAD_COUNTRY"],
    ["an empty click_id", { ...good, click_id: "" }, "BAD_CLICK_ID"],
  ])("rejects %s with %s", (_name, value, code) => {
    const r = parseClickObject(value, loc);
    expect(r.ok).toBe(false);
    if (!r.ok) {
      expect(r.error.code).toBe(code);
      expect(r.error.reason.length).toBeGreaterThan(0);
    }
  });
});
