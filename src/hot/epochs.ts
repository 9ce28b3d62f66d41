/**
 * Who counts a hot ad's click: the partition aggregator or one of the shards of an epoch.
 * Pure (no I/O, no clock); the partition aggregator's state holds the table and its snapshot.
 *
 * An epoch starts when the aggregator splits an ad: from then on the ad's clicks belong to
 * shard `shardOfEvent(eventId, shards)` of the epoch, except in the minutes the aggregator
 * already held counts of the ad in (`excluded`: it keeps them, so its dedupe of the ad's ids
 * there stays whole). A merge closes the epoch: it keeps exactly the minutes it was routed
 * clicks in (`routed`), every other minute of the ad goes back to the aggregator. A closed epoch
 * whose routed minutes are all purged is retired. Owners change only for minutes nobody has
 * counted the ad in, so each (ad, minute, event id) has one owner for the minute's whole life
 * (docs/hot-ads.md).
 */
import { fmix32, fnv1a32Utf8 } from "../partition.js";

export interface HotEpoch {
  /** Per partition, from 1, in the order the epochs were opened. */
  readonly id: number;
  readonly adId: string;
  readonly shards: number;
  /** The first stream sequence whose clicks the epoch's shards count. */
  readonly startSeq: number;
  /** Minutes (starts) the aggregator kept counting the ad in. */
  readonly excluded: Set<number>;
  /** Minutes the epoch was routed at least one click in. */
  readonly routed: Set<number>;
  /** The sequence of the merge: from the next one the epoch owns only `routed` (null: open). */
  closedAtSeq: number | null;
}

export interface HotEpochs {
  /** Live epochs by ad, oldest first; at most one open epoch per ad, the last. */
  readonly byAd: Map<string, HotEpoch[]>;
  nextId: number;
}

/** Plain data of one epoch (snapshots, KV). */
export interface HotEpochSnapshot {
  id: number;
  adId: string;
  shards: number;
  startSeq: number;
  excluded: number[];
  routed: number[];
  closedAtSeq: number | null;
}

export interface HotEpochsSnapshot {
  nextId: number;
  epochs: HotEpochSnapshot[];
}

/** Shard counts are bounded: a shard is an actor with its own lease and snapshot. */
export const MAX_SHARDS = 64;

export function createHotEpochs(): HotEpochs {
  return { byAd: new Map(), nextId: 1 };
}

/**
 * The shard of an event id among `shards`: FNV-1a mixed by fmix32 (the partition hash, over
 * the event id instead of the ad id, so it spreads an ad's clicks evenly whatever its
 * partition). Frozen: changing it would move ids between the shards of a running epoch.
 */
export function shardOfEvent(eventId: string, shards: number): number {
  return fmix32(fnv1a32Utf8(eventId)) % shards;
}

/**
 * The epoch that owns the ad's clicks of the minute, or null when the aggregator does. O(1)
 * for an ad that is not hot (one Map lookup, which the caller skips when the table is empty).
 */
export function ownerOf(t: HotEpochs, adId: string, minuteStartMs: number): HotEpoch | null {
  const list = t.byAd.get(adId);
  if (list === undefined) return null;
  for (let i = 0; i < list.length; i++) {
    const e = list[i] as HotEpoch;
    if (e.closedAtSeq === null) {
      if (!e.excluded.has(minuteStartMs)) return e;
    } else if (e.routed.has(minuteStartMs)) return e;
  }
  return null;
}

/** The open epoch of an ad (null: the ad is not split now). */
export function openEpochOf(t: HotEpochs, adId: string): HotEpoch | null {
  const list = t.byAd.get(adId);
  const last = list?.[list.length - 1];
  return last !== undefined && last.closedAtSeq === null ? last : null;
}

/**
 * Splits an ad from `startSeq` on. `heldMinutes`: every minute the aggregator holds a count of
 * the ad in now (excluded), plus — implicitly — the routed minutes of the ad's closed epochs,
 * which keep their owner.
 *
 * @throws RangeError when the ad is already split, or for a shard count outside 2..64.
 */
