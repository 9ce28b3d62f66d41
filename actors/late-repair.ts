import {
  LateRepair,
  type LateRepairDeps,
  type LateRepairOptions,
} from "../src/recalc/late-repair.js";
import { type ChildSpec, crashable } from "./loop-machine.js";

/**
 * The late-repair actor: recounts, from the raw store, the minutes of clicks that came past
 * the amendment horizon, and publishes the recounts as new revisions
 * (src/recalc/late-repair.ts).
 */
export function lateRepairChild(deps: LateRepairDeps, opts: LateRepairOptions): ChildSpec {
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
