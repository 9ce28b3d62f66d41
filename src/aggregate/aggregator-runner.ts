import type { JetStreamClient, JsMsg } from "@nats-io/jetstream";
import { headers } from "@nats-io/nats-core";
import { Counter, Gauge, Histogram } from "prom-client";
import { STREAMS, SUBJECTS } from "../../nats/layout.js";
import { BatchPublisher } from "../ingest/batch-publisher.js";
import { registry } from "../metrics/registry.js";
import { ONE_MINUTE_MS } from "../model.js";
import { consumeOrdered } from "../nats/durable-consumer.js";
import { SnapshotConflictError, type SnapshotStore } from "../snapshots/snapshot-store.js";
import {
  type AggregatorOptions,
  type AggregatorSnapshot,
  type AggregatorState,
  advance,
  type ClosedMinute,
  checkRestorable,
  completeness,
  createAggregatorState,
  holdingSource,
  ingest,
  nextIdleDeadlineMs,
  type OptionChange,
  openMinutes,
  restoreAggregator,
  type SourceView,
  snapshotAggregator,
  sourcesOf,
} from "../windows/partition-aggregator.js";
import { maxProgressOf } from "../windows/watermark.js";
import {
  encodeAggregate,
  LATE_CLICKS_SEQ_HEADER,
  LATE_REASON_HEADER,
  lateMsgId,
  type MinuteRevision,
  minuteMsgId,
  progressMsgId,
  TICK_HEADER,
  tickMsgId,
} from "../wire/aggregate-messages.js";
import {
  BatchDecodeError,
  type ClickMessage,
  decodeClickMessage,
  encodeBatch,
} from "../wire/batch-codec.js";
import { reportSources } from "./source-metrics.js";

const eventsIn = new Counter({
  name: "adclick_aggregator_events_total",
  help: "Clicks seen by aggregators, by disposition (counted, duplicate, amended: counted into a closed minute, late_horizon: past the amendment horizon, left to the late repair, late_dropped: late under policy drop)",
  labelNames: ["partition", "disposition"] as const,
  registers: [registry],
});
const windowsClosed = new Counter({
  name: "adclick_aggregator_windows_emitted_total",
  help: "Minute windows emitted to the aggregates stream (first emissions and amendments)",
  labelNames: ["partition", "kind"] as const,
  registers: [registry],
});
const watermarkLag = new Gauge({
  name: "adclick_aggregator_watermark_lag_seconds",
  help: "Wall clock minus the partition's event-time watermark",
  labelNames: ["partition"] as const,
  registers: [registry],
});
const watermarkHeld = new Gauge({
  name: "adclick_watermark_held_seconds",
  help: "Event time the partition's watermark is held behind its most advanced source by slower ones",
  labelNames: ["partition"] as const,
  registers: [registry],
});
const holdDuration = new Histogram({
  name: "adclick_watermark_hold_seconds",
  help: "How long (stream time) a slower source held the partition's watermark back, per hold",
  labelNames: ["partition"] as const,
  buckets: [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600],
  registers: [registry],
});
const emitLatency = new Histogram({
  name: "adclick_aggregator_emit_latency_seconds",
  help: "Event time to emission: wall clock at emission minus the end of the emitted minute",
  labelNames: ["partition"] as const,
  buckets: [1, 2, 5, 10, 15, 20, 30, 45, 60, 120, 300, 600],
  registers: [registry],
});
const snapshotBytes = new Gauge({
  name: "adclick_snapshot_bytes",
  help: "Size of the latest snapshot",
  labelNames: ["actor"] as const,
  registers: [registry],
});
const snapshotSeconds = new Histogram({
  name: "adclick_snapshot_seconds",
  help: "Time to take and save a snapshot",
  labelNames: ["actor"] as const,
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: [registry],
});
const snapshotAge = new Gauge({
  name: "adclick_snapshot_age_seconds",
  help: "Seconds since the actor's last saved snapshot",
  labelNames: ["actor"] as const,
  registers: [registry],
});

/** What an aggregator snapshot holds besides the operator state. */
interface RunnerSnapshot {
  agg: AggregatorSnapshot;
  /** Processing time of the last message read (stream timestamps: part of the replayable log). */
  lastEventAtMs: number | null;
  closedThroughMs: number;
  /** The last progress report's key (see reportProgress); absent in older snapshots. */
  reportedKey?: string;
}

export interface AggregatorRunnerOptions {
  id: string;
  partition: number;
  aggregator: Omit<AggregatorOptions, "partition">;
  /** Snapshot at most this often while input flows (and on orderly stop). */
  snapshotEveryMs?: number;
  /** How often to check whether an idle tick is due. */
  tickCheckMs?: number;
  maxBatchMessages?: number;
}

