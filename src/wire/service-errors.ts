import { ServiceErrorCodeHeader, ServiceErrorHeader, type ServiceMsg } from "@nats-io/services";
import { AdclickError, type AdclickErrorCode, messageOf } from "../errors.js";

/**
 * Error replies of our NATS micro services (query, admin): the headers
 * Nats-Service-Error-Code (an HTTP-like status) and Nats-Service-Error (the message, one
 * line), and a JSON body {"error": {"code", "message"}} with the catalogue code. Clients
 * read them back with {@link serviceErrorOf}.
 */
export interface ServiceErrorBody {
  error: { code: AdclickErrorCode; message: string };
}

/** The service status of every catalogue code (a new code must be given one here). */
const STATUS: Record<AdclickErrorCode, number> = {
  BAD_REQUEST: 400,
  RANGE_TOO_LARGE: 400,
  CONFIG_INVALID: 400,
  BATCH_DECODE: 400,
  AUTH_FAILED: 401,
  PERMISSION_DENIED: 403,
  NOT_FOUND: 404,
  LAYOUT_CONFLICT: 409,
  SNAPSHOT_CONFLICT: 409,
  RECALC_CONFLICT: 409,
  LEASE_LOST: 409,
  INTERNAL: 500,
  NATS_SERVER_TOO_OLD: 500,
  UNAVAILABLE: 503,
  INFRA_NOT_PROVISIONED: 503,
  INFRA_START_FAILED: 503,
  TLS_FAILED: 503,
  ACTOR_KILLED: 503,
  SHUTDOWN_TIMEOUT: 503,
};

/** The service status (HTTP-like) a catalogue code is answered with. */
export function serviceStatusOf(code: AdclickErrorCode): number {
  return STATUS[code];
}

/** Whether a string is a catalogue code (for codes read off the wire). */
export function isAdclickErrorCode(s: unknown): s is AdclickErrorCode {
  return typeof s === "string" && Object.hasOwn(STATUS, s);
}

export interface ServiceError {
  status: number;
  code: AdclickErrorCode;
  message: string;
}

/**
 * What an error is answered with: an AdclickError's code and message; anything else
 * `fallback` (INTERNAL unless said otherwise) with its message.
 */
export function serviceErrorFor(
  err: unknown,
  fallback: AdclickErrorCode = "INTERNAL",
): ServiceError {
  const code = err instanceof AdclickError ? err.code : fallback;
  return { status: serviceStatusOf(code), code, message: messageOf(err) };
}

/** A header value must be one line; a long message is cut (the body has all of it). */
function headerText(message: string): string {
  const line = message.replace(/[\r\n]+/g, " ").trim() || "error";
  return line.length > 1000 ? `${line.slice(0, 999)}…` : line;
}

/**
 * Answers a service request with an error (status by code, JSON body) and returns what it
 * answered, e.g. for a metric by code.
 */
export function respondWithError(
  msg: Pick<ServiceMsg, "respondError">,
  err: unknown,
  fallback: AdclickErrorCode = "INTERNAL",
): ServiceError {
  const e = serviceErrorFor(err, fallback);
  const body: ServiceErrorBody = { error: { code: e.code, message: e.message } };
  msg.respondError(e.status, headerText(e.message), JSON.stringify(body));
  return e;
}

/**
 * The error a service reply carries, or undefined for a normal reply. `code` is the
 * catalogue code of the JSON body when there is one (older services send none).
 */
export function serviceErrorOf(m: {
  headers?: { get(k: string): string };
  data: Uint8Array;
}): { status: number; code?: AdclickErrorCode; message: string } | undefined {
  const status = m.headers?.get(ServiceErrorCodeHeader);
  if (!status) return undefined;
  let code: AdclickErrorCode | undefined;
  let message = m.headers?.get(ServiceErrorHeader) ?? "";
  try {
    const body = JSON.parse(new TextDecoder().decode(m.data)) as Partial<ServiceErrorBody>;
    if (isAdclickErrorCode(body?.error?.code)) code = body.error.code;
    if (typeof body?.error?.message === "string" && body.error.message) {
      message = body.error.message;
    }
  } catch {
    // not JSON: the headers say it all
  }
  return { status: Number(status), code, message: message || `error ${status}` };
}

/** A service error as one line for a CLI: `message [CODE]` (the status if no code came). */
export function serviceErrorText(e: { status: number; code?: string; message: string }): string {
  return `${e.message.replace(/\s*[\r\n]+\s*/g, " ").trim()} [${e.code ?? e.status}]`;
}
