import type { JetStreamClient } from "@nats-io/jetstream";
import { RawWriter, type RawWriterOptions } from "../src/ingest/raw-writer.js";
import type { RawStore } from "../src/storage/raw-store.js";
import type { ChildSpec } from "../supervisor/supervisor.js";
import { type StageChildOptions, stageLogic } from "./stage.js";

/**
 * The raw writer actor: consumes the raw-click stream (durable "raw-writer", shared by every
 * worker) and upserts each batch into the Cassandra raw store (src/ingest/raw-writer.ts).
 */
export function rawWriterChild(
  deps: { js: JetStreamClient; store: RawStore },
  o: StageChildOptions & Omit<RawWriterOptions, "id">,
): ChildSpec {
  return {
    id: o.id,
    kind: "raw-writer",
    restart: "permanent",
    shutdownMs: o.shutdownMs,
    logic: stageLogic(deps.js, () => new RawWriter(deps, o)),
    input: { id: o.id, now: o.now },
  };
}
