/**
 * Hot-ad detection for one partition: which ads take so large a share of the partition's
 * clicks that their counting should be split over several shards, and when they have cooled
 * enough to merge back. Pure and deterministic: no I/O, no clock, no randomness; processing
 * time is the `nowMs` argument (the JetStream message timestamp), so a restore + replay makes
 * the same decisions.
 *
 * Rules, over the sliding period of {@link HeavyHittersState} (the last `buckets` closed
 * buckets; bounds are the sketch's lower/upper bounds; rate = clicks per second of period):
 * - An ad goes **hot** when its lower-bound share of the period's clicks ≥ `hotShare` AND its
 *   lower-bound rate ≥ `hotMinRatePerSec` (lower bounds: the sketch's overestimates never
 *   make an ad hot). Decision `split` with K = clamp(ceil(rate / shardRatePerSec), 2,
 *   maxShards) shards, rate and share being the lower bounds.
 * - At most `maxHotAds` ads are hot at once. When more qualify than there is room for, the
 *   highest lower bounds win, ties by adId. A hot ad is never displaced by a stronger one:
 *   it keeps its place until it cools (displacing would flap).
 * - A hot ad **cools** when its upper-bound share < hotShare / 2 OR its upper-bound rate <
 *   hotMinRatePerSec / 2 (upper bounds and half the thresholds: hysteresis, so an ad
 *   hovering at the threshold does not flap), judged only on a period that started at or
 *   after the period end at which it went hot — it stays hot at least one whole period.
 *   Decision `merge`, with those upper-bound rate and share.
 * - Nothing is decided on a period that is not full (see {@link coverageOf}).
 * - Decisions are made only when a bucket closes (the first observation at or after a
 *   bucket boundary), so they do not depend on how messages are batched, provided the caller
 *   observes every message with its timestamp. A time gap closing several buckets gives one
 *   evaluation, of the newest period. Merges come first (by adId), then splits (by rank).
 *
 * The detector tracks the hot set itself: a decision is returned once, when the ad changes
 * state, and the hot set is part of the snapshot. The caller acts on each decision (and must
 * not lose it: decide from a restored snapshot and the replayed log, as for every output).
 * A hot ad's shard count is fixed when it goes hot; a rate change while hot does not
 * re-shard it.
 */
import { ConfigError } from "../errors.js";
import {
  type AdCounts,
  candidates,
  coverageOf,
  createHeavyHitters,
  type Estimate,
  estimate,
  type HeavyHittersOptions,
  type HeavyHittersSnapshot,
  type HeavyHittersState,
  observe,
  offerBatch,
  type ResolvedHeavyHittersOptions,
  resolveHeavyHittersOptions,
  restoreHeavyHitters,
  snapshotHeavyHitters,
  totalOf,
} from "./heavy-hitters.js";

export const DEFAULT_HOT_SHARE = 0.3;
export const DEFAULT_HOT_MIN_RATE_PER_SEC = 5000;
export const DEFAULT_SHARD_RATE_PER_SEC = 20_000;
export const DEFAULT_MAX_SHARDS = 4;
export const DEFAULT_MAX_HOT_ADS = 4;
/** maxShards may not exceed this. */
export const MAX_SHARDS_LIMIT = 64;

export interface HotDetectorOptions extends HeavyHittersOptions {
  /** Share of the partition's clicks that makes an ad hot, in (0, 1]. Default 0.3. */
  hotShare?: number;
  /** Clicks per second an ad also needs to go hot (integer ≥ 1). Default 5000. */
  hotMinRatePerSec?: number;
  /** Clicks per second one shard takes: K = ceil(rate / this), clamped (integer ≥ 1). Default 20 000. */
  shardRatePerSec?: number;
  /** Most shards of one hot ad (integer 2..64). Default 4. */
  maxShards?: number;
  /** Most hot ads at once in the partition (integer ≥ 1). Default 4. */
  maxHotAds?: number;
}

export interface ResolvedHotDetectorOptions extends ResolvedHeavyHittersOptions {
  hotShare: number;
  hotMinRatePerSec: number;
  shardRatePerSec: number;
  maxShards: number;
  maxHotAds: number;
}

function intSetting(setting: string, v: unknown, min: number, max?: number): number {
  if (
    typeof v !== "number" ||
    !Number.isSafeInteger(v) ||
    v < min ||
    (max !== undefined && v > max)
  ) {
    const range = max === undefined ? `>= ${min}` : `in ${min}..${max}`;
    throw new ConfigError(setting, `must be an integer ${range}, got ${String(v)}`);
  }
  return v;
}

/**
 * Validates and completes the options.
 *
 * @throws ConfigError naming the first invalid option.
 */
