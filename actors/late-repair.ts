import type { JetStreamClient } from "@nats-io/jetstream";
import { LateRepair, type LateRepairOptions } from "../src/recalc/late-repair.js";
import type { RecalcProgressStore } from "../src/recalc/progress.js";
import type { AggregateStore } from "../src/storage/aggregate-store.js";
import type { RawStore } from "../src/storage/raw-store.js";
import { type ChildSpec, crashable } from "./loop-machine.js";

/**
 * The late-repair actor: recounts, from the raw store, the minutes of clicks that came past
 * the amendment horizon, and publishes the recounts as new revisions
 * (src/recalc/late-repair.ts).
 */
export function lateRepairChild(
  deps: {
    js: JetStreamClient;
    raw: RawStore;
    aggregates: AggregateStore;
    versions: RecalcProgressStore;
    log?: (m: string) => void;
  },
  opts: LateRepairOptions,
): ChildSpec {
  return {
    id: opts.id,
    kind: "late-repair",
    restart: "permanent",
    start: () => {
      const repair = new LateRepair(deps, opts);
      return crashable(
        (s) => repair.run(s),
        () => ({ ...repair.status }),
      );
    },
  };
}
