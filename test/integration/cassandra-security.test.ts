import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { DEFAULT_SUPERUSER, secureCassandra } from "../../app/infra/cassandra-auth.js";
import { type CassandraNodeHandle, startCassandraNode } from "../../app/infra/cassandra-node.js";
import { CASSANDRA_APP_ROLE } from "../../app/infra/credentials.js";
import {
  type CassandraClientSettings,
  cassandraSecurityError,
  createCassandraClient,
  ensureKeyspace,
  grantKeyspace,
  keyspaceExists,
} from "../../src/storage/cassandra-client.js";
import { makeTestCertificates } from "../support/tls.js";

/**
 * A node started the secure way (authentication, permissions, TLS with a CA of this test's
 * own), checked from the outside: AdClick's app role works in a keyspace granted to it and
 * nowhere else, and wrong, missing or default credentials and TLS mistakes fail with one-line
 * SecurityErrors. One node for the whole file: a start costs ~15 s on our machines.
 */

/** The error `attempt` rejects with; undefined when it succeeds. */
async function failureOf(attempt: () => Promise<unknown>): Promise<unknown> {
  try {
    await attempt();
    return undefined;
  } catch (err) {
    return err;
  }
}

describe("a Cassandra node secure by default", () => {
  const dir = mkdtempSync(join(tmpdir(), "adclick-cassandra-security-"));
  let node: CassandraNodeHandle | undefined;
  let ca = "";
  const keyspace = "adclick_security_test";

  const started = () => {
    if (!node?.credentials) throw new Error("the node is not started (with credentials)");
    return { node, credentials: node.credentials };
  };
  /** Settings for the node over TLS with the test's CA, with the given login. */
  const settings = (login?: { username: string; password: string }): CassandraClientSettings => ({
    cassandraContactPoints: [started().node.contactPoint],
    cassandraLocalDataCenter: started().node.localDataCenter,
    login,
    tls: { ca },
  });
  /** Connects with `s` and returns the connect error, or undefined (then shuts down). */
  const connectFailure = async (s: CassandraClientSettings) => {
    const client = createCassandraClient(s);
    try {
      return await failureOf(() => client.connect());
    } finally {
      await client.shutdown().catch(() => {});
    }
  };

  beforeAll(async () => {
    const { caFile, keyAndCertFile: keystoreFile } = makeTestCertificates(dir);
    ca = readFileSync(caFile, "utf8");
    node = await startCassandraNode({
      heapMb: 512,
      auth: true,
      credentialsDir: join(dir, "credentials"),
      tls: { keystoreFile, caFile },
    });
    console.log(
      `[security] node with auth and TLS ready (roles set up) after ${node.startupMs} ms`,
    );
  }, 180_000);

  afterAll(async () => {
    await node?.stop();
    rmSync(dir, { recursive: true, force: true });
  }, 60_000);

  it("lets the app role work over TLS in a keyspace granted to it", async () => {
    const { credentials } = started();
    const admin = createCassandraClient(settings(credentials.admin));
    try {
      await ensureKeyspace(admin, keyspace, 1);
      await grantKeyspace(admin, keyspace, CASSANDRA_APP_ROLE);
      await grantKeyspace(admin, keyspace, CASSANDRA_APP_ROLE); // twice: idempotent
    } finally {
      await admin.shutdown();
    }
    expect(credentials.app.username).toBe(CASSANDRA_APP_ROLE);
    const app = createCassandraClient(settings(credentials.app), keyspace);
    try {
      expect(await keyspaceExists(app, keyspace)).toBe(true);
      expect(await keyspaceExists(app, "adclick_no_such_keyspace")).toBe(false);
      await app.execute("CREATE TABLE IF NOT EXISTS clicks (ad text PRIMARY KEY, n bigint)");
      await app.execute("INSERT INTO clicks (ad, n) VALUES (?, ?)", ["ad-1", 42n]);
      const row = (await app.execute("SELECT n FROM clicks WHERE ad = ?", ["ad-1"])).first();
      expect(row?.get("n")).toBe(42n);
    } finally {
      await app.shutdown();
    }
  });

  it("refuses the app role outside its keyspace with PERMISSION_DENIED", async () => {
    const { node, credentials } = started();
    const app = createCassandraClient(settings(credentials.app));
    try {
      const createKeyspace = await failureOf(() =>
        app.execute(
          "CREATE KEYSPACE adclick_not_allowed WITH replication = {'class': 'SimpleStrategy', 'replication_factor': 1}",
        ),
      );
      const createError = cassandraSecurityError(createKeyspace, node.contactPoint);
      expect(createError?.code).toBe("PERMISSION_DENIED");
      expect(createError?.message).toMatch(/adclick_app has no CREATE permission/);

      const readRoles = await failureOf(() => app.execute("SELECT role FROM system_auth.roles"));
      const readError = cassandraSecurityError(readRoles, node.contactPoint);
      expect(readError?.code).toBe("PERMISSION_DENIED");
      expect(readError?.message).toMatch(/SELECT permission/);
    } finally {
      await app.shutdown();
    }
  });

  it("refuses a wrong password with a one-line AUTH_FAILED naming the user", async () => {
    const { node } = started();
    const err = await connectFailure(
      settings({ username: CASSANDRA_APP_ROLE, password: "not-the-password" }),
    );
    const mapped = cassandraSecurityError(err, node.contactPoint, "the test's settings", true);
    expect(mapped?.code).toBe("AUTH_FAILED");
    expect(mapped?.message).toContain(`refused the login ${CASSANDRA_APP_ROLE}`);
    expect(mapped?.message).toContain("(credentials from the test's settings)");
    expect(mapped?.message).not.toMatch(/\n|\bat .*\.js:\d+/);
  });

  it("refuses a client without credentials with AUTH_FAILED saying what to set", async () => {
    const { node } = started();
    const err = await connectFailure(settings(undefined));
    const mapped = cassandraSecurityError(err, node.contactPoint, undefined, true);
    expect(mapped?.code).toBe("AUTH_FAILED");
    expect(mapped?.message).toMatch(/requires a login and none is configured/);
    expect(mapped?.message).toContain("ADCLICK_CASSANDRA_USER");
  });

  it("no longer accepts the default cassandra/cassandra login, even after set-up runs again", async () => {
    const { node, credentials } = started();
    // Set-up again (what a node's restart does): idempotent, and the app role still works.
    await secureCassandra({
      contactPoints: [node.contactPoint],
      localDataCenter: node.localDataCenter,
      admin: credentials.admin,
      app: credentials.app,
      tls: { ca },
      timeoutMs: 30_000,
    });
    expect(await connectFailure(settings(credentials.app))).toBeUndefined();
    // The server's credentials cache may accept the old login for its validity (2 s).
    const deadline = Date.now() + 30_000;
    let mapped = cassandraSecurityError(
      await connectFailure(settings(DEFAULT_SUPERUSER)),
      node.contactPoint,
    );
    while (mapped?.code !== "AUTH_FAILED" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 500));
      mapped = cassandraSecurityError(
        await connectFailure(settings(DEFAULT_SUPERUSER)),
        node.contactPoint,
      );
    }
    expect(mapped?.code).toBe("AUTH_FAILED");
    expect(mapped?.message).toContain("refused the login cassandra");
  });

  it("fails with TLS_FAILED and a hint without the CA, and for a plaintext client", async () => {
    const { node, credentials } = started();
    const withoutCa = await connectFailure({ ...settings(credentials.app), tls: {} });
    const noCa = cassandraSecurityError(withoutCa, node.contactPoint, undefined, true);
    expect(noCa?.code).toBe("TLS_FAILED");
    expect(noCa?.message).toMatch(/certificate/);
    expect(noCa?.message).toContain("ADCLICK_CASSANDRA_TLS_CA");

    const plaintextFailure = await connectFailure({
      ...settings(credentials.app),
      tls: undefined,
    });
    const plaintext = cassandraSecurityError(plaintextFailure, node.contactPoint, undefined, false);
    console.log(
      `[security] without the CA: ${noCa?.message}\n[security] plaintext: ${plaintext?.message}`,
    );
    expect(plaintext?.code).toBe("TLS_FAILED");
    expect(plaintext?.message).toContain("ADCLICK_CASSANDRA_TLS_CA");
  });
});
