import { execFileSync } from "node:child_process";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";

/** A throwaway CA and a server certificate it signed, for 127.0.0.1 and localhost. */
export interface TestCertificates {
  caFile: string;
  certFile: string;
  keyFile: string;
  /** The key and the certificate in one PEM file (Cassandra's PEM keystore). */
  keyAndCertFile: string;
}

const openssl = (args: string[], cwd: string) =>
  execFileSync("openssl", args, { cwd, stdio: ["ignore", "ignore", "pipe"] });

/** Makes a CA and a server certificate in `dir` with openssl (installed by the provisioning). */
export function makeTestCertificates(dir: string, caName = "adclick-test-ca"): TestCertificates {
  const ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
  openssl(
    [
      "req",
      "-x509",
      ...ec,
      "-keyout",
      "ca-key.pem",
      "-out",
      "ca.pem",
      "-days",
      "2",
      "-subj",
      `/CN=${caName}`,
    ],
    dir,
  );
  openssl(
    ["req", ...ec, "-keyout", "server-key.pem", "-out", "server.csr", "-subj", "/CN=localhost"],
    dir,
  );
  writeFileSync(
    join(dir, "ext.cnf"),
    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
  );
  openssl(
    [
      "x509",
      "-req",
      "-in",
      "server.csr",
      "-CA",
      "ca.pem",
      "-CAkey",
      "ca-key.pem",
      "-CAcreateserial",
      "-out",
      "server.pem",
      "-days",
      "2",
      "-extfile",
      "ext.cnf",
    ],
    dir,
  );
  const keyAndCertFile = join(dir, "server-key-and-cert.pem");
  writeFileSync(
    keyAndCertFile,
    readFileSync(join(dir, "server-key.pem"), "utf8") +
      readFileSync(join(dir, "server.pem"), "utf8"),
    { mode: 0o600 },
  );
  return {
    caFile: join(dir, "ca.pem"),
    certFile: join(dir, "server.pem"),
    keyFile: join(dir, "server-key.pem"),
    keyAndCertFile,
  };
}
