import type { JetStreamClient } from "@nats-io/jetstream";
import { createActor } from "xstate";
import { IngestRouter } from "../src/ingest/ingest-router.js";
import { loopMachine } from "./loop-machine.js";

/**
 * The map actor: validates clicks published to `ingest.clicks` by programmatic producers and
 * routes them to their partitions (see src/ingest/ingest-router.ts).
 */
export function createMapActor(js: JetStreamClient, opts: { id: string; partitions: number }) {
  const router = new IngestRouter(js, opts);
  const actor = createActor(loopMachine, {
    id: opts.id,
    input: { id: opts.id, run: (signal) => router.run(signal) },
  });
  return { actor, router };
}
