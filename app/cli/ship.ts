import { statSync } from "node:fs";
import { hostname } from "node:os";
import { jetstream } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import type { NatsConnection } from "@nats-io/transport-node";
import { KV_BUCKETS, STREAMS } from "../../nats/layout.js";
import { retryForMs } from "../../src/backoff.js";
import type { AdclickConfig } from "../../src/config.js";
import { AdclickError } from "../../src/errors.js";
import { BatchPublisher } from "../../src/ingest/batch-publisher.js";
import { KvCheckpointStore } from "../../src/ingest/checkpoint-store.js";
import { LogShipper, type ShipSummary } from "../../src/ingest/shipper.js";
import { checkClicksStream } from "../../src/nats/apply-layout.js";
import { natsPermissionError } from "../../src/nats/connect.js";
import { closeNats, natsFor } from "../connections.js";
import { onShutdownSignals } from "../shutdown.js";
import { formatBytes, ProgressBar } from "./progress.js";

export interface ShipOptions {
  source?: string;
  follow: boolean;
  fromStart: boolean;
  chunkBytes?: number;
  json: boolean;
}

/**
 * `adclick ship FILE...`: ships click logs to JetStream. One-shot mode exits 0 once every valid
 * event is acknowledged; --follow tails the files until SIGINT/SIGTERM.
 */
/**
 * A shipper may not create streams (its role publishes clicks only): it waits, bounded, for a
 * worker to have created the layout, and refuses a partition count the stream was not made for.
 * A NATS leader election (a node down) answers "no responders" for a few seconds meanwhile.
 */
async function waitForClicksStream(nc: NatsConnection, c: AdclickConfig): Promise<void> {
  const deadline = Date.now() + SHIP_WAIT_FOR_LAYOUT_MS;
  let told = false;
  for (;;) {
    const state = await retryForMs(
      () =>
        checkClicksStream(nc, STREAMS.clicks, c.partitions).catch((err: unknown) => {
          throw natsPermissionError(err, "the shipper checking the clicks stream") ?? err;
        }),
      { forMs: 60_000 },
    );
    if (state === "ok") return;
    if (Date.now() > deadline) {
      throw new AdclickError(
        "NOT_FOUND",
        `the ${STREAMS.clicks} stream does not exist on ${c.natsServers.join(",")}: start a worker (adclick worker, or adclick up), which creates the stream layout`,
      );
    }
    if (!told) {
      told = true;
      process.stderr.write(`waiting for a worker to create the ${STREAMS.clicks} stream…\n`);
    }
    await new Promise((r) => setTimeout(r, 500));
  }
}

/** How long `adclick ship` waits for the stream layout before it gives up. */
const SHIP_WAIT_FOR_LAYOUT_MS = 60_000;

export async function runShip(
  c: AdclickConfig,
  files: string[],
  o: ShipOptions,
): Promise<ShipSummary> {
  const source = o.source ?? hostname();
  const nc = await natsFor(c, `adclick-ship-${source}`, "shipper");
  try {
    await waitForClicksStream(nc, c);
    const js = jetstream(nc);
    const kv = await new Kvm(js).open(KV_BUCKETS.shipperCheckpoints);
    const clicks = new BatchPublisher(js, { label: "clicks" });
    const deadLetters = new BatchPublisher(js, { label: "dlq" });
    const totalBytes = files.reduce((n, f) => n + statSync(f).size, 0);
    const bar = new ProgressBar("shipping");
    let reported = 0;
    const shipper = new LogShipper(
      { checkpoints: new KvCheckpointStore(kv), clicks, deadLetters },
      {
        source,
        partitions: c.partitions,
        fromStart: o.fromStart,
        // Well inside the aggregators' idle timeout: a waiting file never looks stopped.
        heartbeatMs: Math.max(250, Math.floor(c.idleTimeoutMs / 4)),
        ...(o.chunkBytes ? { chunkBytes: o.chunkBytes } : {}),
        onMalformed: (m) => {
          if (reported++ < 20) {
            process.stderr.write(`${m.source}:${m.file}:${m.lineNo}: ${m.code}: ${m.reason}\n`);
          } else if (reported === 21) {
            process.stderr.write(
              "(more malformed lines: see the summary and the CLICKS_DLQ stream)\n",
            );
          }
        },
        onProgress: (p) => {
          const s = p.summary;
          const rate = s.events / Math.max(bar.elapsedSeconds(), 0.001);
          bar.update(
            s.bytes + s.resumedBytes,
            totalBytes,
            `${formatBytes(s.bytes + s.resumedBytes)}/${formatBytes(totalBytes)} ${s.events} events ${Math.round(rate)}/s`,
          );
        },
      },
    );
    let summary: ShipSummary;
    if (o.follow) {
      // Until SIGINT / SIGTERM: the shipper finishes its chunk and returns; bounded, so that a
      // NATS that is gone (publishes that cannot be acknowledged) cannot keep it running.
      const following = shipper.follow(files);
      const signals = onShutdownSignals(async () => {
        shipper.stop();
        await following.catch(() => {});
      });
      summary = await following;
      signals.dispose();
    } else {
      summary = await shipper.shipFiles(files);
    }
    bar.finish();
    if (o.json) {
      console.log(JSON.stringify({ source, ...summary, seconds: bar.elapsedSeconds() }));
    } else {
      console.log(
        `shipped ${summary.files} file(s) from source ${source}: ${summary.lines} lines, ${summary.events} events, ` +
          `${summary.malformed} malformed (in CLICKS_DLQ), ${summary.emptyLines} empty, ` +
          `${summary.duplicatesSuppressed} duplicates suppressed, ${formatBytes(summary.bytes)} read` +
          (summary.resumedBytes > 0
            ? `, ${formatBytes(summary.resumedBytes)} skipped (already shipped)`
            : "") +
          ` in ${bar.elapsedSeconds().toFixed(1)} s`,
      );
    }
    return summary;
  } finally {
    await closeNats(nc);
  }
}
