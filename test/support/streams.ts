import { type JetStreamClient, type JetStreamManager, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import { STREAMS } from "../../nats/layout.js";
import {
  AD_ROWS_WRITER_DURABLE,
  AGGREGATE_WRITER_DURABLE,
} from "../../src/aggregate/aggregate-writer.js";
import { RAW_WRITER_DURABLE } from "../../src/ingest/raw-writer.js";
import type { ClickEvent } from "../../src/model.js";
import { LATE_REPAIR_DURABLE } from "../../src/recalc/late-repair.js";
import { decodeBatch } from "../../src/wire/batch-codec.js";

/** Every message of a stream, from the start, through an ordered consumer. */
export async function readStream<T>(
  nc: NatsConnection,
  js: JetStreamClient,
  stream: string,
  decode: (data: Uint8Array, subject: string) => T,
): Promise<T[]> {
  const jsm = await jetstreamManager(nc);
  const total = (await jsm.streams.info(stream)).state.messages;
  const out: T[] = [];
  if (total === 0) return out;
  const consumer = await js.consumers.get(stream);
  const it = await consumer.consume();
  for await (const m of it) {
    out.push(decode(m.data, m.subject));
    if (m.info.pending === 0) break;
  }
  await it.close();
  return out;
}

/** The raw-click stream's events, deduplicated by event id (as every consumer does). */
export async function uniqueStreamEvents(
  nc: NatsConnection,
  js: JetStreamClient,
  stream: string,
): Promise<ClickEvent[]> {
  const batches = await readStream(nc, js, stream, (d) => decodeBatch(d));
  const seen = new Set<string>();
  const out: ClickEvent[] = [];
  for (const b of batches) {
    for (const e of b) {
      if (!seen.has(e.eventId)) {
        seen.add(e.eventId);
        out.push(e);
      }
    }
  }
  return out;
}

/** The pipeline's shared durable consumers: [stream, durable]. */
export const PIPELINE_DURABLES = [
  [STREAMS.clicks, RAW_WRITER_DURABLE],
  [STREAMS.aggregates, AGGREGATE_WRITER_DURABLE],
  [STREAMS.aggregates, AD_ROWS_WRITER_DURABLE],
  [STREAMS.late, LATE_REPAIR_DURABLE],
] as const;

/** What the durable consumers still have to do ("<durable> N pending, M unacked"); empty when drained. */
export async function durablesBehind(jsm: JetStreamManager): Promise<string[]> {
  const behind: string[] = [];
  for (const [stream, durable] of PIPELINE_DURABLES) {
    const c = await jsm.consumers.info(stream, durable);
    if (c.num_pending + c.num_ack_pending > 0)
      behind.push(`${durable} ${c.num_pending} pending, ${c.num_ack_pending} unacked`);
  }
  return behind;
}
