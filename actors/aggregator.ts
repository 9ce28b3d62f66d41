import type { JetStreamClient } from "@nats-io/jetstream";
import {
  AggregatorRunner,
  type AggregatorRunnerOptions,
} from "../src/aggregate/aggregator-runner.js";
import type { SnapshotStore } from "../src/snapshots/snapshot-store.js";
import { type ChildSpec, crashable } from "./loop-machine.js";

/**
 * The aggregator actor of one partition: event-time minute windows with watermark, dedupe,
 * star-schema counts and top-k, restored from its snapshot and replaying from its position
 * (src/aggregate/aggregator-runner.ts). `current()` is the live runner (queries read its
 * open minutes); a restart replaces it.
 */
export function aggregatorChild(
  deps: { js: JetStreamClient; snapshots: SnapshotStore },
  opts: AggregatorRunnerOptions,
): ChildSpec & { current: () => AggregatorRunner | undefined } {
  let current: AggregatorRunner | undefined;
  return {
    id: opts.id,
    kind: "aggregator",
    partition: opts.partition,
    restart: "permanent",
    current: () => current,
    start: () => {
      const runner = new AggregatorRunner(deps, opts);
      current = runner;
      return crashable(
        (s) => runner.run(s),
        () => ({ ...runner.status }),
      );
    },
  };
}
