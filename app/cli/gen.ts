import { writeFileSync } from "node:fs";
import { jetstream } from "@nats-io/jetstream";
import type { AdclickConfig } from "../../src/config.js";
import { DEFAULT_GEN, type GenOptions, generateClickLog } from "../../src/gen/click-log.js";
import { startLiveGenerator } from "../../src/gen/live-generator.js";
import { ClickProducer } from "../../src/ingest/click-producer.js";
import { closeNats, natsFor } from "../connections.js";

export interface GenCliOptions {
  lines: number;
  /** Publish live clicks (current time) at this rate per second instead of a log. */
  rate?: number;
  /** With --rate: stop after this many seconds (default: until Ctrl-C). */
  duration?: number;
  out?: string;
  publish: boolean;
  seed?: number;
  ads?: number;
  zipf?: number;
  start?: string;
  spanMinutes?: number;
  duplicates?: number;
  late?: number;
  malformed?: number;
  countries?: string;
}

function ratio(name: string, v: number | undefined): number | undefined {
  if (v === undefined) return undefined;
  if (!(v >= 0 && v <= 1)) throw new Error(`${name} must be a ratio from 0 to 1`);
  return v;
}

/**
 * `adclick gen`: a synthetic click log — Zipf-popular ads, countries, duplicates, out-of-order
 * and late clicks, malformed lines — written to a file (or stdout), or published directly.
 */
export async function runGen(c: AdclickConfig, o: GenCliOptions): Promise<void> {
  if (o.rate !== undefined) {
    const nc = await natsFor(c, "adclick-gen", "shipper");
    const g = startLiveGenerator(jetstream(nc), {
      ratePerSecond: o.rate,
      partitions: c.partitions,
      ...(o.ads ? { ads: o.ads } : {}),
    });
    await new Promise<void>((resolve) => {
      if (o.duration) setTimeout(resolve, o.duration * 1000);
      process.once("SIGINT", () => resolve());
      process.once("SIGTERM", () => resolve());
    });
    await g.stop();
    await closeNats(nc);
    console.error(`published ${g.sent()} clicks at ~${o.rate}/s`);
    return;
  }
  const startMs = o.start
    ? Date.parse(o.start)
    : Math.floor(Date.now() / 60_000) * 60_000 - 5 * 60_000;
  if (Number.isNaN(startMs)) throw new Error(`--start: not a date: ${o.start}`);
  const opts: Partial<GenOptions> = {
    lines: o.lines,
    startMs,
    ...(o.seed !== undefined ? { seed: o.seed } : {}),
    ...(o.ads !== undefined ? { ads: o.ads } : {}),
    ...(o.zipf !== undefined ? { zipfS: o.zipf } : {}),
    ...(o.spanMinutes !== undefined ? { spanMs: o.spanMinutes * 60_000 } : {}),
    ...(o.countries
      ? { countries: o.countries.split(",").map((x) => x.trim().toUpperCase()) }
      : {}),
  };
  const d = ratio("--duplicates", o.duplicates);
  const l = ratio("--late", o.late);
  const m = ratio("--malformed", o.malformed);
  if (d !== undefined) opts.duplicateRatio = d;
  if (l !== undefined) opts.lateRatio = l;
  if (m !== undefined) opts.malformedRatio = m;
  const { text, truth } = generateClickLog(opts);
  const summary = {
    lines: truth.length,
    clicks: truth.filter((t) => t.kind === "click").length,
    duplicates: truth.filter((t) => t.kind === "duplicate").length,
    malformed: truth.filter((t) => t.kind === "malformed").length,
    from: new Date(startMs).toISOString(),
    spanMinutes: (opts.spanMs ?? DEFAULT_GEN.spanMs) / 60_000,
  };
  if (o.publish) {
    const nc = await natsFor(c, "adclick-gen", "shipper");
    try {
      const producer = new ClickProducer(jetstream(nc), {
        partitions: c.partitions,
        source: "gen",
      });
      const clicks = truth.flatMap((t) =>
        t.kind === "malformed"
          ? []
          : [
              {
                ad_id: t.click.adId,
                timestamp: t.click.timestampMs,
                user_id: t.click.userId,
                ip: t.click.ip,
                country: t.click.country,
                ...(t.click.clickId ? { click_id: t.click.clickId } : {}),
              },
            ],
      );
      for (let i = 0; i < clicks.length; i += 10_000) {
        await producer.send(
          clicks.slice(i, i + 10_000),
          `gen-${opts.seed ?? DEFAULT_GEN.seed}-${startMs}-${i}`,
        );
      }
    } finally {
      await closeNats(nc);
    }
    console.error(`published ${JSON.stringify(summary)}`);
  } else if (o.out) {
    writeFileSync(o.out, text);
    console.error(`wrote ${o.out}: ${JSON.stringify(summary)}`);
  } else {
    process.stdout.write(text);
  }
}
