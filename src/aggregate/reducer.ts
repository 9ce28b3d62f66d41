import { hash } from "node:crypto";
import { AckPolicy, DeliverPolicy, type JetStreamClient, type JsMsg } from "@nats-io/jetstream";
import { nanos } from "@nats-io/nats-core";
import { Counter } from "prom-client";
import { STREAMS, SUBJECTS } from "../../nats/layout.js";
import { BatchPublisher } from "../ingest/batch-publisher.js";
import { registry } from "../metrics/registry.js";
import { ONE_MINUTE_MS } from "../model.js";
import type { ConsumerPlan, StageHandler } from "../nats/stage-handler.js";
import { mergeTopK, type TopEntry } from "../windows/topk.js";
import { decodeAggregate, encodeAggregate, topMsgId } from "../wire/aggregate-messages.js";

const topsEmitted = new Counter({
  name: "adclick_reducer_tops_emitted_total",
  help: "Global top-N minutes emitted by the reducer, by trigger (complete, timeout, correction)",
  labelNames: ["actor", "trigger"] as const,
  registers: [registry],
});

/** The reducer's decision state: pure data, no I/O (see `reduceMessage`). */
export interface ReducerState {
  partitions: number;
  n: number;
  /** closedThrough per partition, from progress reports. */
  progress: Map<number, number>;
  /** minute → partition → its latest contribution. */
  minutes: Map<number, Map<number, { version: number; topK: TopEntry[] }>>;
  /** minute → key of the contributor set last emitted. */
  emitted: Map<number, string>;
}

export interface TopEmission {
  minuteStartMs: number;
  /** Sum of the contributing partitions' versions: grows with every new contribution. */
  version: number;
  /** Identifies the contributor set (part of the message ID). */
  key: string;
  ads: TopEntry[];
  partitions: number;
  trigger: "complete" | "timeout" | "correction";
}

export function createReducerState(partitions: number, n: number): ReducerState {
  return { partitions, n, progress: new Map(), minutes: new Map(), emitted: new Map() };
}

function complete(s: ReducerState, minuteStartMs: number): boolean {
  if (s.progress.size < s.partitions) return false;
  for (const t of s.progress.values()) if (t < minuteStartMs + ONE_MINUTE_MS) return false;
  return true;
}

function emission(
  s: ReducerState,
  minuteStartMs: number,
  trigger: TopEmission["trigger"],
): TopEmission | undefined {
  const parts = s.minutes.get(minuteStartMs) ?? new Map();
  const contributors = [...parts.entries()].sort((a, b) => a[0] - b[0]);
  const key = hash(
    "sha1",
    contributors.map(([p, c]) => `${p}@${c.version}`).join(","),
    "base64url",
  ).slice(0, 12);
  if (s.emitted.get(minuteStartMs) === key) return undefined;
  s.emitted.set(minuteStartMs, key);
  return {
    minuteStartMs,
    version: contributors.reduce((n, [, c]) => n + c.version, 0),
    key,
    ads: mergeTopK(
      contributors.map(([, c]) => c.topK),
      s.n,
    ),
    partitions: contributors.length,
    trigger,
  };
}

/**
 * Folds one aggregate message into the reducer state and returns the global top-N minutes it
 * makes emittable: a minute is emitted once every partition reports it closed (partitions
 * are disjoint by ad, so merging their top-k is exact), and again, as a new version, when a
 * partition corrects it later.
 */
export function reduceMessage(s: ReducerState, data: Uint8Array): TopEmission[] {
  const m = decodeAggregate(data);
  const out: TopEmission[] = [];
  if (m.kind === "minute") {
    let parts = s.minutes.get(m.minuteStartMs);
    if (!parts) {
      parts = new Map();
      s.minutes.set(m.minuteStartMs, parts);
    }
    const prev = parts.get(m.partition);
    if (prev && prev.version >= m.version) return out;
    parts.set(m.partition, { version: m.version, topK: m.topK });
    if (s.emitted.has(m.minuteStartMs)) {
      const e = emission(s, m.minuteStartMs, "correction");
      if (e) out.push(e);
    } else if (complete(s, m.minuteStartMs)) {
      const e = emission(s, m.minuteStartMs, "complete");
      if (e) out.push(e);
    }
  } else if (m.kind === "progress") {
    const prev = s.progress.get(m.partition) ?? Number.NEGATIVE_INFINITY;
    if (m.closedThroughMs <= prev) return out;
    s.progress.set(m.partition, m.closedThroughMs);
    for (const minute of [...s.minutes.keys()].sort((a, b) => a - b)) {
      if (!s.emitted.has(minute) && complete(s, minute)) {
        const e = emission(s, minute, "complete");
        if (e) out.push(e);
      }
    }
  }
  return out;
}

