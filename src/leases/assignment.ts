/**
 * Which worker should hold which partition's lease: a pure function of the live workers (and
 * the partitions each offers) and of who holds what now. Every worker computes it from the
 * same view, so they agree without talking to each other; a worker then takes only the
 * partitions assigned to it and hands over those it holds that are assigned elsewhere.
 *
 * Fair: each worker's quota is ⌊N/W⌋ or ⌈N/W⌉ (the extra ones to workers already holding
 * more than ⌊N/W⌋, then by id, so quotas do not change while partitions move). Sticky: a holder keeps what it holds up to
 * its quota, so a join or a leave moves only the partitions that must move. Offers restrict
 * who may take a partition; a partition nobody live offers stays unassigned.
 */

export interface LiveWorker {
  id: string;
  /** The partitions this worker offers; every partition when undefined. */
  offers?: readonly number[];
}

export interface AssignmentInput {
  partitions: readonly number[];
  workers: readonly LiveWorker[];
  /** The current holder of each held partition's lease. */
  holders: ReadonlyMap<number, string>;
}

const byId = (a: LiveWorker, b: LiveWorker) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);

export function assignPartitions(input: AssignmentInput): Map<number, string> {
  const result = new Map<number, string>();
  const workers = [...new Map(input.workers.map((w) => [w.id, w])).values()].sort(byId);
  if (workers.length === 0) return result;
  const partitions = [...new Set(input.partitions)].sort((a, b) => a - b);
  const offers = new Map(workers.map((w) => [w.id, w.offers ? new Set(w.offers) : undefined]));
  const eligible = (id: string, p: number) => {
    const o = offers.get(id);
    return o === undefined ? offers.has(id) : o.has(p);
  };
  const base = Math.floor(partitions.length / workers.length);
  const extra = partitions.length % workers.length;
  // The extra ones go first to workers already holding more than the base share (so a
  // holder is not made to give up a partition only to leave a worker idle), then by id. Stable:
  // a worker given one keeps holding more than the base, the others only fall to it.
  const holds = new Map<string, number>();
  for (const [p, h] of input.holders) if (eligible(h, p)) holds.set(h, (holds.get(h) ?? 0) + 1);
  const extraFirst = workers
    .map((w) => ({ id: w.id, over: (holds.get(w.id) ?? 0) > base ? 0 : 1 }))
    .sort((a, b) => a.over - b.over || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const quota = new Map(extraFirst.map((w, i) => [w.id, base + (i < extra ? 1 : 0)]));
  const count = new Map(workers.map((w) => [w.id, 0]));
  const add = (p: number, id: string) => {
    result.set(p, id);
    count.set(id, (count.get(id) ?? 0) + 1);
  };

  // Holders keep what they hold, up to their quota (lowest partitions first).
  for (const p of partitions) {
    const h = input.holders.get(p);
    if (h !== undefined && eligible(h, p) && (count.get(h) ?? 0) < (quota.get(h) ?? 0)) add(p, h);
  }
  // The rest go to the eligible worker furthest below its quota; where every eligible worker
  // is at its quota (offers overlap unevenly), to the one with the fewest. Partitions with
  // the fewest eligible workers go first, so that a widely offered one does not take the
  // quota of a worker that alone offers another.
  const eligibleCount = (p: number) => workers.filter((w) => eligible(w.id, p)).length;
  const rest = partitions
    .filter((p) => !result.has(p))
    .map((p) => ({ p, n: eligibleCount(p) }))
    .sort((a, b) => a.n - b.n || a.p - b.p);
  for (const { p } of rest) {
    let best: string | undefined;
    let bestKey = Number.POSITIVE_INFINITY;
    for (const w of workers) {
      if (!eligible(w.id, p)) continue;
      const n = count.get(w.id) ?? 0;
      const deficit = (quota.get(w.id) ?? 0) - n;
      // Below quota ranks before at/over quota; then the larger deficit, then fewer held.
      const key = deficit > 0 ? -deficit : partitions.length + n;
      if (key < bestKey) {
        bestKey = key;
        best = w.id;
      }
    }
    if (best !== undefined) add(p, best);
  }
  return result;
}