export interface AggregatorStatus {
  partition: number;
  lastSeq: number;
  watermarkMs: number;
  closedThroughMs: number;
  /** Every minute ending at or before this is complete: no active source is behind it. */
  completeThroughMs: number;
  events: number;
  duplicates: number;
  amended: number;
  late: number;
  minutesEmitted: number;
  amendments: number;
  lastSnapshotAtMs: number;
  snapshotBytes: number;
  /** Every source this partition knows, slowest first. */
  sources: SourceView[];
  /** The most advanced event time any click or source reached here. */
  maxProgressMs: number;
  /** Event time the watermark is held behind the most advanced source, now, and by which. */
  heldMs: number;
  heldBy: { source: string; progressMs: number } | null;
  /** Holds so far (a slower source holding the watermark back), and the longest (stream time). */
  holds: number;
  longestHoldMs: number;
  /** Settings the configuration changed against the restored snapshot (applied). */
  configChanges: OptionChange[];
}

/** A minute as the live view gives it to queries. */
export type LiveMinuteView = Omit<ClosedMinute, "version"> & {
  closed: boolean;
  /** 0 while never emitted. */
  version: number;
  /** Every click of the minute in the partition's messages up to this sequence is counted. */
  throughSeq: number;
};

const RECENT_MINUTES_KEPT = 10;

export function aggregatorSnapshotKey(partition: number): string {
  return `agg.${partition}`;
}

/**
 * The aggregator of one partition: consumes clicks.<p> and the sources' progress marks
 * (clicks.progress) in stream order from the position of its snapshot, feeds the pure
 * operator (src/windows), and publishes what it produces — closed minutes, amendments, late
 * clicks, progress with completeness — with deterministic message IDs.
 *
 * Exactly once: every decision is a function of the log. Processing time is the stream
 * timestamp of each message, and idle closing happens only when the aggregator reads an idle
 * *tick* it published into its own partition when input stopped. A restore from a snapshot
 * (state + last sequence) followed by a replay therefore re-makes exactly the same outputs
 * under the same IDs: JetStream drops them as duplicates, the sink upserts the same values.
 */
export class AggregatorRunner {
  readonly status: AggregatorStatus;
  private state!: AggregatorState;
  private snapshotRevision: number | undefined;
  private lastSnapshotAtMs = 0;
  private lastMessageWallMs = Date.now();
  private readonly publisher: BatchPublisher;
  private readonly o: Required<AggregatorRunnerOptions>;
  private lock: Promise<void> = Promise.resolve();
  /** Emitted minutes the store may not have yet (see liveMinutes), with their positions. */
  private readonly recentlyEmitted = new Map<number, MinuteRevision & { throughSeq: number }>();
  /** The last progress report's content, so an unchanged one is not sent again. */
  private reportedKey = "";
  /** Stream time the current hold started (null: not held). */
  private holdStartedAtMs: number | null = null;
  /**
   * Aborted (with the SnapshotConflictError) when a snapshot save loses its compare-and-set,
   * on whatever path it was taken (periodic, on demand, final): another aggregator of this
   * partition has saved since we restored, so we are stale and stop at once.
   */
  private readonly fence = new AbortController();

  constructor(
    private readonly deps: { js: JetStreamClient; snapshots: SnapshotStore },
    opts: AggregatorRunnerOptions,
  ) {
    this.o = { snapshotEveryMs: 10_000, tickCheckMs: 250, maxBatchMessages: 64, ...opts };
    this.publisher = new BatchPublisher(deps.js, { label: "aggregates" });
    this.status = {
      partition: opts.partition,
      lastSeq: 0,
      watermarkMs: Number.NEGATIVE_INFINITY,
      closedThroughMs: Number.NEGATIVE_INFINITY,
      completeThroughMs: Number.NEGATIVE_INFINITY,
      events: 0,
      duplicates: 0,
      amended: 0,
      late: 0,
      minutesEmitted: 0,
      amendments: 0,
      lastSnapshotAtMs: 0,
      snapshotBytes: 0,
      sources: [],
      maxProgressMs: Number.NEGATIVE_INFINITY,
      heldMs: 0,
      heldBy: null,
      holds: 0,
      longestHoldMs: 0,
      configChanges: [],
    };
  }

  private get labels() {
    return { partition: String(this.o.partition) };
  }

  private get configured(): AggregatorOptions {
    return { ...this.o.aggregator, partition: this.o.partition };
  }

