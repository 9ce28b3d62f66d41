#!/usr/bin/env node
// The `adclick` command. The TypeScript sources are compiled to dist/ by `npm run build`
// (run automatically by `npm ci` / `npm install` through the "prepare" script).
import { existsSync } from "node:fs";

const entry = new URL("../dist/app/run.js", import.meta.url);
if (!existsSync(entry)) {
  console.error("adclick: dist/ is missing; run 'npm run build' first");
  process.exit(2);
}
await import(entry.href);
