/**
 * The error catalogue. Errors carry a stable `code`; callers match on `code` (errorCodeOf,
 * isAdclickError) or `instanceof`, never on message text. `cause` is passed through so the
 * original failure is never hidden. Every error class of the project extends AdclickError;
 * a new code needs its service status in src/wire/service-errors.ts (the compiler says so).
 */
export type AdclickErrorCode =
  /** A configuration setting is missing or invalid (ConfigError; the message names it). */
  | "CONFIG_INVALID"
  /** A server we manage (nats-server, Cassandra) is not installed: run the provisioning. */
  | "INFRA_NOT_PROVISIONED"
  /** A server we manage could not be started or reached in time. */
  | "INFRA_START_FAILED"
  /** The NATS server lacks a feature we need (too old a version). */
  | "NATS_SERVER_TOO_OLD"
  /** A stream or bucket exists with settings our layout cannot change in place. */
  | "LAYOUT_CONFLICT"
  /** A request (query, admin command, CLI range) is malformed or invalid: fix and resend. */
  | "BAD_REQUEST"
  /** A query's range is longer than the service answers (the aggregates' retention). */
  | "RANGE_TOO_LARGE"
  /** The thing a request names does not exist. */
  | "NOT_FOUND"
  /** A dependency (Cassandra, NATS, a worker) cannot answer now; retrying later may work. */
  | "UNAVAILABLE"
  /** An actor's work was killed (admin kill, chaos): it must stop without an orderly stop. */
  | "ACTOR_KILLED"
  /** A partition lease was lost (taken over, not renewed): stop working on the partition. */
  | "LEASE_LOST"
  /** A snapshot save lost its compare-and-set: this writer is stale and must stop. */
  | "SNAPSHOT_CONFLICT"
  /** A raw-click message is not a click batch this version can read (a poison message). */
  | "BATCH_DECODE"
  /** Another process advanced the same recalculation run (replay / reconcile) at once. */
  | "RECALC_CONFLICT"
  /** An orderly stop did not finish within its deadline. */
  | "SHUTDOWN_TIMEOUT"
  /** A server refused our login, or the credentials to log in with are missing or unreadable. */
  | "AUTH_FAILED"
  /** The server refused an operation to this process's role (NATS permissions, CQL grants). */
  | "PERMISSION_DENIED"
  /** A TLS connection failed (unknown CA, plaintext against TLS, a bad certificate file). */
  | "TLS_FAILED"
  /** A bug or an unreadable stored state: nothing the caller can fix. */
  | "INTERNAL";

export class AdclickError extends Error {
  readonly code: AdclickErrorCode;
  constructor(code: AdclickErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "AdclickError";
    this.code = code;
  }
}

/**
 * The catalogue code of an error: an AdclickError's `code`; for an AbortSignal, the code of
 * its reason (the signal of a killed actor or a lost lease); undefined for anything else.
 */
export function errorCodeOf(e: unknown): AdclickErrorCode | undefined {
  const x = e instanceof AbortSignal ? e.reason : e;
  return x instanceof AdclickError ? x.code : undefined;
}

/** Whether `e` is an AdclickError (with `code`, when given). For a signal, pass its `reason`. */
export function isAdclickError<C extends AdclickErrorCode = AdclickErrorCode>(
  e: unknown,
  code?: C,
): e is AdclickError & { readonly code: C } {
  return e instanceof AdclickError && (code === undefined || e.code === code);
}

/** An error's message (or the value as text): for logs and error replies, never for matching. */
export function messageOf(e: unknown): string {
  return e instanceof Error ? e.message : String(e);
}

/** A configuration setting is missing or invalid; the message names the setting and why. */
export class ConfigError extends AdclickError {
  readonly setting: string;
  constructor(setting: string, message: string) {
    super("CONFIG_INVALID", `${setting}: ${message}`);
    this.name = "ConfigError";
    this.setting = setting;
  }
}

/** A server we manage could not be found, started or reached in time. */
export class InfraError extends AdclickError {
  constructor(
    code: "INFRA_NOT_PROVISIONED" | "INFRA_START_FAILED" | "NATS_SERVER_TOO_OLD",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.name = "InfraError";
  }
}

/** Credentials, permissions and TLS: the message says what was refused and what to set. */
export class SecurityError extends AdclickError {
  constructor(
    code: "AUTH_FAILED" | "PERMISSION_DENIED" | "TLS_FAILED",
    message: string,
    options?: { cause?: unknown },
  ) {
    super(code, message, options);
    this.name = "SecurityError";
  }
}

/** The reason a killed actor's work is aborted with: it must not stop in an orderly way. */
export class ActorKilledError extends AdclickError {
  declare readonly code: "ACTOR_KILLED";
  constructor(message: string, options?: { cause?: unknown }) {
    super("ACTOR_KILLED", message, options);
    this.name = "ActorKilledError";
  }
}
