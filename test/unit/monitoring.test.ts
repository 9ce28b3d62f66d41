import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { registry } from "../../src/metrics/registry.js";

// Every module that defines metrics registers them when loaded.
await Promise.all([
  import("../../src/ingest/shipper.js"),
  import("../../src/ingest/batch-publisher.js"),
  import("../../src/ingest/raw-writer.js"),
  import("../../src/ingest/ingest-router.js"),
  import("../../actors/aggregator.js"),
  import("../../src/aggregate/source-metrics.js"),
  import("../../src/recalc/late-repair.js"),
  import("../../src/aggregate/aggregate-writer.js"),
  import("../../src/aggregate/reducer.js"),
  import("../../src/query/engine.js"),
  import("../../src/query/service.js"),
  import("../../src/recalc/reconcile.js"),
  import("../../app/node.js"),
]);

const SUFFIXES = ["_bucket", "_count", "_sum"];

function referencedMetrics(text: string): string[] {
  return [...new Set(text.match(/\badclick_[a-z0-9_]+/g) ?? [])];
}

describe("the shipped alert rules and dashboard", () => {
  const registered = new Set(registry.getMetricsAsArray().map((m) => m.name));
  const known = (name: string) =>
    registered.has(name) ||
    SUFFIXES.some((s) => name.endsWith(s) && registered.has(name.slice(0, -s.length)));

  it.each([
    "docs/alerts/pipeline.rules.yml",
    "docs/alerts/reconcile.rules.yml",
    "docs/grafana/adclick-dashboard.json",
  ])("%s only uses metrics the processes export", (file) => {
    const names = referencedMetrics(readFileSync(file, "utf8"));
    expect(names.length).toBeGreaterThan(3);
    expect(names.filter((n) => !known(n))).toEqual([]);
  });

  it("labels no metric by ad_id", () => {
    for (const m of registry.getMetricsAsArray()) {
      const labels = (m as unknown as { labelNames?: string[] }).labelNames ?? [];
      expect(labels, m.name).not.toContain("ad_id");
      expect(labels, m.name).not.toContain("adId");
    }
  });
});
