import type { JetStreamClient } from "@nats-io/jetstream";
import { RawWriter, type RawWriterOptions } from "../src/ingest/raw-writer.js";
import type { RawStore } from "../src/storage/raw-store.js";
import { type ChildSpec, crashable } from "./loop-machine.js";

/**
 * The raw writer actor: consumes the raw-click stream (durable "raw-writer", shared by every
 * worker) and upserts each batch into the Cassandra raw store (src/ingest/raw-writer.ts).
 */
export function rawWriterChild(
  deps: { js: JetStreamClient; store: RawStore },
  opts: RawWriterOptions,
): ChildSpec {
  return {
    id: opts.id,
    kind: "raw-writer",
    restart: "permanent",
    start: () => {
      const writer = new RawWriter(deps, opts);
      return crashable(
        (s) => writer.run(s),
        () => ({ ...writer.status }),
      );
    },
  };
}
