import cassandra from "cassandra-driver";
import { describe, expect, it } from "vitest";
import { infraSslOptions } from "../../app/infra/cassandra-auth.js";
import { SecurityError } from "../../src/errors.js";
import { cassandraSecurityError, driverSslOptions } from "../../src/storage/cassandra-client.js";

const { errors } = cassandra;
const WHERE = "127.0.0.1:9042";

/** A NoHostAvailableError as client.connect() rejects with: one inner error per host. */
const noHost = (inner: Error) =>
  new errors.NoHostAvailableError({ [WHERE]: inner }, "All host(s) tried for query failed");

const errnoError = (code: string, message: string) =>
  Object.assign(new Error(message), { code }) as NodeJS.ErrnoException;

describe("cassandraSecurityError", () => {
  it("maps a refused login to a one-line AUTH_FAILED naming the user and the credentials' source", () => {
    const err = noHost(
      new errors.AuthenticationError("Provided username adclick_app and/or password are incorrect"),
    );
    const mapped = cassandraSecurityError(err, WHERE, "ADCLICK_CASSANDRA_USER=adclick_app");
    expect(mapped).toBeInstanceOf(SecurityError);
    expect(mapped?.code).toBe("AUTH_FAILED");
    expect(mapped?.message).toBe(
      "Cassandra at 127.0.0.1:9042 refused the login adclick_app: Provided username adclick_app and/or password are incorrect (credentials from ADCLICK_CASSANDRA_USER=adclick_app)",
    );
    expect(mapped?.cause).toBe(err);
  });

  it("maps a missing login to AUTH_FAILED saying what to set", () => {
    for (const message of [
      `Host ${WHERE} requires authentication, but no authenticator found in the options`,
      "Authentication provider not set",
    ]) {
      const mapped = cassandraSecurityError(noHost(new errors.AuthenticationError(message)), WHERE);
      expect(mapped?.code).toBe("AUTH_FAILED");
      expect(mapped?.message).toMatch(/requires a login and none is configured/);
      expect(mapped?.message).toContain("ADCLICK_CASSANDRA_USER");
      expect(mapped?.message).toContain("ADCLICK_CASSANDRA_PASSWORD_FILE");
    }
  });

  it("finds the refusal among the errors of several hosts", () => {
    const err = new errors.NoHostAvailableError({
      "127.0.0.2:9042": errnoError("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.2:9042"),
      "127.0.0.1:9042": new errors.AuthenticationError(
        "Provided username cassandra and/or password are incorrect",
      ),
    });
    expect(cassandraSecurityError(err, WHERE)?.message).toContain("refused the login cassandra");
  });

  it("maps an unauthorized statement (0x2100) to PERMISSION_DENIED with the server's words", () => {
    const err = new errors.ResponseError(
      cassandra.types.responseErrorCodes.unauthorized,
      "User adclick_app has no CREATE permission on <all keyspaces> or any of its parents",
    );
    const mapped = cassandraSecurityError(err, WHERE);
    expect(mapped?.code).toBe("PERMISSION_DENIED");
    expect(mapped?.message).toBe(
      "Cassandra at 127.0.0.1:9042 refused: User adclick_app has no CREATE permission on <all keyspaces> or any of its parents",
    );
  });

  it("maps certificate and handshake failures to TLS_FAILED with the CA hint", () => {
    for (const inner of [
      errnoError("UNABLE_TO_VERIFY_LEAF_SIGNATURE", "unable to verify the first certificate"),
      errnoError("SELF_SIGNED_CERT_IN_CHAIN", "self-signed certificate in certificate chain"),
      errnoError(
        "ERR_TLS_CERT_ALTNAME_INVALID",
        "Hostname/IP does not match certificate's altnames",
      ),
      errnoError("ERR_SSL_WRONG_VERSION_NUMBER", "wrong version number"),
    ]) {
      const mapped = cassandraSecurityError(noHost(inner), WHERE, undefined, true);
      expect(mapped?.code, inner.code).toBe("TLS_FAILED");
      expect(mapped?.message).toContain("ADCLICK_CASSANDRA_TLS_CA");
      expect(mapped?.message).not.toContain("\n");
    }
  });

  it("names a client certificate the node refused, in one line", () => {
    const alert = errnoError(
      "ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED",
      "80ECCE86A57F0000:error:0A00045C:SSL routines:ssl3_read_bytes:tlsv13 alert certificate required:../deps/openssl/openssl/ssl/record/rec_layer_s3.c:1601:SSL alert number 116\n",
    );
    const mapped = cassandraSecurityError(noHost(alert), WHERE, undefined, true);
    expect(mapped?.code).toBe("TLS_FAILED");
    expect(mapped?.message).toMatch(/refused our client certificate/);
    expect(mapped?.message).toContain("ADCLICK_CASSANDRA_TLS_CERT");
    expect(mapped?.message).not.toContain("\n");
  });

  it("reads a reset as a TLS-only node refusing plaintext, or as a failed handshake under TLS", () => {
    const reset = () => noHost(errnoError("ECONNRESET", "read ECONNRESET"));
    expect(cassandraSecurityError(reset(), WHERE, undefined, false)?.message).toMatch(
      /plaintext connection .* probably requires TLS/,
    );
    expect(cassandraSecurityError(reset(), WHERE, undefined, true)?.message).toMatch(
      /during the TLS handshake/,
    );
  });

  it("leaves other failures alone", () => {
    expect(
      cassandraSecurityError(
        noHost(errnoError("ECONNREFUSED", "connect ECONNREFUSED 127.0.0.1:9042")),
        WHERE,
      ),
    ).toBeUndefined();
    expect(
      cassandraSecurityError(
        new errors.ResponseError(cassandra.types.responseErrorCodes.unavailableException, "x"),
        WHERE,
      ),
    ).toBeUndefined();
    expect(cassandraSecurityError(new errors.OperationTimedOutError("timed out"), WHERE)).toBe(
      undefined,
    );
    expect(cassandraSecurityError("not an error", WHERE)).toBeUndefined();
  });
});

describe("TLS options for the driver", () => {
  it("checks the node's certificate: the driver would not by default", () => {
    expect(driverSslOptions({ ca: "CA" })).toEqual({ rejectUnauthorized: true, ca: ["CA"] });
    expect(driverSslOptions({ cert: "C", key: "K" })).toEqual({
      rejectUnauthorized: true,
      cert: "C",
      key: "K",
    });
    expect(driverSslOptions(undefined)).toBeUndefined();
    expect(infraSslOptions({ ca: "CA" })).toEqual({ rejectUnauthorized: true, ca: ["CA"] });
    expect(infraSslOptions({ verify: false })).toEqual({ rejectUnauthorized: false });
  });
});
