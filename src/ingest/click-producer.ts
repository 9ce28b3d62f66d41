import { randomUUID } from "node:crypto";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { ClickEvent } from "../model.js";
import { type ClickObject, type MalformedLine, parseClickObject } from "../parse/click-line.js";
import { BatchPublisher } from "./batch-publisher.js";
import { publishDeadLetters, publishPartitioned, publishProgress } from "./route.js";

export interface ClickProducerOptions {
  partitions: number;
  /**
   * Names the producer: its source for the aggregators' event time, part of derived event
   * ids and of the dead-letter subject. One name per producer whose clock runs on its own.
   */
  source: string;
  maxBatchEvents?: number;
  /**
   * The clicks are a backlog (a backfill, a catch-up after an outage): the source holds
   * minutes open until its progress passes them, so its clicks are counted in their own
   * minute. Default false: live clicks, which hold nothing back.
   */
  backfill?: boolean;
  /** Progress marks sent this often while open (default 2000; 0: none). */
  heartbeatMs?: number;
}

export interface SendResult {
  accepted: number;
  rejected: MalformedLine[];
}

/**
 * The library call for programmatic producers: validates clicks with the log parser's rules,
 * routes them to their partitions and publishes them, resolving once JetStream has
 * acknowledged every batch. Rejected clicks are returned and kept in the dead-letter stream.
 * `close()` tells the aggregators the source has ended.
 *
 * Retries are safe when the caller passes the same `idempotencyKey` for the same clicks:
 * message IDs and the identities of clicks without click_id derive from it.
 */
export class ClickProducer {
  private readonly clicks: BatchPublisher;
  private readonly deadLetters: BatchPublisher;
  private readonly o: Required<ClickProducerOptions>;
  /** Largest event time acknowledged so far: the source's progress mark. */
  private progressMs: number | null = null;
  private heartbeat: NodeJS.Timeout | undefined;
  /** Clicks were sent since the source was last ended. */
  private open = false;
  private markSeq = 0;
  private readonly runTag = randomUUID().slice(0, 8);

  constructor(js: JetStreamClient, opts: ClickProducerOptions) {
    this.o = { maxBatchEvents: 4000, backfill: false, heartbeatMs: 2000, ...opts };
    this.clicks = new BatchPublisher(js, { label: "clicks" });
    this.deadLetters = new BatchPublisher(js, { label: "dlq" });
  }

  async send(
    clicks: readonly ClickObject[],
    idempotencyKey: string = randomUUID(),
  ): Promise<SendResult> {
    this.open = true;
    this.startHeartbeats();
    const events: ClickEvent[] = [];
    const rejected: MalformedLine[] = [];
    const file = `lib#${idempotencyKey}`;
    clicks.forEach((c, i) => {
      const r = parseClickObject(c, { source: this.o.source, file, byteOffset: i, lineNo: i + 1 });
      if (r.ok) events.push(r.event);
      else rejected.push(r.error);
    });
    await publishPartitioned(
      this.clicks,
      events,
      this.o.partitions,
      `l:${this.o.source}:${idempotencyKey}`,
      this.o.maxBatchEvents,
      { source: this.o.source, progressMs: this.progressMs, caughtUp: !this.o.backfill },
    );
    await publishDeadLetters(
      this.deadLetters,
      this.o.source,
      `ld:${this.o.source}:${idempotencyKey}`,
      rejected,
    );
    await Promise.all([this.clicks.flush(), this.deadLetters.flush()]);
    for (const e of events) {
      if (this.progressMs === null || e.timestampMs > this.progressMs)
        this.progressMs = e.timestampMs;
    }
    return { accepted: events.length, rejected };
  }

  /** Ends the source (nothing more will come from it) and stops the heartbeats. Idempotent. */
  async close(): Promise<void> {
    clearInterval(this.heartbeat);
    this.heartbeat = undefined;
    if (!this.open) return;
    this.open = false;
    await this.mark(true);
    await this.clicks.flush();
  }

  private mark(end: boolean): Promise<void> {
    return publishProgress(
      this.clicks,
      {
        source: this.o.source,
        progressMs: this.progressMs,
        caughtUp: !end && !this.o.backfill,
        end,
      },
      `lp:${this.o.source}:${this.runTag}:${++this.markSeq}`,
    );
  }

  private startHeartbeats(): void {
    if (this.heartbeat !== undefined || this.o.heartbeatMs <= 0) return;
    this.heartbeat = setInterval(() => {
      void this.mark(false).catch(() => {});
    }, this.o.heartbeatMs);
    this.heartbeat.unref();
  }
}
