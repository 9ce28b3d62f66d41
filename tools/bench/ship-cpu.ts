/**
 * The shipper's own CPU per line, without NATS: LogShipper over a log file with publishers
 * that acknowledge at once and an in-memory checkpoint store (read, parse, identity, encode,
 * routing and the chunk bookkeeping). Prints CPU µs per line for each repetition.
 *
 *   node --import tsx tools/bench/ship-cpu.ts FILE [--reps 3] [--chunk-bytes N]
 */
import type { BatchMessage, BatchPublisher } from "../../src/ingest/batch-publisher.js";
import type { CheckpointStore, FileCheckpoint } from "../../src/ingest/checkpoint-store.js";
import { LogShipper } from "../../src/ingest/shipper.js";

const file = process.argv[2];
if (!file) throw new Error("usage: ship-cpu.ts FILE [--reps N] [--chunk-bytes N]");
const opt = (name: string, dflt: number) => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? Number(process.argv[i + 1]) : dflt;
};
const reps = opt("reps", 3);
const chunkBytes = opt("chunk-bytes", 4 << 20);

function instantPublisher(): BatchPublisher {
  const stats = { batches: 0, duplicateBatches: 0, events: 0, duplicateEvents: 0, retries: 0 };
  let bytes = 0;
  return {
    stats,
    async publish(m: BatchMessage) {
      stats.batches++;
      stats.events += m.events;
      bytes += m.payload.length;
    },
    async flush() {},
    get bytes() {
      return bytes;
    },
  } as unknown as BatchPublisher;
}

class MemoryCheckpoints implements CheckpointStore {
  private readonly m = new Map<string, { checkpoint: FileCheckpoint; revision: number }>();
  async load(source: string, path: string) {
    return this.m.get(`${source}\0${path}`);
  }
  async save(cp: FileCheckpoint, revision: number | undefined) {
    const r = (revision ?? 0) + 1;
    this.m.set(`${cp.source}\0${cp.path}`, { checkpoint: structuredClone(cp), revision: r });
    return r;
  }
}

for (let rep = 0; rep < reps; rep++) {
  const clicks = instantPublisher();
  const shipper = new LogShipper(
    { checkpoints: new MemoryCheckpoints(), clicks, deadLetters: instantPublisher() },
    { source: "bench", partitions: 16, chunkBytes, heartbeatMs: 60_000 },
  );
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const s = await shipper.shipFiles([file]);
  const c = process.cpuUsage(c0);
  const cpuUs = c.user + c.system;
  console.log(
    `${s.lines} lines, ${s.events} events, ${clicks.stats.batches} batches, ${((clicks as unknown as { bytes: number }).bytes / s.events).toFixed(1)} B/event: CPU ${(cpuUs / 1e6).toFixed(2)} s (${(cpuUs / s.lines).toFixed(2)} µs/line), wall ${((performance.now() - t0) / 1000).toFixed(2)} s`,
  );
}
