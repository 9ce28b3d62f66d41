import type { JetStreamClient, PubAck } from "@nats-io/jetstream";
import {
  ClosedConnectionError,
  InvalidArgumentError,
  InvalidSubjectError,
  type MsgHdrs,
} from "@nats-io/nats-core";
import { Counter, Histogram } from "prom-client";
import { jitteredBackoffMs, sleep } from "../backoff.js";
import { registry } from "../metrics/registry.js";

const publishedBatches = new Counter({
  name: "adclick_publish_batches_total",
  help: "Batches published to JetStream, by stream label and result (stored, duplicate, failed)",
  labelNames: ["stream", "result"] as const,
  registers: [registry],
});
const publishedEvents = new Counter({
  name: "adclick_publish_events_total",
  help: "Events in batches acknowledged by JetStream (duplicates excluded)",
  labelNames: ["stream"] as const,
  registers: [registry],
});
const publishRetries = new Counter({
  name: "adclick_publish_retries_total",
  help: "Publish attempts retried after an error (same message ID, so harmless)",
  labelNames: ["stream"] as const,
  registers: [registry],
});
const publishLatency = new Histogram({
  name: "adclick_publish_latency_seconds",
  help: "Time from publish to JetStream acknowledgement, including retries",
  labelNames: ["stream"] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
  registers: [registry],
});

export interface BatchMessage {
  subject: string;
  /** Deterministic: a retried or re-shipped batch carries the same ID and is stored once. */
  msgId: string;
  payload: Uint8Array;
  /** Events in the batch, for counting. */
  events: number;
  headers?: MsgHdrs;
}

export interface BatchPublisherOptions {
  /** Label for metrics, e.g. "clicks" or "dlq". */
  label: string;
  /** Publishes awaiting their ack at most; more wait (flow control: a slow stream slows us). */
  maxInFlight?: number;
  /** Attempts per batch before giving up (errors: timeouts, stream full, no responders). */
  maxAttempts?: number;
  baseRetryDelayMs?: number;
  maxRetryDelayMs?: number;
  ackTimeoutMs?: number;
}

export interface PublishStats {
  batches: number;
  duplicateBatches: number;
  events: number;
  duplicateEvents: number;
  retries: number;
}

/**
 * Publishes batches to JetStream with bounded concurrency and retries. A batch is retried
 * under the same message ID, so JetStream stores it once whatever happened to earlier
 * attempts (within the stream's duplicate window; past it, per-event dedupe downstream).
 */
export class BatchPublisher {
  readonly stats: PublishStats = {
    batches: 0,
    duplicateBatches: 0,
    events: 0,
    duplicateEvents: 0,
    retries: 0,
  };
  private readonly inFlight = new Set<Promise<void>>();
  private failure: unknown;
  private readonly o: Required<BatchPublisherOptions>;

  constructor(
    private readonly js: JetStreamClient,
    opts: BatchPublisherOptions,
  ) {
    this.o = {
      maxInFlight: 32,
      maxAttempts: 30,
      baseRetryDelayMs: 100,
      maxRetryDelayMs: 5000,
      ackTimeoutMs: 10_000,
      ...opts,
    };
  }

  /**
   * Starts publishing `m`; resolves once it is under way (waiting for a free slot first).
   * Failures surface from a later `publish()` or from `flush()`.
   */
  async publish(m: BatchMessage): Promise<void> {
    this.throwIfFailed();
    while (this.inFlight.size >= this.o.maxInFlight) {
      await Promise.race(this.inFlight);
      this.throwIfFailed();
    }
    const p = this.publishWithRetry(m).then(
      () => {
        this.inFlight.delete(p);
      },
      (err) => {
        this.inFlight.delete(p);
        this.failure ??= err;
      },
    );
    this.inFlight.add(p);
  }

  /** Waits for every publish under way; throws the first failure, if any. */
  async flush(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure !== undefined) throw this.failure;
  }

  private async publishWithRetry(m: BatchMessage): Promise<void> {
    const started = performance.now();
    let ack: PubAck | undefined;
    for (let attempt = 1; ; attempt++) {
      try {
        ack = await this.js.publish(m.subject, m.payload, {
          msgID: m.msgId,
          timeout: this.o.ackTimeoutMs,
          ...(m.headers ? { headers: m.headers } : {}),
        });
        break;
      } catch (err) {
        if (attempt >= this.o.maxAttempts || isFinal(err)) {
          publishedBatches.inc({ stream: this.o.label, result: "failed" });
          throw err;
        }
        this.stats.retries++;
        publishRetries.inc({ stream: this.o.label });
        const delay = { baseMs: this.o.baseRetryDelayMs, maxMs: this.o.maxRetryDelayMs };
        await sleep(jitteredBackoffMs(attempt, delay));
      }
    }
    publishLatency.observe({ stream: this.o.label }, (performance.now() - started) / 1000);
    this.stats.batches++;
    if (ack.duplicate) {
      this.stats.duplicateBatches++;
      this.stats.duplicateEvents += m.events;
      publishedBatches.inc({ stream: this.o.label, result: "duplicate" });
    } else {
      this.stats.events += m.events;
      publishedEvents.inc({ stream: this.o.label }, m.events);
      publishedBatches.inc({ stream: this.o.label, result: "stored" });
    }
  }
}

/** Errors no retry can fix: the connection is closed for good, or the request is invalid. */
function isFinal(err: unknown): boolean {
  return (
    err instanceof ClosedConnectionError ||
    err instanceof InvalidSubjectError ||
    err instanceof InvalidArgumentError
  );
}
