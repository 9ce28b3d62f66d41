import type { JetStreamClient } from "@nats-io/jetstream";
import { AggregateWriter } from "../src/aggregate/aggregate-writer.js";
import type { AggregateStore } from "../src/storage/aggregate-store.js";
import { type ChildSpec, crashable } from "./loop-machine.js";

/**
 * The aggregate writer actor: the aggregates stream into Cassandra by idempotent, versioned
 * upserts (src/aggregate/aggregate-writer.ts).
 */
export function aggregateWriterChild(
  deps: { js: JetStreamClient; store: AggregateStore },
  opts: { id: string },
): ChildSpec {
  return {
    id: opts.id,
    kind: "aggregate-writer",
    restart: "permanent",
    start: () => {
      const writer = new AggregateWriter(deps, opts);
      return crashable((s) => writer.run(s));
    },
  };
}
