import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { Counter, Gauge, Histogram } from "prom-client";
import { STREAMS, SUBJECTS } from "../../nats/layout.js";
import { jitteredBackoffMs, sleep } from "../backoff.js";
import { registry } from "../metrics/registry.js";
import { type DurableSpec, keepAlive } from "../nats/durable-consumer.js";
import type { ConsumerPlan, StageHandler } from "../nats/stage-handler.js";
import type { RawBatch, RawStore } from "../storage/raw-store.js";
import { TICK_HEADER } from "../wire/aggregate-messages.js";
import { BatchDecodeError, decodeBatch } from "../wire/batch-codec.js";

const rawRows = new Counter({
  name: "adclick_raw_rows_written_total",
  help: "Rows upserted into the raw store (raw_blocks and raw_dim_index)",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const rawEvents = new Counter({
  name: "adclick_raw_events_written_total",
  help: "Events written to the raw store (a redelivered batch counts again)",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const rawWriteFailures = new Counter({
  name: "adclick_raw_write_failures_total",
  help: "Raw-store writes that failed and were retried (e.g. Cassandra unavailable)",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const rawPoison = new Counter({
  name: "adclick_raw_poison_messages_total",
  help: "Raw-click messages that could not be decoded (terminated, not retried)",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const rawLag = new Gauge({
  name: "adclick_raw_writer_lag_messages",
  help: "Raw-click messages not yet delivered to the raw writer",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const rawWriteSeconds = new Histogram({
  name: "adclick_raw_write_seconds",
  help: "Time to write one consumed batch of messages to the raw store, retries included",
  labelNames: ["actor"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: [registry],
});

export const RAW_WRITER_DURABLE = "raw-writer";

export function rawWriterConsumer(): DurableSpec {
  return {
    stream: STREAMS.clicks,
    durable: RAW_WRITER_DURABLE,
    filterSubjects: [SUBJECTS.clicksAll],
    ackWaitMs: 60_000,
    maxAckPending: 20_000,
    description: "raw clicks -> Cassandra raw store",
  };
}

export interface RawWriterOptions {
  /** Actor id, for metrics and logs. */
  id: string;
  maxBatchMessages?: number;
  retryBaseMs?: number;
  retryMaxMs?: number;
}

export interface RawWriterStatus {
  messages: number;
  events: number;
  rows: number;
  failures: number;
  lagMessages: number;
}

/** The partition a raw-click subject (clicks.<p>) belongs to. */
export function partitionOfSubject(subject: string): number {
  const p = Number(subject.slice(subject.lastIndexOf(".") + 1));
  if (!Number.isInteger(p) || p < 0)
    throw new BatchDecodeError(`not a partition subject: ${subject}`);
  return p;
}

/**
 * Raw-click stream → Cassandra raw store. Idempotent (rows are keyed by the batch's message
 * ID), batched, and patient: while Cassandra is unavailable it retries with jittered backoff,
 * keeping its messages alive, and acknowledges only what is written. Nothing is lost; a
 * redelivery rewrites the same rows.
 */
export class RawWriter implements StageHandler {
  readonly counts: RawWriterStatus = {
    messages: 0,
    events: 0,
    rows: 0,
    failures: 0,
    lagMessages: 0,
  };
  private readonly o: Required<RawWriterOptions>;

  constructor(
    private readonly deps: { js: JetStreamClient; store: RawStore },
    opts: RawWriterOptions,
  ) {
    this.o = { maxBatchMessages: 64, retryBaseMs: 200, retryMaxMs: 5000, ...opts };
  }

  async prepare(): Promise<ConsumerPlan> {
    return {
      kind: "durable",
      stream: STREAMS.clicks,
      durable: RAW_WRITER_DURABLE,
      maxBatch: this.o.maxBatchMessages,
    };
  }

  status(): Record<string, unknown> {
    return { ...this.counts };
  }

  async handle(msgs: JsMsg[], signal: AbortSignal): Promise<void> {
    const labels = { actor: this.o.id };
    const batches: RawBatch[] = [];
    const good: JsMsg[] = [];
    for (const m of msgs) {
      if (m.headers?.has(TICK_HEADER) || m.subject === SUBJECTS.progress) {
        good.push(m); // an aggregator's idle tick, a source's progress mark: no clicks in them
        continue;
      }
      try {
        batches.push({
          partition: partitionOfSubject(m.subject),
          batchId: m.headers?.get("Nats-Msg-Id") || `seq:${m.seq}`,
          streamSeq: m.seq,
          events: decodeBatch(m.data),
          payload: m.data,
        });
        good.push(m);
      } catch (err) {
        if (!(err instanceof BatchDecodeError)) throw err;
        rawPoison.inc(labels);
        m.term(`undecodable raw-click batch: ${err.message}`);
      }
    }
    const started = performance.now();
    let rows = 0;
    for (let attempt = 1; ; attempt++) {
      try {
        rows = await this.deps.store.write(batches);
        break;
      } catch {
        this.counts.failures++;
        rawWriteFailures.inc(labels);
        if (signal.aborted) return; // not acknowledged: redelivered to whoever runs next
        keepAlive(good);
        const delay = { baseMs: this.o.retryBaseMs, maxMs: this.o.retryMaxMs };
        if (!(await sleep(jitteredBackoffMs(attempt, delay), signal))) return; // redelivered
      }
    }
    for (const m of good) m.ack();
    const events = batches.reduce((n, b) => n + b.events.length, 0);
    rawWriteSeconds.observe(labels, (performance.now() - started) / 1000);
    rawRows.inc(labels, rows);
    rawEvents.inc(labels, events);
    const last = msgs[msgs.length - 1];
    this.counts.messages += good.length;
    this.counts.events += events;
    this.counts.rows += rows;
    this.counts.lagMessages = last ? last.info.pending : 0;
    rawLag.set(labels, this.counts.lagMessages);
  }
}
