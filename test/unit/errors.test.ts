import { headers } from "@nats-io/nats-core";
import { ServiceErrorCodeHeader, ServiceErrorHeader } from "@nats-io/services";
import { describe, expect, it } from "vitest";
import { createActor, fromPromise } from "xstate";
import { type StagePrepared, stageMachine } from "../../actors/stage.js";
import {
  ActorKilledError,
  AdclickError,
  type AdclickErrorCode,
  ConfigError,
  errorCodeOf,
  InfraError,
  isAdclickError,
  messageOf,
} from "../../src/errors.js";
import { LeaseLostError } from "../../src/leases/partition-lease.js";
import { QueryError } from "../../src/query/request.js";
import { RecalcConflictError } from "../../src/recalc/progress.js";
import { SnapshotConflictError } from "../../src/snapshots/snapshot-store.js";
import { BatchDecodeError, decodeClickMessage } from "../../src/wire/batch-codec.js";
import {
  isAdclickErrorCode,
  respondWithError,
  serviceErrorFor,
  serviceErrorOf,
  serviceErrorText,
  serviceStatusOf,
} from "../../src/wire/service-errors.js";

/** Every catalogue code (the compiler refuses this object if one is missing or unknown). */
const ALL_CODES: Record<AdclickErrorCode, true> = {
  CONFIG_INVALID: true,
  INFRA_NOT_PROVISIONED: true,
  INFRA_START_FAILED: true,
  NATS_SERVER_TOO_OLD: true,
  LAYOUT_CONFLICT: true,
  BAD_REQUEST: true,
  RANGE_TOO_LARGE: true,
  NOT_FOUND: true,
  UNAVAILABLE: true,
  ACTOR_KILLED: true,
  LEASE_LOST: true,
  SNAPSHOT_CONFLICT: true,
  BATCH_DECODE: true,
  RECALC_CONFLICT: true,
  SHUTDOWN_TIMEOUT: true,
  AUTH_FAILED: true,
  PERMISSION_DENIED: true,
  TLS_FAILED: true,
  INTERNAL: true,
};
const codes = Object.keys(ALL_CODES) as AdclickErrorCode[];

/** A service message that records its error reply the way @nats-io/services sends it. */
function recordingMsg() {
  const sent: { headers: ReturnType<typeof headers>; data: Uint8Array }[] = [];
  return {
    sent,
    respondError(code: number, description: string, data?: unknown) {
      const h = headers();
      h.set(ServiceErrorCodeHeader, `${code}`); // throws on a value with a line break
      h.set(ServiceErrorHeader, description);
      sent.push({ headers: h, data: new TextEncoder().encode(String(data ?? "")) });
      return true;
    },
  };
}

describe("the error classes", () => {
  it.each([
    ["ActorKilledError", new ActorKilledError("killed"), "ACTOR_KILLED"],
    ["LeaseLostError", new LeaseLostError("lost"), "LEASE_LOST"],
    ["SnapshotConflictError", new SnapshotConflictError("stale"), "SNAPSHOT_CONFLICT"],
    ["BatchDecodeError", new BatchDecodeError("poison"), "BATCH_DECODE"],
    ["RecalcConflictError", new RecalcConflictError("raced"), "RECALC_CONFLICT"],
    ["ConfigError", new ConfigError("ADCLICK_X", "bad"), "CONFIG_INVALID"],
    ["InfraError", new InfraError("INFRA_START_FAILED", "down"), "INFRA_START_FAILED"],
    ["QueryError", new QueryError("BAD_REQUEST", "bad"), "BAD_REQUEST"],
    ["QueryError", new QueryError("RANGE_TOO_LARGE", "long"), "RANGE_TOO_LARGE"],
    ["QueryError", new QueryError("UNAVAILABLE", "later"), "UNAVAILABLE"],
  ] as const)("%s is an AdclickError with code %s", (name, err, code) => {
    expect(err).toBeInstanceOf(AdclickError);
    expect(err).toBeInstanceOf(Error);
    expect(err.name).toBe(name);
    expect(err.code).toBe(code);
    expect(codes).toContain(code);
    expect(errorCodeOf(err)).toBe(code);
    expect(isAdclickError(err, code)).toBe(true);
  });

  it("keeps QueryError's queryCode and status", () => {
    const e = new QueryError("RANGE_TOO_LARGE", "long");
    expect(e.queryCode).toBe("RANGE_TOO_LARGE");
    expect(e.status).toBe(serviceStatusOf(e.code));
    expect(new QueryError("UNAVAILABLE", "x").status).toBe(serviceStatusOf("UNAVAILABLE"));
  });

  it("passes the cause through", () => {
    const cause = new Error("kv said no");
    expect(new SnapshotConflictError("stale", { cause }).cause).toBe(cause);
    expect(new LeaseLostError("lost", { cause }).cause).toBe(cause);
  });

  it("decoding a poison message throws the catalogue's BATCH_DECODE", () => {
    let err: unknown;
    try {
      decodeClickMessage(new Uint8Array([0xc1]));
    } catch (e) {
      err = e;
    }
    expect(errorCodeOf(err)).toBe("BATCH_DECODE");
  });
});

