import { randomUUID } from "node:crypto";
import type { JetStreamClient } from "@nats-io/jetstream";
import type { ClickEvent } from "../model.js";
import { type ClickObject, type MalformedLine, parseClickObject } from "../parse/click-line.js";
import { BatchPublisher } from "./batch-publisher.js";
import { publishDeadLetters, publishPartitioned } from "./route.js";

export interface ClickProducerOptions {
  partitions: number;
  /** Names the producer; part of derived event ids and of the dead-letter subject. */
  source: string;
  maxBatchEvents?: number;
}

export interface SendResult {
  accepted: number;
  rejected: MalformedLine[];
}

/**
 * The library call for programmatic producers: validates clicks with the log parser's rules,
 * routes them to their partitions and publishes them, resolving once JetStream has
 * acknowledged every batch. Rejected clicks are returned and kept in the dead-letter stream.
 *
 * Retries are safe when the caller passes the same `idempotencyKey` for the same clicks:
 * message IDs and the identities of clicks without click_id derive from it.
 */
export class ClickProducer {
  private readonly clicks: BatchPublisher;
  private readonly deadLetters: BatchPublisher;
  private readonly o: Required<ClickProducerOptions>;

  constructor(js: JetStreamClient, opts: ClickProducerOptions) {
    this.o = { maxBatchEvents: 4000, ...opts };
    this.clicks = new BatchPublisher(js, { label: "clicks" });
    this.deadLetters = new BatchPublisher(js, { label: "dlq" });
  }

  async send(
    clicks: readonly ClickObject[],
    idempotencyKey: string = randomUUID(),
  ): Promise<SendResult> {
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
    );
    await publishDeadLetters(
      this.deadLetters,
      this.o.source,
      `ld:${this.o.source}:${idempotencyKey}`,
      rejected,
    );
    await Promise.all([this.clicks.flush(), this.deadLetters.flush()]);
    return { accepted: events.length, rejected };
  }
}
