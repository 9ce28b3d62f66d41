import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { Counter } from "prom-client";
import { STREAMS, SUBJECTS } from "../../nats/layout.js";
import { registry } from "../metrics/registry.js";
import type { ClickEvent } from "../model.js";
import type { DurableSpec } from "../nats/durable-consumer.js";
import type { ConsumerPlan, StageHandler } from "../nats/stage-handler.js";
import { type MalformedLine, parseClickObject } from "../parse/click-line.js";
import { SOURCE_HEADER } from "../wire/batch-codec.js";
import { BatchPublisher } from "./batch-publisher.js";
import { publishDeadLetters, publishPartitioned } from "./route.js";

const routed = new Counter({
  name: "adclick_map_events_total",
  help: "Events taken from the ingest subject by the map actor, by result (routed, malformed)",
  labelNames: ["actor", "result"] as const,
  registers: [registry],
});

export const MAP_DURABLE = "map";
export const INGEST_SOURCE = "ingest";
const MAX_SOURCES_TRACKED = 10_000;

/** The source of an ingest message: its header when it is a sensible name, else "ingest". */
export function ingestSourceOf(header: string | undefined): string {
  const v = header?.trim() ?? "";
  return /^[\x21-\x7e]{1,128}$/.test(v) ? v : INGEST_SOURCE;
}

export function mapConsumer(): DurableSpec {
  return {
    stream: STREAMS.ingest,
    durable: MAP_DURABLE,
    filterSubjects: [SUBJECTS.ingest],
    ackWaitMs: 60_000,
    maxAckPending: 10_000,
    description: "ingest.clicks -> validated, routed to clicks.<p>",
  };
}

/**
 * The map step for producers that do not partition: takes JSON clicks (one object or an
 * array) from the INGEST stream, validates them like log lines, and publishes them to their
 * partitions. Output message IDs derive from the ingest message's stream sequence, and so do
 * the identities of clicks without click_id, so a redelivered ingest message is a no-op.
 * Malformed clicks go to the dead-letter stream with their position; the message is acked
 * once everything it became is acknowledged.
 */
export class IngestRouter implements StageHandler {
  private readonly clicks: BatchPublisher;
  private readonly deadLetters: BatchPublisher;
  /** Largest event time routed and acknowledged, per source (its progress mark). */
  private readonly progress = new Map<string, number>();

  constructor(
    js: JetStreamClient,
    private readonly o: { id: string; partitions: number; maxBatchEvents?: number },
  ) {
    this.clicks = new BatchPublisher(js, { label: "clicks" });
    this.deadLetters = new BatchPublisher(js, { label: "dlq" });
  }

  async prepare(): Promise<ConsumerPlan> {
    return { kind: "durable", stream: STREAMS.ingest, durable: MAP_DURABLE, maxBatch: 64 };
  }

  status(): Record<string, unknown> {
    return {};
  }

  handle(msgs: JsMsg[]): Promise<void> {
    return this.route(msgs);
  }

  private async route(msgs: JsMsg[]): Promise<void> {
    const routedMax = new Map<string, number>();
    for (const m of msgs) {
      const source = ingestSourceOf(m.headers?.get(SOURCE_HEADER));
      const file = `${STREAMS.ingest}#${m.seq}`;
      const events: ClickEvent[] = [];
      const malformed: MalformedLine[] = [];
      let items: unknown[];
      try {
        const parsed = JSON.parse(m.string()) as unknown;
        items = Array.isArray(parsed) ? parsed : [parsed];
      } catch (err) {
        items = [];
        malformed.push({
          code: "FIELD_COUNT",
          reason: `not JSON: ${(err as Error).message}`,
          source: INGEST_SOURCE,
          file,
          lineNo: 1,
          byteOffset: 0,
          raw: m.string().slice(0, 1024),
        });
      }
      items.forEach((item, i) => {
        const r = parseClickObject(item, {
          source: INGEST_SOURCE,
          file,
          byteOffset: i,
          lineNo: i + 1,
        });
        if (r.ok) events.push(r.event);
        else malformed.push(r.error);
      });
      // Programs send live clicks: their source is caught up and holds no minute open.
      await publishPartitioned(
        this.clicks,
        events,
        this.o.partitions,
        `m:${m.seq}`,
        this.o.maxBatchEvents ?? 4000,
        { source, progressMs: this.progress.get(source) ?? null, caughtUp: true },
      );
      for (const e of events) {
        if (e.timestampMs > (routedMax.get(source) ?? Number.NEGATIVE_INFINITY))
          routedMax.set(source, e.timestampMs);
      }
      await publishDeadLetters(this.deadLetters, INGEST_SOURCE, `md:${m.seq}`, malformed);
      routed.inc({ actor: this.o.id, result: "routed" }, events.length);
      routed.inc({ actor: this.o.id, result: "malformed" }, malformed.length);
    }
    await Promise.all([this.clicks.flush(), this.deadLetters.flush()]);
    for (const [source, t] of routedMax) {
      if (t > (this.progress.get(source) ?? Number.NEGATIVE_INFINITY)) this.progress.set(source, t);
    }
    // Source names come from headers: keep a bounded number (an unknown source's
    // mark is just "no progress yet", which holds nothing: these sources are caught up).
    while (this.progress.size > MAX_SOURCES_TRACKED)
      this.progress.delete(this.progress.keys().next().value as string);
    for (const m of msgs) m.ack();
  }
}
