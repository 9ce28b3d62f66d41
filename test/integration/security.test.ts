import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { jetstream, jetstreamManager } from "@nats-io/jetstream";
import { Kvm } from "@nats-io/kv";
import { createUser } from "@nats-io/nkeys";
import { errors, type NatsConnection } from "@nats-io/transport-node";
import { afterAll, beforeAll, describe, expect, inject, it } from "vitest";
import { ensureLayout } from "../../app/cli/layout.js";
import { natsLoginOptions, openConnections } from "../../app/connections.js";
import { ensureCredentials, natsSeedFile } from "../../app/infra/credentials.js";
import { type NatsServerHandle, startNatsServer } from "../../app/infra/nats-server.js";
import { KV_BUCKETS, STREAMS } from "../../nats/layout.js";
import { ROLES, type Role } from "../../nats/permissions.js";
import { type AdclickConfig, DEFAULT_CONFIG } from "../../src/config.js";
import { isAdclickError } from "../../src/errors.js";
import { connectNats } from "../../src/nats/connect.js";
import { adclickRun } from "../support/cli.js";
import { makeTestCertificates, type TestCertificates } from "../support/tls.js";

/** A request the server refused for permissions (the client's error, or its cause). */
function isPermissionDenied(e: unknown): boolean {
  return (
    e instanceof errors.PermissionViolationError ||
    (e as { cause?: unknown })?.cause instanceof errors.PermissionViolationError
  );
}

type Outcome = "allowed" | "denied";

/**
 * One subject family: what a role tries, and how the test sees that it changed nothing when
 * refused (a count read by the operator's connection before and after).
 */
interface Cell {
  family: string;
  allowed: Role[];
  attempt(nc: NatsConnection): Promise<unknown>;
  /** What the attempt would change, read as the operator; unchanged when it is refused. */
  effect(admin: NatsConnection): Promise<number>;
}

const streamCount = (stream: string) => async (admin: NatsConnection) =>
  (await (await jetstreamManager(admin)).streams.info(stream)).state.messages;

const kvPut = (bucket: string) => async (nc: NatsConnection) =>
  (await new Kvm(jetstream(nc)).open(bucket)).put(`sec.test.${Date.now()}`, "x");

