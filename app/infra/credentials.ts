import { randomBytes } from "node:crypto";
import {
  chmodSync,
  existsSync,
  linkSync,
  mkdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { join, resolve } from "node:path";
import { createUser, fromSeed } from "@nats-io/nkeys";
import { ROLES, type Role } from "../../nats/permissions.js";
import { type AdclickConfig, DEFAULT_CONFIG } from "../../src/config.js";
import { SecurityError } from "../../src/errors.js";
import { projectRoot } from "./paths.js";

/**
 * AdClick's own credentials, for the servers it starts: one NATS nkey seed per role and the
 * passwords of its two Cassandra roles. Generated on first use, kept in a folder only the
 * owner can enter, each file readable by the owner only. The servers get public keys and
 * roles, never the seeds.
 */
export interface LocalCredentials {
  dir: string;
  nats: Record<Role, { seedFile: string; publicKey: string }>;
  cassandra: {
    /** A superuser of AdClick's own: sets up the keyspace and the app role. */
    admin: { username: string; password: string; passwordFile: string };
    /** What AdClick runs as: reads and writes its keyspace, nothing else. */
    app: { username: string; password: string; passwordFile: string };
  };
}

export const CASSANDRA_ADMIN_ROLE = "adclick_admin";
export const CASSANDRA_APP_ROLE = "adclick_app";

/** The credentials folder a configuration names (ADCLICK_CREDENTIALS_DIR, else under the data folder). */
export function credentialsDirOf(
  c: Pick<AdclickConfig, "credentialsDir" | "localDataDir">,
): string {
  return c.credentialsDir
    ? resolve(c.credentialsDir)
    : resolve(projectRoot(), c.localDataDir, "credentials");
}

/**
 * The credentials folder of servers started without one named: the one this process's
 * environment names (ADCLICK_CREDENTIALS_DIR, ADCLICK_DATA_DIR), as every adclick command
 * it starts will find it.
 */
export function defaultCredentialsDir(env: NodeJS.ProcessEnv = process.env): string {
  return credentialsDirOf({
    credentialsDir: env.ADCLICK_CREDENTIALS_DIR || undefined,
    localDataDir: env.ADCLICK_DATA_DIR || DEFAULT_CONFIG.localDataDir,
  });
}

export const natsSeedFile = (dir: string, role: Role) => join(dir, `nats-${role}.nk`);
export const cassandraPasswordFile = (dir: string, who: "admin" | "app") =>
  join(dir, `cassandra-${who}.password`);

/**
 * The file's content, creating it first if it does not exist. Concurrent callers (test suites
 * starting servers at once) agree: the file appears whole, by a hard link that fails when
 * another caller's is already there.
 */
function createOnce(file: string, make: () => string): string {
  if (!existsSync(file)) {
    const tmp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}`;
    writeFileSync(tmp, `${make()}\n`, { mode: 0o600 });
    try {
      linkSync(tmp, file);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
    } finally {
      rmSync(tmp, { force: true });
    }
  }
  return readSecretFile(file, "credential");
}

/**
 * A secret's text (seed, password) from a file, trimmed. A file others can read is refused: a
 * secret that leaked is no longer one.
 */
export function readSecretFile(file: string, what: string): string {
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch {
    throw new SecurityError("AUTH_FAILED", `the ${what} file ${file} does not exist`);
  }
  if ((mode & 0o077) !== 0) {
    throw new SecurityError(
      "AUTH_FAILED",
      `the ${what} file ${file} can be read by others (mode ${(mode & 0o777).toString(8)}): chmod 600 it`,
    );
  }
  const text = readFileSync(file, "utf8").trim();
  if (!text) throw new SecurityError("AUTH_FAILED", `the ${what} file ${file} is empty`);
  return text;
}

/** The nkey user's public key of a seed ("SU…"), or a clear error for a seed that is not one. */
export function publicKeyOfSeed(seed: string, file: string): string {
  try {
    const kp = fromSeed(new TextEncoder().encode(seed));
    const pub = kp.getPublicKey();
    if (!pub.startsWith("U")) throw new Error("not a user key");
    return pub;
  } catch {
    throw new SecurityError("AUTH_FAILED", `${file} does not hold a NATS user nkey seed (SU…)`);
  }
}

/** An nkey user's seed file, created on first use: its seed and public key. */
export function ensureNkeySeed(file: string): { seed: string; publicKey: string } {
  const seed = createOnce(file, () => new TextDecoder().decode(createUser().getSeed()));
  return { seed, publicKey: publicKeyOfSeed(seed, file) };
}

/** Creates what is missing of the credentials in `dir` and returns them all. */
export function ensureCredentials(dir: string): LocalCredentials {
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  chmodSync(dir, 0o700);
  const nats = {} as LocalCredentials["nats"];
  for (const role of ROLES) {
    const seedFile = natsSeedFile(dir, role);
    nats[role] = { seedFile, publicKey: ensureNkeySeed(seedFile).publicKey };
  }
  const password = (who: "admin" | "app") => {
    const passwordFile = cassandraPasswordFile(dir, who);
    return {
      passwordFile,
      password: createOnce(passwordFile, () => randomBytes(24).toString("base64url")),
    };
  };
  return {
    dir,
    nats,
    cassandra: {
      admin: { username: CASSANDRA_ADMIN_ROLE, ...password("admin") },
      app: { username: CASSANDRA_APP_ROLE, ...password("app") },
    },
  };
}

/** How a process logs in to NATS: an nkey seed, a creds file, a password, or nothing. */
export type NatsLogin =
  | { kind: "nkey"; seed: string; publicKey: string; source: string }
  | { kind: "creds"; creds: string; source: string }
  | { kind: "password"; user: string; pass: string; source: string }
  | { kind: "none"; source: string };

/**
 * The NATS login of a process acting as `role`: the configuration's own login first
 * (ADCLICK_NATS_NKEY_FILE, ADCLICK_NATS_CREDS_FILE, ADCLICK_NATS_USER), else the role's seed
 * in the credentials folder, else none (a server without authentication).
 */
export function natsLoginFor(c: AdclickConfig, role: Role): NatsLogin {
  if (c.natsNkeyFile) {
    const seed = readSecretFile(c.natsNkeyFile, "NATS nkey seed (ADCLICK_NATS_NKEY_FILE)");
    const publicKey = publicKeyOfSeed(seed, c.natsNkeyFile);
    return { kind: "nkey", seed, publicKey, source: `ADCLICK_NATS_NKEY_FILE=${c.natsNkeyFile}` };
  }
  if (c.natsCredsFile) {
    const creds = readSecretFile(c.natsCredsFile, "NATS credentials (ADCLICK_NATS_CREDS_FILE)");
    return { kind: "creds", creds, source: `ADCLICK_NATS_CREDS_FILE=${c.natsCredsFile}` };
  }
  if (c.natsUser) {
    return {
      kind: "password",
      user: c.natsUser,
      pass: c.natsPassword ?? "",
      source: `ADCLICK_NATS_USER=${c.natsUser}`,
    };
  }
  const dir = credentialsDirOf(c);
  const file = natsSeedFile(dir, role);
  if (existsSync(file)) {
    const seed = readSecretFile(file, `NATS ${role} seed`);
    return { kind: "nkey", seed, publicKey: publicKeyOfSeed(seed, file), source: file };
  }
  return {
    kind: "none",
    source: `no credentials for role ${role}: none of ADCLICK_NATS_NKEY_FILE, ADCLICK_NATS_CREDS_FILE, ADCLICK_NATS_USER is set and ${file} does not exist`,
  };
}

/** The Cassandra login: the configuration's, else AdClick's app role from the credentials folder. */
export function cassandraLoginFor(
  c: AdclickConfig,
): { username: string; password: string; source: string } | undefined {
  if (c.cassandraUsername) {
    const password = c.cassandraPasswordFile
      ? readSecretFile(
          c.cassandraPasswordFile,
          "Cassandra password (ADCLICK_CASSANDRA_PASSWORD_FILE)",
        )
      : (c.cassandraPassword ?? "");
    return {
      username: c.cassandraUsername,
      password,
      source: `ADCLICK_CASSANDRA_USER=${c.cassandraUsername}`,
    };
  }
  const file = cassandraPasswordFile(credentialsDirOf(c), "app");
  if (!existsSync(file)) return undefined;
  return {
    username: CASSANDRA_APP_ROLE,
    password: readSecretFile(file, "Cassandra password"),
    source: file,
  };
}

/** AdClick's Cassandra superuser, where this machine holds its password (a local stack). */
export function cassandraAdminLoginFor(
  c: AdclickConfig,
): { username: string; password: string } | undefined {
  if (c.cassandraUsername) return undefined;
  const file = cassandraPasswordFile(credentialsDirOf(c), "admin");
  if (!existsSync(file)) return undefined;
  return { username: CASSANDRA_ADMIN_ROLE, password: readSecretFile(file, "Cassandra password") };
}

/** The web console's password (HTTP Basic, user `query`), asked when it listens beyond loopback. */
export const consolePasswordFile = (dir: string) => join(dir, "console.password");

/** The web console's password from the credentials folder, created on first use (0600). */
export function ensureConsolePassword(c: Pick<AdclickConfig, "credentialsDir" | "localDataDir">): {
  password: string;
  file: string;
} {
  const dir = credentialsDirOf(c);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  const file = consolePasswordFile(dir);
  return { file, password: createOnce(file, () => randomBytes(24).toString("base64url")) };
}
