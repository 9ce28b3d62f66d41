/**
 * The late repair: clicks that came after their minute left the amendment horizon are still
 * counted. The aggregators put them in CLICKS_LATE (reason "horizon"); this loop takes them,
 * waits until the raw writer has stored them, recounts each minute they belong to from the raw
 * store (the same operator as the live path: src/recalc/recount.ts) and publishes the recount
 * into the aggregates stream as a new revision of that partition-minute, at a recalculation
 * version (above anything live). The aggregate writer stores it like any revision, the
 * reducer re-merges the minute's top N; the minute's global top N is also recomputed from the
 * stored partition-minutes, for minutes older than the reducer remembers.
 *
 * A partition-minute past the horizon is never amended live again (its state is purged, and
 * every later click of it comes here), so a repair is the last word until the next repair.
 * Under late policy "drop" the late clicks are reported, not repaired: nothing here.
 */
import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { Counter, Histogram } from "prom-client";
import { STREAMS, SUBJECTS } from "../../nats/layout.js";
import { sleep } from "../backoff.js";
import { BatchPublisher } from "../ingest/batch-publisher.js";
import { RAW_WRITER_DURABLE } from "../ingest/raw-writer.js";
import { registry } from "../metrics/registry.js";
import type { Dimension } from "../model.js";
import { ONE_MINUTE_MS } from "../model.js";
import { type DurableSpec, keepAlive } from "../nats/durable-consumer.js";
import type { ConsumerPlan, StageHandler } from "../nats/stage-handler.js";
import type { AggregateStore } from "../storage/aggregate-store.js";
import type { RawStore } from "../storage/raw-store.js";
import type { ClosedMinute } from "../windows/partition-aggregator.js";
import { mergeTopK, topK } from "../windows/topk.js";
import {
  encodeAggregate,
  LATE_CLICKS_SEQ_HEADER,
  LATE_REASON_HEADER,
  minuteMsgId,
} from "../wire/aggregate-messages.js";
import { BatchDecodeError, decodeBatch } from "../wire/batch-codec.js";
import type { RecalcProgressStore } from "./progress.js";
import { recountMinute } from "./recount.js";