describe("security by default: AdClick's NATS roles", () => {
  const dir = mkdtempSync(join(tmpdir(), "adclick-sec-"));
  const credentialsDir = join(dir, "credentials");
  let server: NatsServerHandle;
  let config: AdclickConfig;
  let admin: NatsConnection;
  const conns = new Map<Role, NatsConnection>();
  /** Requests the worker's responder received (a refused request never reaches it). */
  let answered = 0;

  beforeAll(async () => {
    server = await startNatsServer({ auth: { credentialsDir } });
    config = { ...DEFAULT_CONFIG, natsServers: [server.url], credentialsDir };
    for (const role of ROLES) {
      conns.set(
        role,
        await connectNats({
          servers: [server.url],
          name: `sec-${role}`,
          ...natsLoginOptions(config, role),
        }),
      );
    }
    admin = conns.get("admin") as NatsConnection;
    // The operator may apply the layout (a worker does at start-up).
    await ensureLayout(admin, config);
    // A worker-role responder for the query and admin services: requests that get through
    // are answered (through allow_responses: the worker publishes to no inbox itself).
    const worker = conns.get("worker") as NatsConnection;
    for (const subject of ["adclick.query.>", "adclick.admin.>"]) {
      worker.subscribe(subject, {
        callback: (_e, m) => {
          answered++;
          m.respond("{}");
        },
      });
    }
    await worker.flush();
  }, 60_000);
  afterAll(async () => {
    for (const nc of conns.values()) await nc.close().catch(() => {});
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const request = (subject: string) => (nc: NatsConnection) =>
    nc.request(subject, "{}", { timeout: 5000 });
  const cells: Cell[] = [
    {
      family: "raw clicks (clicks.<p>)",
      allowed: ["shipper", "worker", "admin"],
      attempt: (nc) => jetstream(nc).publish("clicks.0", "{}"),
      effect: streamCount(STREAMS.clicks),
    },
    {
      family: "dead letters (dlq.clicks.<source>)",
      allowed: ["shipper", "worker", "admin"],
      attempt: (nc) => jetstream(nc).publish("dlq.clicks.sec", "{}"),
      effect: streamCount(STREAMS.deadLetter),
    },
    {
      family: "programmatic ingest (ingest.clicks)",
      allowed: ["shipper"],
      attempt: (nc) => jetstream(nc).publish("ingest.clicks", "{}"),
      effect: streamCount(STREAMS.ingest),
    },
    {
      family: "late clicks (late.clicks.<p>)",
      allowed: ["worker", "admin"],
      attempt: (nc) => jetstream(nc).publish("late.clicks.0", "{}"),
      effect: streamCount(STREAMS.late),
    },
    {
      family: "aggregates (aggregates.minute.<p>)",
      allowed: ["worker", "admin"],
      attempt: (nc) => jetstream(nc).publish("aggregates.minute.0", "{}"),
      effect: streamCount(STREAMS.aggregates),
    },
    {
      family: "shipper checkpoints (KV adclick_shipper)",
      allowed: ["shipper", "worker", "admin"],
      attempt: kvPut(KV_BUCKETS.shipperCheckpoints),
      effect: streamCount(`KV_${KV_BUCKETS.shipperCheckpoints}`),
    },
    {
      family: "actor snapshots (KV adclick_snapshots)",
      allowed: ["worker", "admin"],
      attempt: kvPut(KV_BUCKETS.snapshots),
      effect: streamCount(`KV_${KV_BUCKETS.snapshots}`),
    },
    {
      family: "partition leases (KV adclick_leases)",
      allowed: ["worker", "admin"],
      attempt: kvPut(KV_BUCKETS.leases),
      effect: streamCount(`KV_${KV_BUCKETS.leases}`),
    },
    {
      family: "hot-ad partials (KV adclick_hot)",
      allowed: ["worker", "admin"],
      attempt: kvPut(KV_BUCKETS.hot),
      effect: streamCount(`KV_${KV_BUCKETS.hot}`),
    },
    {
      family: "stream administration ($JS.API.STREAM.CREATE)",
      allowed: ["worker", "admin"],
      attempt: async (nc) => {
        const name = `SEC_${Math.random().toString(36).slice(2, 8).toUpperCase()}`;
        await (await jetstreamManager(nc, { checkAPI: false })).streams.add({
          name,
          subjects: [`sec.${name}`],
        });
      },
      effect: async (a) => {
        let n = 0;
        for await (const s of (await jetstreamManager(a)).streams.list()) {
          if (s.config.name.startsWith("SEC_")) n++;
        }
        return n;
      },
    },
    {
      family: "reading the clicks stream (a consumer)",
      allowed: ["worker", "admin"],
      attempt: async (nc) => {
        const c = await jetstream(nc).consumers.get(STREAMS.clicks);
        await c.next({ expires: 1000 });
      },
      effect: async () => 0,
    },
    {
      family: "queries (adclick.query.*)",
      allowed: ["query", "admin"],
      attempt: request("adclick.query.count"),
      effect: async () => answered,
    },
    {
      family: "pipeline health (adclick.admin.status, read-only)",
      allowed: ["query", "admin"],
      attempt: request("adclick.admin.status"),
      effect: async () => answered,
    },
    {
      family: "admin commands (adclick.admin.*)",
      allowed: ["admin"],
      attempt: request("adclick.admin.kill"),
      effect: async () => answered,
    },
  ];

  describe.each(cells)("$family", (cell) => {
    it.each(ROLES.map((role) => [role, cell.allowed.includes(role) ? "allowed" : "denied"]))(
      "%s: %s",
      async (role, want) => {
        const nc = conns.get(role as Role) as NatsConnection;
        const before = await cell.effect(admin);
        let outcome: Outcome = "allowed";
        try {
          await cell.attempt(nc);
        } catch (e) {
          if (!isPermissionDenied(e)) throw e;
          outcome = "denied";
        }
        expect(outcome).toBe(want);
        const after = await cell.effect(admin);
        if (want === "denied") expect(after).toBe(before);
        else if (cell.family !== "reading the clicks stream (a consumer)")
          expect(after).toBeGreaterThan(before);
      },
    );
  });

  it("no role can listen to another role's replies or to the raw clicks", async () => {
    const query = conns.get("query") as NatsConnection;
    for (const subject of ["_INBOX_admin.>", "_INBOX.>", "clicks.>", "adclick.admin.>"]) {
      const sub = query.subscribe(subject);
      const closed = await Promise.race([
        sub.closed.then((e) => e ?? "closed"),
        new Promise((r) => setTimeout(() => r("open"), 5000)),
      ]);
      expect({ subject, denied: isPermissionDenied(closed) }).toEqual({ subject, denied: true });
    }
  });

  it("refuses an anonymous connection, naming what is missing", async () => {
    const anon = { ...config, credentialsDir: join(dir, "none") };
    const err = await connectNats({
      servers: [server.url],
      name: "anon",
      ...natsLoginOptions(anon, "query"),
    }).catch((e: unknown) => e);
    expect(isAdclickError(err, "AUTH_FAILED")).toBe(true);
    expect(String((err as Error).message)).toMatch(/no credentials for role query/);
    expect(String((err as Error).message)).not.toMatch(/\n/);
  });

  it("refuses an nkey the server does not know", async () => {
    const stranger = join(dir, "stranger.nk");
    writeFileSync(stranger, new TextDecoder().decode(createUser().getSeed()), { mode: 0o600 });
    const err = await connectNats({
      servers: [server.url],
      name: "stranger",
      ...natsLoginOptions({ ...config, natsNkeyFile: stranger }, "query"),
    }).catch((e: unknown) => e);
    expect(isAdclickError(err, "AUTH_FAILED")).toBe(true);
    expect(String((err as Error).message)).toContain(stranger);
  });

  it("refuses a seed file others can read", () => {
    const loose = join(dir, "loose.nk");
    writeFileSync(loose, new TextDecoder().decode(createUser().getSeed()), { mode: 0o644 });
    expect(() => natsLoginOptions({ ...config, natsNkeyFile: loose }, "query")).toThrow(
      /can be read by others/,
    );
  });

  it("keeps the seeds to the owner: 0600 files in a 0700 folder", async () => {
    const { statSync } = await import("node:fs");
    expect(statSync(credentialsDir).mode & 0o777).toBe(0o700);
    for (const role of ROLES)
      expect(statSync(natsSeedFile(credentialsDir, role)).mode & 0o777).toBe(0o600);
    // The same credentials on a second call: nothing is regenerated under a running server.
    const again = ensureCredentials(credentialsDir);
    expect(again.nats.query.publicKey).toBe(ensureCredentials(credentialsDir).nats.query.publicKey);
  });

  it("a worker with a wrong Cassandra password stops at start-up, in one line", async () => {
    const { contactPoint, localDataCenter } = inject("cassandra");
    const err = await openConnections(
      {
        ...config,
        cassandraContactPoints: [contactPoint],
        cassandraLocalDataCenter: localDataCenter,
        cassandraUsername: "adclick_app",
        cassandraPassword: "not-the-password",
      },
      "sec-wrong-cassandra",
    ).catch((e: unknown) => e);
    expect(isAdclickError(err, "AUTH_FAILED")).toBe(true);
    expect((err as Error).message).toMatch(/refused the login adclick_app/);
    expect((err as Error).message).toMatch(/ADCLICK_CASSANDRA_USER=adclick_app/);
    expect((err as Error).message).not.toMatch(/\n/);
  });

  it("the CLI as the query role: queries get through, admin commands are refused in one line", async () => {
    const env = {
      ADCLICK_NATS_URL: server.url,
      ADCLICK_NATS_NKEY_FILE: natsSeedFile(credentialsDir, "query"),
    };
    const answeredBefore = answered;
    const refused = await adclickRun(["admin", "kill", "aggregator-0"], env);
    expect(refused.code).toBe(2);
    expect(refused.stderr.trim().split("\n")).toHaveLength(1);
    expect(refused.stderr).toMatch(
      /no permission to publish "adclick\.admin\.kill".*PERMISSION_DENIED/,
    );
    expect(answered).toBe(answeredBefore);
    // The same role's own API gets through: the worker's responder receives the query.
    const asked = await adclickRun(["query", "top", "--minutes", "5", "--json"], env);
    expect(asked.stderr).not.toMatch(/PERMISSION_DENIED|AUTH_FAILED/);
    expect(answered).toBeGreaterThan(answeredBefore);
  });
});

describe("TLS to NATS with a CA the test makes", () => {
  const dir = mkdtempSync(join(tmpdir(), "adclick-tls-"));
  const credentialsDir = join(dir, "credentials");
  let server: NatsServerHandle;
  let config: AdclickConfig;
  let certs: TestCertificates;

  beforeAll(async () => {
    certs = makeTestCertificates(dir);
    server = await startNatsServer({
      auth: { credentialsDir },
      tls: { certFile: certs.certFile, keyFile: certs.keyFile },
    });
    config = { ...DEFAULT_CONFIG, natsServers: [server.url], credentialsDir };
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it("connects with the CA (ADCLICK_NATS_TLS_CA) and works as its role", async () => {
    const nc = await connectNats({
      servers: [server.url],
      name: "tls-worker",
      ...natsLoginOptions({ ...config, natsTlsCaFile: certs.caFile }, "worker"),
    });
    try {
      expect(nc.info?.tls_required).toBe(true);
      await ensureLayout(nc, config);
      const ack = await jetstream(nc).publish("clicks.0", "{}");
      expect(ack.seq).toBe(1);
    } finally {
      await nc.close();
    }
  });

  it("refuses, in one line, a client that does not trust the server's CA", async () => {
    const err = await connectNats({
      servers: [server.url],
      name: "tls-untrusting",
      ...natsLoginOptions(config, "worker"),
    }).catch((e: unknown) => e);
    expect(isAdclickError(err, "TLS_FAILED")).toBe(true);
    expect((err as Error).message).toMatch(/ADCLICK_NATS_TLS_CA/);
    expect((err as Error).message).not.toMatch(/\n/);
  });

  it("names a CA file that cannot be read", () => {
    expect(() =>
      natsLoginOptions({ ...config, natsTlsCaFile: join(dir, "missing.pem") }, "worker"),
    ).toThrow(/ADCLICK_NATS_TLS_CA=.*missing\.pem cannot be read/);
  });
});
