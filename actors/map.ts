import type { JetStreamClient } from "@nats-io/jetstream";
import { IngestRouter } from "../src/ingest/ingest-router.js";
import { type ChildSpec, crashable } from "./loop-machine.js";

/**
 * The map actor: validates clicks published to `ingest.clicks` by programmatic producers and
 * routes them to their partitions (src/ingest/ingest-router.ts).
 */
export function mapChild(js: JetStreamClient, opts: { id: string; partitions: number }): ChildSpec {
  return {
    id: opts.id,
    kind: "map",
    restart: "permanent",
    start: () => {
      const router = new IngestRouter(js, opts);
      return crashable((s) => router.run(s));
    },
  };
}
