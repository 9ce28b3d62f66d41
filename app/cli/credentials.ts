import { ROLES, renderAuthorization } from "../../nats/permissions.js";
import type { AdclickConfig } from "../../src/config.js";
import { credentialsDirOf, ensureCredentials } from "../infra/credentials.js";

const WHAT: Record<(typeof ROLES)[number], string> = {
  shipper: "adclick ship, adclick gen: raw clicks, dead letters, its checkpoints",
  worker: "adclick up, adclick worker: the actors and the services",
  query: "adclick query: queries, and pipeline health (admin status, actors)",
  admin: "adclick admin, replay, reconcile: operators",
};

/**
 * `adclick credentials`: where AdClick's credentials are and what each is for (secrets are
 * never printed); with `natsConfig`, the nats-server authorization block with the roles'
 * public keys and permissions, for a server of one's own.
 */
export function credentialsReport(c: AdclickConfig, natsConfig: boolean): string {
  const creds = ensureCredentials(credentialsDirOf(c));
  if (natsConfig) {
    return [
      "# AdClick's roles for nats-server (adclick credentials --nats-config). Public keys only;",
      `# each process finds its role's seed in ${creds.dir} or in ADCLICK_NATS_NKEY_FILE.`,
      renderAuthorization(ROLES.map((role) => ({ role, nkey: creds.nats[role].publicKey }))),
    ].join("\n");
  }
  const lines = [`credentials folder: ${creds.dir} (owner only)`, "", "NATS (nkey seeds):"];
  for (const role of ROLES) {
    lines.push(`  ${role.padEnd(8)} ${creds.nats[role].seedFile}  ${creds.nats[role].publicKey}`);
    lines.push(`           ${WHAT[role]}`);
  }
  lines.push("", "Cassandra (passwords):");
  for (const who of ["app", "admin"] as const) {
    const r = creds.cassandra[who];
    lines.push(
      `  ${r.username.padEnd(14)} ${r.passwordFile}  ${who === "app" ? "what AdClick runs as: its keyspace only" : "superuser: keyspaces and grants"}`,
    );
  }
  return lines.join("\n");
}
