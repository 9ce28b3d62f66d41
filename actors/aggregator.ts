import type { JetStreamClient } from "@nats-io/jetstream";
import {
  AggregatorRunner,
  type AggregatorRunnerOptions,
} from "../src/aggregate/aggregator-runner.js";
import type { PartitionLeases } from "../src/leases/partition-lease.js";
import type { SnapshotStore } from "../src/snapshots/snapshot-store.js";
import { type ChildSpec, crashable } from "./loop-machine.js";

/**
 * The aggregator actor of one partition: event-time minute windows with watermark, dedupe,
 * star-schema counts and top-k, restored from its snapshot and replaying from its position
 * (src/aggregate/aggregator-runner.ts). With `leases`, it first waits for the partition's
 * lease — one worker aggregates a partition at a time, others stand by — and stops at once
 * if the lease is lost. `current()` is the live runner (queries read its open minutes).
 */
export function aggregatorChild(
  deps: { js: JetStreamClient; snapshots: SnapshotStore; leases?: PartitionLeases },
  opts: AggregatorRunnerOptions,
): ChildSpec & { current: () => AggregatorRunner | undefined } {
  let current: AggregatorRunner | undefined;
  let waitingFor: string | undefined;
  return {
    id: opts.id,
    kind: "aggregator",
    partition: opts.partition,
    restart: "permanent",
    current: () => current,
    start: () => {
      const runner = new AggregatorRunner(deps, opts);
      const run = async (signal: AbortSignal) => {
        if (!deps.leases) {
          current = runner;
          return runner.run(signal);
        }
        const lease = await deps.leases.acquire(opts.partition, signal, (holder) => {
          waitingFor = holder;
        });
        waitingFor = undefined;
        current = runner;
        try {
          await runner.run(AbortSignal.any([signal, lease.lost]));
        } finally {
          if (current === runner) current = undefined;
          await lease.release();
        }
        if (lease.lost.aborted) throw lease.lost.reason;
      };
      return crashable(run, () => ({
        ...runner.status,
        ...(waitingFor ? { standbyFor: waitingFor } : {}),
      }));
    },
  };
}
