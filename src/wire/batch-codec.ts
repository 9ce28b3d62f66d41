import { Packr } from "msgpackr";
import { AdclickError } from "../errors.js";
import type { ClickEvent } from "../model.js";
import { encodeClickTuples } from "./click-encoder.js";

/**
 * The payload of one raw-click message (subjects clicks.<p> and clicks.progress): a batch of
 * events of one source, msgpack-encoded as positional tuples, with that source's progress mark.
 * Batching is what makes JetStream fast from the JS client (one publish per event costs
 * ~20–40 µs of client CPU); tuples keep the payload ~70 bytes an event.
 *
 * Wire formats:
 *  v1  [1, tuples]                                  events only (older producers)
 *  v2  [2, source, progressMs | null, flags, tuples]
 *                                                   a source's events and progress mark
 *                                                   (flags: 1 ended, 2 caught up); no
 *                                                   tuples: a heartbeat
 *  v3  [3, tuples, streamSeqs]                      a raw-store block: events with the stream
 *                                                   sequence each came in (never on the wire)
 * tuple = [adId, timestampMs, userId, ip, country, eventId]
 */
export const BATCH_FORMAT_VERSION = 2;

/**
 * Header naming the source of an ingest message's clicks (a program, a server): its own clock
 * for the aggregators' event time. Without it, the source is "ingest".
 */
export const SOURCE_HEADER = "Adclick-Source";

type EventTuple = [string, number, string, string, string, string];

// useRecords off: tuples already carry no keys, and record structures would make a payload
// depend on encoder state shared across messages.
const packr = new Packr({ useRecords: false, moreTypes: false });

/** A raw-click message this version cannot read (a poison message). */
export class BatchDecodeError extends AdclickError {
  declare readonly code: "BATCH_DECODE";
  constructor(message: string, options?: { cause?: unknown }) {
    super("BATCH_DECODE", message, options);
    this.name = "BatchDecodeError";
  }
}

/** What one raw-click message carries. */
export interface ClickMessage {
  /** The source the events come from (a shipped file, a producer); "" when unknown (v1). */
  source: string;
  /** The source's progress mark: its events before this message reached this event time. */
  progressMs: number | null;
  /** The source has ended: nothing more will come from it. */
  end: boolean;
  /** The source is at the end of its input (a live agent with nothing left to read). */
  caughtUp: boolean;
  events: ClickEvent[];
}

const FLAG_END = 1;
/** The caught-up flag of a v2 message. */
export const FLAG_CAUGHT_UP = 2;

function toTuples(events: readonly ClickEvent[]): EventTuple[] {
  const tuples: EventTuple[] = new Array(events.length);
  for (let i = 0; i < events.length; i++) {
    const e = events[i] as ClickEvent;
    tuples[i] = [e.adId, e.timestampMs, e.userId, e.ip, e.country, e.eventId];
  }
  return tuples;
}

function fromTuples(tuples: unknown[]): ClickEvent[] {
  const events: ClickEvent[] = new Array(tuples.length);
  for (let i = 0; i < tuples.length; i++) {
    const t = tuples[i] as EventTuple;
    if (!Array.isArray(t) || t.length !== 6 || typeof t[1] !== "number") {
      throw new BatchDecodeError(`event ${i} is not a 6-field tuple`);
    }
    events[i] = {
      adId: t[0],
      timestampMs: t[1],
      userId: t[2],
      ip: t[3],
      country: t[4],
      eventId: t[5],
    };
  }
  return events;
}

/** Encodes a message of `source`'s events (none: a heartbeat) with its progress mark. */
export function encodeClickMessage(m: {
  source: string;
  progressMs?: number | null;
  end?: boolean;
  caughtUp?: boolean;
  events: readonly ClickEvent[];
}): Uint8Array {
  const progress = m.progressMs != null && Number.isFinite(m.progressMs) ? m.progressMs : null;
  const flags = (m.end ? FLAG_END : 0) | (m.caughtUp ? FLAG_CAUGHT_UP : 0);
  // Byte for byte packr.pack([BATCH_FORMAT_VERSION, m.source, progress, flags, tuples]), faster.
  return encodeClickTuples(BATCH_FORMAT_VERSION, m.source, progress, flags, m.events);
}

function unpack(payload: Uint8Array): unknown[] {
  let decoded: unknown;
  try {
    decoded = packr.unpack(payload);
  } catch (err) {
    throw new BatchDecodeError(`not msgpack: ${(err as Error).message}`, { cause: err });
  }
  if (!Array.isArray(decoded)) throw new BatchDecodeError("not a click batch");
  return decoded;
}

/** Decodes a raw-click message (v1 or v2); throws BatchDecodeError on anything else. */
export function decodeClickMessage(payload: Uint8Array): ClickMessage {
  return messageOf(unpack(payload));
}

function messageOf(d: unknown[]): ClickMessage {
  if (d[0] === 1 && Array.isArray(d[1])) {
    return { source: "", progressMs: null, end: false, caughtUp: false, events: fromTuples(d[1]) };
  }
  if (
    d[0] === 2 &&
    d.length === 5 &&
    typeof d[1] === "string" &&
    typeof d[3] === "number" &&
    Array.isArray(d[4])
  ) {
    const progress = typeof d[2] === "number" && Number.isFinite(d[2]) ? d[2] : null;
    return {
      source: d[1],
      progressMs: progress,
      end: (d[3] & FLAG_END) !== 0,
      caughtUp: (d[3] & FLAG_CAUGHT_UP) !== 0,
      events: fromTuples(d[4]),
    };
  }
  throw new BatchDecodeError("not a v1 or v2 click batch");
}

/**
 * A raw-store block: events with the stream sequence each came in, so a reader can keep only
 * what an aggregate revision had seen (see src/query/engine.ts).
 */
export function encodeBlock(
  events: readonly ClickEvent[],
  streamSeqs: readonly number[],
): Uint8Array {
  return packr.pack([3, toTuples(events), streamSeqs]);
}

/** The events of a message or block, with their stream sequences when the block has them. */
export function decodeBlock(payload: Uint8Array): {
  events: ClickEvent[];
  streamSeqs: number[] | null;
} {
  const d = unpack(payload);
  if (d[0] === 3 && Array.isArray(d[1]) && Array.isArray(d[2]) && d[2].length === d[1].length) {
    return { events: fromTuples(d[1]), streamSeqs: d[2] as number[] };
  }
  if (d[0] === 3) throw new BatchDecodeError("a v3 block without one sequence per event");
  return { events: messageOf(d).events, streamSeqs: null };
}

/** The events of any batch, message or block (v1, v2, v3). */
export function decodeBatch(payload: Uint8Array): ClickEvent[] {
  return decodeBlock(payload).events;
}

/** Events alone, as an anonymous message (tests, tools; producers use encodeClickMessage). */
export function encodeBatch(events: readonly ClickEvent[]): Uint8Array {
  return encodeClickMessage({ source: "", events });
}
