import type { KV } from "@nats-io/kv";
import { Counter, Gauge } from "prom-client";
import { messageOf } from "../errors.js";
import { registry } from "../metrics/registry.js";
import { assignPartitions, type LiveWorker } from "./assignment.js";

const assignedGauge = new Gauge({
  name: "adclick_partitions_assigned",
  help: "Partitions the lease balance assigns to this worker (its fair share)",
  labelNames: ["worker"] as const,
  registers: [registry],
});
const liveWorkersGauge = new Gauge({
  name: "adclick_live_workers",
  help: "Workers offering partitions, as this worker sees them (presence keys in the leases bucket)",
  labelNames: ["worker"] as const,
  registers: [registry],
});
const handOvers = new Counter({
  name: "adclick_partition_handovers_total",
  help: "Partitions this worker handed over to rebalance (final snapshot, then lease released)",
  labelNames: ["partition"] as const,
  registers: [registry],
});

/** Presence keys live next to the leases: `w.<base64url of the worker id>` (ids may hold ':'). */
export const presenceKey = (workerId: string) =>
  `w.${Buffer.from(workerId, "utf8").toString("base64url")}`;

interface Presence {
  id: string;
  offers?: number[];
}

export interface LeaseBalanceOptions {
  /** Every partition of the deployment. */
  partitions: number;
  /** The partitions this worker offers (all when undefined). */
  offers?: readonly number[];
  /** The leases bucket's TTL: presence is renewed every tenth of it, like a lease. */
  ttlMs: number;
  /** How often the view (presence and holders) is read. */
  pollMs?: number;
  /** A partition is handed over only once it has been assigned elsewhere this long. */
  settleMs?: number;
  now?: () => number;
}

/**
 * The fair share of partition leases among the live workers. Each worker announces itself with
 * a presence key in the leases bucket (renewed like a lease, gone with the bucket's TTL when
 * the worker dies, deleted when it leaves in order), reads every presence and lease holder
 * each `pollMs`, and computes the same assignment as every other worker
 * ({@link assignPartitions}). The leases ask it two things: may this worker take partition p
 * ({@link mayTake}), and has p been assigned elsewhere for `settleMs` ({@link shouldHandOver})
 * — then its aggregator stops after a final snapshot and releases the lease, and the worker it
 * is assigned to takes it and restores from that snapshot. Leases still guarantee one holder
 * at a time; the balance only decides who asks.
 */
export class LeaseBalance {
  private assignment = new Map<number, string>();
  private holders = new Map<number, string>();
  private awaySince = new Map<number, number>();
  private readonly listeners = new Set<() => void>();
  private heartbeat?: ReturnType<typeof setInterval>;
  private poller?: ReturnType<typeof setInterval>;
  private polling = false;
  private leaving = false;
  private liveWorkers = 0;
  private lastShown = "";
  private readonly pollMs: number;
  private readonly settleMs: number;
  private readonly now: () => number;

  constructor(
    private readonly kv: KV,
    readonly workerId: string,
    private readonly o: LeaseBalanceOptions,
    private readonly log: (m: string) => void = () => {},
  ) {
    this.pollMs = o.pollMs ?? 1000;
    this.settleMs = o.settleMs ?? 2000;
    this.now = o.now ?? Date.now;
  }

  /** Announces this worker and reads the first view (so the first leases are asked at once). */
  async start(): Promise<void> {
    await this.announce();
    await this.poll();
    this.heartbeat = setInterval(
      () => {
        this.announce().catch((e: unknown) =>
          this.log(`lease balance: presence not renewed: ${messageOf(e)}`),
        );
      },
      Math.max(100, Math.floor(this.o.ttlMs / 10)),
    );
    this.poller = setInterval(() => {
      this.poll().catch(() => {}); // the next poll tries again; the last view stands meanwhile
    }, this.pollMs);
    // Neither keeps a process alive: the connections and the supervisor do.
    this.heartbeat.unref();
    this.poller.unref();
  }

  /**
   * An orderly leave: the presence key goes first, so the others count this worker out and
   * wait for its partitions, which its aggregators release after their final snapshots.
   */
  async leave(): Promise<void> {
    if (this.leaving) return;
    this.leaving = true;
    clearInterval(this.heartbeat);
    clearInterval(this.poller);
    await this.kv.delete(presenceKey(this.workerId)).catch(() => {});
  }

