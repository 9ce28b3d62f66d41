import { existsSync, readFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The project root: the folder holding package.json (works from src/ and from dist/src/). */
export function projectRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 6; i++) {
    if (existsSync(join(dir, "package.json")) && existsSync(join(dir, "scripts", "versions.env"))) {
      return dir;
    }
    dir = resolve(dir, "..");
  }
  throw new Error("cannot find the project root (package.json beside scripts/versions.env)");
}

export interface ServerVersions {
  natsServer: string;
  cassandra: string;
}

/** Reads scripts/versions.env, the single place where server versions are pinned. */
export function serverVersions(root = projectRoot()): ServerVersions {
  const text = readFileSync(join(root, "scripts", "versions.env"), "utf8");
  const vars = new Map<string, string>();
  for (const line of text.split("\n")) {
    const m = /^([A-Z_]+)=(\S+)/.exec(line.trim());
    if (m?.[1] && m[2]) vars.set(m[1], m[2]);
  }
  const natsServer = vars.get("NATS_SERVER_VERSION");
  const cassandra = vars.get("CASSANDRA_VERSION");
  if (!natsServer || !cassandra) throw new Error("scripts/versions.env lacks a version");
  return { natsServer, cassandra };
}

/** Where scripts/provision.sh installs things. */
export function infraPaths(root = projectRoot()) {
  const versions = serverVersions(root);
  const infra = join(root, ".infra");
  return {
    infra,
    natsServerBin: join(infra, "bin", "nats-server"),
    natsCliBin: join(infra, "bin", "nats"),
    cassandraHome: join(infra, `cassandra-${versions.cassandra}`),
    cassandraLib: join(infra, `cassandra-${versions.cassandra}`, "lib"),
    runDir: join(infra, "run"),
    versions,
  };
}
