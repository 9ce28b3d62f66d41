import { cpSync, existsSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream } from "@nats-io/jetstream";
import type { NatsConnection } from "@nats-io/transport-node";
import puppeteer, { type Browser, type Page } from "puppeteer-core";
import { afterAll, beforeAll, beforeEach, describe, expect, inject, it } from "vitest";
import { consolePasswordFile, defaultCredentialsDir } from "../../app/infra/credentials.js";
import { freePort } from "../../app/infra/free-port.js";
import { type Node, startNode } from "../../app/node.js";
import { allRoles } from "../../app/worker.js";
import { type AdclickConfig, loadConfig } from "../../src/config.js";
import { ClickProducer } from "../../src/ingest/click-producer.js";
import { connectNats } from "../../src/nats/connect.js";
import { serviceErrorOf } from "../../src/wire/service-errors.js";
import { natsLogin, uniqueName, useNatsServer } from "../harness/servers.js";

/**
 * The web console in a real browser (Debian's chromium, driven by puppeteer-core): what it
 * shows must equal what the query API answers for the same question, asked directly over NATS
 * as the query role (the oracle), and the expected counts are recounted from the input here.
 */

/** What the page's elements are read as (the tests are compiled without the DOM's types). */
type Data = { dataset: Record<string, string | undefined>; hidden?: boolean };
type Input = { value: string };

const CHROMIUM = process.env.ADCLICK_CHROMIUM ?? "/usr/bin/chromium";
const T0 = Date.UTC(2024, 6, 9, 10, 0, 0);
const at = (min: number, sec = 0) => T0 + min * 60_000 + sec * 1000;
const iso = (ms: number) => new Date(ms).toISOString().replace(".000Z", "Z");
const FROM = iso(at(0));
const TO = iso(at(2));

interface Click {
  ad_id: string;
  timestamp: number;
  user_id: string;
  ip: string;
  country: string;
  click_id: string;
}
let seq = 0;
const clicks = (ad: string, n: number, minute: number, country: string): Click[] =>
  Array.from({ length: n }, (_, i) => ({
    ad_id: ad,
    timestamp: at(minute, 1 + i),
    user_id: `u${i % 3}`,
    ip: `10.0.0.${(i % 5) + 1}`,
    country,
    click_id: `k${++seq}`,
  }));

// Minutes 0–1: ad-a 7 (5 USA), ad-b 6 (all KOR), ad-c 3, ad-d 2 (USA); a click at minute 3
// moves the watermark past both minutes.
const FIRST: Click[] = [
  ...clicks("ad-a", 3, 0, "USA"),
  ...clicks("ad-a", 2, 1, "USA"),
  ...clicks("ad-a", 2, 1, "JPN"),
  ...clicks("ad-b", 4, 0, "KOR"),
  ...clicks("ad-b", 2, 1, "KOR"),
  ...clicks("ad-c", 3, 1, "DEU"),
  ...clicks("ad-d", 2, 0, "USA"),
  ...clicks("ad-z", 1, 3, "FRA"),
];
// Later, while the page is open: ad-c gets 9 more in minute 1 (amending the closed minute).
const SECOND: Click[] = clicks("ad-c", 9, 1, "DEU");

/** The top N of [FROM, TO), recounted from the input (count desc, then ad_id asc). */
function recountTop(input: Click[], n: number, country?: string) {
  const counts = new Map<string, number>();
  for (const c of input) {
    if (c.timestamp < Date.parse(FROM) || c.timestamp >= Date.parse(TO)) continue;
    if (country && c.country !== country) continue;
    counts.set(c.ad_id, (counts.get(c.ad_id) ?? 0) + 1);
  }
  return [...counts]
    .map(([ad_id, count]) => ({ ad_id, count }))
    .sort((a, b) => b.count - a.count || a.ad_id.localeCompare(b.ad_id))
    .slice(0, n);
}

