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
}

/**
 * An independent, brute-force recount of what the aggregation must produce under the default
 * late policy (amend): every unique click counted once, in its own minute, whatever order,
 * lateness or source it came in. Duplicates (same click_id) count once. `counted`, when
 * given, says which clicks count at all (policy drop: those the pipeline did not report late).
 */
export function expectedAggregates(
  arrival: readonly TruthLine[],
  o: { topN: number; counted?: (c: TruthClick) => boolean },
): ExpectedAggregates {
  const adMinute = new Map<string, number>();
  const adMinuteCountry = new Map<string, number>();
  for (const c of uniqueClicks([arrival])) {
    if (o.counted && !o.counted(c)) continue;
    const minute = Math.floor(c.timestampMs / 60_000) * 60_000;
    const k = `${c.adId}|${minute}`;
    adMinute.set(k, (adMinute.get(k) ?? 0) + 1);
    const kc = `${k}|${c.country.toUpperCase()}`;
    adMinuteCountry.set(kc, (adMinuteCountry.get(kc) ?? 0) + 1);
  }
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
  return { adMinute, adMinuteCountry, topByMinute };
}

/**
 * Under policy drop, which clicks count: a click is counted once unless every copy of it in
 * the input (the line and its duplicates) was reported late (CLICKS_LATE), given as the
 * multiset of the late events' keys (see {@link eventKey}).
 */
export function countedUnderDrop(
  arrival: readonly TruthLine[],
  lateKeys: readonly string[],
): (c: TruthClick) => boolean {
  const copies = new Map<string, number>();
  for (const t of arrival) {
    if (t.kind === "malformed") continue;
    const k = clickKey(t.click);
    copies.set(k, (copies.get(k) ?? 0) + 1);
  }
  const late = new Map<string, number>();
  for (const k of lateKeys) late.set(k, (late.get(k) ?? 0) + 1);
  return (c) => (late.get(clickKey(c)) ?? 0) < (copies.get(clickKey(c)) ?? 0);
}
