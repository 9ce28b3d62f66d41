/**
 * Partitioning of ads. Pure functions.
 *
 * FROZEN FOREVER: `partitionOf` is FNV-1a 32-bit over the UTF-8 bytes of the ad id, mixed by
 * MurmurHash3's 32-bit finaliser (fmix32: FNV-1a alone spreads sequential ids like ad0..ad99999
 * unevenly over 256+ partitions), modulo the partition count. Every ad's minute windows and counts live in the partition this
 * function picks; changing the hash (or the encoding, or the reduction) would move ads
 * between partitions and split their windows across old and new owners. The pinned table
 * in test/unit/partition.test.ts exists to catch any such change.
 */

/** Inclusive bounds for the partition count. */
export const MIN_PARTITIONS = 1;
export const MAX_PARTITIONS = 4096;

const FNV32_OFFSET_BASIS = 0x811c9dc5;
const FNV32_PRIME = 0x01000193;

/** One FNV-1a step: xor the byte in, multiply by the prime modulo 2³². */
function fnvStep(hash: number, byte: number): number {
  return Math.imul(hash ^ byte, FNV32_PRIME) >>> 0;
}

/**
 * FNV-1a 32-bit over the UTF-8 encoding of `text`, encoded on the fly (no Buffer). Lone
 * surrogates encode as U+FFFD, exactly as `Buffer.from(text, "utf8")` and TextEncoder do.
 */
export function fnv1a32Utf8(text: string): number {
  let hash = FNV32_OFFSET_BASIS;
  const n = text.length;
  for (let i = 0; i < n; i++) {
    let c = text.charCodeAt(i);
    if (c < 0x80) {
      hash = fnvStep(hash, c);
    } else if (c < 0x800) {
      hash = fnvStep(hash, 0xc0 | (c >> 6));
      hash = fnvStep(hash, 0x80 | (c & 0x3f));
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const next = i + 1 < n ? text.charCodeAt(i + 1) : 0;
        if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
          const cp = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00);
          i++;
          hash = fnvStep(hash, 0xf0 | (cp >> 18));
          hash = fnvStep(hash, 0x80 | ((cp >> 12) & 0x3f));
          hash = fnvStep(hash, 0x80 | ((cp >> 6) & 0x3f));
          hash = fnvStep(hash, 0x80 | (cp & 0x3f));
          continue;
        }
        c = 0xfffd; // lone surrogate
      }
      hash = fnvStep(hash, 0xe0 | (c >> 12));
      hash = fnvStep(hash, 0x80 | ((c >> 6) & 0x3f));
      hash = fnvStep(hash, 0x80 | (c & 0x3f));
    }
  }
  return hash;
}

/** Throws RangeError unless `partitionCount` is an integer in 1..4096. */
export function assertPartitionCount(partitionCount: number): void {
  if (
    !Number.isInteger(partitionCount) ||
    partitionCount < MIN_PARTITIONS ||
    partitionCount > MAX_PARTITIONS
  ) {
    throw new RangeError(
      `partitionCount must be an integer in ${MIN_PARTITIONS}..${MAX_PARTITIONS}, got ${partitionCount}`,
    );
  }
}

/** MurmurHash3's 32-bit finaliser: every input bit affects every output bit. */
export function fmix32(h: number): number {
  let x = h >>> 0;
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b) >>> 0;
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35) >>> 0;
  x ^= x >>> 16;
  return x >>> 0;
}

/** The partition (0..partitionCount-1) that owns `adId`. Frozen: see the module comment. */
export function partitionOf(adId: string, partitionCount: number): number {
  assertPartitionCount(partitionCount);
  return fmix32(fnv1a32Utf8(adId)) % partitionCount;
}

/** The NATS subject of partition `p` under `prefix`, e.g. `clicks.raw.7`. */
export function partitionSubject(prefix: string, p: number): string {
  if (!Number.isInteger(p) || p < 0 || p >= MAX_PARTITIONS) {
    throw new RangeError(`partition must be an integer in 0..${MAX_PARTITIONS - 1}, got ${p}`);
  }
  return `${prefix}.${p}`;
}