export function resolveHotDetectorOptions(
  opts: HotDetectorOptions = {},
): ResolvedHotDetectorOptions {
  const hotShare = opts.hotShare ?? DEFAULT_HOT_SHARE;
  if (typeof hotShare !== "number" || !(hotShare > 0 && hotShare <= 1)) {
    throw new ConfigError("hotShare", `must be a number in (0, 1], got ${String(hotShare)}`);
  }
  return {
    ...resolveHeavyHittersOptions(opts),
    hotShare,
    hotMinRatePerSec: intSetting(
      "hotMinRatePerSec",
      opts.hotMinRatePerSec ?? DEFAULT_HOT_MIN_RATE_PER_SEC,
      1,
    ),
    shardRatePerSec: intSetting(
      "shardRatePerSec",
      opts.shardRatePerSec ?? DEFAULT_SHARD_RATE_PER_SEC,
      1,
    ),
    maxShards: intSetting("maxShards", opts.maxShards ?? DEFAULT_MAX_SHARDS, 2, MAX_SHARDS_LIMIT),
    maxHotAds: intSetting("maxHotAds", opts.maxHotAds ?? DEFAULT_MAX_HOT_ADS, 1),
  };
}

/** An ad the detector considers hot. */
export interface HotAd {
  adId: string;
  /** Shards it was split into. */
  shards: number;
  /** End of the period that made it hot: cooling is judged on periods starting from here. */
  sinceMs: number;
  /** Lower-bound rate and share at the latest evaluation (for status and metrics). */
  ratePerSec: number;
  share: number;
}

export type HotDecision =
  | { kind: "split"; adId: string; shards: number; ratePerSec: number; share: number }
  | { kind: "merge"; adId: string; ratePerSec: number; share: number };

export interface HotDetectorState {
  readonly options: ResolvedHotDetectorOptions;
  readonly sketch: HeavyHittersState;
  /** The hot ads, by adId. */
  readonly hot: Map<string, HotAd>;
}

/** Returned when nothing is decided: no allocation on the per-message path. */
const NO_DECISIONS: readonly HotDecision[] = Object.freeze([]);

/**
 * A fresh detector with an empty sketch and no hot ad.
 *
 * @throws ConfigError naming the first invalid option.
 */
export function createHotDetector(opts: HotDetectorOptions = {}): HotDetectorState {
  const options = resolveHotDetectorOptions(opts);
  return { options, sketch: createHeavyHitters(options), hot: new Map() };
}

/** K for a rate: clamp(ceil(rate / shardRatePerSec), 2, maxShards). */
export function shardsFor(o: ResolvedHotDetectorOptions, ratePerSec: number): number {
  return Math.min(o.maxShards, Math.max(2, Math.ceil(ratePerSec / o.shardRatePerSec)));
}

function rateOf(o: ResolvedHotDetectorOptions, clicks: number): number {
  return (clicks * 1000) / o.periodMs;
}

function shareOf(clicks: number, total: number): number {
  return total > 0 ? clicks / total : 0;
}

/** Decides on the current period (called when a bucket has closed). */
function evaluate(d: HotDetectorState): readonly HotDecision[] {
  const o = d.options;
  const sketch = d.sketch;
  const coverage = coverageOf(sketch);
  if (!coverage.full) return NO_DECISIONS;
  const total = totalOf(sketch);
  const decisions: HotDecision[] = [];

  const hotIds = [...d.hot.keys()].sort();
  for (const adId of hotIds) {
    const h = d.hot.get(adId) as HotAd;
    const e = estimate(sketch, adId);
    if (coverage.startMs >= h.sinceMs) {
      const upperShare = shareOf(e.upper, total);
      // Rates compared in integers: upper/period < min/2 ⇔ 2000·upper < min·periodMs.
      if (upperShare < o.hotShare / 2 || 2000 * e.upper < o.hotMinRatePerSec * o.periodMs) {
        d.hot.delete(adId);
        decisions.push({ kind: "merge", adId, ratePerSec: rateOf(o, e.upper), share: upperShare });
        continue;
      }
    }
    h.ratePerSec = rateOf(o, e.lower);
    h.share = shareOf(e.lower, total);
  }

  let room = o.maxHotAds - d.hot.size;
  if (room > 0 && total > 0) {
    // Sorted by lower bound desc: both conditions grow with it, so the first miss ends it.
    for (const c of candidates(sketch)) {
      if (room === 0) break;
      const share = shareOf(c.lower, total);
      if (share < o.hotShare || 1000 * c.lower < o.hotMinRatePerSec * o.periodMs) break;
      if (d.hot.has(c.adId)) continue;
      const ratePerSec = rateOf(o, c.lower);
      const shards = shardsFor(o, ratePerSec);
      d.hot.set(c.adId, { adId: c.adId, shards, sinceMs: coverage.endMs, ratePerSec, share });
      decisions.push({ kind: "split", adId: c.adId, shards, ratePerSec, share });
      room--;
    }
  }
  return decisions.length === 0 ? NO_DECISIONS : decisions;
}

