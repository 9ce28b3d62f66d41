import type { JetStreamClient } from "@nats-io/jetstream";
import { IngestRouter } from "../src/ingest/ingest-router.js";
import type { ChildSpec } from "../supervisor/supervisor.js";
import { type StageChildOptions, stageLogic } from "./stage.js";

/**
 * The map actor: validates clicks published to `ingest.clicks` by programmatic producers and
 * routes them to their partitions (src/ingest/ingest-router.ts).
 */
export function mapChild(
  js: JetStreamClient,
  o: StageChildOptions & { partitions: number },
): ChildSpec {
  return {
    id: o.id,
    kind: "map",
    restart: "permanent",
    shutdownMs: o.shutdownMs,
    logic: stageLogic(js, () => new IngestRouter(js, { id: o.id, partitions: o.partitions })),
    input: { id: o.id, now: o.now },
  };
}