describe("errorCodeOf / isAdclickError", () => {
  it("is undefined for plain errors and non-errors", () => {
    for (const v of [
      new Error("boom"),
      new RangeError("x"),
      Object.assign(new Error("look-alike"), { code: "ACTOR_KILLED" }),
      { code: "LEASE_LOST" },
      "ACTOR_KILLED",
      42,
      null,
      undefined,
    ]) {
      expect(errorCodeOf(v)).toBeUndefined();
      expect(isAdclickError(v)).toBe(false);
    }
  });

  it("reads an AbortSignal's reason", () => {
    const killed = new AbortController();
    killed.abort(new ActorKilledError("killed by an admin command"));
    expect(errorCodeOf(killed.signal)).toBe("ACTOR_KILLED");
    const lost = new AbortController();
    lost.abort(new LeaseLostError("taken over"));
    expect(errorCodeOf(lost.signal)).toBe("LEASE_LOST");
    const plain = new AbortController();
    plain.abort(); // a DOMException AbortError: an orderly stop
    expect(errorCodeOf(plain.signal)).toBeUndefined();
    expect(errorCodeOf(new AbortController().signal)).toBeUndefined(); // not aborted
  });

  it("ends a killed actor failed with ActorKilledError (code ACTOR_KILLED) in its output", () => {
    const actor = createActor(
      stageMachine.provide({
        actors: { prepare: fromPromise(() => new Promise<StagePrepared>(() => {})) },
      }),
      { input: { id: "stage", now: () => 0 } },
    ).start();
    actor.send({ type: "KILL", reason: "killed by the test" });
    const out = actor.getSnapshot().output;
    expect(out?.failed).toBe(true);
    expect(out?.error).toBeInstanceOf(ActorKilledError);
    expect(errorCodeOf(out?.error)).toBe("ACTOR_KILLED");
  });

  it("isAdclickError checks the code when given", () => {
    const e = new LeaseLostError("lost");
    expect(isAdclickError(e)).toBe(true);
    expect(isAdclickError(e, "LEASE_LOST")).toBe(true);
    expect(isAdclickError(e, "ACTOR_KILLED")).toBe(false);
  });

  it("messageOf gives the message of an error, else the text", () => {
    expect(messageOf(new Error("boom"))).toBe("boom");
    expect(messageOf("plain")).toBe("plain");
    expect(messageOf(7)).toBe("7");
  });
});

