import { SUBJECTS } from "../../nats/layout.js";
import type { ClickEvent } from "../model.js";
import type { MalformedLine } from "../parse/click-line.js";
import { partitionOf } from "../partition.js";
import { BATCH_FORMAT_VERSION, encodeClickMessage, FLAG_CAUGHT_UP } from "../wire/batch-codec.js";
import { ClickTupleWriter } from "../wire/click-encoder.js";
import type { BatchMessage, BatchPublisher } from "./batch-publisher.js";

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
  for (const m of partitionedMessages(events, partitions, msgIdPrefix, maxBatchEvents, mark)) {
    await publisher.publish(m);
  }
}

/**
 * The messages publishPartitioned publishes, encoded ahead (pure): the shipper encodes a
 * chunk while the one before it awaits its acknowledgements.
 */
export function partitionedMessages(
  events: readonly ClickEvent[],
  partitions: number,
  msgIdPrefix: string,
  maxBatchEvents: number,
  mark: SourceMark,
): BatchMessage[] {
  const perPartition: ClickEvent[][] = Array.from({ length: partitions }, () => []);
  for (const e of events) (perPartition[partitionOf(e.adId, partitions)] as ClickEvent[]).push(e);
  const out: BatchMessage[] = [];
  for (let p = 0; p < partitions; p++) {
    const list = perPartition[p] as ClickEvent[];
    for (let k = 0; k * maxBatchEvents < list.length; k++) {
      const part =
        list.length <= maxBatchEvents
          ? list
          : list.slice(k * maxBatchEvents, (k + 1) * maxBatchEvents);
      out.push({
        subject: SUBJECTS.clicks(p),
        msgId: `${msgIdPrefix}:${p}.${k}`,
        payload: encodeClickMessage({ ...mark, events: part }),
        events: part.length,
      });
    }
  }
  return out;
}

/**
 * partitionedMessages built one event at a time (the shipper's hot path): each event is
 * encoded into its partition's batch as it comes, so the events need not be kept. `finish`
 * gives the same messages, IDs and bytes as partitionedMessages over the same events with
 * the same mark.
 */
export class PartitionBatches {
  private readonly writers: ClickTupleWriter[];
  private readonly done: { payload: Uint8Array; flagsOffset: number; events: number }[][];

  constructor(
    private readonly partitions: number,
    private readonly maxBatchEvents: number,
  ) {
    this.writers = Array.from({ length: partitions }, () => new ClickTupleWriter());
    this.done = Array.from({ length: partitions }, () => []);
  }

  /** Adds an event of `source`, whose batches carry `progress` (null: none yet). */
  add(e: ClickEvent, source: string, progress: number | null): void {
    const p = partitionOf(e.adId, this.partitions);
    const w = this.writers[p] as ClickTupleWriter;
    w.append(e);
    if (w.count >= this.maxBatchEvents) {
      // Full: encoded now, its flags (caught up or not) written once the chunk is known.
      const events = w.count;
      const payload = w.take(BATCH_FORMAT_VERSION, source, progress, 0);
      (this.done[p] as unknown[]).push({ payload, flagsOffset: w.flagsOffset, events });
    }
  }

  /** The messages, partition by partition, with the IDs `${msgIdPrefix}:${p}.${k}`. */
  finish(
    msgIdPrefix: string,
    source: string,
    progress: number | null,
    caughtUp: boolean,
  ): BatchMessage[] {
    const flags = caughtUp ? FLAG_CAUGHT_UP : 0;
    const out: BatchMessage[] = [];
    for (let p = 0; p < this.partitions; p++) {
      const w = this.writers[p] as ClickTupleWriter;
      const list = this.done[p] as { payload: Uint8Array; flagsOffset: number; events: number }[];
      if (w.count > 0) {
        const events = w.count;
        const payload = w.take(BATCH_FORMAT_VERSION, source, progress, 0);
        list.push({ payload, flagsOffset: w.flagsOffset, events });
      }
      for (let k = 0; k < list.length; k++) {
        const b = list[k] as { payload: Uint8Array; flagsOffset: number; events: number };
        b.payload[b.flagsOffset] = flags;
        out.push({
          subject: SUBJECTS.clicks(p),
          msgId: `${msgIdPrefix}:${p}.${k}`,
          payload: b.payload,
          events: b.events,
        });
      }
      list.length = 0;
    }
    return out;
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