  async run(signal: AbortSignal): Promise<void> {
    await this.restore();
    const ticker = setInterval(() => {
      this.maybeTick().catch(() => {});
      if (this.lastSnapshotAtMs)
        snapshotAge.set({ actor: this.o.id }, (Date.now() - this.lastSnapshotAtMs) / 1000);
    }, this.o.tickCheckMs);
    try {
      await consumeOrdered({
        js: this.deps.js,
        stream: STREAMS.clicks,
        filterSubjects: [SUBJECTS.clicks(this.o.partition), SUBJECTS.progress],
        startSeq: this.status.lastSeq + 1,
        maxBatch: this.o.maxBatchMessages,
        signal: AbortSignal.any([signal, this.fence.signal]),
        onBatch: (msgs) => this.exclusive(() => this.process(msgs)),
      });
    } finally {
      clearInterval(ticker);
      reportSources(this.o.partition, undefined);
    }
    // Fenced: fail, so that the supervisor restarts us from the newest snapshot.
    if (this.fence.signal.aborted) throw this.fence.signal.reason;
    // A crash (admin kill: code ACTOR_KILLED) or a lost partition lease (LEASE_LOST: another
    // worker owns the partition now) must not look like an orderly stop: no final snapshot.
    const reason = (signal.reason as { code?: string } | undefined)?.code;
    if (reason === "ACTOR_KILLED" || reason === "LEASE_LOST") return;
    // Orderly stop: everything processed is published; save where we are.
    await this.exclusive(() => this.snapshot());
  }

  /**
   * The partition's minutes in [fromMs, toMs) that queries cannot read from the store yet:
   * open ones (counts so far) and the last few emitted ones (the aggregate writer may not
   * have stored them yet). Ascending by minute.
   */
  liveView(fromMs: number, toMs: number): { minutes: LiveMinuteView[]; throughSeq: number } {
    return { minutes: this.liveMinutes(fromMs, toMs), throughSeq: this.status.lastSeq };
  }

  /** The minutes of {@link liveView}. */
  liveMinutes(fromMs: number, toMs: number): LiveMinuteView[] {
    if (!this.state) return [];
    const byMinute = new Map<number, LiveMinuteView>();
    for (const c of this.recentlyEmitted.values()) {
      if (c.minuteStartMs >= fromMs && c.minuteStartMs < toMs)
        byMinute.set(c.minuteStartMs, { ...c, closed: true });
    }
    for (const m of openMinutes(this.state)) {
      if (m.minuteStartMs >= fromMs && m.minuteStartMs < toMs)
        byMinute.set(m.minuteStartMs, { ...m, version: 0, throughSeq: this.status.lastSeq });
    }
    return [...byMinute.values()].sort((a, b) => a.minuteStartMs - b.minuteStartMs);
  }

  private async restore(): Promise<void> {
    const stored = await this.deps.snapshots.load<RunnerSnapshot>(
      aggregatorSnapshotKey(this.o.partition),
    );
    if (stored) {
      const s = stored.snapshot.state;
      this.state = restoreAggregator(s.agg, this.configured, s.lastEventAtMs);
      this.status.configChanges = checkRestorable(s.agg, this.configured);
      this.status.closedThroughMs = s.closedThroughMs;
      this.status.lastSeq = stored.snapshot.streamSeq;
      this.reportedKey = s.reportedKey ?? "";
      this.snapshotRevision = stored.revision;
      this.lastSnapshotAtMs = stored.snapshot.takenAtMs;
    } else {
      this.state = createAggregatorState(this.configured);
    }
    this.refreshStatus();
  }

  /** Snapshot on demand (admin): taken between batches, never in the middle of one. */
  snapshotNow(): Promise<void> {
    return this.exclusive(() => this.snapshot());
  }

