import { SUBJECTS } from "../../nats/layout.js";
import type { ClickEvent } from "../model.js";
import type { MalformedLine } from "../parse/click-line.js";
import { partitionOf } from "../partition.js";
import { encodeClickMessage } from "../wire/batch-codec.js";
import type { BatchPublisher } from "./batch-publisher.js";

/** Who sends a batch, and how far that source had got before it (see batch-codec.ts). */
export interface SourceMark {
  /** The source id: a shipped file (`<source>:<path>`), a producer's source name. */
  source: string;
  /**
   * Largest event time of this source's events acknowledged before this batch (null: none).
   * Only acknowledged events count: every one of them is in the stream before the batch.
   */
  progressMs: number | null;
  /** The source is at the end of its input (a live agent with nothing left to read). */
  caughtUp?: boolean;
}

/**
 * Routes events to their partitions' subjects (clicks.<p>) in batches of at most
 * `maxBatchEvents`, each with the message ID `${msgIdPrefix}:${p}.${k}`, marked with their
 * source. The prefix must identify the input deterministically (a file chunk, an ingest
 * message, an idempotency key) so that publishing the same input again is recognised as a
 * duplicate.
 */
export async function publishPartitioned(
  publisher: BatchPublisher,
  events: readonly ClickEvent[],
  partitions: number,
  msgIdPrefix: string,
  maxBatchEvents: number,
  mark: SourceMark,
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
        payload: encodeClickMessage({ ...mark, events: part }),
        events: part.length,
      });
    }
  }
}

/**
 * A source's progress mark on clicks.progress, which every aggregator reads: "my events
 * before this reached `progressMs`" (publish it only once they are acknowledged), with
 * `end` when nothing more will come. Marks are idempotent, so their IDs need only be unique.
 */
export async function publishProgress(
  publisher: BatchPublisher,
  mark: SourceMark & { end?: boolean },
  msgId: string,
): Promise<void> {
  await publisher.publish({
    subject: SUBJECTS.progress,
    msgId,
    payload: encodeClickMessage({ ...mark, events: [] }),
    events: 0,
  });
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
