/**
 * Who may publish and subscribe to what, per AdClick role, derived from the layout (subjects,
 * streams, KV buckets) so that the two cannot drift. Pure data; app/infra renders it into the
 * server configuration (nkey users, docs/security-plan.md). The JetStream API subjects each
 * client call needs were checked against nats-server 2.12 (see the plan's research notes).
 *
 * Roles:
 *   shipper  ships logs and produces clicks: raw clicks, dead letters, its checkpoints
 *   worker   runs actors: every AdClick stream and bucket, the layout, the services it serves
 *   query    asks queries and reads pipeline health (the CLI, the web console): nothing else
 *   admin    operators: admin commands, queries, replay and reconcile (the pipeline's rights)
 */
import { KV_BUCKETS, STREAMS, SUBJECTS } from "./layout.js";

export const ROLES = ["shipper", "worker", "query", "admin"] as const;
export type Role = (typeof ROLES)[number];

export interface RolePermissions {
  publish: string[];
  /** Besides the user's own inboxes (inboxPrefixOf), which every user may read. */
  subscribe: string[];
  /** May answer the requests it received (services), without publishing to any inbox. */
  allowResponses: boolean;
}

/**
 * Each user's replies come to inboxes of its own, named after its public key: no user can read
 * another's answers, and a client knows its inbox from its seed alone, whichever role it is.
 */
export const inboxPrefixOf = (nkey: string) => `_INBOX_${nkey.slice(1, 17)}`;

const kvWrite = (bucket: string) => [
  `$KV.${bucket}.>`,
  `$JS.API.STREAM.MSG.GET.KV_${bucket}`,
  `$JS.API.DIRECT.GET.KV_${bucket}.>`,
];

/** The query and admin services' subjects, and the NATS service discovery of them. */
const QUERY_API = "adclick.query.>";
const ADMIN_API = "adclick.admin.>";
/** The admin commands that only read (pipeline health): a query client may ask them too. */
const ADMIN_READ_API = ["adclick.admin.status", "adclick.admin.actors"];
const SERVICE_DISCOVERY = ["$SRV.PING.>", "$SRV.INFO.>", "$SRV.STATS.>"];

/** What the pipeline publishes: clicks on, late clicks, aggregates, JetStream and its buckets. */
const PIPELINE_PUBLISH = [
  SUBJECTS.clicksAll,
  SUBJECTS.lateAll,
  "aggregates.>",
  SUBJECTS.deadLetterAll,
  "adclick.live.*",
  // Consumers, acks, flow control, the layout, every bucket of AdClick's.
  "$JS.API.>",
  "$JS.ACK.>",
  "$JS.FC.>",
  `$KV.${KV_BUCKETS.snapshots}.>`,
  `$KV.${KV_BUCKETS.leases}.>`,
  `$KV.${KV_BUCKETS.hot}.>`,
  `$KV.${KV_BUCKETS.shipperCheckpoints}.>`,
  ...SERVICE_DISCOVERY,
];

export function rolePermissions(role: Role): RolePermissions {
  switch (role) {
    case "shipper":
      return {
        publish: [
          SUBJECTS.clicksAll,
          SUBJECTS.deadLetterAll,
          SUBJECTS.ingest,
          // Checks that the stream exists (it never creates or changes the layout).
          `$JS.API.STREAM.INFO.${STREAMS.clicks}`,
          ...kvWrite(KV_BUCKETS.shipperCheckpoints),
        ],
        subscribe: [],
        allowResponses: false,
      };
    case "worker":
      return {
        publish: PIPELINE_PUBLISH,
        subscribe: [QUERY_API, ADMIN_API, "adclick.live.*", "$SRV.>"],
        allowResponses: true,
      };
    case "query":
      return {
        publish: [QUERY_API, ...ADMIN_READ_API, ...SERVICE_DISCOVERY],
        subscribe: [],
        allowResponses: false,
      };
    case "admin":
      // Operators: admin commands and queries, and what replay and reconcile do to the
      // pipeline's streams and buckets; they serve nothing.
      return {
        publish: [...PIPELINE_PUBLISH, QUERY_API, ADMIN_API],
        subscribe: ["adclick.live.*"],
        allowResponses: false,
      };
  }
}

const quoted = (s: string) => JSON.stringify(s);

/**
 * The `authorization` block of a nats-server configuration: one nkey user per role (public
 * keys only: the seeds stay with the clients), and any users given with no limits (a test
 * harness's own client).
 */
export function renderAuthorization(
  users: { role: Role; nkey: string }[],
  unrestrictedNkeys: string[] = [],
): string {
  const all = [...users, ...unrestrictedNkeys.map((nkey) => ({ role: "unrestricted", nkey }))];
  for (const u of all) {
    if (!/^U[A-Z2-7]{55}$/.test(u.nkey)) {
      throw new RangeError(`${u.role}: "${u.nkey}" is not a user nkey (U + 55 base32 characters)`);
    }
  }
  const lines = ["authorization {", "  users = ["];
  for (const nkey of unrestrictedNkeys) lines.push(`    { nkey: ${quoted(nkey)} }`);
  for (const { role, nkey } of users) {
    const p = rolePermissions(role);
    const subscribe = [`${inboxPrefixOf(nkey)}.>`, ...p.subscribe];
    lines.push(
      `    { nkey: ${quoted(nkey)}, permissions: {`,
      `        publish: { allow: [${p.publish.map(quoted).join(", ")}] }`,
      `        subscribe: { allow: [${subscribe.map(quoted).join(", ")}] }`,
      // One answer per request, within the longest an admin job (replay, reconcile) may take:
      // the server's default would refuse an answer sent after two minutes.
      ...(p.allowResponses ? ['        allow_responses: { max: 1, expires: "1h" }'] : []),
      "    } }",
    );
  }
  lines.push("  ]", "}");
  return `${lines.join("\n")}\n`;
}

/** NATS subject matching: `*` is one token, `>` one or more trailing tokens. */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== "*" && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

/** Whether `role` may publish to `subject` (what the server's allow list says). */
export function mayPublish(role: Role, subject: string): boolean {
  return rolePermissions(role).publish.some((p) => subjectMatches(p, subject));
}

/** Whether the user `nkey` of `role` may subscribe to `subject`. */
export function maySubscribe(role: Role, nkey: string, subject: string): boolean {
  return [`${inboxPrefixOf(nkey)}.>`, ...rolePermissions(role).subscribe].some((p) =>
    subjectMatches(p, subject),
  );
}
