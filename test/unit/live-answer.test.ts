import { describe, expect, it } from "vitest";
import type { LiveMinuteView } from "../../src/aggregate/aggregator-core.js";
import { answerLive, type LiveRequest } from "../../src/query/live.js";

const M = Date.UTC(2024, 6, 9, 10);

const minute: LiveMinuteView = {
  partition: 1,
  minuteStartMs: M,
  closed: false,
  adCounts: [
    ["ad1", 5],
    ["ad2", 3],
  ],
  dimCounts: {
    country: [
      ["ad1", "KOR", 2],
      ["ad1", "USA", 3],
      ["ad2", "USA", 3],
    ],
    ip: [
      ["ad1", "10.0.0.1", 4],
      ["ad1", "10.0.0.2", 1],
      ["ad2", "10.0.0.1", 3],
    ],
  },
  topK: [],
  eventCount: 8,
  version: 0,
  throughSeq: 41,
};

describe("answerLive", () => {
  it.each<{ why: string; r: Omit<LiveRequest, "fromMs" | "toMs">; ads: [string, number][] }>([
    {
      why: "no filter: every ad",
      r: {},
      ads: [
        ["ad1", 5],
        ["ad2", 3],
      ],
    },
    { why: "one ad", r: { adId: "ad2" }, ads: [["ad2", 3]] },
    { why: "a country (older services)", r: { country: "KOR" }, ads: [["ad1", 2]] },
    {
      why: "a country as a dimension filter",
      r: { dim: { dim: "country", value: "USA" } },
      ads: [
        ["ad1", 3],
        ["ad2", 3],
      ],
    },
    {
      why: "an ip: counted by the ip dimension, never mistaken for a country",
      r: { dim: { dim: "ip", value: "10.0.0.1" } },
      ads: [
        ["ad1", 4],
        ["ad2", 3],
      ],
    },
    {
      why: "an ip and an ad",
      r: { adId: "ad1", dim: { dim: "ip", value: "10.0.0.2" } },
      ads: [["ad1", 1]],
    },
    { why: "a value nobody has", r: { dim: { dim: "ip", value: "10.9.9.9" } }, ads: [] },
  ])("answers $why", ({ r, ads }) => {
    const reply = answerLive(
      1,
      { minutes: [minute], throughSeq: 42 },
      {
        fromMs: M,
        toMs: M + 60_000,
        ...r,
      },
    );
    expect(reply.error).toBeUndefined();
    expect(reply.throughSeq).toBe(42);
    expect(reply.minutes).toEqual([
      { minuteStartMs: M, closed: false, version: 0, throughSeq: 41, ads },
    ]);
  });

  it("says so when the aggregators do not count the dimension asked for", () => {
    const reply = answerLive(
      1,
      { minutes: [minute], throughSeq: 42 },
      {
        fromMs: M,
        toMs: M + 60_000,
        dim: { dim: "userId", value: "u1" },
      },
    );
    expect(reply.error).toMatch(/userId/);
    expect(reply.minutes).toEqual([]);
  });
});