  /** Runs `fn` after whatever batch or snapshot is under way (state and position stay in step). */
  private exclusive<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.lock.then(fn);
    this.lock = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }

  /** Saves state + position. Only after every output up to that position is acknowledged. */
  private async snapshot(): Promise<void> {
    if (this.fence.signal.aborted) throw this.fence.signal.reason;
    await this.publisher.flush();
    const started = performance.now();
    const nowMs = this.state.watermark.nowMs;
    const saved = await this.deps.snapshots
      .save<RunnerSnapshot>(
        aggregatorSnapshotKey(this.o.partition),
        {
          streamSeq: this.status.lastSeq,
          takenAtMs: Date.now(),
          state: {
            agg: snapshotAggregator(this.state),
            lastEventAtMs: Number.isFinite(nowMs) ? nowMs : null,
            closedThroughMs: this.status.closedThroughMs,
            reportedKey: this.reportedKey,
          },
        },
        this.snapshotRevision,
      )
      .catch((err: unknown) => {
        if (err instanceof SnapshotConflictError) this.fence.abort(err);
        throw err;
      });
    this.snapshotRevision = saved.revision;
    this.lastSnapshotAtMs = Date.now();
    this.status.lastSnapshotAtMs = this.lastSnapshotAtMs;
    this.status.snapshotBytes = saved.bytes;
    snapshotBytes.set({ actor: this.o.id }, saved.bytes);
    snapshotSeconds.observe({ actor: this.o.id }, (performance.now() - started) / 1000);
  }

  private decode(m: JsMsg): ClickMessage | undefined {
    try {
      return decodeClickMessage(m.data);
    } catch (err) {
      if (!(err instanceof BatchDecodeError)) throw err;
      return undefined; // poison: the raw writer terminates it; nothing to count here
    }
  }

  private async process(msgs: JsMsg[]): Promise<void> {
    // A fenced aggregator emits nothing more (batches queued behind the failed snapshot).
    if (this.fence.signal.aborted) throw this.fence.signal.reason;
    const p = this.o.partition;
    // Amendments of a minute within one batch are coalesced: only its newest revision is
    // published. The version counter is part of the state (one increment per message that
    // changed the minute), so the newest revision's content and position are the same however
    // a replay happens to batch the messages.
    const corrections = new Map<number, MinuteRevision & { throughSeq: number }>();
    for (const m of msgs) {
      // The stream's stored timestamp: the same on every replay of this message.
      const nowMs = Math.floor(m.info.timestampNanos / 1e6);
      const message = m.headers?.has(TICK_HEADER) ? undefined : this.decode(m);
      if (message) {
        const r = ingest(this.state, message.events, nowMs, message);
        this.status.events += r.accepted + r.amended;
        this.status.duplicates += r.duplicates;
        this.status.amended += r.amended;
        this.status.late += r.late.length;
        eventsIn.inc({ ...this.labels, disposition: "counted" }, r.accepted);
        eventsIn.inc({ ...this.labels, disposition: "duplicate" }, r.duplicates);
        eventsIn.inc({ ...this.labels, disposition: "amended" }, r.amended);
        eventsIn.inc(
          {
            ...this.labels,
            disposition: r.lateReason === "drop" ? "late_dropped" : "late_horizon",
          },
          r.late.length,
        );
        if (r.late.length > 0) {
          const h = headers();
          h.set(LATE_REASON_HEADER, r.lateReason);
          h.set(LATE_CLICKS_SEQ_HEADER, String(m.seq));
          await this.publisher.publish({
            subject: SUBJECTS.late(p),
            msgId: lateMsgId(p, m.seq),
            payload: encodeBatch(r.late),
            events: r.late.length,
            headers: h,
          });
        }
        for (const c of r.corrections)
          corrections.set(c.minuteStartMs, { ...c, throughSeq: m.seq });
      }
      for (const c of advance(this.state, nowMs))
        await this.emit({ ...c, throughSeq: m.seq }, "closed");
      await this.reportProgress(m.seq);
      this.trackHold(nowMs);
      this.status.lastSeq = m.seq;
    }
    for (const minute of [...corrections.keys()].sort((x, y) => x - y)) {
      await this.emit(
        corrections.get(minute) as MinuteRevision & { throughSeq: number },
        "correction",
      );
    }
    await this.publisher.flush();
    this.lastMessageWallMs = Date.now();
    this.refreshStatus();
    if (Number.isFinite(this.status.watermarkMs)) {
      watermarkLag.set(this.labels, (Date.now() - this.status.watermarkMs) / 1000);
    }
    if (Date.now() - this.lastSnapshotAtMs >= this.o.snapshotEveryMs) await this.snapshot();
  }

  private refreshStatus(): void {
    const c = completeness(this.state);
    this.status.watermarkMs = c.watermarkMs;
    this.status.completeThroughMs = c.completeThroughMs;
    this.status.sources = sourcesOf(this.state);
    this.status.maxProgressMs = maxProgressOf(this.state.watermark);
    this.status.heldMs = this.heldMs();
    this.status.heldBy = holdingSource(this.state);
    watermarkHeld.set(this.labels, this.status.heldMs / 1000);
    reportSources(this.o.partition, this.status);
  }

  /** Event time the watermark is held behind the most advanced source (0: not held). */
  private heldMs(): number {
    const w = this.state.watermark;
    const max = maxProgressOf(w);
    if (!Number.isFinite(max) || !Number.isFinite(w.watermarkMs)) return 0;
    return Math.max(0, max - w.allowedLatenessMs - w.watermarkMs);
  }

  /** Starts or ends a hold episode at stream time `nowMs` (metrics only). */
  private trackHold(nowMs: number): void {
    const held = Number.isFinite(this.state.watermark.watermarkMs) && this.heldMs() > 0;
    if (held && this.holdStartedAtMs === null) {
      this.holdStartedAtMs = nowMs;
      this.status.holds++;
    } else if (!held && this.holdStartedAtMs !== null) {
      const ms = Math.max(0, nowMs - this.holdStartedAtMs);
      holdDuration.observe(this.labels, ms / 1000);
      if (ms > this.status.longestHoldMs) this.status.longestHoldMs = ms;
      this.holdStartedAtMs = null;
    }
    if (this.holdStartedAtMs !== null) {
      const ms = nowMs - this.holdStartedAtMs;
      if (ms > this.status.longestHoldMs) this.status.longestHoldMs = ms;
    }
  }

  private async emit(
    c: MinuteRevision & { throughSeq: number },
    kind: "closed" | "correction",
  ): Promise<void> {
    await this.publisher.publish({
      subject: SUBJECTS.minuteAggregates(this.o.partition),
      msgId: minuteMsgId(this.o.partition, c.minuteStartMs, c.version),
      payload: encodeAggregate({ kind: "minute", ...c }),
      events: c.eventCount,
    });
    this.status.minutesEmitted++;
    if (kind === "correction") this.status.amendments++;
    this.recentlyEmitted.set(c.minuteStartMs, c);
    if (this.recentlyEmitted.size > RECENT_MINUTES_KEPT) {
      this.recentlyEmitted.delete(Math.min(...this.recentlyEmitted.keys()));
    }
    windowsClosed.inc({ ...this.labels, kind });
    if (kind === "closed")
      emitLatency.observe(this.labels, (Date.now() - (c.minuteStartMs + ONE_MINUTE_MS)) / 1000);
  }

  /**
   * Tells the reducer and the store how far the partition is closed and complete, and which
   * sources are behind, whenever that changes (to the minute): "every minute ending at or
   * before closedThrough is closed here; every one ending at or before completeThrough has
   * every active source past it".
   */
  private async reportProgress(seq: number): Promise<void> {
    const c = completeness(this.state);
    if (!Number.isFinite(c.watermarkMs)) return;
    // To the minute: a report per minute a watermark or a lagging source moves, not per click.
    const toMinute = (t: number) =>
      Number.isFinite(t) ? Math.floor(t / ONE_MINUTE_MS) * ONE_MINUTE_MS : null;
    const closedThrough = toMinute(c.watermarkMs) as number;
    // null: a lagging source has no progress at all, so no minute is complete.
    const completeThrough = toMinute(c.completeThroughMs);
    const behind = c.behind.map((b) => ({ source: b.source, progressMs: toMinute(b.progressMs) }));
    const key = `${closedThrough}|${completeThrough}|${behind.map((b) => `${b.source}@${b.progressMs}`).join(",")}`;
    if (key === this.reportedKey) return;
    this.reportedKey = key;
    this.status.closedThroughMs = closedThrough;
    await this.publisher.publish({
      subject: SUBJECTS.minuteAggregates(this.o.partition),
      msgId: progressMsgId(this.o.partition, seq),
      payload: encodeAggregate({
        kind: "progress",
        partition: this.o.partition,
        closedThroughMs: closedThrough,
        completeThroughMs: completeThrough,
        behind,
        seq,
      }),
      events: 0,
    });
  }

  /**
   * Input stopped while a source still holds minutes open: publish an idle tick into our own
   * partition. Sources go idle when the tick is read back, at a recorded position of the log.
   */
  private async maybeTick(): Promise<void> {
    if (!this.state) return;
    const idle = this.o.aggregator.idleTimeoutMs;
    if (Date.now() - this.lastMessageWallMs < idle) return;
    if (nextIdleDeadlineMs(this.state) === null) return;
    const h = headers();
    h.set(TICK_HEADER, "idle");
    this.lastMessageWallMs = Date.now(); // one tick per idle period
    await this.deps.js.publish(SUBJECTS.clicks(this.o.partition), new Uint8Array(0), {
      msgID: tickMsgId(this.o.partition, this.status.lastSeq, Math.floor(Date.now() / idle)),
      headers: h,
    });
  }
}