  /** Whether this worker may take partition p's lease now. */
  mayTake(p: number): boolean {
    return !this.leaving && this.assignment.get(p) === this.workerId;
  }

  /** Who held partition p's lease at the last poll. */
  holderOf(p: number): string | undefined {
    return this.holders.get(p);
  }

  /** Whether this worker should hand partition p over (assigned elsewhere for settleMs). */
  shouldHandOver(p: number): boolean {
    if (this.leaving) return false; // the supervisor's stop does it, with the same final snapshot
    const since = this.awaySince.get(p);
    return since !== undefined && this.now() - since >= this.settleMs;
  }

  /** Counts a hand-over (the aggregator calls it as it stops to hand over). */
  handedOver(p: number): void {
    handOvers.inc({ partition: String(p) });
    this.log(`lease balance: handed partition ${p} over`);
  }

  /** Says which partition's lease this worker took (the other end of a hand-over). */
  took(p: number): void {
    // Alone, a worker takes every lease at start: not worth a line each.
    if (this.liveWorkers > 1) this.log(`lease balance: took partition ${p}`);
  }

  /** Calls `fn` after every poll that read a view; returns the unsubscribe. */
  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** The current view, for status and tests. */
  view(): { workers: number; assigned: number[] } {
    const assigned: number[] = [];
    for (const [p, id] of this.assignment) if (id === this.workerId) assigned.push(p);
    return { workers: this.liveWorkers, assigned: assigned.sort((a, b) => a - b) };
  }

  private async announce(): Promise<void> {
    if (this.leaving) return;
    const presence: Presence = {
      id: this.workerId,
      ...(this.o.offers ? { offers: [...this.o.offers] } : {}),
    };
    await this.kv.put(presenceKey(this.workerId), JSON.stringify(presence));
  }

  private async poll(): Promise<void> {
    if (this.polling || this.leaving) return;
    this.polling = true;
    try {
      const workers: LiveWorker[] = [];
      const holders = new Map<number, string>();
      const keys: string[] = [];
      // Presences and partition leases only (hot shards' leases share the bucket).
      for await (const k of await this.kv.keys()) {
        if (k.startsWith("w.") || k.startsWith("p.")) keys.push(k);
      }
      await Promise.all(
        keys.map(async (k) => {
          const e = await this.kv.get(k);
          if (e?.operation !== "PUT" || e.length === 0) return;
          if (k.startsWith("w.")) {
            const p = JSON.parse(e.string()) as Presence;
            workers.push({ id: p.id, ...(p.offers ? { offers: p.offers } : {}) });
          } else if (k.startsWith("p.")) {
            holders.set(Number(k.slice(2)), e.string());
          }
        }),
      );
      // This worker is live whether or not its presence key was read back yet; a key updated
      // while the keys were listed may come twice.
      if (!this.leaving && !workers.some((w) => w.id === this.workerId))
        workers.push({ id: this.workerId, ...(this.o.offers ? { offers: this.o.offers } : {}) });
      const unique = new Map(workers.map((w) => [w.id, w]));
      workers.splice(0, workers.length, ...unique.values());
      const partitions = Array.from({ length: this.o.partitions }, (_, p) => p);
      this.assignment = assignPartitions({ partitions, workers, holders });
      this.holders = holders;
      this.liveWorkers = workers.length;
      const now = this.now();
      for (const p of partitions) {
        const mineNow = holders.get(p) === this.workerId;
        const assignedHere = this.assignment.get(p) === this.workerId;
        if (mineNow && !assignedHere) {
          if (!this.awaySince.has(p)) this.awaySince.set(p, now);
        } else this.awaySince.delete(p);
      }
      const mine = this.view().assigned;
      const shown = `${workers.length} worker${workers.length === 1 ? "" : "s"}, assigned ${mine.length}: ${mine.join(",")}`;
      if (shown !== this.lastShown) {
        this.lastShown = shown;
        this.log(`lease balance: ${shown}`);
      }
      assignedGauge.set({ worker: this.workerId }, mine.length);
      liveWorkersGauge.set({ worker: this.workerId }, workers.length);
    } finally {
      this.polling = false;
    }
    for (const fn of this.listeners) fn();
  }
}
