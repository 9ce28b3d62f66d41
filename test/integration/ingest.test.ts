import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { afterAll, describe, expect, it } from "vitest";
import { rawWriterChild } from "../../actors/raw-writer.js";
import { ensureLayout } from "../../app/cli/layout.js";
import { KV_BUCKETS, STREAMS } from "../../nats/layout.js";
import { loadConfig } from "../../src/config.js";
import { generateClickLog, type TruthLine } from "../../src/gen/click-log.js";
import { BatchPublisher } from "../../src/ingest/batch-publisher.js";
import { KvCheckpointStore } from "../../src/ingest/checkpoint-store.js";
import { rawWriterConsumer } from "../../src/ingest/raw-writer.js";
import { LogShipper } from "../../src/ingest/shipper.js";
import { ONE_MINUTE_MS } from "../../src/model.js";
import { ensureDurable } from "../../src/nats/durable-consumer.js";
import type { MalformedLine } from "../../src/parse/click-line.js";
import { formatClickLine } from "../../src/parse/click-line.js";
import { RawStore } from "../../src/storage/raw-store.js";
import { useKeyspace, useNatsServer } from "../harness/servers.js";
import { CHILD, runActor } from "../support/actors.js";
import { clickKey, eventKey, sortedKeys, uniqueClicks } from "../support/oracle.js";

const PARTITIONS = 4;
const START_MS = Date.UTC(2024, 6, 9, 0, 0, 0);
const SPAN_MS = 4 * ONE_MINUTE_MS;

function cliShip(natsUrl: string, args: string[]) {
  return spawn(
    process.execPath,
    [
      "--import",
      "tsx",
      "app/run.ts",
      "--nats",
      natsUrl,
      "--partitions",
      String(PARTITIONS),
      "ship",
      ...args,
    ],
    { stdio: ["ignore", "pipe", "pipe"] },
  );
}

