import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstreamManager } from "@nats-io/jetstream";
import { afterAll, describe, expect, inject, it } from "vitest";
import { defaultCredentialsDir } from "../../app/infra/credentials.js";
import { freePort, isListening } from "../../app/infra/free-port.js";
import { STREAMS } from "../../nats/layout.js";
import { generateClickLog, type TruthClick } from "../../src/gen/click-log.js";
import { ONE_MINUTE_MS } from "../../src/model.js";
import { connectNats } from "../../src/nats/connect.js";
import { natsLogin, uniqueName } from "../harness/servers.js";
import { adclick, adclickRun, waitForOutput } from "../support/cli.js";
import { uniqueClicks } from "../support/oracle.js";

const START_MS = Date.UTC(2024, 6, 9, 10, 0, 0);
const SPAN_MS = 3 * ONE_MINUTE_MS;
const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");

interface Filter {
  country?: string;
  ip?: string;
  user?: string;
}

function matches(c: TruthClick, f: Filter): boolean {
  return (
    (f.country === undefined || c.country === f.country) &&
    (f.ip === undefined || c.ip === f.ip) &&
    (f.user === undefined || c.userId === f.user)
  );
}

function recountAd(
  clicks: TruthClick[],
  adId: string,
  from: number,
  to: number,
  f: Filter,
): number {
  return clicks.filter(
    (c) => c.adId === adId && c.timestampMs >= from && c.timestampMs < to && matches(c, f),
  ).length;
}

function recountTop(clicks: TruthClick[], n: number, from: number, to: number, f: Filter) {
  const sums = new Map<string, number>();
  for (const c of clicks) {
    if (c.timestampMs >= from && c.timestampMs < to && matches(c, f))
      sums.set(c.adId, (sums.get(c.adId) ?? 0) + 1);
  }
  return [...sums]
    .map(([ad_id, count]) => ({ ad_id, count }))
    .sort((a, b) => b.count - a.count || (a.ad_id < b.ad_id ? -1 : 1))
    .slice(0, n);
}

function flags(f: Filter): string[] {
  return [
    ...(f.country ? ["--country", f.country] : []),
    ...(f.ip ? ["--ip", f.ip] : []),
    ...(f.user ? ["--user", f.user] : []),
  ];
}

