import type { JetStreamClient } from "@nats-io/jetstream";
import { ClickProducer } from "../ingest/click-producer.js";
import type { ClickObject } from "../parse/click-line.js";
import { DEFAULT_GEN, prng, zipfSampler } from "./click-log.js";

/**
 * Synthetic live traffic for `adclick up --generate RATE`: clicks at about `ratePerSecond`,
 * stamped with the current time (a little disorder), Zipf-popular ads, published through
 * the library producer. Stops when `stop()` is called.
 */
export function startLiveGenerator(
  js: JetStreamClient,
  o: { ratePerSecond: number; partitions: number; ads?: number; seed?: number },
): { stop(): Promise<void>; sent(): number } {
  const rand = prng(o.seed ?? Date.now());
  const ads = o.ads ?? 10_000;
  const adRank = zipfSampler(ads, DEFAULT_GEN.zipfS, rand);
  const producer = new ClickProducer(js, { partitions: o.partitions, source: "generator" });
  let sent = 0;
  let stopped = false;
  const tickMs = 100;
  let seq = 0;
  const loop = (async () => {
    let next = Date.now();
    while (!stopped) {
      const n = Math.max(1, Math.round((o.ratePerSecond * tickMs) / 1000));
      const now = Date.now();
      const clicks: ClickObject[] = [];
      for (let i = 0; i < n; i++) {
        clicks.push({
          ad_id: `ad${String(adRank()).padStart(6, "0")}`,
          timestamp: now - Math.floor(rand() * 3000),
          user_id: `user-${Math.floor(rand() * 100_000)}`,
          ip: `10.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${1 + Math.floor(rand() * 254)}`,
          country: DEFAULT_GEN.countries[
            Math.floor(rand() * DEFAULT_GEN.countries.length)
          ] as string,
          click_id: `gen-${process.pid}-${seq++}`,
        });
      }
      await producer.send(clicks).catch(() => {});
      sent += clicks.length;
      next += tickMs;
      await new Promise((r) => setTimeout(r, Math.max(0, next - Date.now())));
    }
  })();
  return {
    async stop() {
      stopped = true;
      await loop;
      await producer.close().catch(() => {});
    },
    sent: () => sent,
  };
}
