import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type NatsServerHandle, startNatsServer } from "../../app/infra/nats-server.js";
import { connectNats } from "../../src/nats/connect.js";

/** Resolves with the error of a publish the server refuses (permissions arrive async). */
async function publishError(
  user: string,
  pass: string,
  url: string,
  subject: string,
): Promise<string | undefined> {
  const nc = await connectNats({ servers: [url], name: `perm-${user}`, user, pass });
  let error: string | undefined;
  const watching = (async () => {
    for await (const s of nc.status()) {
      if (s.type === "error") error = String((s as { error?: unknown }).error ?? s.type);
    }
  })();
  nc.publish(subject, "{}");
  await nc.flush();
  await new Promise((r) => setTimeout(r, 200));
  await nc.close();
  await watching.catch(() => {});
  return error;
}

describe("the example NATS users and permissions (nats/accounts.example.conf)", () => {
  const dir = mkdtempSync(join(tmpdir(), "adclick-sec-"));
  let server: NatsServerHandle;
  beforeAll(async () => {
    const conf = join(dir, "secure.conf");
    // nats-server resolves includes relative to the including file, so compose the two.
    writeFileSync(
      conf,
      `${readFileSync(resolve("nats/server.conf"), "utf8")}\n${readFileSync(resolve("nats/accounts.example.conf"), "utf8")}`,
    );
    server = await startNatsServer({ configFile: conf });
  });
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it.each([
    ["query", "change-me-query", "adclick.query.count", false],
    ["query", "change-me-query", "adclick.admin.kill", true],
    ["query", "change-me-query", "clicks.3", true],
    ["shipper", "change-me-shipper", "clicks.3", false],
    ["shipper", "change-me-shipper", "adclick.admin.kill", true],
    ["admin", "change-me-admin", "adclick.admin.kill", false],
    ["worker", "change-me-worker", "aggregates.minute.1", false],
  ])("user %s publishing to %s is refused: %s", async (user, pass, subject, refused) => {
    const error = await publishError(user, pass, server.url, subject);
    if (refused) expect(error).toMatch(/[Pp]ermission/);
    else expect(error).toBeUndefined();
  });

  it("refuses a wrong password", async () => {
    await expect(
      connectNats({ servers: [server.url], name: "bad", user: "query", pass: "nope" }),
    ).rejects.toThrow();
  });
});
