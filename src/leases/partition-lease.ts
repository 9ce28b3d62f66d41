import type { KV } from "@nats-io/kv";
import { Counter, Gauge } from "prom-client";
import { AdclickError, messageOf } from "../errors.js";
import { registry } from "../metrics/registry.js";
import type { LeaseBalance } from "./lease-balance.js";

const leasesHeld = new Gauge({
  name: "adclick_partition_leases_held",
  help: "Partition leases this worker holds",
  labelNames: ["worker"] as const,
  registers: [registry],
});
const leasesLost = new Counter({
  name: "adclick_partition_leases_lost_total",
  help: "Partition leases lost (not renewed in time, taken over by another worker)",
  labelNames: ["partition"] as const,
  registers: [registry],
});

/** The reason a lease's `lost` signal aborts with. */
export class LeaseLostError extends AdclickError {
  declare readonly code: "LEASE_LOST";
  constructor(message: string, options?: { cause?: unknown }) {
    super("LEASE_LOST", message, options);
    this.name = "LeaseLostError";
  }
}

export interface Lease {
  partition: number;
  /** Aborts if the lease is lost: the holder must stop working on the partition at once. */
  lost: AbortSignal;
  /**
   * Aborts when the balance has assigned the partition to another worker: the holder should
   * stop in order (final snapshot) and release, so that worker takes it. Never aborts without
   * a balance.
   */
  moved: AbortSignal;
  /** Gives the lease up (after an orderly stop), so another worker can take it at once. */
  release(): Promise<void>;
}

export const leaseKey = (p: number) => `p.${p}`;

/**
 * Partition leases in JetStream KV: at most one worker aggregates a partition at a time.
 * A lease is a key `p.<n>` holding the worker id, taken with create (compare-and-set on
 * "absent"), renewed with update on its revision every tenth of the bucket's TTL, and gone
 * when its holder stops renewing (the bucket's max age) or releases it. Several workers may
 * offer to run the same partitions: one holds each lease, the others wait as hot standbys
 * and take over when it expires. With a {@link LeaseBalance}, a worker asks only for the
 * partitions of its fair share, and is told (`moved`) when one it holds should go elsewhere.
 */
export class PartitionLeases {
  private held = 0;

  constructor(
    private readonly kv: KV,
    readonly workerId: string,
    private readonly ttlMs: number,
    readonly balance?: LeaseBalance,
  ) {}

  /** Holder of partition p, if any (for status). */
  async holder(p: number): Promise<string | undefined> {
    const e = await this.kv.get(leaseKey(p));
    return e && e.operation === "PUT" && e.length > 0 ? e.string() : undefined;
  }

  /** Waits until this worker holds partition p's lease (or the signal aborts). */
  acquire(p: number, signal: AbortSignal, onWait?: (holder: string) => void): Promise<Lease> {
    return this.acquireKey(leaseKey(p), p, signal, onWait, this.balance);
  }

  /**
   * Waits until this worker holds the lease `key` (another kind of work of partition p, e.g.
   * a hot ad's shard: `hs.<p>.<epoch>.<shard>`), outside the balance (or the signal aborts).
   */
  acquireWork(
    key: string,
    p: number,
    signal: AbortSignal,
    onWait?: (holder: string) => void,
  ): Promise<Lease> {
    return this.acquireKey(key, p, signal, onWait, undefined);
  }