/**
 * Minutes whose end is more than `afterMs` before `nowMs` and still not emitted (some
 * partition never reported: it has no data at all). Emitted with what is at hand; a later
 * contribution re-emits them under a higher version.
 */
export function overdueEmissions(s: ReducerState, nowMs: number, afterMs: number): TopEmission[] {
  const out: TopEmission[] = [];
  for (const minute of [...s.minutes.keys()].sort((a, b) => a - b)) {
    if (!s.emitted.has(minute) && minute + ONE_MINUTE_MS + afterMs <= nowMs) {
      const e = emission(s, minute, "timeout");
      if (e) out.push(e);
    }
  }
  return out;
}

/** Forgets minutes older than `keepMs` before the oldest partition progress (bounded memory). */
export function purgeReducer(s: ReducerState, keepMs: number): void {
  if (s.progress.size < s.partitions) return;
  const floor = Math.min(...s.progress.values()) - keepMs;
  for (const minute of s.minutes.keys()) {
    if (minute < floor) {
      s.minutes.delete(minute);
      s.emitted.delete(minute);
    }
  }
}

export interface ReducerOptions {
  id: string;
  partitions: number;
  n: number;
  /** How far back to replay the aggregates stream on start (rebuilds the state). */
  replayMs: number;
  /** Emit an incomplete minute this long after its end (empty partitions never report). */
  overdueAfterMs: number;
}

/**
 * The reducer's stage handler: on every start it rebuilds its state by replaying the (small)
 * aggregates stream from `replayMs` ago — deterministic, so what it re-emits carries the same
 * IDs — then follows it, publishing global top N per minute to aggregates.top. Its tick emits
 * minutes overdue (a partition with no data never reports).
 */
export class Reducer implements StageHandler {
  readonly state: ReducerState;
  readonly tickEveryMs = 1000;
  private readonly publisher: BatchPublisher;

  constructor(
    private readonly js: JetStreamClient,
    private readonly o: ReducerOptions & { now: () => number },
  ) {
    this.state = createReducerState(o.partitions, o.n);
    this.publisher = new BatchPublisher(js, { label: "top" });
  }

  async prepare(): Promise<ConsumerPlan> {
    // By start *sequence*: an ordered consumer created by start time never recovers from a
    // nats-server restart with @nats-io/jetstream 3.4 (its re-creation keeps opt_start_time
    // next to deliver_policy by_start_sequence, which the server refuses, forever).
    const startSeq = await firstSeqAtOrAfter(
      this.js,
      STREAMS.aggregates,
      new Date(this.o.now() - this.o.replayMs),
    );
    return {
      kind: "ordered",
      stream: STREAMS.aggregates,
      filterSubjects: [SUBJECTS.minuteAggregatesAll],
      startSeq,
      maxBatch: 256,
    };
  }

  async handle(msgs: JsMsg[]): Promise<void> {
    for (const m of msgs) {
      let out: TopEmission[];
      try {
        out = reduceMessage(this.state, m.data);
      } catch {
        continue; // undecodable: the aggregate writer terminates it too
      }
      await this.publish(out);
      purgeReducer(this.state, 3 * 60 * ONE_MINUTE_MS);
    }
  }

  tick(nowMs: number): Promise<void> {
    return this.publish(overdueEmissions(this.state, nowMs, this.o.overdueAfterMs));
  }

  status(): Record<string, unknown> {
    return { minutesHeld: this.state.minutes.size };
  }

  private async publish(out: TopEmission[]): Promise<void> {
    for (const e of out) {
      await this.publisher.publish({
        subject: SUBJECTS.topAggregates,
        msgId: topMsgId(e.minuteStartMs, e.version, e.key),
        payload: encodeAggregate({
          kind: "top",
          minuteStartMs: e.minuteStartMs,
          version: e.version,
          n: this.o.n,
          ads: e.ads,
          partitions: e.partitions,
        }),
        events: 0,
      });
      topsEmitted.inc({ actor: this.o.id, trigger: e.trigger });
    }
    if (out.length > 0) await this.publisher.flush();
  }
}

/**
 * The first stream sequence stored at or after `time` (last sequence + 1 when none is):
 * JetStream resolves it for a consumer created by start time, whose info reports that
 * sequence − 1 as delivered. The consumer is deleted at once (and expires anyway).
 */
export async function firstSeqAtOrAfter(
  js: JetStreamClient,
  stream: string,
  time: Date,
): Promise<number> {
  const jsm = await js.jetstreamManager();
  const ci = await jsm.consumers.add(stream, {
    deliver_policy: DeliverPolicy.StartTime,
    opt_start_time: time.toISOString(),
    ack_policy: AckPolicy.None,
    inactive_threshold: nanos(60_000),
    mem_storage: true,
  });
  await jsm.consumers.delete(stream, ci.name).catch(() => {});
  return ci.delivered.stream_seq + 1;
}
