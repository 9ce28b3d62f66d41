import { request as httpRequest } from "node:http";
import { join } from "node:path";
import type { NatsConnection } from "@nats-io/transport-node";
import { afterEach, describe, expect, it } from "vitest";
import {
  basicAuthOk,
  type ConsoleBridge,
  isLoopbackHostHeader,
  queryBodyOf,
  startConsoleBridge,
} from "../../src/console/bridge.js";
import { registry } from "../../src/metrics/registry.js";

describe("the console bridge's parameters → the query API's request body", () => {
  it("passes numbers as numbers, filters in `filter`, and leaves empty fields out", () => {
    expect(
      queryBodyOf("top", new URLSearchParams("n=5&minutes=15&country=USA&ip=&user_id=u-1")),
    ).toEqual({ n: 5, minutes: 15, filter: { country: "USA", user_id: "u-1" } });
    expect(
      queryBodyOf(
        "series",
        new URLSearchParams("ad_id=ad7&from=2024-07-09T00:00:00Z&to=2024-07-09T01:00:00Z"),
      ),
    ).toEqual({ ad_id: "ad7", from: "2024-07-09T00:00:00Z", to: "2024-07-09T01:00:00Z" });
  });

  it("leaves what is not a whole number as text, for the service to say what is wrong", () => {
    expect(queryBodyOf("top", new URLSearchParams("n=ten&minutes=1.5"))).toEqual({
      n: "ten",
      minutes: "1.5",
    });
  });

  it("refuses unknown and repeated parameters, naming them", () => {
    expect(() => queryBodyOf("top", new URLSearchParams("ad_id=x"))).toThrow(
      /unknown parameter "ad_id" for top; allowed: n, minutes, from, to, country, ip, user_id/,
    );
    expect(() => queryBodyOf("series", new URLSearchParams("ad_id=a&ad_id=b"))).toThrow(
      /parameter "ad_id" is given twice/,
    );
  });
});

describe("the console's login (HTTP Basic, user query)", () => {
  const basic = (s: string) => `Basic ${Buffer.from(s).toString("base64")}`;
  it.each([
    [basic("query:s3cret"), true],
    [basic("query:s3cret2"), false],
    [basic("query:"), false],
    [basic("admin:s3cret"), false],
    [basic("querys3cret"), false],
    ["Bearer abc", false],
    [undefined, false],
  ])("%s → %s", (header, ok) => {
    expect(basicAuthOk(header, "s3cret")).toBe(ok);
  });
});

describe("the Host names a console without a password answers (DNS rebinding)", () => {
  it.each([
    ["127.0.0.1:8480", true],
    ["localhost:8480", true],
    ["localhost", true],
    ["[::1]:8480", true],
    ["127.1.2.3", true],
    ["evil.example:8480", false],
    ["127.0.0.1.evil.example", false],
    ["10.0.0.1:8480", false],
    [undefined, false],
  ])("%s → %s", (host, ok) => {
    expect(isLoopbackHostHeader(host)).toBe(ok);
  });
});

/** A NATS connection that answers every query with `reply` and counts the requests. */
function fakeNats(reply: unknown) {
  const asked: string[] = [];
  const msg = (body: unknown) => {
    const data = new TextEncoder().encode(JSON.stringify(body));
    return { data, string: () => JSON.stringify(body), json: () => body };
  };
  const nc = {
    request: async (subject: string) => {
      asked.push(subject);
      return msg(reply);
    },
    requestMany: async (subject: string) => {
      asked.push(subject);
      return (async function* () {
        yield msg(subject.endsWith("status") ? { worker: "w1", sources: [] } : [{ id: "a" }]);
      })();
    },
  } as unknown as NatsConnection;
  return { nc, asked };
}