export function openEpoch(
  t: HotEpochs,
  adId: string,
  shards: number,
  startSeq: number,
  heldMinutes: Iterable<number>,
): HotEpoch {
  if (!Number.isSafeInteger(shards) || shards < 2 || shards > MAX_SHARDS) {
    throw new RangeError(`shards must be an integer in 2..${MAX_SHARDS}, got ${shards}`);
  }
  if (openEpochOf(t, adId) !== null) throw new RangeError(`ad ${adId} is already split`);
  const e: HotEpoch = {
    id: t.nextId++,
    adId,
    shards,
    startSeq,
    excluded: new Set(heldMinutes),
    routed: new Set(),
    closedAtSeq: null,
  };
  const list = t.byAd.get(adId);
  if (list) list.push(e);
  else t.byAd.set(adId, [e]);
  return e;
}

/** Merges an ad back at `seq`: its open epoch keeps only its routed minutes. */
export function closeEpoch(t: HotEpochs, adId: string, seq: number): HotEpoch | null {
  const e = openEpochOf(t, adId);
  if (e === null) return null;
  e.closedAtSeq = seq;
  e.excluded.clear();
  return e;
}

/**
 * The aggregator purged every minute ending at or before `purgedThroughMs` (a minute is
 * `[start, start + minuteMs)`): forgets them, and retires closed epochs left with no minute.
 * Returns the retired epochs.
 */
export function purgeEpochMinutes(
  t: HotEpochs,
  purgedThroughMs: number,
  minuteMs: number,
): HotEpoch[] {
  const retired: HotEpoch[] = [];
  for (const [adId, list] of t.byAd) {
    for (const e of list) {
      for (const m of e.routed) if (m + minuteMs <= purgedThroughMs) e.routed.delete(m);
      for (const m of e.excluded) if (m + minuteMs <= purgedThroughMs) e.excluded.delete(m);
    }
    const kept = list.filter((e) => e.closedAtSeq === null || e.routed.size > 0);
    if (kept.length !== list.length) {
      for (const e of list) if (!kept.includes(e)) retired.push(e);
      if (kept.length === 0) t.byAd.delete(adId);
      else t.byAd.set(adId, kept);
    }
  }
  return retired.sort((a, b) => a.id - b.id);
}

/** Every live epoch, by id. */
export function liveEpochs(t: HotEpochs): HotEpoch[] {
  return [...t.byAd.values()].flat().sort((a, b) => a.id - b.id);
}

/** Epochs (ascending ids) that were routed clicks of the minute. */
export function epochsRoutedIn(t: HotEpochs, minuteStartMs: number): HotEpoch[] {
  return liveEpochs(t).filter((e) => e.routed.has(minuteStartMs));
}

const sorted = (s: Set<number>) => [...s].sort((a, b) => a - b);

export function snapshotEpoch(e: HotEpoch): HotEpochSnapshot {
  return {
    id: e.id,
    adId: e.adId,
    shards: e.shards,
    startSeq: e.startSeq,
    excluded: sorted(e.excluded),
    routed: sorted(e.routed),
    closedAtSeq: e.closedAtSeq,
  };
}

export function snapshotHotEpochs(t: HotEpochs): HotEpochsSnapshot {
  return { nextId: t.nextId, epochs: liveEpochs(t).map(snapshotEpoch) };
}

export function restoreHotEpochs(s: HotEpochsSnapshot | undefined): HotEpochs {
  const t = createHotEpochs();
  if (!s) return t;
  t.nextId = s.nextId;
  for (const e of [...s.epochs].sort((a, b) => a.id - b.id)) {
    const epoch: HotEpoch = {
      id: e.id,
      adId: e.adId,
      shards: e.shards,
      startSeq: e.startSeq,
      excluded: new Set(e.excluded),
      routed: new Set(e.routed),
      closedAtSeq: e.closedAtSeq,
    };
    const list = t.byAd.get(e.adId);
    if (list) list.push(epoch);
    else t.byAd.set(e.adId, [epoch]);
  }
  return t;
}
