import { describe, expect, it } from "vitest";
import { jetStreamLayout, PARTITIONS_METADATA_KEY, STREAMS, SUBJECTS } from "../../nats/layout.js";

const layout = jetStreamLayout({
  partitions: 16,
  replicas: 3,
  duplicateWindowMs: 120_000,
  rawStreamMaxAgeMs: 86_400_000,
});

describe("the JetStream layout", () => {
  it("gives every subject a stream, and no subject two streams", () => {
    const owners = (subject: string) =>
      layout.streams.filter((s) =>
        s.subjects.some((p) =>
          new RegExp(`^${p.replace(/\./g, "\\.").replace("*", "[^.]+").replace(">", ".+")}$`).test(
            subject,
          ),
        ),
      );
    for (const subject of [
      SUBJECTS.ingest,
      SUBJECTS.clicks(0),
      SUBJECTS.clicks(15),
      SUBJECTS.deadLetter("web-1"),
      SUBJECTS.late(3),
      SUBJECTS.minuteAggregates(7),
      SUBJECTS.topAggregates,
    ]) {
      expect(owners(subject), subject).toHaveLength(1);
    }
  });

  it("records the partition count on the partitioned streams", () => {
    const byName = new Map(layout.streams.map((s) => [s.name, s]));
    expect(byName.get(STREAMS.clicks)?.metadata[PARTITIONS_METADATA_KEY]).toBe("16");
    expect(byName.get(STREAMS.aggregates)?.metadata[PARTITIONS_METADATA_KEY]).toBe("16");
  });

  it("never discards unprocessed billing input to make room", () => {
    const clicks = layout.streams.find((s) => s.name === STREAMS.clicks);
    expect(clicks?.discard).toBe("new");
  });

  it("replicates every stream and bucket as configured", () => {
    expect(layout.streams.every((s) => s.replicas === 3)).toBe(true);
    expect(layout.kv.every((b) => b.replicas === 3)).toBe(true);
  });
});
