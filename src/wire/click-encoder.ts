/**
 * A hand-written encoder of v2 click messages (see batch-codec.ts): byte for byte what
 * msgpackr (useRecords off, moreTypes off) writes for
 * `[2, source, progressMs, flags, [[adId, timestampMs, userId, ip, country, eventId], ...]]`,
 * without building the tuples and without msgpackr's per-value dispatch. The shipper encodes
 * every event it ships, so this is on the hot path; test/unit/click-encoder.test.ts checks
 * it against msgpackr on every kind of value.
 */
import { Buffer } from "node:buffer";
import type { ClickEvent } from "../model.js";

/** Messages are written one after the other into a slab and returned as views of it. */
const SLAB_BYTES = 1 << 20;
let slab = Buffer.allocUnsafeSlow(SLAB_BYTES);
let view = new DataView(slab.buffer, slab.byteOffset, slab.byteLength);
let pos = 0;

function reserve(bytes: number): void {
  if (pos + bytes <= slab.length) return;
  slab = Buffer.allocUnsafeSlow(Math.max(SLAB_BYTES, bytes));
  view = new DataView(slab.buffer, slab.byteOffset, slab.byteLength);
  pos = 0;
}

function writeArrayHeader(length: number): void {
  if (length < 0x10) {
    slab[pos++] = 0x90 | length;
  } else if (length < 0x10000) {
    slab[pos++] = 0xdc;
    slab[pos++] = length >> 8;
    slab[pos++] = length & 0xff;
  } else {
    slab[pos++] = 0xdd;
    view.setUint32(pos, length);
    pos += 4;
  }
}

/** A number as msgpackr writes it with useRecords off and no float32 (ints compact, else float64). */
function writeNumber(value: number): void {
  if (value >>> 0 === value) {
    if (value < 0x80) {
      slab[pos++] = value;
    } else if (value < 0x100) {
      slab[pos++] = 0xcc;
      slab[pos++] = value;
    } else if (value < 0x10000) {
      slab[pos++] = 0xcd;
      slab[pos++] = value >> 8;
      slab[pos++] = value & 0xff;
    } else {
      slab[pos++] = 0xce;
      view.setUint32(pos, value);
      pos += 4;
    }
  } else if (value >> 0 === value) {
    if (value >= -0x20) {
      slab[pos++] = 0x100 + value;
    } else if (value >= -0x80) {
      slab[pos++] = 0xd0;
      slab[pos++] = value + 0x100;
    } else if (value >= -0x8000) {
      slab[pos++] = 0xd1;
      view.setInt16(pos, value);
      pos += 2;
    } else {
      slab[pos++] = 0xd2;
      view.setInt32(pos, value);
      pos += 4;
    }
  } else {
    slab[pos++] = 0xcb;
    view.setFloat64(pos, value);
    pos += 8;
  }
}

/**
 * A string: ASCII (every field of a parsed line) is copied with a 1- or 2-byte header known
 * up front; anything else goes the way msgpackr goes (its own UTF-8 loop, which writes a lone
 * surrogate as 3 bytes, below 64 code units; Buffer's UTF-8 encoder from 64 on).
 */
function writeString(value: string): void {
  const n = value.length;
  if (n < 0x20) {
    const at = pos + 1;
    let i = 0;
    for (; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c >= 0x80) break;
      slab[at + i] = c;
    }
    if (i === n) {
      slab[pos] = 0xa0 | n;
      pos = at + n;
      return;
    }
  } else if (n < 0x100) {
    const at = pos + 2;
    let i = 0;
    for (; i < n; i++) {
      const c = value.charCodeAt(i);
      if (c >= 0x80) break;
      slab[at + i] = c;
    }
    if (i === n) {
      slab[pos] = 0xd9;
      slab[pos + 1] = n;
      pos = at + n;
      return;
    }
  }
  writeStringGeneral(value);
}

