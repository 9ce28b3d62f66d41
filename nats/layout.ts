/**
 * The JetStream layout of AdClick, as data: streams, their subjects, and KV buckets.
 * src/nats/apply-layout.ts creates or updates it idempotently at start-up.
 *
 * Subjects:
 *   ingest.clicks          programmatic producers publish events here (the map actor routes them)
 *   clicks.<p>             raw clicks of partition p = fnv1a(ad_id) mod partitions (first queue)
 *   clicks.progress        sources' progress marks (heartbeats, ends), read by every aggregator
 *   dlq.clicks.<source>    malformed input, with its reason and origin
 *   late.clicks.<p>        clicks not counted live: past the amendment horizon (repaired from the
 *                          raw store) or, under late policy "drop", past the lateness
 *   aggregates.minute.<p>  closed minutes of partition p (second queue)
 *   aggregates.top         the reducer's global top N per minute
 */

export const SUBJECTS = {
  ingest: "ingest.clicks",
  clicks: (p: number) => `clicks.${p}`,
  clicksAll: "clicks.*",
  /** Progress marks of every source (no clicks); in CLICKS so they interleave with the clicks. */
  progress: "clicks.progress",
  deadLetter: (source: string) => `dlq.clicks.${source}`,
  deadLetterAll: "dlq.clicks.>",
  late: (p: number) => `late.clicks.${p}`,
  lateAll: "late.clicks.*",
  minuteAggregates: (p: number) => `aggregates.minute.${p}`,
  minuteAggregatesAll: "aggregates.minute.*",
  topAggregates: "aggregates.top",
} as const;

export const STREAMS = {
  ingest: "INGEST",
  clicks: "CLICKS",
  deadLetter: "CLICKS_DLQ",
  late: "CLICKS_LATE",
  aggregates: "AGGREGATES",
} as const;

export const KV_BUCKETS = {
  /** Actor snapshots: state + the stream position it reflects. */
  snapshots: "adclick_snapshots",
  /** Partition leases held by workers (scale-out). */
  leases: "adclick_leases",
  /** Log shipper checkpoints: (source, file) → byte offset acknowledged. */
  shipperCheckpoints: "adclick_shipper",
  /** Hot ads' shard partials, as of the barriers that asked for them (docs/hot-ads.md). */
  hot: "adclick_hot",
} as const;

/** How long a shard's partial is kept: far beyond any replay of its partition's aggregator. */
export const HOT_PARTIAL_TTL_MS = 3_600_000;

/** How long a partition lease lives without renewal (holders renew every third of it). */
export const LEASE_TTL_MS = 10_000;

/** Stream metadata key recording the partition count the deployment was created with. */
export const PARTITIONS_METADATA_KEY = "adclick_partitions";

export interface LayoutOptions {
  partitions: number;
  replicas: number;
  duplicateWindowMs: number;
  rawStreamMaxAgeMs: number;
}

export interface StreamSpec {
  name: string;
  subjects: string[];
  description: string;
  maxAgeMs: number;
  duplicateWindowMs: number;
  replicas: number;
  /** Discard new messages when full (publishers see an error and retry) vs. drop the oldest. */
  discard: "old" | "new";
  /** -1: bounded only by max age and the server's max_file_store (reserving no space). */
  maxBytes: number;
  metadata: Record<string, string>;
}

export interface KvSpec {
  bucket: string;
  description: string;
  history: number;
  replicas: number;
  /** 0 = keep forever. */
  ttlMs: number;
}

export interface JetStreamLayout {
  streams: StreamSpec[];
  kv: KvSpec[];
}

const DAY_MS = 86_400_000;
const GB = 1024 ** 3;

export function jetStreamLayout(o: LayoutOptions): JetStreamLayout {
  const common = { replicas: o.replicas, duplicateWindowMs: o.duplicateWindowMs };
  const meta = { [PARTITIONS_METADATA_KEY]: String(o.partitions) };
  return {
    streams: [
      {
        name: STREAMS.ingest,
        subjects: [SUBJECTS.ingest],
        description: "click events from programmatic producers, before routing",
        maxAgeMs: DAY_MS,
        discard: "new",
        maxBytes: -1,
        metadata: {},
        ...common,
      },
      {
        name: STREAMS.clicks,
        subjects: [SUBJECTS.clicksAll],
        description: "raw clicks partitioned by hash(ad_id) (first queue)",
        maxAgeMs: o.rawStreamMaxAgeMs,
        // Never drop unprocessed billing input: a full stream pushes back on producers.
        discard: "new",
        maxBytes: -1,
        metadata: meta,
        ...common,
      },
      {
        name: STREAMS.deadLetter,
        subjects: [SUBJECTS.deadLetterAll],
        description: "malformed input lines with reason, source and line number",
        maxAgeMs: 30 * DAY_MS,
        discard: "old",
        maxBytes: 1 * GB,
        metadata: {},
        ...common,
      },
      {
        name: STREAMS.late,
        subjects: [SUBJECTS.lateAll],
        description:
          "clicks not counted live: past the amendment horizon, or late under policy drop",
        maxAgeMs: 30 * DAY_MS,
        discard: "old",
        maxBytes: 1 * GB,
        metadata: {},
        ...common,
      },
      {
        name: STREAMS.aggregates,
        subjects: [SUBJECTS.minuteAggregatesAll, SUBJECTS.topAggregates],
        description: "closed-minute aggregates and global top N (second queue)",
        maxAgeMs: 7 * DAY_MS,
        discard: "new",
        maxBytes: -1,
        metadata: meta,
        ...common,
      },
    ],
    kv: [
      {
        bucket: KV_BUCKETS.snapshots,
        description: "actor snapshots",
        history: 5,
        replicas: o.replicas,
        ttlMs: 0,
      },
      {
        bucket: KV_BUCKETS.leases,
        description: "partition leases",
        history: 1,
        replicas: o.replicas,
        // A lease not renewed for this long expires: a dead worker's partitions free up.
        ttlMs: LEASE_TTL_MS,
      },
      {
        bucket: KV_BUCKETS.shipperCheckpoints,
        description: "log shipper checkpoints",
        history: 1,
        replicas: o.replicas,
        ttlMs: 0,
      },
      {
        bucket: KV_BUCKETS.hot,
        description: "hot ads' shard partials",
        history: 1,
        replicas: o.replicas,
        ttlMs: HOT_PARTIAL_TTL_MS,
      },
    ],
  };
}