describe("the console's HTTP API (a fake NATS connection)", () => {
  let bridge: ConsoleBridge | undefined;
  afterEach(async () => {
    await bridge?.close();
    bridge = undefined;
  });
  const start = async (nc: NatsConnection, password?: string) => {
    bridge = await startConsoleBridge({
      nc,
      host: "127.0.0.1",
      port: 0,
      staticDir: join(import.meta.dirname, "../../console"),
      uplotDir: join(import.meta.dirname, "../../node_modules/uplot/dist"),
      topEveryMs: 50,
      healthEveryMs: 50,
      ...(password ? { password } : {}),
    });
    return bridge;
  };

  it("passes a query's answer through as it came, and refuses what it does not serve", async () => {
    const answer = { from: "a", to: "b", n: 1, ads: [{ ad_id: "x", count: 3 }], final: true };
    const { nc, asked } = fakeNats(answer);
    const b = await start(nc);
    const top = await fetch(`${b.url}api/top?n=1&minutes=5`);
    expect(top.status).toBe(200);
    expect(await top.json()).toEqual(answer);
    expect(asked).toEqual(["adclick.query.top"]);
    const health = await fetch(`${b.url}api/health`);
    expect(await health.json()).toEqual({
      status: [{ worker: "w1", sources: [] }],
      actors: [{ id: "a" }],
    });
    expect((await fetch(`${b.url}api/top?nope=1`)).status).toBe(400);
    expect((await fetch(`${b.url}api/nothing`)).status).toBe(404);
    expect((await fetch(`${b.url}api/top`, { method: "POST", body: "{}" })).status).toBe(405);
    expect((await fetch(`${b.url}api/top?${"n=1&".repeat(1200)}`)).status).toBe(400);
    const page = await fetch(b.url);
    expect(page.status).toBe(200);
    expect(page.headers.get("content-type")).toMatch(/text\/html/);
    expect((await fetch(`${b.url}vendor/uPlot.iife.min.js`)).status).toBe(200);
    // Metrics by route, never by ad.
    const metrics = await registry.getSingleMetricAsString("adclick_console_requests_total");
    expect(metrics).toMatch(/route="top",status="200"/);
    expect(metrics).toMatch(/route="api-other",status="404"/);
    expect(metrics).not.toMatch(/ad_id|"x"/);
  });

  it("streams top and health events, and stops asking when the client leaves", async () => {
    const { nc, asked } = fakeNats({ ads: [] });
    const b = await start(nc);
    const events: string[] = [];
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest(`${b.url}api/events?minutes=5`, (res) => {
        expect(res.headers["content-type"]).toMatch(/text\/event-stream/);
        res.on("data", (d: Buffer) => {
          for (const m of d.toString().matchAll(/^event: (\w+)$/gm)) events.push(String(m[1]));
          if (events.filter((e) => e === "top").length >= 3) {
            req.destroy();
            resolve();
          }
        });
      });
      req.on("error", (e) => ((e as NodeJS.ErrnoException).code === "ECONNRESET" ? 0 : reject(e)));
      req.end();
    });
    expect(events).toContain("health");
    await new Promise((r) => setTimeout(r, 150)); // let the server see the client leave
    const after = asked.length;
    await new Promise((r) => setTimeout(r, 300)); // six polling periods
    expect(asked.length).toBe(after);
  });

  it("refuses other names than loopback's when it asks no password", async () => {
    const { nc, asked } = fakeNats({ ads: [] });
    const b = await start(nc);
    const status = await new Promise<number>((resolve, reject) => {
      httpRequest(`${b.url}api/top`, { headers: { host: "evil.example:8480" } }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
        .on("error", reject)
        .end();
    });
    expect(status).toBe(403);
    expect(asked).toEqual([]);
  });

  it("asks for the query login when it has a password", async () => {
    const { nc } = fakeNats({ ads: [] });
    const b = await start(nc, "pw-1");
    const refused = await fetch(`${b.url}api/top`);
    expect(refused.status).toBe(401);
    expect(refused.headers.get("www-authenticate")).toMatch(/^Basic /);
    const ok = await fetch(`${b.url}api/top`, {
      headers: { authorization: `Basic ${Buffer.from("query:pw-1").toString("base64")}` },
    });
    expect(ok.status).toBe(200);
  });
});
