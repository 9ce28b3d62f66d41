import type { KV } from "@nats-io/kv";
import { type AnyActorRef, fromCallback } from "xstate";
import type { HotEpochSnapshot } from "../src/hot/epochs.js";
import type { Dimension } from "../src/model.js";
import type { ChildSpec } from "../supervisor/supervisor.js";
import type { HotShardInput, hotShardLogic } from "./hot-shard.js";
import { serviceLogic } from "./service.js";

/** The supervisor child id of one shard. */
export const hotShardId = (partition: number, epoch: number, shard: number) =>
  `hot-shard-${partition}-${epoch}-${shard}`;

export interface HotShardPoolOptions {
  id: string;
  /** The snapshots bucket, where the partition aggregators write their live epochs. */
  epochsKv: KV;
  logic: ReturnType<typeof hotShardLogic>;
  dimensions: readonly Dimension[];
  snapshotEveryMs: number;
  shutdownMs: number;
  now: () => number;
  log: (m: string) => void;
}

/** The shard children an epoch table asks for. */
export function shardSpecs(
  partition: number,
  epochs: readonly HotEpochSnapshot[],
  o: Pick<HotShardPoolOptions, "logic" | "dimensions" | "snapshotEveryMs" | "shutdownMs" | "now">,
): ChildSpec[] {
  const specs: ChildSpec[] = [];
  for (const e of epochs) {
    for (let k = 0; k < e.shards; k++) {
      const id = hotShardId(partition, e.id, k);
      const input: HotShardInput = {
        id,
        options: {
          partition,
          epoch: e.id,
          adId: e.adId,
          shards: e.shards,
          shard: k,
          startSeq: e.startSeq,
          excluded: e.excluded,
          dimensions: o.dimensions,
        },
        snapshotEveryMs: o.snapshotEveryMs,
        maxBatchMessages: 64,
        now: o.now,
      };
      specs.push({
        id,
        kind: "hot-shard",
        partition,
        // Restarted after a failure; gone for good once its epoch's minutes are all purged.
        restart: "transient",
        removeWhenDone: true,
        shutdownMs: o.shutdownMs,
        logic: o.logic,
        input,
      });
    }
  }
  return specs;
}

/**
 * The shard pool of one worker: watches the epochs every partition aggregator writes
 * (`epochs.<p>`) and asks the process's supervisor to start a child for every shard it does not
 * run yet, and to stop those whose epoch is gone. Every worker with aggregators runs one, so
 * every shard has a child in every such worker; its lease decides which one counts.
 */
export function hotShardPoolChild(o: HotShardPoolOptions): ChildSpec {
  const logic = serviceLogic(
    fromCallback(({ sendBack, system }) => {
      const supervisor = system.get("supervisor") as AnyActorRef | undefined;
      const running = new Map<number, Set<string>>();
      let stopped = false;
      let watcher: { stop(): void } | undefined;
      const apply = (partition: number, epochs: HotEpochSnapshot[]) => {
        const want = shardSpecs(partition, epochs, o);
        const had = running.get(partition) ?? new Set<string>();
        const now = new Set(want.map((s) => s.id));
        for (const spec of want) {
          if (had.has(spec.id)) continue;
          o.log(`hot shard ${spec.id}: starting`);
          supervisor?.send({ type: "START_CHILD", spec });
        }
        for (const id of had) {
          if (now.has(id)) continue;
          o.log(`hot shard ${id}: its epoch ended, stopping`);
          supervisor?.send({ type: "STOP_CHILD", id });
        }
        running.set(partition, now);
      };
      (async () => {
        const w = await o.epochsKv.watch({ key: "epochs.>" });
        watcher = w;
        if (stopped) w.stop();
        sendBack({ type: "SERVICE_READY" });
        for await (const e of w) {
          const partition = Number(e.key.split(".")[1]);
          if (!Number.isSafeInteger(partition)) continue;
          let epochs: HotEpochSnapshot[] = [];
          if (e.operation === "PUT" && e.length > 0) {
            try {
              epochs = JSON.parse(e.string()) as HotEpochSnapshot[];
            } catch {
              o.log(`hot shard pool: unreadable ${e.key}, ignored`);
              continue;
            }
          }
          apply(partition, epochs);
        }
        if (!stopped) throw new Error("the epochs watch ended");
      })().catch((error: unknown) => {
        if (!stopped) sendBack({ type: "SERVICE_FAILED", error });
      });
      return () => {
        stopped = true;
        watcher?.stop();
      };
    }),
  );
  return {
    id: o.id,
    kind: "service",
    restart: "permanent",
    shutdownMs: o.shutdownMs,
    logic,
    input: { id: o.id },
  };
}
