import {
  LateRepair,
  type LateRepairDeps,
  type LateRepairOptions,
} from "../src/recalc/late-repair.js";
import type { ChildSpec } from "../supervisor/supervisor.js";
import { type StageChildOptions, stageLogic } from "./stage.js";

/**
 * The late-repair actor: recounts, from the raw store, the minutes of clicks that came past
 * the amendment horizon, and publishes the recounts as new revisions
 * (src/recalc/late-repair.ts).
 */
export function lateRepairChild(
  deps: LateRepairDeps,
  o: StageChildOptions & Omit<LateRepairOptions, "id">,
): ChildSpec {
  return {
    id: o.id,
    kind: "late-repair",
    restart: "permanent",
    shutdownMs: o.shutdownMs,
    logic: stageLogic(deps.js, () => new LateRepair(deps, o)),
    input: { id: o.id, now: o.now },
  };
}
