import { formatClickLine } from "../parse/click-line.js";

/**
 * A synthetic click-log generator with ground truth: every line it writes is recorded as
 * what it is (a click, a duplicate of an earlier click, or a malformed line), so tests and the
 * benchmark can recount the input independently of the parser and the pipeline.
 * Deterministic for a seed.
 */
export interface GenOptions {
  seed: number;
  lines: number;
  ads: number;
  /** Zipf exponent of ad popularity (0 = uniform). */
  zipfS: number;
  countries: readonly string[];
  users: number;
  /** Event time of the first click, epoch ms. */
  startMs: number;
  /** Event-time span the clicks cover (advancing steadily through it). */
  spanMs: number;
  /** Share of clicks carrying a click_id (the rest get an identity from their position). */
  clickIdRatio: number;
  /** Share of lines that repeat an earlier click with the same click_id. */
  duplicateRatio: number;
  /** Share of malformed lines. */
  malformedRatio: number;
  /** Out-of-order jitter: a click's time is up to this much before the steady clock. */
  disorderMs: number;
  /** Share of clicks that are later than `lateByMs` behind the clock (past the lateness). */
  lateRatio: number;
  lateByMs: number;
  /** Share of clicks that go to one hot ad, `hotAdId` (0: none, the Zipf popularity alone). */
  hotShare: number;
  hotAdId: string;
}

export const DEFAULT_GEN: GenOptions = {
  seed: 1,
  lines: 10_000,
  ads: 1000,
  zipfS: 1.1,
  countries: ["USA", "KOR", "JPN", "DEU", "BRA", "IND", "GBR", "FRA"],
  users: 50_000,
  startMs: Date.UTC(2024, 6, 9, 0, 0, 0),
  spanMs: 5 * 60_000,
  clickIdRatio: 0.5,
  duplicateRatio: 0.02,
  malformedRatio: 0.01,
  disorderMs: 5_000,
  lateRatio: 0,
  lateByMs: 60_000,
  hotShare: 0,
  hotAdId: "ad-hot",
};

export interface TruthClick {
  adId: string;
  timestampMs: number;
  userId: string;
  ip: string;
  country: string;
  clickId?: string;
}

export type TruthLine =
  | { kind: "click"; click: TruthClick; late: boolean }
  | { kind: "duplicate"; click: TruthClick }
  | { kind: "malformed"; what: string };

/** mulberry32: a small, fast, seedable PRNG (deterministic test inputs). */
export function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Samples ranks 0..n-1 with P(k) ∝ 1/(k+1)^s by binary search over the CDF. */
export function zipfSampler(n: number, s: number, rand: () => number): () => number {
  const cdf = new Float64Array(n);
  let sum = 0;
  for (let k = 0; k < n; k++) {
    sum += 1 / (k + 1) ** s;
    cdf[k] = sum;
  }
  return () => {
    const u = rand() * sum;
    let lo = 0;
    let hi = n - 1;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if ((cdf[mid] as number) < u) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
}

function replaceField(line: string, index: number, value: string): string {
  const parts = line.split(", ");
  parts[index] = value;
  return parts.join(", ");
}

const MALFORMED_MAKERS: ReadonlyArray<[string, (good: string) => string]> = [
  ["missing prefix", (g) => g.replace("[AdClickEvent] ", "")],
  ["bad timestamp", (g) => replaceField(g, 1, "2024-02-30 25:61:00")],
  ["bad ip", (g) => replaceField(g, 3, "300.1.2.3")],
  ["missing field", (g) => g.split(", ").slice(0, 3).join(", ")],
  ["empty ad id", (g) => replaceField(g, 0, "[AdClickEvent] ")],
  ["garbage", () => "\u0000\u00ff not a click at all"],
  ["too many fields", (g) => `${g}, extra, fields`],
];

/**
 * Generates `lines` log lines. Returns the text and, line by line, what each line is.
 */
export function generateClickLog(opts: Partial<GenOptions> = {}): {
  text: string;
  truth: TruthLine[];
} {
  const o = { ...DEFAULT_GEN, ...opts };
  const rand = prng(o.seed);
  const adRank = zipfSampler(o.ads, o.zipfS, rand);
  const lines: string[] = [];
  const truth: TruthLine[] = [];
  const withIds: TruthClick[] = [];
  let clickSeq = 0;
  for (let i = 0; i < o.lines; i++) {
    const clockMs = o.startMs + Math.floor((i / o.lines) * o.spanMs);
    const r = rand();
    if (r < o.duplicateRatio && withIds.length > 0) {
      const c = withIds[Math.floor(rand() * withIds.length)] as TruthClick;
      lines.push(formatClickLine(c));
      truth.push({ kind: "duplicate", click: c });
      continue;
    }
    const late = rand() < o.lateRatio;
    const ts = late
      ? clockMs - o.lateByMs - Math.floor(rand() * 30_000)
      : clockMs - Math.floor(rand() * o.disorderMs);
    // No draw without a hot ad: the logs of a seed stay what they were.
    const hot = o.hotShare > 0 && rand() < o.hotShare;
    const click: TruthClick = {
      adId: hot ? o.hotAdId : `ad${String(adRank()).padStart(6, "0")}`,
      // Whole seconds, as the seed format writes them; some with milliseconds (ISO form).
      timestampMs: rand() < 0.1 ? ts : Math.floor(ts / 1000) * 1000,
      userId: `user-${Math.floor(rand() * o.users)}`,
      ip: `${10 + Math.floor(rand() * 200)}.${Math.floor(rand() * 256)}.${Math.floor(rand() * 256)}.${1 + Math.floor(rand() * 254)}`,
      country: o.countries[Math.floor(rand() * o.countries.length)] as string,
    };
    if (rand() < o.clickIdRatio) {
      click.clickId = `clk-${o.seed}-${clickSeq++}`;
      withIds.push(click);
    }
    const line = formatClickLine(click);
    if (r > 1 - o.malformedRatio) {
      const [what, make] = MALFORMED_MAKERS[Math.floor(rand() * MALFORMED_MAKERS.length)] as [
        string,
        (g: string) => string,
      ];
      lines.push(make(line));
      truth.push({ kind: "malformed", what });
      if (click.clickId) withIds.pop();
      continue;
    }
    lines.push(line);
    truth.push({ kind: "click", click, late });
  }
  return { text: `${lines.join("\n")}\n`, truth };
}