describe("the adclick CLI end to end: up, ship, query", () => {
  const dir = mkdtempSync(join(tmpdir(), "adclick-e2e-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it("answers every count and top N exactly as a recount of the shipped multi-server log", {
    timeout: 300_000,
  }, async () => {
    const { contactPoint } = inject("cassandra");
    const natsPort = await freePort();
    const env = {
      ADCLICK_NATS_URL: `nats://127.0.0.1:${natsPort}`,
      ADCLICK_CASSANDRA: contactPoint,
      ADCLICK_KEYSPACE: uniqueName("e2e"),
      ADCLICK_PARTITIONS: "4",
      // Everything else is the default: 15 s lateness, late clicks amend their minute.
      ADCLICK_METRICS_PORT: "0",
      ADCLICK_DATA_DIR: join(dir, "data"),
      // The servers already running (the shared Cassandra node) know these credentials.
      ADCLICK_CREDENTIALS_DIR: defaultCredentialsDir(),
      ADCLICK_CONSOLE_PORT: String(await freePort()),
    };
    const up = adclick(["up", "--refresh", "60"], env);
    try {
      // Healthy, then the web console's address (loopback by default: no login).
      const said = await waitForOutput(up, /\[up\] healthy[\s\S]*\[up\] web console: (\S+)/);
      const consoleUrl = /web console: (\S+)/.exec(said)?.[1];
      expect(consoleUrl).toBe(`http://127.0.0.1:${env.ADCLICK_CONSOLE_PORT}/`);
      const page = await fetch(String(consoleUrl));
      expect(page.status).toBe(200);
      expect(await page.text()).toContain("<title>AdClick console</title>");

      // Three application servers' logs over the same three minutes.
      const gen = {
        ads: 60,
        users: 40,
        startMs: START_MS,
        spanMs: SPAN_MS,
        duplicateRatio: 0.04,
        malformedRatio: 0.02,
        disorderMs: 8000,
      };
      const logs = [31, 32, 33].map((seed) => generateClickLog({ ...gen, seed, lines: 3000 }));
      const files = logs.map((l, i) => {
        const f = join(dir, `web-${i}.log`);
        writeFileSync(f, l.text);
        return f;
      });
      // One command for the three logs (a backfill): each file is a source of its own,
      // announced before any click and shipped in turn by event time, so no click of any of
      // them is late, and the first `final` answer is already exact.
      const t0 = Date.now();
      const shipped = [await adclickRun(["ship", "--source", "backfill", "--json", ...files], env)];
      for (const s of shipped) expect(s.code, s.stderr).toBe(0);
      console.log(`[e2e] shipped in ${Date.now() - t0} ms`);
      const clicks = uniqueClicks(logs.map((l) => l.truth));
      expect(
        shipped.reduce(
          (n, s) => n + JSON.parse(s.stdout.trim().split("\n").pop() as string).malformed,
          0,
        ),
      ).toBe(logs.reduce((n, l) => n + l.truth.filter((t) => t.kind === "malformed").length, 0));

      const sample = clicks[7] as TruthClick;
      const ranges: [number, number][] = [
        [START_MS + ONE_MINUTE_MS, START_MS + 2 * ONE_MINUTE_MS],
        // Every minute holding data (disorder puts some clicks in the minute before START):
        // a range past the last event's minute stays open until newer events close it.
        [START_MS - ONE_MINUTE_MS, START_MS + SPAN_MS],
      ];
      const filters: Filter[] = [
        {},
        { country: sample.country },
        { ip: sample.ip },
        { user: sample.userId },
      ];
      const ads = ["ad000000", sample.adId];
      const checks: Promise<void>[] = [];
      for (const [from, to] of ranges) {
        for (const f of filters) {
          for (const ad of ads) {
            checks.push(
              adclickRun(
                [
                  "query",
                  "count",
                  "--ad",
                  ad,
                  "--from",
                  iso(from),
                  "--to",
                  iso(to),
                  ...flags(f),
                  "--json",
                  "--wait-final",
                ],
                env,
              ).then((r) => {
                expect(r.code, r.stderr).toBe(0);
                const reply = JSON.parse(r.stdout);
                expect(reply.final).toBe(true);
                expect(reply.sources_behind).toEqual([]);
                // No click was late: every minute is still its first revision.
                if (Object.keys(f).length === 0) expect(reply.revision).toBe(1);
                expect({ ad, from, to, f, count: reply.count }).toEqual({
                  ad,
                  from,
                  to,
                  f,
                  count: recountAd(clicks, ad, from, to, f),
                });
              }),
            );
          }
          checks.push(
            adclickRun(
              [
                "query",
                "top",
                "--n",
                "10",
                "--from",
                iso(from),
                "--to",
                iso(to),
                ...flags(f),
                "--json",
                "--wait-final",
              ],
              env,
            ).then((r) => {
              expect(r.code, r.stderr).toBe(0);
              const reply = JSON.parse(r.stdout);
              expect(reply.final).toBe(true);
              expect({ from, to, f, ads: reply.ads }).toEqual({
                from,
                to,
                f,
                ads: recountTop(clicks, 10, from, to, f),
              });
            }),
          );
        }
        // Run the queries of one range together, a few processes at a time.
        while (checks.length > 0) await Promise.all(checks.splice(0, 6));
        console.log(`[e2e] range checked at ${Date.now() - t0} ms`);
      }

      // The admin API: actors, a reconciliation of the shipped range inside the cluster, a kill.
      const actors = await adclickRun(["admin", "actors", "--json"], env);
      expect(actors.code, actors.stderr).toBe(0);
      const rows = JSON.parse(actors.stdout) as { id: string; state: string }[];
      // Hot-ad shards (hot-shard-<p>-<epoch>-<k>) come and go with the traffic; the rest is fixed.
      const fixed = rows.filter((r) => !/^hot-shard-\d/.test(r.id));
      expect(fixed.map((r) => r.id).sort()).toEqual(
        [
          "ad-rows-writer",
          "admin-service",
          "aggregate-writer",
          "aggregator-0",
          "aggregator-1",
          "aggregator-2",
          "aggregator-3",
          "console-server",
          "hot-shard-pool",
          "late-repair",
          "live-server",
          "map",
          "query-service",
          "raw-writer",
          "reconcile-schedule",
          "reducer",
        ].sort(),
      );
      expect(rows.every((r) => r.state === "running")).toBe(true);
      // The status lists the three logs as sources, each ended by the one-shot ship.
      const status = await adclickRun(["admin", "status"], env);
      expect(status.code, status.stderr).toBe(0);
      for (const f of files) expect(status.stdout).toMatch(new RegExp(`backfill:${f}\\s+ended`));
      const reconcile = await adclickRun(
        [
          "admin",
          "reconcile",
          "--from",
          iso(START_MS - ONE_MINUTE_MS),
          "--to",
          iso(START_MS + SPAN_MS),
        ],
        env,
      );
      expect(reconcile.code, reconcile.stderr).toBe(0);
      expect(JSON.parse(reconcile.stdout)).toMatchObject({ mismatchCount: 0 });
      expect((await adclickRun(["admin", "kill", "aggregator-1"], env)).code).toBe(0);
      expect((await adclickRun(["admin", "kill", "no-such-actor"], env)).code).toBe(2);
      for (let i = 0; i < 50; i++) {
        const again = JSON.parse((await adclickRun(["admin", "actors", "--json"], env)).stdout) as {
          id: string;
          state: string;
          restarts: number;
        }[];
        const a1 = again.find((r) => r.id === "aggregator-1");
        if (a1?.restarts === 1 && a1.state === "running") break;
        if (i === 49) throw new Error(`aggregator-1 was not restarted: ${JSON.stringify(a1)}`);
      }

      // A bad request is a clear error, not a crash or a timeout.
      const bad = await adclickRun(
        [
          "query",
          "count",
          "--ad",
          "ad1",
          "--from",
          "2024-07-09T10:00:30Z",
          "--to",
          "2024-07-09T10:01:00Z",
        ],
        env,
      );
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/minute boundary/);
    } finally {
      up.kill("SIGINT");
      await new Promise((r) => up.once("exit", r));
    }
    expect(await isListening("127.0.0.1", natsPort)).toBe(false); // up stopped the nats-server it started
  });

  it("up --nats-cluster runs on a local 3-node NATS cluster with every stream at R3, and stops it", {
    timeout: 180_000,
  }, async () => {
    const { contactPoint } = inject("cassandra");
    const base = await freePort();
    const ports = [base, base + 1, base + 2];
    const env = {
      ADCLICK_NATS_URL: `nats://127.0.0.1:${base}`,
      ADCLICK_CASSANDRA: contactPoint,
      ADCLICK_KEYSPACE: uniqueName("e2e"),
      ADCLICK_PARTITIONS: "4",
      ADCLICK_METRICS_PORT: "0",
      ADCLICK_DATA_DIR: join(dir, "cluster-data"),
      // The servers already running (the shared Cassandra node) know these credentials.
      ADCLICK_CREDENTIALS_DIR: defaultCredentialsDir(),
    };
    const up = adclick(["up", "--nats-cluster", "--refresh", "60"], env);
    try {
      await waitForOutput(up, /\[up\] healthy/);
      const nc = await connectNats({
        servers: ports.map((p) => `nats://127.0.0.1:${p}`),
        name: "e2e-cluster",
        // A cluster `adclick up` started: AdClick's roles only.
        ...natsLogin("admin"),
      });
      try {
        const info = await (await jetstreamManager(nc)).streams.info(STREAMS.clicks);
        expect(info.config.num_replicas).toBe(3);
        expect(1 + (info.cluster?.replicas?.length ?? 0)).toBe(3);
      } finally {
        await nc.close();
      }
    } finally {
      up.kill("SIGINT");
      await new Promise((r) => up.once("exit", r));
    }
    for (const p of ports) expect(await isListening("127.0.0.1", p)).toBe(false);
  });
});