/**
 * Advances processing time (a message without clicks, an idle tick). Returns the decisions
 * made if this closed a bucket, else none. Time going backwards or not finite changes
 * nothing (see {@link observe}); never throws.
 */
export function observeTime(d: HotDetectorState, nowMs: number): readonly HotDecision[] {
  return observe(d.sketch, nowMs) > 0 ? evaluate(d) : NO_DECISIONS;
}

/**
 * One message: advances time to its timestamp — deciding first if that closed a bucket, so
 * the message's clicks count in the bucket it belongs to — then offers its clicks, summed
 * per ad by the caller. Returns the decisions made.
 *
 * @throws RangeError, before changing anything, when a count is not a positive integer.
 */
export function observeMessage(
  d: HotDetectorState,
  counts: AdCounts,
  nowMs: number,
): readonly HotDecision[] {
  // offerBatch checks every count before it moves time.
  const closed = offerBatch(d.sketch, counts, nowMs);
  return closed > 0 ? evaluate(d) : NO_DECISIONS;
}

/** A candidate as status shows it. */
export interface CandidateView {
  adId: string;
  lowerRatePerSec: number;
  upperRatePerSec: number;
  lowerShare: number;
  upperShare: number;
}

export interface HotView {
  /** The hot ads, by adId, with their rate and share at the latest evaluation. */
  hot: HotAd[];
  /** The strongest candidates of the current period (by lower bound, then adId). */
  top: CandidateView[];
  /** Clicks per second over the period (exact). */
  totalRatePerSec: number;
  /** How much of the period the sketch has seen, and whether it is full. */
  coveredMs: number;
  full: boolean;
  /** End of the current period (start of the open bucket). */
  periodEndMs: number;
}

/** Copies of the hot ads, by adId. */
function hotAdsById(d: HotDetectorState): HotAd[] {
  return [...d.hot.values()]
    .map((h) => ({ ...h }))
    .sort((a, b) => (a.adId < b.adId ? -1 : a.adId > b.adId ? 1 : 0));
}

/** For status and metrics: the hot ads and the `topN` (default 5) strongest candidates. */
export function hotView(d: HotDetectorState, topN = 5): HotView {
  const o = d.options;
  const total = totalOf(d.sketch);
  const coverage = coverageOf(d.sketch);
  // Status asks for none on every batch: no sorting of the sketch's candidates then.
  const top = (topN > 0 ? candidates(d.sketch).slice(0, topN) : []).map((c: Estimate) => ({
    adId: c.adId,
    lowerRatePerSec: rateOf(o, c.lower),
    upperRatePerSec: rateOf(o, c.upper),
    lowerShare: shareOf(c.lower, total),
    upperShare: shareOf(c.upper, total),
  }));
  return {
    hot: hotAdsById(d),
    top,
    totalRatePerSec: rateOf(o, total),
    coveredMs: coverage.coveredMs,
    full: coverage.full,
    periodEndMs: coverage.endMs,
  };
}

/** Plain data (no Map, no Infinity, no undefined): JSON- and msgpack-safe. */
export interface HotDetectorSnapshot {
  v: 1;
  sketch: HeavyHittersSnapshot;
  /** By adId. */
  hot: HotAd[];
}

export function snapshotHotDetector(d: HotDetectorState): HotDetectorSnapshot {
  return { v: 1, sketch: snapshotHeavyHitters(d.sketch), hot: hotAdsById(d) };
}

/**
 * A detector that continues exactly as the snapshotted one would have (given the same
 * options). The hot set is always kept; when the options change the sketch's shape, the
 * sketch starts empty (see {@link restoreHeavyHitters}) and nothing is decided until its
 * period is full again.
 *
 * @throws ConfigError for invalid options; RangeError for a snapshot that is not one.
 */
export function restoreHotDetector(
  snap: HotDetectorSnapshot,
  opts: HotDetectorOptions = {},
): HotDetectorState {
  if (snap.v !== 1) throw new RangeError(`unknown hot-detector snapshot version ${snap.v}`);
  const options = resolveHotDetectorOptions(opts);
  const sketch = restoreHeavyHitters(snap.sketch, options);
  const hot = new Map<string, HotAd>();
  for (const h of snap.hot) hot.set(h.adId, { ...h });
  return { options, sketch, hot };
}
