import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { Counter, Gauge } from "prom-client";
import { STREAMS, SUBJECTS } from "../../nats/layout.js";
import { registry } from "../metrics/registry.js";
import { consumeInBatches, type DurableSpec, keepAlive } from "../nats/durable-consumer.js";
import type { AggregateStore } from "../storage/aggregate-store.js";
import { type AggregateMessage, decodeAggregate } from "./messages.js";

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
const writerLag = new Gauge({
  name: "adclick_aggregate_writer_lag_messages",
  help: "Aggregate messages not yet delivered to the aggregate writer",
  labelNames: ["actor"] as const,
  registers: [registry],
});

export const AGGREGATE_WRITER_DURABLE = "aggregate-writer";

export function aggregateWriterConsumer(): DurableSpec {
  return {
    stream: STREAMS.aggregates,
    durable: AGGREGATE_WRITER_DURABLE,
    filterSubjects: [SUBJECTS.minuteAggregatesAll, SUBJECTS.topAggregates],
    ackWaitMs: 60_000,
    maxAckPending: 5_000,
    description: "aggregates -> Cassandra aggregate store",
  };
}

/**
 * Aggregates stream → Cassandra: closed minutes, global top N, progress. Upserts of absolute
 * values at their version (see AggregateStore), so a redelivered or re-emitted message
 * converges to the same rows. Progress is written after the minutes of the same batch, so
 * "closed through T" in the store implies those minutes are stored.
 */
export class AggregateWriter {
  constructor(
    private readonly deps: { js: JetStreamClient; store: AggregateStore },
    private readonly o: { id: string; retryBaseMs?: number; retryMaxMs?: number },
  ) {}

  run(signal: AbortSignal): Promise<void> {
    return consumeInBatches({
      js: this.deps.js,
      stream: STREAMS.aggregates,
      durable: AGGREGATE_WRITER_DURABLE,
      maxBatch: 64,
      signal,
      onBatch: (msgs) => this.handle(msgs, signal),
    });
  }

  private async handle(msgs: JsMsg[], signal: AbortSignal): Promise<void> {
    const decoded: AggregateMessage[] = [];
    for (const m of msgs) {
      try {
        decoded.push(decodeAggregate(m.data));
      } catch (err) {
        m.term(`undecodable aggregate: ${(err as Error).message}`);
      }
    }
    for (let attempt = 1; ; attempt++) {
      try {
        let rows = 0;
        for (const a of decoded) {
          if (a.kind === "minute") rows += await this.deps.store.writeMinute(a);
          else if (a.kind === "top") {
            await this.deps.store.writeTop(a.minuteStartMs, a.version, a.n, a.ads);
            rows++;
          }
        }
        for (const a of decoded) {
          if (a.kind === "progress") {
            await this.deps.store.writeProgress(a.partition, a.closedThroughMs);
            rows++;
          }
        }
        rowsWritten.inc({ actor: this.o.id }, rows);
        break;
      } catch {
        writeFailures.inc({ actor: this.o.id });
        if (signal.aborted) return; // unacknowledged: redelivered
        keepAlive(msgs);
        const cap = Math.min(
          this.o.retryMaxMs ?? 5000,
          (this.o.retryBaseMs ?? 200) * 2 ** Math.min(attempt - 1, 10),
        );
        await new Promise((r) => setTimeout(r, cap / 2 + Math.random() * (cap / 2)));
      }
    }
    for (const m of msgs) m.ack();
    const last = msgs[msgs.length - 1];
    writerLag.set({ actor: this.o.id }, last ? last.info.pending : 0);
  }
}
