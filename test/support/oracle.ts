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
