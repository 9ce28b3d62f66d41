#!/usr/bin/env node
// Completes package-lock.json with the platform-specific optional packages that the npm
// registry mirror on our build machines does not serve (e.g. @biomejs/cli-darwin-arm64,
// @msgpackr-extract/msgpackr-extract-win32-x64). `npm install` here leaves them out of the
// lock, and `npm ci` then refuses the lock as "out of sync". Each missing entry is added with
// its os/cpu constraints, exactly as a lock made against the public registry would hold it,
// so npm skips it on platforms it is not for and fetches it on those it is.
//
//   node scripts/complete-lock.mjs          fix package-lock.json in place
//   node scripts/complete-lock.mjs --check  exit 1 if entries are missing (run by npm run lint)
import { readFileSync, writeFileSync } from "node:fs";

const path = new URL("../package-lock.json", import.meta.url);
const lock = JSON.parse(readFileSync(path, "utf8"));
const pkgs = lock.packages;
const OS = {
  android: "android",
  darwin: "darwin",
  linux: "linux",
  win32: "win32",
  freebsd: "freebsd",
};
const CPU = { arm64: "arm64", x64: "x64", arm: "arm", ia32: "ia32", riscv64: "riscv64" };

function platformOf(name) {
  const parts = name.split("/").pop().split("-");
  const os = parts.find((p) => OS[p]);
  const cpu = parts.find((p) => CPU[p]);
  if (!os || !cpu) return undefined;
  const entry = { os: [os], cpu: [cpu] };
  if (parts.includes("musl")) entry.libc = ["musl"];
  else if (os === "linux" && parts.includes("gnu")) entry.libc = ["glibc"];
  return entry;
}

const missing = [];
for (const [key, meta] of Object.entries(pkgs)) {
  for (const [dep, version] of Object.entries(meta.optionalDependencies ?? {})) {
    const base = key === "" ? "" : `${key}/`;
    const candidates = [`${base}node_modules/${dep}`, `node_modules/${dep}`];
    if (candidates.some((c) => pkgs[c])) continue;
    const platform = platformOf(dep);
    if (!platform) continue; // not a platform package: a real gap, let npm report it
    missing.push([
      `node_modules/${dep}`,
      { version, ...platform, optional: true, ...(meta.dev ? { dev: true } : {}) },
    ]);
  }
}

if (process.argv.includes("--check")) {
  if (missing.length > 0) {
    console.error(
      `package-lock.json lacks ${missing.length} platform packages (${missing.map(([k]) => k.slice(13)).join(", ")}): run 'node scripts/complete-lock.mjs'`,
    );
    process.exit(1);
  }
  process.exit(0);
}
for (const [key, entry] of missing) pkgs[key] = entry;
const sorted = Object.fromEntries(
  Object.entries(pkgs).sort(([a], [b]) => (a === "" ? -1 : b === "" ? 1 : a < b ? -1 : 1)),
);
lock.packages = sorted;
writeFileSync(path, `${JSON.stringify(lock, null, 2)}\n`);
console.log(`package-lock.json: added ${missing.length} platform entries`);
