import { describe, expect, it } from "vitest";
import {
  parseCountRequest,
  parseJsonBody,
  parseTopRequest,
  QueryError,
} from "../../src/query/request.js";

const limits = { maxRangeMinutes: 1440, maxN: 1000 };
const NOW = Date.UTC(2024, 6, 9, 12, 30, 42);
const at = (h: number, m: number) => Date.UTC(2024, 6, 9, h, m);

describe("parseCountRequest", () => {
  it.each([
    ["the most recent whole minute by default", { ad_id: "ad1" }, at(12, 29), at(12, 30)],
    ["the M most recent whole minutes", { ad_id: "ad1", minutes: 5 }, at(12, 25), at(12, 30)],
    [
      "an explicit range",
      { ad_id: "ad1", from: "2024-07-09T00:00:00Z", to: "2024-07-09T00:10:00Z" },
      at(0, 0),
      at(0, 10),
    ],
    [
      "a range without seconds",
      { ad_id: "ad1", from: "2024-07-09T00:00Z", to: "2024-07-09T00:01+00:00" },
      at(0, 0),
      at(0, 1),
    ],
    [
      "a range with zero milliseconds",
      { ad_id: "ad1", from: "2024-07-09T00:00:00.000Z", to: "2024-07-09T00:02:00Z" },
      at(0, 0),
      at(0, 2),
    ],
  ])("resolves %s", (_name, body, fromMs, toMs) => {
    expect(parseCountRequest(body, NOW, limits)).toMatchObject({
      adId: "ad1",
      fromMs,
      toMs,
      filter: {},
    });
  });

  it("normalises filter values like log fields", () => {
    const r = parseCountRequest(
      { ad_id: "ad1", filter: { country: "usa", ip: "::FFFF:1.2.3.4", user_id: "u-1" } },
      NOW,
      limits,
    );
    expect(r.filter).toEqual({ country: "USA", ip: "1.2.3.4", userId: "u-1" });
  });

  it.each([
    ["a non-object", "ad1", /JSON object/],
    ["an unknown field", { ad_id: "ad1", adId: "x" }, /unknown field "adId"/],
    ["no ad_id", { minutes: 1 }, /"ad_id" is required/],
    ["a bad ad_id", { ad_id: "a b" }, /ad_id:/],
    [
      "minutes and a range",
      { ad_id: "a", minutes: 1, from: "2024-07-09T00:00:00Z", to: "2024-07-09T00:01:00Z" },
      /either/,
    ],
    ["from without to", { ad_id: "a", from: "2024-07-09T00:00:00Z" }, /go together/],
    [
      "a time off the minute",
      { ad_id: "a", from: "2024-07-09T00:00:30Z", to: "2024-07-09T00:01:00Z" },
      /minute boundary/,
    ],
    [
      "a local time",
      { ad_id: "a", from: "2024-07-09T00:00:00+09:00", to: "2024-07-09T00:01:00Z" },
      /UTC/,
    ],
    [
      "a reversed range",
      { ad_id: "a", from: "2024-07-09T00:05:00Z", to: "2024-07-09T00:01:00Z" },
      /after/,
    ],
    [
      "an empty range",
      { ad_id: "a", from: "2024-07-09T00:05:00Z", to: "2024-07-09T00:05:00Z" },
      /after/,
    ],
    ["zero minutes", { ad_id: "a", minutes: 0 }, /whole number ≥ 1/],
    ["fractional minutes", { ad_id: "a", minutes: 1.5 }, /whole number/],
    ["minutes as text", { ad_id: "a", minutes: "5" }, /whole number/],
    ["an unknown filter", { ad_id: "a", filter: { os: "ios" } }, /unknown field "os" in filter/],
    ["a bad ip filter", { ad_id: "a", filter: { ip: "1.2.3" } }, /filter.ip/],
    ["a numeric country", { ad_id: "a", filter: { country: 1 } }, /must be a string/],
  ])("rejects %s", (_name, body, message) => {
    expect(() => parseCountRequest(body, NOW, limits)).toThrow(message);
    try {
      parseCountRequest(body, NOW, limits);
    } catch (e) {
      expect(e).toBeInstanceOf(QueryError);
      expect((e as QueryError).status).toBe(400);
    }
  });

  it("refuses a range past the retention with its own code", () => {
    let err: unknown;
    try {
      parseCountRequest({ ad_id: "a", minutes: 1441 }, NOW, limits);
    } catch (e) {
      err = e;
    }
    expect((err as QueryError).queryCode).toBe("RANGE_TOO_LARGE");
    expect((err as QueryError).message).toMatch(/1441 minutes; at most 1440/);
  });
});

describe("parseTopRequest", () => {
  it("defaults to the top 100 of the last whole minute", () => {
    expect(parseTopRequest({}, NOW, limits)).toEqual({
      n: 100,
      fromMs: at(12, 29),
      toMs: at(12, 30),
      filter: {},
    });
  });

  it.each([
    [{ n: 0 }, /from 1 to 1000/],
    [{ n: 1001 }, /from 1 to 1000/],
    [{ n: 2.5 }, /from 1 to 1000/],
    [{ ad_id: "a" }, /unknown field "ad_id"/],
  ])("rejects %o", (body, message) => {
    expect(() => parseTopRequest(body, NOW, limits)).toThrow(message);
  });
});

describe("parseJsonBody", () => {
  it("treats an empty body as {} and rejects non-JSON", () => {
    expect(parseJsonBody(new Uint8Array())).toEqual({});
    expect(() => parseJsonBody(new TextEncoder().encode("{oops"))).toThrow(/not JSON/);
  });
});