describe("ingest: log files → shipper → raw-click stream → raw store", () => {
  const nats = useNatsServer();
  const cass = useKeyspace();
  const dir = mkdtempSync(join(tmpdir(), "adclick-ingest-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("stores exactly the unique valid events of a multi-file log, though the shipper is killed mid-file", {
    timeout: 300_000,
  }, async () => {
    const { nc, server } = nats();
    const { client } = cass();
    const c = loadConfig({}, { natsServers: [server.url], partitions: PARTITIONS });
    await ensureLayout(nc, c);
    const js = jetstream(nc);

    // Three files from two hosts: duplicates (same click_id) within and across files,
    // malformed lines of every kind, out-of-order timestamps.
    const common = {
      ads: 200,
      startMs: START_MS,
      spanMs: SPAN_MS,
      duplicateRatio: 0.03,
      malformedRatio: 0.02,
    };
    const a = generateClickLog({ ...common, seed: 11, lines: 40_000 });
    const b = generateClickLog({ ...common, seed: 12, lines: 6_000 });
    const web2 = generateClickLog({ ...common, seed: 13, lines: 6_000 });
    // b repeats a few of a's clicks (same click_id): a cross-file duplicate.
    const crossDups = a.truth
      .flatMap((t) => (t.kind === "click" && t.click.clickId ? [t.click] : []))
      .slice(0, 50);
    const bText = b.text + crossDups.map((c) => `${formatClickLine(c)}\n`).join("");
    const bTruth: TruthLine[] = [
      ...b.truth,
      ...crossDups.map((click) => ({ kind: "duplicate" as const, click })),
    ];
    const files = { a: join(dir, "a.log"), b: join(dir, "b.log"), c: join(dir, "c.log") };
    writeFileSync(files.a, a.text);
    writeFileSync(files.b, bText);
    writeFileSync(files.c, web2.text);

    // 1. Ship a.log with the CLI and SIGKILL it mid-file, then run it again to completion.
    const kv = await new Kvm(js).open(KV_BUCKETS.shipperCheckpoints);
    const checkpoints = new KvCheckpointStore(kv);
    const size = statSync(files.a).size;
    const first = cliShip(server.url, ["--source", "web-1", "--chunk-bytes", "8192", files.a]);
    const firstExited = new Promise((r) => first.once("exit", r));
    let firstOutput = "";
    first.stderr.on("data", (d) => {
      firstOutput += d;
    });
    let killedAt = -1;
    for (let i = 0; i < 600 && killedAt < 0; i++) {
      const cp = await checkpoints.load("web-1", files.a);
      // As soon as some chunks are acknowledged (and most of the file is still to go).
      if (cp && cp.checkpoint.offset > 0) {
        first.kill("SIGKILL");
        killedAt = cp.checkpoint.offset;
      } else {
        await new Promise((r) => setTimeout(r, 25));
      }
    }
    await firstExited;
    expect(killedAt, firstOutput).toBeGreaterThan(0);
    expect(killedAt).toBeLessThan(size);

    const second = cliShip(server.url, [
      "--source",
      "web-1",
      "--chunk-bytes",
      "8192",
      "--json",
      files.a,
    ]);
    let out = "";
    second.stdout.on("data", (d) => {
      out += d;
    });
    const code = await new Promise((r) => second.once("close", r));
    expect(code).toBe(0);
    const resumed = JSON.parse(out.trim().split("\n").pop() as string);
    expect(resumed.resumedBytes).toBeGreaterThanOrEqual(killedAt);
    expect((await checkpoints.load("web-1", files.a))?.checkpoint.offset).toBe(size);

    // 2. b.log and c.log in-process; b.log is shipped twice, the second time from the start.
    const malformed: MalformedLine[] = [];
    const ship = async (source: string, path: string, fromStart = false) => {
      const shipper = new LogShipper(
        {
          checkpoints,
          clicks: new BatchPublisher(js, { label: "clicks" }),
          deadLetters: new BatchPublisher(js, { label: "dlq" }),
        },
        {
          source,
          partitions: PARTITIONS,
          fromStart,
          chunkBytes: 64 * 1024,
          onMalformed: (m) => malformed.push(m),
        },
      );
      return shipper.shipFiles([path]);
    };
    const bFirst = await ship("web-1", files.b);
    const bAgain = await ship("web-1", files.b);
    expect(bAgain.events).toBe(0); // nothing new past the checkpoint
    expect(bAgain.resumedBytes).toBe(statSync(files.b).size);
    const bFromStart = await ship("web-1", files.b, true);
    expect(bFromStart.events).toBe(bFirst.events);
    expect(bFromStart.duplicatesSuppressed).toBe(bFirst.events); // every batch already stored
    await ship("web-2", files.c);

    // Malformed lines are reported with their line numbers (b's first run and c's).
    const expectedBad = (truth: TruthLine[]) =>
      truth.flatMap((t, i) => (t.kind === "malformed" ? [i + 1] : []));
    expect(malformed.filter((m) => m.source === "web-2").map((m) => m.lineNo)).toEqual(
      expectedBad(web2.truth),
    );

    // 3. The raw writer drains the stream into Cassandra.
    const store = new RawStore(client);
    await store.createSchema();
    const jsm = await jetstreamManager(nc);
    await ensureDurable(jsm, rawWriterConsumer());
    const writer = runActor(rawWriterChild({ js, store }, { ...CHILD, id: "raw-writer-test" }));
    for (let i = 0; i < 2400; i++) {
      const info = await jsm.consumers.info(STREAMS.clicks, "raw-writer");
      if (info.num_pending === 0 && info.num_ack_pending === 0) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await writer.stop();

    // 4. Row for row: the raw store's unique events equal the recount of the input.
    const stored = [];
    for await (const block of store.readRange(
      START_MS - 2 * ONE_MINUTE_MS,
      START_MS + SPAN_MS + ONE_MINUTE_MS,
      PARTITIONS,
    )) {
      stored.push(...block.events);
    }
    const expected = uniqueClicks([a.truth, bTruth, web2.truth]);
    expect(stored.length).toBe(expected.length);
    expect(sortedKeys(stored, eventKey)).toEqual(sortedKeys(expected, clickKey));

    // The dead-letter stream holds every malformed line of all files exactly once.
    const dlq = await jsm.streams.info(STREAMS.deadLetter);
    expect(dlq.state.messages).toBeGreaterThan(0);
    const allBad = [a.truth, bTruth, web2.truth].reduce((n, t) => n + expectedBad(t).length, 0);
    let dlqLines = 0;
    const consumer = await js.consumers.get(STREAMS.deadLetter);
    const it = await consumer.fetch({ max_messages: 10_000, expires: 2000 });
    for await (const m of it) {
      dlqLines += (m.json() as unknown[]).length;
      if (m.info.pending === 0) break;
    }
    expect(dlqLines).toBe(allBad);
  });
});
