import { SUBJECTS } from "../../nats/layout.js";
import type { ClickEvent } from "../model.js";
import type { MalformedLine } from "../parse/click-line.js";
import { partitionOf } from "../partition.js";
import { encodeBatch } from "./batch-codec.js";
import type { BatchPublisher } from "./batch-publisher.js";

/**
 * Routes events to their partitions' subjects (clicks.<p>) in batches of at most
 * `maxBatchEvents`, each with the message ID `${msgIdPrefix}:${p}.${k}`. The prefix must
 * identify the input deterministically (a file chunk, an ingest message, an idempotency key)
 * so that publishing the same input again is recognised as a duplicate.
 */
export async function publishPartitioned(
  publisher: BatchPublisher,
  events: readonly ClickEvent[],
  partitions: number,
  msgIdPrefix: string,
  maxBatchEvents: number,
): Promise<void> {
  const perPartition: ClickEvent[][] = Array.from({ length: partitions }, () => []);
  for (const e of events) (perPartition[partitionOf(e.adId, partitions)] as ClickEvent[]).push(e);
  for (let p = 0; p < partitions; p++) {
    const list = perPartition[p] as ClickEvent[];
    for (let k = 0; k * maxBatchEvents < list.length; k++) {
      const part = list.slice(k * maxBatchEvents, (k + 1) * maxBatchEvents);
      await publisher.publish({
        subject: SUBJECTS.clicks(p),
        msgId: `${msgIdPrefix}:${p}.${k}`,
        payload: encodeBatch(part),
        events: part.length,
      });
    }
  }
}

/** A dead-letter subject token made of the source name. */
export function sourceToken(source: string): string {
  return source.replace(/[^A-Za-z0-9_-]/g, "_").slice(0, 64) || "_";
}

/** Keeps malformed input, with reason and origin, in the dead-letter stream (JSON array). */
export async function publishDeadLetters(
  publisher: BatchPublisher,
  source: string,
  msgId: string,
  malformed: readonly MalformedLine[],
): Promise<void> {
  if (malformed.length === 0) return;
  await publisher.publish({
    subject: SUBJECTS.deadLetter(sourceToken(source)),
    msgId,
    payload: new TextEncoder().encode(JSON.stringify(malformed)),
    events: malformed.length,
  });
}
