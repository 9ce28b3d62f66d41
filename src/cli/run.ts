// Entry point when running from sources (tests: `node --import tsx src/cli/run.ts ...`).
import { main } from "./main.js";

process.exitCode = await main(process.argv);