describe("service errors", () => {
  it("gives every catalogue code a 4xx/5xx status", () => {
    for (const code of codes) {
      expect(isAdclickErrorCode(code)).toBe(true);
      expect(serviceStatusOf(code)).toBeGreaterThanOrEqual(400);
      expect(serviceStatusOf(code)).toBeLessThan(600);
    }
    expect(isAdclickErrorCode("BAD_BATCH")).toBe(false);
    expect(isAdclickErrorCode("toString")).toBe(false);
    expect(isAdclickErrorCode(undefined)).toBe(false);
  });

  it.each([
    ["BAD_REQUEST", 400],
    ["RANGE_TOO_LARGE", 400],
    ["CONFIG_INVALID", 400],
    ["NOT_FOUND", 404],
    ["SNAPSHOT_CONFLICT", 409],
    ["RECALC_CONFLICT", 409],
    ["LEASE_LOST", 409],
    ["LAYOUT_CONFLICT", 409],
    ["INTERNAL", 500],
    ["UNAVAILABLE", 503],
    ["ACTOR_KILLED", 503],
    ["SHUTDOWN_TIMEOUT", 503],
  ] as const)("answers %s with %i", (code, status) => {
    expect(serviceStatusOf(code)).toBe(status);
    expect(serviceErrorFor(new AdclickError(code, "m"))).toEqual({ status, code, message: "m" });
  });

  it("answers anything else with the fallback (INTERNAL unless said)", () => {
    expect(serviceErrorFor(new Error("boom"))).toEqual({
      status: 500,
      code: "INTERNAL",
      message: "boom",
    });
    expect(serviceErrorFor("text", "UNAVAILABLE")).toEqual({
      status: 503,
      code: "UNAVAILABLE",
      message: "text",
    });
  });

  it("responds with the status, a one-line header and the JSON body; the client reads it back", () => {
    const msg = recordingMsg();
    const answered = respondWithError(
      msg,
      new RecalcConflictError("run r1: revision mismatch\nsecond line"),
    );
    expect(answered).toEqual({
      status: 409,
      code: "RECALC_CONFLICT",
      message: "run r1: revision mismatch\nsecond line",
    });
    const reply = msg.sent[0];
    if (!reply) throw new Error("no reply");
    expect(reply.headers.get(ServiceErrorCodeHeader)).toBe("409");
    expect(reply.headers.get(ServiceErrorHeader)).toBe("run r1: revision mismatch second line");
    expect(JSON.parse(new TextDecoder().decode(reply.data))).toEqual({
      error: { code: "RECALC_CONFLICT", message: "run r1: revision mismatch\nsecond line" },
    });
    const parsed = serviceErrorOf(reply);
    expect(parsed).toEqual({
      status: 409,
      code: "RECALC_CONFLICT",
      message: "run r1: revision mismatch\nsecond line",
    });
    expect(serviceErrorText(parsed ?? { status: 0, message: "" })).toBe(
      "run r1: revision mismatch second line [RECALC_CONFLICT]",
    );
  });

  it("answers a plain error as INTERNAL (500) with its message", () => {
    const msg = recordingMsg();
    respondWithError(msg, new TypeError("x is undefined"));
    const parsed = msg.sent[0] && serviceErrorOf(msg.sent[0]);
    expect(parsed).toEqual({ status: 500, code: "INTERNAL", message: "x is undefined" });
  });

  it("cuts a very long header message (the body keeps all of it)", () => {
    const msg = recordingMsg();
    respondWithError(msg, new AdclickError("BAD_REQUEST", "x".repeat(5000)));
    const reply = msg.sent[0];
    expect(reply?.headers.get(ServiceErrorHeader).length).toBeLessThanOrEqual(1000);
    expect(reply && serviceErrorOf(reply)?.message).toHaveLength(5000);
  });

  it("client parse: a normal reply is no error; an error without a JSON body uses the headers", () => {
    expect(serviceErrorOf({ data: new TextEncoder().encode("{}") })).toBeUndefined();
    const h = headers();
    h.set(ServiceErrorCodeHeader, "400");
    h.set(ServiceErrorHeader, "the request is not JSON");
    const e = serviceErrorOf({ headers: h, data: new Uint8Array() });
    expect(e).toEqual({ status: 400, code: undefined, message: "the request is not JSON" });
    expect(serviceErrorText(e ?? { status: 0, message: "" })).toBe("the request is not JSON [400]");
    const unknownCode = serviceErrorOf({
      headers: h,
      data: new TextEncoder().encode('{"error":{"code":"SOMETHING_NEW","message":"m"}}'),
    });
    expect(unknownCode).toEqual({ status: 400, code: undefined, message: "m" });
  });
});
