import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { fromCallback } from "xstate";
import { consumeInBatches, consumeOrdered } from "../src/nats/durable-consumer.js";
import type { ConsumerPlan } from "../src/nats/stage-handler.js";

/** Sent to the consumer: the parent can take one more batch. */
export type PullEvent = { type: "PULL" };

/** Sent by the consumer to its parent. */
export type ConsumerEvent =
  | { type: "BATCH"; msgs: JsMsg[] }
  | { type: "CONSUMER_FAILED"; error: unknown };

/**
 * The consumer actor: reads a JetStream stream in batches and feeds them into its parent's
 * mailbox, one batch per PULL it is sent (credit-based flow control: the parent asks for the
 * next batch when it can take it, so a slow stage slows its consumer and nothing piles up).
 * It starts with one credit. Stopping it (its parent leaving the state that invoked it) stops
 * the consumer; a batch it holds then is handed back (nak: redelivered at once), what its
 * client had buffered is redelivered after ack_wait (ordered consumers replay by position).
 * Its logic reads through `js`.
 */
export const streamConsumer = (js: JetStreamClient) =>
  fromCallback<PullEvent, ConsumerPlan, ConsumerEvent>(({ input, sendBack, receive }) => {
    const stop = new AbortController();
    let credit = 1;
    let wake: (() => void) | undefined;
    receive((e) => {
      if (e.type !== "PULL") return;
      credit++;
      wake?.();
    });
    stop.signal.addEventListener("abort", () => wake?.(), { once: true });
    const onBatch = async (msgs: JsMsg[]) => {
      while (credit === 0 && !stop.signal.aborted) {
        await new Promise<void>((resolve) => {
          wake = resolve;
        });
      }
      if (stop.signal.aborted) {
        // Stopped with a batch its parent never took: hand it back to the durable at once
        // (redelivered now, not after ack_wait). Ordered consumers replay by position.
        if (input.kind === "durable") for (const m of msgs) m.nak();
        return;
      }
      credit--;
      sendBack({ type: "BATCH", msgs });
    };
    const loop =
      input.kind === "durable"
        ? consumeInBatches({ ...input, js, signal: stop.signal, onBatch })
        : consumeOrdered({ ...input, js, signal: stop.signal, onBatch });
    loop.then(
      () => {
        if (!stop.signal.aborted)
          sendBack({ type: "CONSUMER_FAILED", error: new Error("the consumer ended") });
      },
      (error: unknown) => {
        if (!stop.signal.aborted) sendBack({ type: "CONSUMER_FAILED", error });
      },
    );
    return () => stop.abort();
  });

/** A stand-in until the composition root provides a real consumer: fails at once. */
export const unprovidedConsumer = fromCallback<PullEvent, ConsumerPlan, ConsumerEvent>(
  ({ sendBack }) => {
    sendBack({ type: "CONSUMER_FAILED", error: new Error("no stream consumer provided") });
  },
);
