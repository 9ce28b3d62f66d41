import {
  AckPolicy,
  type ConsumerMessages,
  DeliverPolicy,
  JetStreamApiError,
  type JetStreamClient,
  type JetStreamManager,
  type JsMsg,
} from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";

export interface DurableSpec {
  stream: string;
  durable: string;
  filterSubjects: string[];
  /** How long a delivered, unacknowledged message waits before redelivery. */
  ackWaitMs: number;
  /** Unacknowledged messages the consumer hands out at most (JetStream's default, 1000, is small for batches). */
  maxAckPending: number;
  description: string;
}

const CONSUMER_NOT_FOUND = 10014;

/**
 * How long a pull request lives (the client's default is 30 s). The client re-pulls after two
 * missed idle heartbeats (half of it each): on a NATS cluster, pull requests held by a
 * consumer's leader that froze or crashed are lost with it, and until then the reader stalls.
 */
export const PULL_EXPIRES_MS = 5000;

/**
 * Creates the durable pull consumer if it does not exist; updates the settings we manage if
 * they drifted. Several workers may share one durable: JetStream spreads messages over them.
 */
export async function ensureDurable(jsm: JetStreamManager, s: DurableSpec): Promise<void> {
  const config = {
    durable_name: s.durable,
    description: s.description,
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    ack_wait: nanos(s.ackWaitMs),
    max_ack_pending: s.maxAckPending,
    filter_subjects: s.filterSubjects,
  };
  try {
    const info = await jsm.consumers.info(s.stream, s.durable);
    const c = info.config;
    const subjects = c.filter_subjects ?? (c.filter_subject ? [c.filter_subject] : []);
    if (
      c.ack_wait !== config.ack_wait ||
      c.max_ack_pending !== config.max_ack_pending ||
      JSON.stringify([...subjects].sort()) !== JSON.stringify([...s.filterSubjects].sort())
    ) {
      await jsm.consumers.update(s.stream, s.durable, {
        ack_wait: config.ack_wait,
        max_ack_pending: config.max_ack_pending,
        filter_subjects: s.filterSubjects,
        description: s.description,
      });
    }
  } catch (err) {
    if (!(err instanceof JetStreamApiError && err.code === CONSUMER_NOT_FOUND)) throw err;
    await jsm.consumers.add(s.stream, config);
  }
}

export interface BatchLoopOptions {
  js: JetStreamClient;
  stream: string;
  durable: string;
  /** Most messages handed to `onBatch` at once. */
  maxBatch: number;
  signal: AbortSignal;
  /**
   * Handles a batch; it acknowledges what it has made durable. Messages it leaves
   * unacknowledged are redelivered after ack_wait (to this or another worker).
   */
  onBatch(msgs: JsMsg[]): Promise<void>;
}

/** Consumes a durable in batches (see batchLoop). Returns when the signal aborts; rejects if `onBatch` does. */
export async function consumeInBatches(o: BatchLoopOptions): Promise<void> {
  const consumer = await o.js.consumers.get(o.stream, o.durable);
  await batchLoop(
    await consumer.consume({
      max_messages: Math.max(o.maxBatch * 2, 256),
      expires: PULL_EXPIRES_MS,
    }),
    o,
  );
}

/** Keeps messages from being redelivered while a slow write retries (extends ack_wait). */
export function keepAlive(msgs: readonly JsMsg[]): void {
  for (const m of msgs) m.working();
}

export interface OrderedLoopOptions {
  js: JetStreamClient;
  stream: string;
  filterSubjects: string[];
  /** First stream sequence to deliver (1 = the beginning). */
  startSeq: number;
  maxBatch: number;
  signal: AbortSignal;
  onBatch(msgs: JsMsg[]): Promise<void>;
}

/**
 * Reads a stream in order from a given sequence with an ordered (ephemeral) consumer: the
 * reader's own snapshot, not the server, remembers the position. Used by actors whose state
 * is restored from a snapshot and replayed from the position it reflects.
 */
export async function consumeOrdered(o: OrderedLoopOptions): Promise<void> {
  const consumer = await o.js.consumers.get(o.stream, {
    filter_subjects: o.filterSubjects,
    deliver_policy: DeliverPolicy.StartSequence,
    opt_start_seq: Math.max(1, o.startSeq),
  });
  await batchLoop(
    await consumer.consume({
      max_messages: Math.max(o.maxBatch * 2, 256),
      expires: PULL_EXPIRES_MS,
    }),
    o,
  );
}

/** What {@link batchLoop} races a pending message against: the next turn of the event loop. */
const NEXT_TURN = Symbol("next turn");
const nextTurn = () =>
  new Promise<typeof NEXT_TURN>((resolve) => setImmediate(() => resolve(NEXT_TURN)));

/**
 * Waits for one message, then takes whatever else is already buffered (up to maxBatch)
 * without waiting, so batches grow under load and latency stays low when idle. A batch in
 * hand when the signal aborts is dropped unacknowledged (redelivered or replayed later).
 *
 * "Already buffered" is decided by racing the iterator against the next event-loop turn: a
 * buffered message resolves within microtasks. (`getPending()` cannot tell: the client
 * counts its queued pull-request callbacks in it and never takes them out again, so it
 * stays above 0 with nothing buffered, and waiting on it held a batch — unprocessed and
 * unacknowledged — until the next message arrived: at the end of a burst, until ack_wait
 * redelivered the batch itself, ~60 s for the aggregate writer.)
 */
export async function batchLoop(
  messages: Pick<ConsumerMessages, "stop"> & AsyncIterable<JsMsg>,
  o: { maxBatch: number; signal: AbortSignal; onBatch(msgs: JsMsg[]): Promise<void> },
): Promise<void> {
  const stop = () => messages.stop();
  o.signal.addEventListener("abort", stop, { once: true });
  try {
    const it = messages[Symbol.asyncIterator]();
    // A pull may settle while a batch is being handled: mark it handled now (awaiting it
    // later still throws), so that an iterator error is not an unhandled rejection.
    const pull = () => {
      const p = it.next();
      p.catch(() => {});
      return p;
    };
    let next = pull();
    let done = false;
    while (!done && !o.signal.aborted) {
      const first = await next;
      if (first.done) break;
      next = pull();
      const batch: JsMsg[] = [first.value];
      const turn = nextTurn();
      while (batch.length < o.maxBatch) {
        const r = await Promise.race([next, turn]);
        if (r === NEXT_TURN) break;
        if (r.done) {
          done = true;
          break;
        }
        batch.push(r.value);
        next = pull();
      }
      if (o.signal.aborted) break;
      await o.onBatch(batch);
    }
  } finally {
    o.signal.removeEventListener("abort", stop);
    messages.stop();
  }
}
