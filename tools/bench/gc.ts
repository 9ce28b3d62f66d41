/**
 * A full garbage collection, for the in-process memory measures. `node --expose-gc` (as
 * `npm run bench` runs) provides `gc`; `adclick bench` runs without that flag, so the flag is
 * turned on at run time and the function taken from a fresh context (V8 installs `gc` in
 * contexts created after the flag is set).
 */
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";

let collect: (() => void) | undefined = (globalThis as { gc?: () => void }).gc;
if (!collect) {
  try {
    setFlagsFromString("--expose-gc");
    collect = runInNewContext("gc") as () => void;
  } catch {
    collect = undefined;
  }
}

export function gc(): void {
  collect?.();
}

/** True when gc() really collects (memory figures are then comparable). */
export const gcAvailable = collect !== undefined;
