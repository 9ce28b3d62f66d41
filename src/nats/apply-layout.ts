import {
  DiscardPolicy,
  JetStreamApiError,
  type JetStreamManager,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type StreamConfig,
  type StreamInfo,
} from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { type NatsConnection, nanos } from "@nats-io/nats-core";
import {
  type JetStreamLayout,
  PARTITIONS_METADATA_KEY,
  type StreamSpec,
} from "../../nats/layout.js";
import { AdclickError } from "../errors.js";

const STREAM_NOT_FOUND = 10059;

function streamConfig(s: StreamSpec): Partial<StreamConfig> & { name: string } {
  return {
    name: s.name,
    subjects: s.subjects,
    description: s.description,
    retention: RetentionPolicy.Limits,
    storage: StorageType.File,
    num_replicas: s.replicas,
    max_age: nanos(s.maxAgeMs),
    duplicate_window: nanos(s.duplicateWindowMs),
    discard: s.discard === "new" ? DiscardPolicy.New : DiscardPolicy.Old,
    max_bytes: s.maxBytes,
    metadata: s.metadata,
  };
}

/** What differs between the desired spec and the live stream (fields we manage). */
function driftOf(s: StreamSpec, info: StreamInfo): string[] {
  const c = info.config;
  const want = streamConfig(s);
  const drift: string[] = [];
  if (JSON.stringify([...(c.subjects ?? [])].sort()) !== JSON.stringify([...s.subjects].sort()))
    drift.push("subjects");
  if (c.max_age !== want.max_age) drift.push("max_age");
  if (c.duplicate_window !== want.duplicate_window) drift.push("duplicate_window");
  if (c.discard !== want.discard) drift.push("discard");
  if (c.max_bytes !== want.max_bytes) drift.push("max_bytes");
  if (c.num_replicas !== want.num_replicas) drift.push("num_replicas");
  if (c.description !== want.description) drift.push("description");
  return drift;
}

export interface LayoutReport {
  created: string[];
  updated: string[];
  unchanged: string[];
}

/**
 * Creates or updates every stream and KV bucket of the layout. Idempotent: a second call
 * changes nothing. Refuses (LAYOUT_CONFLICT) to run with a partition count different from
 * the one the streams were created with.
 */
export async function applyLayout(
  nc: NatsConnection,
  layout: JetStreamLayout,
): Promise<LayoutReport> {
  const jsm: JetStreamManager = await jetstreamManager(nc);
  const report: LayoutReport = { created: [], updated: [], unchanged: [] };
  for (const spec of layout.streams) {
    let info: StreamInfo | undefined;
    try {
      info = await jsm.streams.info(spec.name);
    } catch (err) {
      if (!(err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND)) throw err;
    }
    if (!info) {
      await jsm.streams.add(streamConfig(spec));
      report.created.push(spec.name);
      continue;
    }
    const wantPartitions = spec.metadata[PARTITIONS_METADATA_KEY];
    const havePartitions = info.config.metadata?.[PARTITIONS_METADATA_KEY];
    if (
      wantPartitions !== undefined &&
      havePartitions !== undefined &&
      wantPartitions !== havePartitions
    ) {
      throw new AdclickError(
        "LAYOUT_CONFLICT",
        `stream ${spec.name} was created with ${havePartitions} partitions, the configuration says ${wantPartitions}; ` +
          "the partition count cannot change in place (ADCLICK_PARTITIONS)",
      );
    }
    const drift = driftOf(spec, info);
    if (drift.length > 0) {
      await jsm.streams.update(spec.name, {
        ...streamConfig(spec),
        metadata: { ...info.config.metadata, ...spec.metadata },
      });
      report.updated.push(`${spec.name} (${drift.join(", ")})`);
    } else {
      report.unchanged.push(spec.name);
    }
  }
  const kvm = new Kvm(jetstream(nc));
  const existing = new Set<string>();
  for await (const st of kvm.list()) existing.add(st.bucket);
  for (const b of layout.kv) {
    if (existing.has(b.bucket)) {
      // A bucket is a stream (KV_<bucket>): its TTL (max age) and replicas follow the layout
      // like a stream's (a lease TTL changed, a deployment grown to a cluster at R3).
      const name = `KV_${b.bucket}`;
      const info = await jsm.streams.info(name);
      const drift: string[] = [];
      if (info.config.num_replicas !== b.replicas) drift.push("num_replicas");
      if (b.ttlMs !== undefined && info.config.max_age !== b.ttlMs * 1_000_000)
        drift.push("max_age");
      if (drift.length > 0) {
        await jsm.streams.update(name, {
          ...info.config,
          num_replicas: b.replicas,
          ...(b.ttlMs !== undefined ? { max_age: b.ttlMs * 1_000_000 } : {}),
        });
        report.updated.push(`kv:${b.bucket} (${drift.join(", ")})`);
      } else report.unchanged.push(`kv:${b.bucket}`);
      continue;
    }
    await kvm.create(b.bucket, {
      description: b.description,
      history: b.history,
      replicas: b.replicas,
      ttl: b.ttlMs,
    });
    report.created.push(`kv:${b.bucket}`);
  }
  return report;
}

/**
 * What a shipper checks instead of applying the layout (its role may not change streams): the
 * clicks stream exists and was made for the same partition count. `missing` when no worker
 * has created the layout yet.
 */
export async function checkClicksStream(
  nc: NatsConnection,
  clicksStream: string,
  partitions: number,
): Promise<"ok" | "missing"> {
  // checkAPI off: the account info request ($JS.API.INFO) is not the shipper's to make.
  const jsm = await jetstreamManager(nc, { checkAPI: false });
  let info: StreamInfo;
  try {
    info = await jsm.streams.info(clicksStream);
  } catch (err) {
    if (err instanceof JetStreamApiError && err.code === STREAM_NOT_FOUND) return "missing";
    throw err;
  }
  const have = info.config.metadata?.[PARTITIONS_METADATA_KEY];
  if (have !== undefined && have !== String(partitions)) {
    throw new AdclickError(
      "LAYOUT_CONFLICT",
      `stream ${clicksStream} was created with ${have} partitions, the configuration says ${partitions} (ADCLICK_PARTITIONS)`,
    );
  }
  return "ok";
}