/** Polls `check` until it returns true, at most `ms`; fails with what it last saw. */
async function until(what: string, check: () => Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`${what}: not within ${ms} ms${last ? ` (last error: ${last})` : ""}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe("the web console (served by the query role), in headless Chromium", () => {
  const nats = useNatsServer();
  let base: Partial<AdclickConfig>;
  let node: Node;
  let url: string;
  let oracle: NatsConnection;
  let browser: Browser;
  let page: Page;
  const extra: Node[] = [];
  let tmpCreds: string | undefined;

  /** The query API's answer, asked directly over NATS as the query role. */
  async function ask(kind: "top" | "series", body: Record<string, unknown>) {
    const msg = await oracle.request(`adclick.query.${kind}`, JSON.stringify(body), {
      timeout: 10_000,
    });
    const error = serviceErrorOf(msg);
    return error
      ? { error: { code: error.code, message: error.message } }
      : msg.json<Record<string, unknown>>();
  }

  /** The top table as the page shows it. */
  const pageTop = () =>
    page.$$eval("#top-table tbody tr", (rows) =>
      rows.map((r) => ({
        ad_id: (r as unknown as Data).dataset.ad,
        count: Number((r as unknown as Data).dataset.count),
      })),
    );
  const pageMarks = () =>
    page.$$eval("#top-table tbody tr .mark", (ms) =>
      ms.map(
        (m) => `${(m as unknown as Data).dataset.state}/${(m as unknown as Data).dataset.revision}`,
      ),
    );
  const text = (sel: string) =>
    page.$eval(sel, (e) => ((e as unknown as Data).hidden ? "" : (e.textContent ?? "")));

  /** Waits until the page's top table equals the API's answer to `body`, and returns it. */
  async function pageShowsTop(body: Record<string, unknown>, ms = 60_000) {
    let want: Record<string, unknown> = {};
    let shown: unknown;
    await until(
      `the page's top N equal to adclick.query.top ${JSON.stringify(body)}`,
      async () => {
        want = await ask("top", body);
        shown = await pageTop();
        return JSON.stringify(shown) === JSON.stringify(want.ads);
      },
      ms,
    ).catch((e) => {
      throw new Error(`${e.message}: page ${JSON.stringify(shown)}, API ${JSON.stringify(want)}`);
    });
    return want;
  }

  // Without the browser every test fails saying so (a failed hook would only skip them).
  const noBrowser = existsSync(CHROMIUM)
    ? undefined
    : `no browser at ${CHROMIUM}: the console tests drive Debian's chromium (run scripts/provision.sh as root, or apt-get install chromium; ADCLICK_CHROMIUM names another)`;
  beforeEach(() => {
    if (noBrowser) throw new Error(noBrowser);
  });

  beforeAll(async () => {
    if (noBrowser) return;
    const { server } = nats();
    const { contactPoint } = inject("cassandra");
    base = {
      natsServers: [server.url],
      cassandraContactPoints: [contactPoint],
      cassandraKeyspace: uniqueName("console"),
      partitions: 2,
      idleTimeoutMs: 1000,
      metricsPort: 0,
      // The scheduled reconciliation runs at start (over an empty window a minute back): the
      // health panel shows its result.
      reconcileEveryMs: 60_000,
      reconcileLagMs: 60_000,
      queryMaxRangeMinutes: 60,
    };
    const c = loadConfig({}, { ...base, consolePort: await freePort() });
    node = await startNode(c, allRoles(c), () => {});
    const me = (await node.worker.status()).children.find((ch) => ch.id === "console-server");
    expect(me?.state).toBe("running");
    url = String(me?.status?.url);
    expect(url).toBe(`http://127.0.0.1:${c.consolePort}/`);
    oracle = await connectNats({
      servers: [server.url],
      name: "console-oracle",
      ...natsLogin("query"),
    });
    const producer = new ClickProducer(jetstream(node.nc), { partitions: 2, source: "console-1" });
    await producer.send(FIRST, "console-1");
    await producer.close();
    // The oracle's answer for the range is final before the page is compared with it.
    await until("the first clicks final", async () => {
      const a = await ask("top", { n: 5, from: FROM, to: TO });
      return a.final === true && JSON.stringify(a.ads) === JSON.stringify(recountTop(FIRST, 5));
    });
    browser = await puppeteer.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ["--no-sandbox", "--headless=new", "--disable-gpu", "--disable-dev-shm-usage"],
    });
    page = await browser.newPage();
    await page.setViewport({ width: 1400, height: 1000 });
  }, 180_000);

  afterAll(async () => {
    await browser?.close().catch(() => {});
    await oracle?.close().catch(() => {});
    for (const n of extra) await n.stop();
    await node?.stop();
    if (tmpCreds) rmSync(tmpCreds, { recursive: true, force: true });
  }, 60_000);

  it("loads: its top N equals adclick.query.top for the same range, marked final with the revision; health shows the partitions and actors", async () => {
    const pageErrors: string[] = [];
    page.on("pageerror", (e) => pageErrors.push(String(e)));
    const res = await page.goto(`${url}?from=${FROM}&to=${TO}&n=5`, { waitUntil: "load" });
    expect(res?.status()).toBe(200);
    expect(await page.title()).toBe("AdClick console");
    const want = await pageShowsTop({ n: 5, from: FROM, to: TO });
    expect(want.ads).toEqual(recountTop(FIRST, 5));
    expect(await pageTop()).toEqual(want.ads);
    expect(await pageMarks()).toEqual(
      (want.ads as unknown[]).map(() => `final/${String(want.revision)}`),
    );
    expect(await text("#top-meta")).toContain(`revision ${String(want.revision)}`);
    await until("the live stream open", async () => (await text("#live")) === "live", 15_000);

    // Health: the aggregators of both partitions, and the actors the admin API lists.
    const actors = await oracle.requestMany("adclick.admin.actors", "{}", { maxWait: 1500 });
    const rows: { id: string; kind: string; partition?: number; status?: { lastSeq?: number } }[] =
      [];
    for await (const m of actors) rows.push(...m.json<typeof rows>());
    const partitions = rows
      .filter((r) => r.kind === "aggregator" && r.status?.lastSeq !== undefined)
      .map((r) => String(r.partition))
      .sort();
    expect(partitions).toEqual(["0", "1"]);
    await until(
      "the health panel",
      async () => {
        const shown = await page.$$eval("#partitions tbody tr td:first-child", (tds) =>
          tds.map((td) => td.textContent ?? ""),
        );
        const ids = await page.$$eval("#actors tbody tr td:first-child", (tds) =>
          tds.map((td) => td.textContent ?? ""),
        );
        return (
          JSON.stringify(shown.sort()) === JSON.stringify(partitions) &&
          JSON.stringify(ids.sort()) === JSON.stringify(rows.map((r) => r.id).sort())
        );
      },
      20_000,
    );
    expect(await text("#sources")).toContain("console-1");
    // The reconciliation's last run, as the admin API's actors reply carries it.
    let report: { from: string; to: string; mismatchCount: number } | undefined;
    await until("the reconciliation's result", async () => {
      const it = await oracle.requestMany("adclick.admin.actors", "{}", { maxWait: 1500 });
      for await (const m of it)
        for (const r of m.json<{ id: string; status?: { lastReport?: typeof report } }[]>())
          if (r.id === "reconcile-schedule") report = r.status?.lastReport;
      return (
        report !== undefined &&
        (await text("#reconcile")).includes(`last run ${report.from} → ${report.to}`)
      );
    });
    expect(report?.mismatchCount).toBe(0);
    expect(await text("#reconcile")).toContain("0 differing cells");
    expect(pageErrors).toEqual([]);
  });

  it("shows a clicked ad's per-minute series, equal to adclick.query.series, as a chart", async () => {
    await page.click('#top-table tbody tr[data-ad="ad-b"] a');
    const want = (await ask("series", { ad_id: "ad-b", from: FROM, to: TO })) as {
      series: { minute: string; count: number; state: string }[];
    };
    expect(want.series.map((p) => p.count)).toEqual([4, 2]);
    await until(
      "the series of ad-b",
      async () => {
        const shown = await page.$$eval("#series-table tbody tr", (rows) =>
          rows.map((r) => ({
            minute: (r as unknown as Data).dataset.minute,
            count: Number((r as unknown as Data).dataset.count),
            state: (r as unknown as Data).dataset.state,
          })),
        );
        return (
          JSON.stringify(shown) ===
          JSON.stringify(want.series.map(({ minute, count, state }) => ({ minute, count, state })))
        );
      },
      20_000,
    );
    expect(await text("#series-title")).toBe("Series of ad-b");
    expect(await page.$("#chart canvas")).not.toBeNull();
    expect(page.url()).toContain("ad=ad-b");
  });

  it("updates while clicks flow: more clicks amend a closed minute and the table follows", async () => {
    const before = await pageTop();
    const producer = new ClickProducer(jetstream(node.nc), { partitions: 2, source: "console-2" });
    await producer.send(SECOND, "console-2");
    await producer.close();
    const expected = recountTop([...FIRST, ...SECOND], 5);
    expect(expected).not.toEqual(before);
    // Bounded, never a fixed sleep: the page updates itself (SSE), nothing reloads it.
    await until(
      "the page showing the new clicks",
      async () => JSON.stringify(await pageTop()) === JSON.stringify(expected),
      60_000,
    );
    const want = await pageShowsTop({ n: 5, from: FROM, to: TO });
    expect(want.ads).toEqual(expected);
    // Minute 1 was amended: the answer's newest revision is past 1, and the marks say so.
    await until(
      "the amended marks",
      async () => {
        const a = await ask("top", { n: 5, from: FROM, to: TO });
        const marks = await pageMarks();
        return (
          a.final === true &&
          Number(a.revision) > 1 &&
          marks.length > 0 &&
          marks.every((m) => m === `amended/${String(a.revision)}`)
        );
      },
      60_000,
    );
    // The amended minute in ad-c's series: its state and revision, as the API gives them.
    await page.click('#top-table tbody tr[data-ad="ad-c"] a');
    const series = (await ask("series", { ad_id: "ad-c", from: FROM, to: TO })) as {
      series: { state: string; revision: number | null; count: number }[];
    };
    expect(series.series.map((p) => p.count)).toEqual([0, 12]);
    expect(series.series[1]?.state).toBe("amended");
    const wantMarks = series.series.map((p) => `${p.state}/${p.revision ?? ""}`);
    await until(
      "ad-c's series with its amended minute",
      async () =>
        JSON.stringify(
          await page.$$eval("#series-table tbody tr .mark", (ms) =>
            ms.map(
              (m) =>
                `${(m as unknown as Data).dataset.state}/${(m as unknown as Data).dataset.revision}`,
            ),
          ),
        ) === JSON.stringify(wantMarks),
      20_000,
    );
    // Health follows too: the new source appears (health events come every ~5 s).
    await until(
      "the new source in health",
      async () => (await text("#sources")).includes("console-2"),
      20_000,
    );
    // The README's picture (docs/console.png): ADCLICK_CONSOLE_SCREENSHOT=docs/console.png.
    const shot = process.env.ADCLICK_CONSOLE_SCREENSHOT;
    if (shot) await page.screenshot({ path: shot as `${string}.png` });
  });

  it("narrows with a country filter, equal to the API's filtered answer", async () => {
    const all = await ask("top", { n: 5, from: FROM, to: TO });
    const usa = await ask("top", { n: 5, from: FROM, to: TO, filter: { country: "USA" } });
    expect(usa.ads).toEqual(recountTop([...FIRST, ...SECOND], 5, "USA"));
    expect(usa.ads).not.toEqual(all.ads);
    await page.type("#country", "USA");
    await page.click("#apply");
    await pageShowsTop({ n: 5, from: FROM, to: TO, filter: { country: "USA" } }, 30_000);
    expect(await pageTop()).toEqual(usa.ads);
    expect(page.url()).toContain("country=USA");
    await page.$eval("#country", (e) => {
      (e as unknown as Input).value = "";
    });
    await page.click("#apply");
    await pageShowsTop({ n: 5, from: FROM, to: TO }, 30_000);
  });

  it("shows the service's error for a bad ad and a range too long, and says when an ad has no clicks", async () => {
    const badAd = "x".repeat(65);
    const wantAd = await ask("series", { ad_id: badAd, from: FROM, to: TO });
    expect(wantAd.error).toBeDefined();
    await page.$eval("#ad", (e) => {
      (e as unknown as Input).value = "";
    });
    await page.type("#ad", badAd);
    await page.click("#show-ad");
    const adError = `${(wantAd.error as { message: string }).message} [BAD_REQUEST]`;
    await until(
      "the bad ad's error",
      async () => (await text("#series-error")) === adError,
      20_000,
    );

    await page.$eval("#ad", (e) => {
      (e as unknown as Input).value = "";
    });
    await page.type("#ad", "no-such-ad");
    await page.click("#show-ad");
    await until(
      "the unknown ad's notice",
      async () =>
        (await text("#series-notice")) === "no clicks of no-such-ad in this range" &&
        (await text("#series-error")) === "",
      20_000,
    );

    const long = { from: iso(at(0)), to: iso(at(120)) };
    const wantRange = await ask("top", { n: 5, ...long });
    expect((wantRange.error as { code: string }).code).toBe("RANGE_TOO_LARGE");
    await page.$eval("#to", (e) => {
      (e as unknown as Input).value = "";
    });
    await page.type("#to", long.to);
    await page.click("#apply");
    const rangeError = `${(wantRange.error as { message: string }).message} [RANGE_TOO_LARGE]`;
    await until("the range error", async () => (await text("#top-error")) === rangeError, 20_000);
    expect(await pageTop()).toEqual([]);
    await page.screenshot({ path: join(tmpdir(), "adclick-console-error.png") });

    // The bridge itself: unknown parameters are refused with a message, errors keep their status.
    const unknown = await fetch(`${url}api/top?minutes=5&bogus=1`);
    expect(unknown.status).toBe(400);
    expect(((await unknown.json()) as { error: { message: string } }).error.message).toMatch(
      /unknown parameter "bogus"/,
    );
    const tooLong = await fetch(`${url}api/top?n=5&from=${long.from}&to=${long.to}`);
    expect(tooLong.status).toBe(400);
    expect(await tooLong.json()).toEqual({
      error: { code: "RANGE_TOO_LARGE", message: (wantRange.error as { message: string }).message },
    });
    const top = await fetch(`${url}api/top?n=5&from=${FROM}&to=${TO}`);
    expect(top.status).toBe(200);
    expect(await top.json()).toEqual(await ask("top", { n: 5, from: FROM, to: TO }));
  });

  it("asks no password on loopback; beyond loopback it asks the query login from console.password", async () => {
    // On loopback: no login.
    expect((await fetch(`${url}api/health`)).status).toBe(200);

    // A query-only process listening on every address, with a credentials folder of its own
    // (a copy: the password file it makes on first use lands there).
    tmpCreds = mkdtempSync(join(tmpdir(), "adclick-console-creds-"));
    cpSync(defaultCredentialsDir(), tmpCreds, { recursive: true });
    const port = await freePort();
    const c = loadConfig(
      { ADCLICK_ROLES: "query", ADCLICK_CONSOLE_HOST: "0.0.0.0" },
      { ...base, consolePort: port, credentialsDir: tmpCreds },
    );
    expect(existsSync(consolePasswordFile(tmpCreds))).toBe(false);
    const q = await startNode(c, allRoles(c), () => {});
    extra.push(q);
    const me = (await q.worker.status()).children.find((ch) => ch.id === "console-server");
    expect(me?.status?.url).toBe(`http://0.0.0.0:${port}/`);
    const file = consolePasswordFile(tmpCreds);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    const password = (await import("node:fs")).readFileSync(file, "utf8").trim();
    expect(password.length).toBeGreaterThanOrEqual(24);

    const api = `http://127.0.0.1:${port}/api/top?n=5&from=${FROM}&to=${TO}`;
    const basic = (user: string, pw: string) => ({
      authorization: `Basic ${Buffer.from(`${user}:${pw}`).toString("base64")}`,
    });
    for (const headers of [{}, basic("query", "wrong"), basic("admin", password)]) {
      const r = await fetch(api, { headers });
      expect(r.status).toBe(401);
      expect(r.headers.get("www-authenticate")).toMatch(/^Basic realm="AdClick console"/);
      expect(((await r.json()) as { error: { message: string } }).error.message).toMatch(
        /needs a login: user "query"/,
      );
    }
    expect((await fetch(`http://127.0.0.1:${port}/`)).status).toBe(401);
    const ok = await fetch(api, { headers: basic("query", password) });
    expect(ok.status).toBe(200);
    expect(await ok.json()).toEqual(await ask("top", { n: 5, from: FROM, to: TO }));

    // And in the browser, with the login.
    const p2 = await browser.newPage();
    await p2.authenticate({ username: "query", password });
    await p2.goto(`http://127.0.0.1:${port}/?from=${FROM}&to=${TO}&n=5`);
    const want = await ask("top", { n: 5, from: FROM, to: TO });
    await until(
      "the logged-in page's top N",
      async () =>
        JSON.stringify(
          await p2.$$eval("#top-table tbody tr", (rows) =>
            rows.map((r) => ({
              ad_id: (r as unknown as Data).dataset.ad,
              count: Number((r as unknown as Data).dataset.count),
            })),
          ),
        ) === JSON.stringify(want.ads),
      30_000,
    );
    await p2.close();
  });
});
