import type { JetStreamClient } from "@nats-io/jetstream";
import { createActor } from "xstate";
import { RawWriter, type RawWriterOptions } from "../src/ingest/raw-writer.js";
import type { RawStore } from "../src/storage/raw-store.js";
import { loopMachine } from "./loop-machine.js";

/**
 * The raw writer actor: consumes the raw-click stream (durable "raw-writer", shared by every
 * worker) and upserts each batch into the Cassandra raw store. See src/ingest/raw-writer.ts.
 */
export function createRawWriterActor(
  deps: { js: JetStreamClient; store: RawStore },
  opts: RawWriterOptions,
) {
  const writer = new RawWriter(deps, opts);
  const actor = createActor(loopMachine, {
    id: opts.id,
    input: { id: opts.id, run: (signal) => writer.run(signal) },
  });
  return { actor, writer };
}
