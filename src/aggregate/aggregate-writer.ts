import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { Counter, Gauge } from "prom-client";
import { STREAMS, SUBJECTS } from "../../nats/layout.js";
import { jitteredBackoffMs, sleep } from "../backoff.js";
import { registry } from "../metrics/registry.js";
import { type DurableSpec, keepAlive } from "../nats/durable-consumer.js";
import type { ConsumerPlan, StageHandler } from "../nats/stage-handler.js";
import type { AggregateStore } from "../storage/aggregate-store.js";
import {
  type AggregateMessage,
  decodeAggregate,
  type MinuteRevision,
  type ProgressReport,
} from "../wire/aggregate-messages.js";

const rowsWritten = new Counter({
  name: "adclick_aggregate_rows_written_total",
  help: "Rows upserted into the aggregate store",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const writeFailures = new Counter({
  name: "adclick_aggregate_write_failures_total",
  help: "Aggregate-store writes that failed and were retried",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const progressDeferred = new Counter({
  name: "adclick_aggregate_progress_deferred_total",
  help: "Progress reports put back because earlier aggregate messages were not stored yet (redelivery pending)",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const writerLag = new Gauge({
  name: "adclick_aggregate_writer_lag_messages",
  help: "Aggregate messages not yet delivered to the aggregate writer",
  labelNames: ["actor"] as const,
  registers: [registry],
});

/**
 * Per-ad row batches the ad-rows writer keeps in flight: it runs behind `final` on purpose,
 * so it takes a bounded share of Cassandra while a backlog's raw blocks and partition minutes
 * are still being written (docs/benchmarks.md: how long it trails them).
 */
const AD_ROWS_BATCHES_IN_FLIGHT = 4;

export const AGGREGATE_WRITER_DURABLE = "aggregate-writer";
export const AD_ROWS_WRITER_DURABLE = "ad-rows-writer";

/**
 * What a writer stores: `minutes` — partition-minute rows, global top N, progress and
 * completeness (the critical path: `final` follows it); `ad-rows` — the per-ad tables derived
 * from the same minutes, and how far they are stored (behind, on a durable of its own).
 */
export type AggregateWriterTarget = "minutes" | "ad-rows";

export function aggregateWriterConsumer(target: AggregateWriterTarget = "minutes"): DurableSpec {
  return target === "minutes"
    ? {
        stream: STREAMS.aggregates,
        durable: AGGREGATE_WRITER_DURABLE,
        filterSubjects: [SUBJECTS.minuteAggregatesAll, SUBJECTS.topAggregates],
        ackWaitMs: 60_000,
        maxAckPending: 5_000,
        description: "aggregates -> Cassandra partition minutes, top N, progress",
      }
    : {
        stream: STREAMS.aggregates,
        durable: AD_ROWS_WRITER_DURABLE,
        // The top N too, though it stores none: a progress report is ready when every stream
        // sequence before it is acknowledged (readyProgress), which a filtered-out message
        // never is.
        filterSubjects: [SUBJECTS.minuteAggregatesAll, SUBJECTS.topAggregates],
        ackWaitMs: 60_000,
        maxAckPending: 5_000,
        description: "aggregates -> Cassandra per-ad tables (behind the partition minutes)",
      };
}

/**
 * Aggregates stream → Cassandra, one of two targets (AggregateWriterTarget): closed minutes,
 * global top N, progress and completeness; or the per-ad rows of the same minutes and their
 * own progress. Upserts of absolute values at their version (see AggregateStore), so a
 * redelivered or re-emitted message converges to the same rows. "Closed through T" (or "ad
 * rows through T") in the store implies the minutes it covers are stored: a progress report
 * is written only once every message before it in the stream is (see readyProgress).
 */
export class AggregateWriter implements StageHandler {
  constructor(
    private readonly deps: { js: JetStreamClient; store: AggregateStore },
    private readonly o: {
      id: string;
      /** Default `minutes`. */
      target?: AggregateWriterTarget;
      retryBaseMs?: number;
      retryMaxMs?: number;
      /** How long a progress report waits before it is tried again (see readyProgress). */
      progressRetryMs?: number;
    },
  ) {}

  private get durable(): string {
    return aggregateWriterConsumer(this.o.target).durable;
  }

  async prepare(): Promise<ConsumerPlan> {
    return { kind: "durable", stream: STREAMS.aggregates, durable: this.durable, maxBatch: 64 };
  }

  status(): Record<string, unknown> {
    return {};
  }

  /** Stream sequences this writer acknowledged above the last ack floor it saw. */
  private readonly ackedAboveFloor = new Set<number>();
  /** Progress reports this writer holds back (negatively acknowledged, redelivered later). */
  private readonly deferred = new Set<number>();

  /**
   * The progress messages of a batch that may be written. A progress report follows, in the
   * stream, the minutes it covers; but after a writer crash those minutes wait for redelivery
   * (ack_wait) while newer messages, the report among them, go to the replacement (and with
   * several writers on the durable, a neighbour may still be writing them). A report is
   * ready when every message before it is acknowledged — below the durable's ack floor (the
   * durable covers the whole stream), or acknowledged by this writer — or is in this batch
   * (written before the report), or is another report this writer holds back (a report
   * stores no minutes; without this, held-back reports would block each other and crawl).
   */
  private async readyProgress(msgs: JsMsg[], progress: JsMsg[]): Promise<Set<JsMsg>> {
    const ready = new Set<JsMsg>();
    if (progress.length === 0) return ready;
    const info = await this.deps.js.consumers
      .get(STREAMS.aggregates, this.durable)
      .then((c) => c.info(true))
      .catch(() => undefined);
    if (!info) return ready; // cannot tell: try again later
    const floor = info.ack_floor.stream_seq;
    for (const seq of this.ackedAboveFloor) if (seq <= floor) this.ackedAboveFloor.delete(seq);
    const inBatch = new Set(msgs.map((m) => m.seq));
    for (const m of progress) {
      let covered = true;
      for (let seq = floor + 1; covered && seq < m.seq; seq++) {
        covered = inBatch.has(seq) || this.ackedAboveFloor.has(seq) || this.deferred.has(seq);
      }
      if (covered) ready.add(m);
    }
    return ready;
  }

  /** Partition-minute rows and global top N, then the reports that may be written. */
  private async writeMinutes(
    decoded: readonly AggregateMessage[],
    isReady: (p: ProgressReport) => boolean,
  ): Promise<number> {
    const store = this.deps.store;
    await Promise.all(
      decoded.map((a) =>
        a.kind === "minute"
          ? store.writePartitionMinute(a)
          : a.kind === "top"
            ? store.writeTop(a.minuteStartMs, a.version, a.n, a.ads)
            : undefined,
      ),
    );
    let rows = decoded.filter((a) => a.kind !== "progress").length;
    for (const a of decoded) {
      if (a.kind !== "progress" || !isReady(a)) continue;
      await store.writeProgress(a.partition, a.closedThroughMs);
      rows++;
      if (a.seq !== undefined) {
        await store.writeCompleteness(
          a.partition,
          {
            completeThroughMs:
              a.completeThroughMs === undefined ? a.closedThroughMs : a.completeThroughMs,
            behind: a.behind ?? [],
          },
          a.seq,
        );
        rows++;
      }
    }
    return rows;
  }

  /**
   * Per-ad rows of the batch's minutes — only the newest revision of each partition-minute in
   * the batch (an older one is shadowed by its version anyway) — then the reports that may be
   * written.
   */
  private async writeAdRows(
    decoded: readonly AggregateMessage[],
    isReady: (p: ProgressReport) => boolean,
  ): Promise<number> {
    const newest = new Map<string, MinuteRevision>();
    for (const a of decoded) {
      if (a.kind !== "minute") continue;
      const key = `${a.partition}:${a.minuteStartMs}`;
      const have = newest.get(key);
      if (!have || a.version > have.version) newest.set(key, a);
    }
    let rows = 0;
    for (const m of newest.values())
      rows += await this.deps.store.writeAdRows(m, AD_ROWS_BATCHES_IN_FLIGHT);
    for (const a of decoded) {
      if (a.kind !== "progress" || !isReady(a)) continue;
      await this.deps.store.writeAdRowsProgress(a.partition, a.closedThroughMs);
      rows++;
    }
    return rows;
  }

  async handle(msgs: JsMsg[], signal: AbortSignal): Promise<void> {
    const decoded: AggregateMessage[] = [];
    const progressMsgs: JsMsg[] = [];
    const progressOf = new Map<ProgressReport, JsMsg>();
    for (const m of msgs) {
      try {
        const a = decodeAggregate(m.data);
        decoded.push(a);
        if (a.kind === "progress") {
          progressMsgs.push(m);
          progressOf.set(a, m);
        }
      } catch (err) {
        m.term(`undecodable aggregate: ${(err as Error).message}`);
      }
    }
    const ready = await this.readyProgress(msgs, progressMsgs);
    for (let attempt = 1; ; attempt++) {
      try {
        const rows =
          this.o.target === "ad-rows"
            ? await this.writeAdRows(decoded, (a) => ready.has(progressOf.get(a) as JsMsg))
            : await this.writeMinutes(decoded, (a) => ready.has(progressOf.get(a) as JsMsg));
        rowsWritten.inc({ actor: this.o.id }, rows);
        break;
      } catch {
        writeFailures.inc({ actor: this.o.id });
        if (signal.aborted) return; // unacknowledged: redelivered
        keepAlive(msgs);
        const delay = { baseMs: this.o.retryBaseMs ?? 200, maxMs: this.o.retryMaxMs ?? 5000 };
        if (!(await sleep(jitteredBackoffMs(attempt, delay), signal))) return; // redelivered
      }
    }
    for (const m of msgs) {
      if (progressMsgs.includes(m) && !ready.has(m)) {
        this.deferred.add(m.seq);
        m.nak(this.o.progressRetryMs ?? 500);
      } else {
        this.deferred.delete(m.seq);
        // Pruned against the floor when reports are checked; bounded anyway (forgetting only
        // makes a report wait for the floor).
        if (this.ackedAboveFloor.size >= 200_000) this.ackedAboveFloor.clear();
        this.ackedAboveFloor.add(m.seq);
        m.ack();
      }
    }
    progressDeferred.inc({ actor: this.o.id }, progressMsgs.length - ready.size);
    const last = msgs[msgs.length - 1];
    writerLag.set({ actor: this.o.id }, last ? last.info.pending : 0);
  }
}
