import type { TruthClick, TruthLine } from "../../src/gen/click-log.js";
import type { ClickEvent } from "../../src/model.js";

/**
 * The independent recount: what the input *is*, from the generator's ground truth — not from
 * the parser or the pipeline. A click is identified by its click_id when it has one (a
 * duplicate line repeats one), else it is unique by construction.
 */
export function uniqueClicks(files: ReadonlyArray<readonly TruthLine[]>): TruthClick[] {
  const seen = new Set<string>();
  const out: TruthClick[] = [];
  for (const truth of files) {
    for (const t of truth) {
      if (t.kind !== "click") continue;
      if (t.click.clickId !== undefined) {
        if (seen.has(t.click.clickId)) continue;
        seen.add(t.click.clickId);
      }
      out.push(t.click);
    }
  }
  return out;
}

/** A canonical text form of a click, for comparing multisets exactly. */
export function clickKey(c: TruthClick): string {
  return `${c.adId}|${c.timestampMs}|${c.userId}|${c.ip}|${c.country}|${c.clickId ?? ""}`;
}

export function eventKey(e: ClickEvent): string {
  const clickId = e.eventId.startsWith("c:") ? e.eventId.slice(2) : "";
  return `${e.adId}|${e.timestampMs}|${e.userId}|${e.ip}|${e.country}|${clickId}`;
}

export function sortedKeys<T>(items: readonly T[], key: (t: T) => string): string[] {
  return items.map(key).sort();
}

export interface ExpectedAggregates {
  /** `${adId}|${minuteStartMs}` → clicks */
  adMinute: Map<string, number>;
  /** `${adId}|${minuteStartMs}|${country}` → clicks */
  adMinuteCountry: Map<string, number>;
  /** minute → its top N (count desc, ad_id asc) */
  topByMinute: Map<number, { adId: string; count: number }[]>;
  lateDropped: number;
}

/**
 * An independent, brute-force recount of what the aggregation must produce for clicks in
 * their arrival order: per partition, an event is late when the end of its minute is at or
 * before (largest event time seen so far in the partition, itself included) − lateness.
 * Late events are dropped or counted per policy; duplicates (same click_id) count once.
 * Partition membership uses the same (frozen) partition function: it is the definition of
 * which events share a watermark.
 */
export function expectedAggregates(
  arrival: readonly TruthLine[],
  o: { partitions: number; allowedLatenessMs: number; policy: "drop" | "correct"; topN: number },
  partitionOf: (adId: string, n: number) => number,
): ExpectedAggregates {
  const maxTs = new Map<number, number>();
  const seen = new Set<string>();
  const adMinute = new Map<string, number>();
  const adMinuteCountry = new Map<string, number>();
  let lateDropped = 0;
  arrival.forEach((t, i) => {
    if (t.kind === "malformed") return;
    const c = t.click;
    const p = partitionOf(c.adId, o.partitions);
    const max = Math.max(maxTs.get(p) ?? Number.NEGATIVE_INFINITY, c.timestampMs);
    maxTs.set(p, max);
    const minute = Math.floor(c.timestampMs / 60_000) * 60_000;
    const late = minute + 60_000 <= max - o.allowedLatenessMs;
    const id = c.clickId ?? `line-${i}`;
    if (seen.has(id)) return;
    if (late && o.policy === "drop") {
      lateDropped++;
      return;
    }
    seen.add(id);
    const k = `${c.adId}|${minute}`;
    adMinute.set(k, (adMinute.get(k) ?? 0) + 1);
    const kc = `${k}|${c.country.toUpperCase()}`;
    adMinuteCountry.set(kc, (adMinuteCountry.get(kc) ?? 0) + 1);
  });
  const perMinute = new Map<number, { adId: string; count: number }[]>();
  for (const [k, count] of adMinute) {
    const [adId, minute] = k.split("|") as [string, string];
    const list = perMinute.get(Number(minute)) ?? [];
    list.push({ adId, count });
    perMinute.set(Number(minute), list);
  }
  const topByMinute = new Map<number, { adId: string; count: number }[]>();
  for (const [minute, list] of perMinute) {
    list.sort((a, b) => b.count - a.count || (a.adId < b.adId ? -1 : a.adId > b.adId ? 1 : 0));
    topByMinute.set(minute, list.slice(0, o.topN));
  }
  return { adMinute, adMinuteCountry, topByMinute, lateDropped };
}
