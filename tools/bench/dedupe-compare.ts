/**
 * The dedupe structures side by side in one run: the former `Set<string>` of event ids and
 * the compact exact IdSet (src/windows/dedupe.ts), on the same book-shaped ids (half click
 * ids, half derived ids, 3 % repeats), each given fresh strings decoded from msgpack, as
 * the aggregator gets them from a batch (flat strings; built by concatenation they would be
 * rope strings, and the first look at each would measure flattening). Time per id and bytes
 * per id held.
 */
import { Packr } from "msgpackr";

import { IdSet } from "../../src/windows/dedupe.js";
import { gc } from "./gc.js";

export interface DedupeCompareResult {
  ids: number;
  setNsPerId: number;
  idSetNsPerId: number;
  setBytesPerId: number;
  idSetBytesPerId: number;
  /** Every repetition (ns an id, bytes an id), for the spread. */
  runs: { set: { ns: number; bytes: number }[]; idSet: { ns: number; bytes: number }[] };
}

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

function freshIds(n: number, seed: number): string[] {
  let x = seed >>> 0;
  const rnd = () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return x / 4294967296;
  };
  const out: string[] = new Array(n);
  const packr = new Packr({ useRecords: false });
  for (let i = 0; i < n; i++) {
    const j = rnd() < 0.03 && i > 0 ? Math.floor(rnd() * i) : i;
    if (j % 2 === 0) out[i] = `c:clk-7-${j}`;
    else {
      let s = "o:";
      let h = Math.imul(j, 0x9e3779b1) >>> 0;
      for (let k = 0; k < 16; k++) {
        h = Math.imul(h ^ (h >>> 15), 0x85ebca6b) >>> 0;
        s += B64[h & 63];
      }
      out[i] = s;
    }
  }
  return packr.unpack(packr.pack(out)) as string[];
}

function used(): number {
  const m = process.memoryUsage();
  return m.heapUsed + m.arrayBuffers;
}

/** Adds `ids` fresh ids to a new structure: ns an id, and bytes retained an id. */
function measure(kind: "set" | "idSet", ids: number): { ns: number; bytes: number } {
  // Retained bytes: from before the input existed to after it is dropped, so a structure
  // is charged for what it keeps alive (a Set keeps its id strings; the IdSet keeps none).
  gc();
  const before = used();
  let input = freshIds(ids, 1);
  const t = performance.now();
  let size: number;
  let keep: unknown;
  if (kind === "set") {
    const set = new Set<string>();
    for (const id of input) set.add(id);
    size = set.size;
    keep = set;
  } else {
    const idSet = new IdSet();
    for (const id of input) idSet.add(id);
    size = idSet.size;
    keep = idSet;
  }
  const ms = performance.now() - t;
  input = [];
  gc();
  const bytes = used() - before;
  if (!keep) throw new Error("unreachable");
  return { ns: (ms * 1e6) / ids, bytes: bytes / size };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** Both structures, alternately, `repetitions` times each; medians. */
export function runDedupeCompare(ids: number, repetitions = 3): DedupeCompareResult {
  const set: { ns: number; bytes: number }[] = [];
  const idSet: { ns: number; bytes: number }[] = [];
  for (let r = 0; r < repetitions; r++) {
    set.push(measure("set", ids));
    idSet.push(measure("idSet", ids));
  }
  return {
    ids,
    setNsPerId: Math.round(median(set.map((x) => x.ns))),
    idSetNsPerId: Math.round(median(idSet.map((x) => x.ns))),
    setBytesPerId: Math.round(median(set.map((x) => x.bytes))),
    idSetBytesPerId: Math.round(median(idSet.map((x) => x.bytes))),
    runs: { set, idSet },
  };
}
