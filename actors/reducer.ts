import type { JetStreamClient } from "@nats-io/jetstream";
import { Reducer, type ReducerOptions } from "../src/aggregate/reducer.js";
import { type ChildSpec, crashable } from "./loop-machine.js";

/**
 * The reducer actor: merges the partitions' per-minute top-k into the global top N per
 * minute once every partition has closed it (src/aggregate/reducer.ts).
 */
export function reducerChild(js: JetStreamClient, opts: ReducerOptions): ChildSpec {
  return {
    id: opts.id,
    kind: "reducer",
    restart: "permanent",
    start: () => {
      const reducer = new Reducer(js, opts);
      return crashable(
        (s) => reducer.run(s),
        () => ({ minutesHeld: reducer.state.minutes.size }),
      );
    },
  };
}
