// The `adclick` process entry (bin/adclick.js runs its compiled form; tests run it with tsx).
import { main } from "./cli/commands.js";

process.exitCode = await main(process.argv);
