import { DeliverPolicy, type JetStreamClient, type JetStreamManager } from "@nats-io/jetstream";
import { STREAMS, SUBJECTS } from "../../nats/layout.js";
import type { ClickEvent } from "../model.js";
import { ONE_MINUTE_MS } from "../model.js";
import { BatchDecodeError, decodeBatch } from "../wire/batch-codec.js";

export interface LateEvidenceOptions {
  /** Event-time range whose late events are wanted (whole minutes). */
  fromMs: number;
  toMs: number;
  /**
   * Reading starts at stream time `fromMs − clockSkewMs`: a late event reaches the stream
   * after its event time, give or take the producers' clock skew.
   */
  clockSkewMs?: number;
  /** Messages per fetch. */
  batch?: number;
}

/**
 * The late events the live aggregators set aside (CLICKS_LATE, late.clicks.<p>) whose event
 * time lies in [fromMs, toMs): the evidence that tells "dropped by the late policy" apart
 * from other causes of a too-low aggregate. Reads with an ephemeral ordered consumer up to
 * the stream's end at the time of the call.
 */
export async function readLateEvents(
  js: JetStreamClient,
  jsm: JetStreamManager,
  o: LateEvidenceOptions,
): Promise<ClickEvent[]> {
  const info = await jsm.streams.info(STREAMS.late);
  if (info.state.messages === 0) return [];
  const lastSeq = info.state.last_seq;
  const startMs = o.fromMs - (o.clockSkewMs ?? 60 * ONE_MINUTE_MS);
  const consumer = await js.consumers.get(STREAMS.late, {
    filter_subjects: [SUBJECTS.lateAll],
    deliver_policy: DeliverPolicy.StartTime,
    opt_start_time: new Date(Math.max(0, startMs)).toISOString(),
  });
  const out: ClickEvent[] = [];
  for (let done = false; !done; ) {
    const msgs = await consumer.fetch({ max_messages: o.batch ?? 256, expires: 1000 });
    let n = 0;
    for await (const m of msgs) {
      n++;
      if (m.seq >= lastSeq || m.info.pending === 0) done = true;
      let events: ClickEvent[];
      try {
        events = decodeBatch(m.data);
      } catch (err) {
        if (err instanceof BatchDecodeError) continue;
        throw err;
      }
      for (const e of events) {
        if (e.timestampMs >= o.fromMs && e.timestampMs < o.toMs) out.push(e);
      }
    }
    if (n === 0) done = true;
  }
  return out;
}
