import type { JetStreamClient } from "@nats-io/jetstream";
import { AggregateWriter, type AggregateWriterTarget } from "../src/aggregate/aggregate-writer.js";
import type { AggregateStore } from "../src/storage/aggregate-store.js";
import type { ChildSpec } from "../supervisor/supervisor.js";
import { type StageChildOptions, stageLogic } from "./stage.js";

/**
 * The aggregate writer actor: the aggregates stream into Cassandra by idempotent, versioned
 * upserts (src/aggregate/aggregate-writer.ts). Target `minutes` (default: the partition
 * minutes, top N and progress `final` follows) or `ad-rows` (the per-ad tables, behind).
 */
export function aggregateWriterChild(
  deps: { js: JetStreamClient; store: AggregateStore },
  o: StageChildOptions & {
    target?: AggregateWriterTarget;
    retryBaseMs?: number;
    retryMaxMs?: number;
  },
): ChildSpec {
  return {
    id: o.id,
    kind: o.target === "ad-rows" ? "ad-rows-writer" : "aggregate-writer",
    restart: "permanent",
    shutdownMs: o.shutdownMs,
    logic: stageLogic(deps.js, () => new AggregateWriter(deps, o)),
    input: { id: o.id, now: o.now },
  };
}
