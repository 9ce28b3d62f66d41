// The `adclick` process entry (bin/adclick.js runs its compiled form; tests run it with tsx).
import { main } from "./cli.js";

process.exitCode = await main(process.argv);
