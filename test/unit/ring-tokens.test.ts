import { describe, expect, it } from "vitest";
import { evenMurmur3Tokens } from "../../app/infra/cassandra-ring.js";

describe("evenMurmur3Tokens", () => {
  it("splits the Murmur3 range evenly: the usual tokens of a 3-node ring", () => {
    expect(evenMurmur3Tokens(3)).toEqual([
      "-9223372036854775808",
      "-3074457345618258603",
      "3074457345618258602",
    ]);
  });

  it("gives one node the whole range and keeps n tokens ascending inside it", () => {
    expect(evenMurmur3Tokens(1)).toEqual(["-9223372036854775808"]);
    const five = evenMurmur3Tokens(5).map(BigInt);
    for (let i = 1; i < five.length; i++)
      expect(five[i] as bigint).toBeGreaterThan(five[i - 1] as bigint);
    expect(five[4] as bigint).toBeLessThan(2n ** 63n);
  });
});
