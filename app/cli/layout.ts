import type { NatsConnection } from "@nats-io/transport-node";
import { jetStreamLayout } from "../../nats/layout.js";
import type { AdclickConfig } from "../../src/config.js";
import { applyLayout, type LayoutReport } from "../../src/nats/apply-layout.js";

/** Applies the JetStream layout for this configuration (idempotent). */
export function ensureLayout(nc: NatsConnection, c: AdclickConfig): Promise<LayoutReport> {
  return applyLayout(
    nc,
    jetStreamLayout({
      partitions: c.partitions,
      replicas: c.natsReplicas,
      duplicateWindowMs: c.duplicateWindowMs,
      rawStreamMaxAgeMs: c.rawStreamMaxAgeMs,
    }),
  );
}