function writeStringGeneral(value: string): void {
  const strLength = value.length;
  const headerSize = strLength < 0x20 ? 1 : strLength < 0x100 ? 2 : strLength < 0x10000 ? 3 : 5;
  let length: number;
  if (strLength < 0x40) {
    let p = pos + headerSize;
    for (let i = 0; i < strLength; i++) {
      let c1 = value.charCodeAt(i);
      if (c1 < 0x80) {
        slab[p++] = c1;
      } else if (c1 < 0x800) {
        slab[p++] = (c1 >> 6) | 0xc0;
        slab[p++] = (c1 & 0x3f) | 0x80;
      } else if ((c1 & 0xfc00) === 0xd800 && (value.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
        const c2 = value.charCodeAt(i + 1);
        c1 = 0x10000 + ((c1 & 0x03ff) << 10) + (c2 & 0x03ff);
        i++;
        slab[p++] = (c1 >> 18) | 0xf0;
        slab[p++] = ((c1 >> 12) & 0x3f) | 0x80;
        slab[p++] = ((c1 >> 6) & 0x3f) | 0x80;
        slab[p++] = (c1 & 0x3f) | 0x80;
      } else {
        slab[p++] = (c1 >> 12) | 0xe0;
        slab[p++] = ((c1 >> 6) & 0x3f) | 0x80;
        slab[p++] = (c1 & 0x3f) | 0x80;
      }
    }
    length = p - pos - headerSize;
  } else {
    length = slab.write(value, pos + headerSize, "utf8");
  }
  if (length < 0x20) {
    slab[pos++] = 0xa0 | length;
  } else if (length < 0x100) {
    if (headerSize < 2) slab.copyWithin(pos + 2, pos + 1, pos + 1 + length);
    slab[pos++] = 0xd9;
    slab[pos++] = length;
  } else if (length < 0x10000) {
    if (headerSize < 3) slab.copyWithin(pos + 3, pos + 2, pos + 2 + length);
    slab[pos++] = 0xda;
    slab[pos++] = length >> 8;
    slab[pos++] = length & 0xff;
  } else {
    if (headerSize < 5) slab.copyWithin(pos + 5, pos + 3, pos + 3 + length);
    slab[pos++] = 0xdb;
    view.setUint32(pos, length);
    pos += 4;
  }
  pos += length;
}

/** Most bytes a string takes: 5 header bytes and 3 a UTF-16 unit. */
function bound(s: string): number {
  return 5 + 3 * s.length;
}

/**
 * `[version, source, progress, flags, tuples]` in msgpack, as msgpackr packs it. The result
 * is a view of a shared slab: never written to again, valid as long as it is referenced.
 */
export function encodeClickTuples(
  version: number,
  source: string,
  progress: number | null,
  flags: number,
  events: readonly ClickEvent[],
): Uint8Array {
  let size = 1 + 9 + bound(source) + 9 + 9 + 5;
  for (let i = 0; i < events.length; i++) size += tupleBound(events[i] as ClickEvent);
  reserve(size);
  const start = pos;
  slab[pos++] = 0x95;
  writeNumber(version);
  writeString(source);
  if (progress === null) slab[pos++] = 0xc0;
  else writeNumber(progress);
  writeNumber(flags);
  writeArrayHeader(events.length);
  for (let i = 0; i < events.length; i++) writeTuple(events[i] as ClickEvent);
  const out = slab.subarray(start, pos);
  // Word-aligned like msgpackr, so the next message starts on an 8-byte boundary.
  pos = (pos + 7) & ~7;
  return out;
}

/** Most bytes one event's tuple takes. */
function tupleBound(e: ClickEvent): number {
  return (
    1 + 9 + bound(e.adId) + bound(e.userId) + bound(e.ip) + bound(e.country) + bound(e.eventId)
  );
}

function writeTuple(e: ClickEvent): void {
  slab[pos++] = 0x96;
  writeString(e.adId);
  writeNumber(e.timestampMs);
  writeString(e.userId);
  writeString(e.ip);
  writeString(e.country);
  writeString(e.eventId);
}

/**
 * Event tuples encoded one at a time as they are parsed (the events themselves need not be
 * kept), to be wrapped into a message by `take`: the same bytes as encodeClickMessage of the
 * same events, in the same order.
 */
export class ClickTupleWriter {
  private buf = Buffer.allocUnsafeSlow(64 * 1024);
  private bufView = new DataView(this.buf.buffer, this.buf.byteOffset, this.buf.byteLength);
  private length = 0;
  /** Events appended since the last take. */
  count = 0;
  /** Where the last message taken has its flags (one byte: they are below 0x80). */
  flagsOffset = 0;

  append(e: ClickEvent): void {
    const need = tupleBound(e);
    if (this.length + need > this.buf.length) {
      const bigger = Buffer.allocUnsafeSlow(Math.max(this.buf.length * 2, this.length + need));
      this.buf.copy(bigger, 0, 0, this.length);
      this.buf = bigger;
      this.bufView = new DataView(bigger.buffer, bigger.byteOffset, bigger.byteLength);
    }
    // The writers above write to the module's slab: point them at this buffer for a moment.
    const savedSlab = slab;
    const savedView = view;
    const savedPos = pos;
    slab = this.buf;
    view = this.bufView;
    pos = this.length;
    writeTuple(e);
    this.length = pos;
    slab = savedSlab;
    view = savedView;
    pos = savedPos;
    this.count++;
  }

  /**
   * The message `[version, source, progress, flags, <the tuples appended>]` (as
   * encodeClickTuples writes it for the same events), and a fresh start.
   */
  take(version: number, source: string, progress: number | null, flags: number): Uint8Array {
    if (flags >>> 0 !== flags || flags >= 0x80) throw new RangeError(`flags ${flags} out of range`);
    reserve(1 + 9 + bound(source) + 9 + 9 + 5 + this.length);
    const start = pos;
    slab[pos++] = 0x95;
    writeNumber(version);
    writeString(source);
    if (progress === null) slab[pos++] = 0xc0;
    else writeNumber(progress);
    this.flagsOffset = pos - start;
    writeNumber(flags);
    writeArrayHeader(this.count);
    this.buf.copy(slab, pos, 0, this.length);
    pos += this.length;
    const out = slab.subarray(start, pos);
    pos = (pos + 7) & ~7;
    this.length = 0;
    this.count = 0;
    return out;
  }
}
