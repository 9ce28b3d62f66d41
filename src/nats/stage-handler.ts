import type { JsMsg } from "@nats-io/jetstream";

/** Where a stage's consumer reads: a shared durable, or in order from a sequence of its own. */
export type ConsumerPlan =
  | { kind: "durable"; stream: string; durable: string; maxBatch: number }
  | {
      kind: "ordered";
      stream: string;
      filterSubjects: string[];
      /** First stream sequence to deliver. */
      startSeq: number;
      maxBatch: number;
    };

/**
 * The port between a stream stage's logic and its actor (actors/stage.ts): the actor owns the
 * loop — its consumer, its mailbox, its timer, its lifecycle — and calls these. Made afresh on
 * every (re)start of the actor.
 */
export interface StageHandler {
  /** Prepares (e.g. rebuilds state) and says where to consume from. */
  prepare(signal: AbortSignal): Promise<ConsumerPlan>;
  /** Handles one batch; messages it leaves unacknowledged are redelivered. */
  handle(msgs: JsMsg[], signal: AbortSignal): Promise<void>;
  /** Called every `tickEveryMs` between batches (`nowMs`: the actor's clock). */
  tick?(nowMs: number, signal: AbortSignal): Promise<void>;
  tickEveryMs?: number;
  /** What `adclick admin actors` shows. */
  status(): Record<string, unknown>;
}