const repairs = new Counter({
  name: "adclick_late_repairs_total",
  help: "Partition-minutes recounted from the raw store for clicks past the amendment horizon, by result (repaired; refused: the recount was below the stored counts)",
  labelNames: ["actor", "result"] as const,
  registers: [registry],
});
const repairedClicks = new Counter({
  name: "adclick_late_repair_clicks_total",
  help: "Late clicks (past the amendment horizon) taken for repair",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const repairDelay = new Histogram({
  name: "adclick_late_repair_delay_seconds",
  help: "From a late click's arrival in CLICKS_LATE to its minute's repair published",
  labelNames: ["actor"] as const,
  buckets: [0.5, 1, 2, 5, 10, 30, 60, 120, 300],
  registers: [registry],
});

export const LATE_REPAIR_DURABLE = "late-repair";

export function lateRepairConsumer(): DurableSpec {
  return {
    stream: STREAMS.late,
    durable: LATE_REPAIR_DURABLE,
    filterSubjects: [SUBJECTS.lateAll],
    ackWaitMs: 120_000,
    maxAckPending: 1000,
    description: "clicks past the amendment horizon -> recount of their minute from the raw store",
  };
}

export interface LateRepairOptions {
  id: string;
  partitions: number;
  dimensions: readonly Dimension[];
  topK: number;
  /** How often to look whether the raw writer has stored what a repair needs. */
  pollMs?: number;
  /** The wall clock (recalculation versions, repair delays); the actor's. */
  now?: () => number;
}

/** What one batch of late messages asks for (pure). */
export interface RepairPlan {
  /** partition → minutes to recount. */
  minutes: Map<number, Set<number>>;
  /** The largest CLICKS sequence the late clicks came in: the raw store must be past it. */
  maxClicksSeq: number;
  clicks: number;
}

/**
 * The partition-minutes a batch of late messages needs recounted: only clicks left out past
 * the amendment horizon (reason "horizon"); those dropped by policy stay reported only.
 */
export function planRepairs(
  msgs: readonly {
    subject: string;
    reason: string | undefined;
    clicksSeq: number;
    payload: Uint8Array;
  }[],
): RepairPlan {
  const plan: RepairPlan = { minutes: new Map(), maxClicksSeq: 0, clicks: 0 };
  for (const m of msgs) {
    if (m.reason !== "horizon") continue;
    const p = Number(m.subject.slice(m.subject.lastIndexOf(".") + 1));
    if (!Number.isInteger(p) || p < 0) continue;
    let events: ReturnType<typeof decodeBatch>;
    try {
      events = decodeBatch(m.payload);
    } catch (err) {
      if (err instanceof BatchDecodeError) continue;
      throw err;
    }
    for (const e of events) {
      if (!Number.isFinite(e.timestampMs)) continue;
      let set = plan.minutes.get(p);
      if (!set) {
        set = new Set();
        plan.minutes.set(p, set);
      }
      set.add(Math.floor(e.timestampMs / ONE_MINUTE_MS) * ONE_MINUTE_MS);
      plan.clicks++;
    }
    if (m.clicksSeq > plan.maxClicksSeq) plan.maxClicksSeq = m.clicksSeq;
  }
  return plan;
}

/** True when `recount` has at least every stored count (a repair only ever adds clicks). */
export function coversStored(
  recount: ClosedMinute,
  stored: { adCounts: [string, number][] } | undefined,
): boolean {
  if (!stored) return true;
  const counts = new Map(recount.adCounts);
  for (const [ad, n] of stored.adCounts) if ((counts.get(ad) ?? 0) < n) return false;
  return true;
}

/** What the late repair reads, writes and allocates versions from. */
export interface LateRepairDeps {
  js: JetStreamClient;
  raw: RawStore;
  aggregates: AggregateStore;
  versions: RecalcProgressStore;
  log?: (m: string) => void;
}

export class LateRepair implements StageHandler {
  readonly counts = { repaired: 0, refused: 0, clicks: 0, lastRepairAtMs: 0 };
  private readonly publisher: BatchPublisher;
  private readonly o: Required<LateRepairOptions>;

  constructor(
    private readonly deps: LateRepairDeps,
    opts: LateRepairOptions,
  ) {
    this.o = { pollMs: 500, now: Date.now, ...opts };
    this.publisher = new BatchPublisher(deps.js, { label: "repairs" });
  }

  async prepare(): Promise<ConsumerPlan> {
    return { kind: "durable", stream: STREAMS.late, durable: LATE_REPAIR_DURABLE, maxBatch: 256 };
  }

  status(): Record<string, unknown> {
    return { ...this.counts };
  }

  /** The raw writer's ack floor: every CLICKS message up to it is in the raw store. */
  private async rawFloor(): Promise<number> {
    const info = await this.deps.js.consumers
      .get(STREAMS.clicks, RAW_WRITER_DURABLE)
      .then((c) => c.info(true));
    return info.ack_floor.stream_seq;
  }

  async handle(msgs: JsMsg[], signal: AbortSignal): Promise<void> {
    const labels = { actor: this.o.id };
    const plan = planRepairs(
      msgs.map((m) => ({
        subject: m.subject,
        reason: m.headers?.get(LATE_REASON_HEADER) || undefined,
        clicksSeq: Number(m.headers?.get(LATE_CLICKS_SEQ_HEADER) || 0),
        payload: m.data,
      })),
    );
    if (plan.clicks > 0) {
      // The raw store must hold the late clicks (and everything before them) first.
      let floor = await this.rawFloor();
      while (floor < plan.maxClicksSeq) {
        keepAlive(msgs);
        if (!(await sleep(this.o.pollMs, signal))) return; // unacknowledged: redelivered
        floor = await this.rawFloor();
      }
      const version = await this.deps.versions.allocateVersion(this.o.now());
      for (const [p, minutes] of plan.minutes) {
        for (const m of [...minutes].sort((a, b) => a - b)) {
          if (signal.aborted) return;
          await this.repair(p, m, version, floor);
        }
      }
      await this.publisher.flush();
      const partitionsOf = new Map<number, number[]>();
      for (const [p, minutes] of plan.minutes)
        for (const m of minutes) partitionsOf.set(m, [...(partitionsOf.get(m) ?? []), p]);
      for (const [m, ps] of [...partitionsOf].sort((a, b) => a[0] - b[0]))
        await this.repairTop(m, ps, version, signal);
      if (signal.aborted) return; // stopping: unacknowledged, repaired again (idempotent)
      repairedClicks.inc(labels, plan.clicks);
      this.counts.clicks += plan.clicks;
      this.counts.lastRepairAtMs = this.o.now();
      for (const msg of msgs)
        repairDelay.observe(labels, (this.o.now() - msg.info.timestampNanos / 1e6) / 1000);
    }
    for (const m of msgs) m.ack();
  }

  /** Recounts partition p's minute m and publishes it as revision `version`. */
  private async repair(p: number, m: number, version: number, rawFloor: number): Promise<void> {
    const labels = { actor: this.o.id };
    const events = await this.deps.raw.readMinute(p, m);
    const recount = recountMinute(p, m, events, this.o);
    if (!recount) return;
    const stored = await this.deps.aggregates.partitionMinute(p, m);
    if (!coversStored(recount, stored)) {
      // The raw store has fewer clicks than were counted: never lower a billed count.
      this.counts.refused++;
      repairs.inc({ ...labels, result: "refused" });
      this.deps.log?.(
        `late repair of partition ${p}, minute ${new Date(m).toISOString()} refused: the raw store's recount is below the stored counts (run adclick reconcile)`,
      );
      return;
    }
    await this.publisher.publish({
      subject: SUBJECTS.minuteAggregates(p),
      msgId: minuteMsgId(p, m, version),
      payload: encodeAggregate({ kind: "minute", ...recount, version, throughSeq: rawFloor }),
      events: recount.eventCount,
    });
    this.counts.repaired++;
    repairs.inc({ ...labels, result: "repaired" });
  }

  /**
   * The minute's global top N from the stored partition-minutes, once the repair is stored, at
   * the version the reducer would give it (the sum of the partitions' versions): the reducer
   * forgets old minutes, and where it still has the minute both write the same row.
   */
  private async repairTop(
    m: number,
    repaired: readonly number[],
    version: number,
    signal: AbortSignal,
  ): Promise<void> {
    const deadline = this.o.now() + 60_000;
    for (const p of repaired) {
      for (;;) {
        const stored = await this.deps.aggregates.partitionMinuteVersions(p, m, m + ONE_MINUTE_MS);
        if ((stored.get(m) ?? 0) >= version) break;
        if (this.o.now() > deadline) return; // the writer is behind: the reducer has the last word
        if (!(await sleep(this.o.pollMs, signal))) return;
      }
    }
    const minutes = await this.deps.aggregates.partitionMinutes(
      this.o.partitions,
      m,
      m + ONE_MINUTE_MS,
    );
    if (minutes.length === 0) return;
    const ads = mergeTopK(
      minutes.map((pm) => topK(pm.adCounts, this.o.topK)),
      this.o.topK,
    );
    const sum = minutes.reduce((n, pm) => n + pm.version, 0);
    await this.deps.aggregates.writeTop(m, sum, this.o.topK, ads);
  }
}
