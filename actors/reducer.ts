import type { JetStreamClient } from "@nats-io/jetstream";
import { Reducer, type ReducerOptions } from "../src/aggregate/reducer.js";
import type { ChildSpec } from "../supervisor/supervisor.js";
import { type StageChildOptions, stageLogic } from "./stage.js";

/**
 * The reducer actor: merges the partitions' per-minute top-k into the global top N per
 * minute once every partition has closed it (src/aggregate/reducer.ts); a tick a second
 * emits minutes some partition never reported.
 */
export function reducerChild(
  js: JetStreamClient,
  o: StageChildOptions & Omit<ReducerOptions, "id">,
): ChildSpec {
  return {
    id: o.id,
    kind: "reducer",
    restart: "permanent",
    shutdownMs: o.shutdownMs,
    logic: stageLogic(js, () => new Reducer(js, o)),
    input: { id: o.id, now: o.now },
  };
}