  private async acquireKey(
    key: string,
    p: number,
    signal: AbortSignal,
    onWait: ((holder: string) => void) | undefined,
    balance: LeaseBalance | undefined,
  ): Promise<Lease> {
    const what = key === leaseKey(p) ? `of partition ${p}` : key;
    let revision: number | undefined;
    const retryMs = Math.max(200, this.ttlMs / 5);
    while (revision === undefined) {
      if (signal.aborted) throw signal.reason ?? new Error("aborted");
      if (balance && !balance.mayTake(p)) {
        // Another worker's share: wait for the view to change (the balance read the holder).
        const holder = balance.holderOf(p);
        if (holder !== undefined) onWait?.(holder);
        await sleep(retryMs, signal, balance);
        continue;
      }
      try {
        revision = await this.kv.create(key, this.workerId);
      } catch {
        const e = await this.kv.get(key).catch(() => null);
        if (e && e.operation === "PUT" && e.string() === this.workerId) {
          // Ours already (this worker restarted under the same id): take it over.
          revision = await this.kv.update(key, this.workerId, e.revision).catch(() => undefined);
        } else if (e) {
          onWait?.(e.string());
        }
        if (revision === undefined) await sleep(retryMs, signal, balance);
      }
    }
    this.held++;
    balance?.took(p);
    leasesHeld.set({ worker: this.workerId }, this.held);
    const lost = new AbortController();
    const moved = new AbortController();
    const checkMoved = () => {
      if (balance?.shouldHandOver(p) && !moved.signal.aborted) moved.abort();
    };
    const unwatch = balance?.onChange(checkMoved);
    let current = revision;
    let released = false;
    /** When the key was last written by us: the server expires it a TTL after that. */
    let renewedAt = Date.now();
    const renewOnce = async () => {
      try {
        current = await this.kv.update(key, this.workerId, current);
        renewedAt = Date.now();
        return;
      } catch {
        // A lost reply to an earlier renewal, an expired key, or the bucket unreachable (a
        // NATS node down, a leader election): still ours if nobody took it.
      }
      const e = await this.kv.get(key); // throws while the bucket is unreachable
      if (e && e.operation === "PUT" && e.string() === this.workerId) {
        current = e.revision;
        renewedAt = Date.now();
        return;
      }
      if (e?.operation === "PUT") throw new LeaseLostError(`lease ${what} taken over`);
      // Expired or deleted: take it again unless someone is faster (then the next renewal
      // reads their value and gives up).
      current = await this.kv.create(key, this.workerId);
      renewedAt = Date.now();
    };
    // Renewed every tenth of the TTL; a renewal that cannot reach the bucket is retried at the
    // next tick while the key cannot have expired (two ticks to spare): 8 s of a 10 s TTL,
    // longer than a JetStream leader election (4-9 s raft timeouts, ~5.5 s measured in the
    // cluster test). Past that, or taken by another worker, the lease is lost.
    const renewEveryMs = Math.max(100, Math.floor(this.ttlMs / 10));
    const patienceMs = this.ttlMs - 2 * renewEveryMs;
    let renewing = false;
    const loseLease = (err: unknown) => {
      if (released || lost.signal.aborted) return;
      leasesLost.inc({ partition: String(p) });
      lost.abort(
        err instanceof LeaseLostError
          ? err
          : new LeaseLostError(`lease ${what} not renewed: ${messageOf(err)}`, {
              cause: err,
            }),
      );
    };
    const renew = setInterval(() => {
      if (renewing) {
        // A renewal still waiting on the server: past the patience, give up without it.
        if (Date.now() - renewedAt >= patienceMs) loseLease(new Error("renewal timed out"));
        return;
      }
      renewing = true;
      renewOnce()
        .catch((err) => {
          if (!(err instanceof LeaseLostError) && Date.now() - renewedAt < patienceMs) return;
          loseLease(err);
        })
        .finally(() => {
          renewing = false;
        });
    }, renewEveryMs);
    return {
      partition: p,
      lost: lost.signal,
      moved: moved.signal,
      release: async () => {
        if (released) return;
        released = true;
        clearInterval(renew);
        unwatch?.();
        if (moved.signal.aborted && !lost.signal.aborted) balance?.handedOver(p);
        this.held--;
        leasesHeld.set({ worker: this.workerId }, this.held);
        if (!lost.signal.aborted)
          await this.kv.delete(key, { previousSeq: current }).catch(() => {});
      },
    };
  }
}

/** Waits `ms`, or less: until the signal aborts or the balance's view changes. */
function sleep(ms: number, signal: AbortSignal, balance?: LeaseBalance): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(t);
      unwatch?.();
      signal.removeEventListener("abort", done);
      resolve();
    };
    const t = setTimeout(done, ms);
    const unwatch = balance?.onChange(done);
    signal.addEventListener("abort", done, { once: true });
  });
}
