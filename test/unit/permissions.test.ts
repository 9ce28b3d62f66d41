import { describe, expect, it } from "vitest";
import {
  inboxPrefixOf,
  mayPublish,
  maySubscribe,
  ROLES,
  type Role,
  renderAuthorization,
  subjectMatches,
} from "../../nats/permissions.js";

describe("subjectMatches", () => {
  it.each([
    ["clicks.*", "clicks.3", true],
    ["clicks.*", "clicks.progress", true],
    ["clicks.*", "clicks", false],
    ["clicks.*", "clicks.3.x", false],
    ["dlq.clicks.>", "dlq.clicks.web-1", true],
    ["dlq.clicks.>", "dlq.clicks.a.b", true],
    ["dlq.clicks.>", "dlq.clicks", false],
    ["$KV.adclick_shipper.>", "$KV.adclick_shipper.k.web", true],
    ["$KV.adclick_shipper.>", "$KV.adclick_leases.p.1", false],
    ["a.b", "a.b", true],
    ["a.b", "a.c", false],
    [">", "anything.at.all", true],
  ])("%s ~ %s: %s", (pattern, subject, want) => {
    expect(subjectMatches(pattern, subject)).toBe(want);
  });
});

// The matrix the server enforces, as the allow lists say it: role × subject family. Operators
// (admin) have the pipeline's rights too: replay and reconcile republish and rewrite.
const PUBLISH: [subject: string, allowed: Role[]][] = [
  ["clicks.3", ["shipper", "worker", "admin"]],
  ["clicks.progress", ["shipper", "worker", "admin"]],
  ["dlq.clicks.web-1", ["shipper", "worker", "admin"]],
  ["ingest.clicks", ["shipper"]],
  ["late.clicks.3", ["worker", "admin"]],
  ["aggregates.minute.3", ["worker", "admin"]],
  ["aggregates.top", ["worker", "admin"]],
  ["adclick.live.3", ["worker", "admin"]],
  ["adclick.query.top", ["query", "admin"]],
  ["adclick.admin.kill", ["admin"]],
  ["adclick.admin.pause", ["admin"]],
  ["adclick.admin.replay", ["admin"]],
  ["adclick.admin.status", ["query", "admin"]],
  ["adclick.admin.actors", ["query", "admin"]],
  ["$KV.adclick_shipper.k.web", ["shipper", "worker", "admin"]],
  ["$KV.adclick_snapshots.agg.3", ["worker", "admin"]],
  ["$KV.adclick_leases.p.3", ["worker", "admin"]],
  ["$KV.adclick_hot.pt.3.1.0.0.9", ["worker", "admin"]],
  ["$JS.API.STREAM.CREATE.CLICKS", ["worker", "admin"]],
  ["$JS.API.STREAM.DELETE.CLICKS", ["worker", "admin"]],
  ["$JS.API.STREAM.INFO.CLICKS", ["shipper", "worker", "admin"]],
  ["$JS.API.STREAM.MSG.GET.KV_adclick_shipper", ["shipper", "worker", "admin"]],
  ["$JS.API.STREAM.MSG.GET.KV_adclick_snapshots", ["worker", "admin"]],
  ["$JS.ACK.CLICKS.raw-writer.1.2.3.4.5", ["worker", "admin"]],
  ["$SRV.PING.adclick", ["worker", "query", "admin"]],
  ["_INBOX_query.abc", []],
];

describe("role permissions", () => {
  it.each(PUBLISH)("publish %s: only %j", (subject, allowed) => {
    for (const role of ROLES) {
      expect({ role, subject, allowed: mayPublish(role, subject) }).toEqual({
        role,
        subject,
        allowed: allowed.includes(role),
      });
    }
  });

  it("each user reads replies on its own inboxes only, named after its key", () => {
    const keys = ROLES.map((_, i) => `U${String.fromCharCode(65 + i).repeat(55)}`);
    ROLES.forEach((role, i) => {
      keys.forEach((other, j) => {
        expect(maySubscribe(role, keys[i] as string, `${inboxPrefixOf(other)}.x1`)).toBe(i === j);
      });
      expect(maySubscribe(role, keys[i] as string, "_INBOX.x1")).toBe(false);
    });
  });

  it.each([
    ["adclick.query.top", ["worker"]],
    ["adclick.admin.kill", ["worker"]],
    ["clicks.3", []],
    ["aggregates.minute.3", []],
  ] as [string, Role[]][])("subscribe %s: only %j", (subject, allowed) => {
    for (const role of ROLES)
      expect(maySubscribe(role, `U${"Q".repeat(55)}`, subject)).toBe(allowed.includes(role));
  });
});

describe("renderAuthorization", () => {
  const nkey = (c: string) => `U${c.repeat(55)}`;

  it("writes one nkey user per role with its allow lists, responses for the worker only", () => {
    const conf = renderAuthorization([
      { role: "shipper", nkey: nkey("A") },
      { role: "worker", nkey: nkey("B") },
    ]);
    expect(conf).toContain(`nkey: "${nkey("A")}"`);
    expect(conf).toContain(`nkey: "${nkey("B")}"`);
    expect(conf.match(/allow_responses: \{ max: 1, expires: "1h" \}/g)).toHaveLength(1);
    expect(conf).toContain('"$KV.adclick_shipper.>"');
    expect(conf.trim().startsWith("authorization {")).toBe(true);
    // Each user's inboxes are its own, named after its key.
    expect(conf).toContain(`"${inboxPrefixOf(nkey("A"))}.>"`);
    expect(conf).toContain(`"${inboxPrefixOf(nkey("B"))}.>"`);
    expect(inboxPrefixOf(nkey("A"))).not.toBe(inboxPrefixOf(nkey("B")));
  });

  it("adds unrestricted users with no permissions block (a test harness's client)", () => {
    const conf = renderAuthorization([{ role: "query", nkey: nkey("A") }], [nkey("C")]);
    expect(conf).toContain(`{ nkey: "${nkey("C")}" }`);
    expect(conf.match(/permissions:/g)).toHaveLength(1);
    expect(() => renderAuthorization([], ["SUXYZ"])).toThrow(RangeError);
  });

  it.each(["", "SUABC", `U${"a".repeat(55)}`, `U${"A".repeat(54)}`, `N${"A".repeat(55)}`])(
    "refuses %j as a user nkey",
    (bad) => {
      expect(() => renderAuthorization([{ role: "query", nkey: bad }])).toThrow(RangeError);
    },
  );
});
