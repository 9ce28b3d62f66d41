import { type JetStreamClient, jetstreamManager } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import type { ClickEvent } from "../../src/model.js";
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
