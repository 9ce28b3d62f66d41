import { Command, InvalidArgumentError } from "commander";
import { type AdclickConfig, ENV_VARS, loadConfig } from "../config.js";
import { AdclickError } from "../errors.js";
import { runShip } from "./ship.js";
import { runUp } from "./up.js";

function intArg(name: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number`);
    return Number(v);
  };
}

/** Global flags that map onto configuration settings (they win over ADCLICK_* variables). */
function configFrom(opts: Record<string, unknown>): AdclickConfig {
  const o: Partial<AdclickConfig> = {};
  if (typeof opts.nats === "string") o.natsServers = opts.nats.split(",");
  if (typeof opts.cassandra === "string") o.cassandraContactPoints = opts.cassandra.split(",");
  if (typeof opts.keyspace === "string") o.cassandraKeyspace = opts.keyspace;
  if (typeof opts.partitions === "number") o.partitions = opts.partitions;
  return loadConfig(process.env, o);
}

export function buildCli(): Command {
  const program = new Command("adclick")
    .description("Real-time, exactly-once ad click aggregation on NATS JetStream and Cassandra")
    .option("--nats <urls>", "NATS servers, comma separated (ADCLICK_NATS_URL)")
    .option("--cassandra <hosts>", "Cassandra contact points host:port (ADCLICK_CASSANDRA)")
    .option("--keyspace <name>", "Cassandra keyspace (ADCLICK_KEYSPACE)")
    .option(
      "--partitions <n>",
      "raw-click partitions, fixed per deployment (ADCLICK_PARTITIONS)",
      intArg("--partitions"),
    )
    .showHelpAfterError()
    .addHelpText(
      "after",
      `\nEnvironment:\n${Object.entries(ENV_VARS)
        .map(([k, v]) => `  ${k.padEnd(30)} ${v}`)
        .join("\n")}`,
    );

  program
    .command("up")
    .description(
      "run the local stack in the foreground: start nats-server and Cassandra where none answers, apply the layout, report health",
    )
    .option("--once", "exit after reporting healthy (stops what it started)")
    .action(async (opts: { once?: boolean }) => {
      await runUp(configFrom(program.opts()), { once: opts.once ?? false });
    });

  program
    .command("ship")
    .description("ship click log files to JetStream (one-shot, or --follow like a log agent)")
    .argument("<files...>", "log files")
    .option(
      "--source <name>",
      "the origin of these logs, part of every derived event id (default: host name)",
    )
    .option(
      "--follow",
      "keep tailing the files (rotation and truncation handled) until SIGINT/SIGTERM",
    )
    .option(
      "--from-start",
      "ignore saved checkpoints (re-shipped lines keep their ids and are not counted twice)",
    )
    .option("--chunk-bytes <n>", "bytes published between checkpoints", intArg("--chunk-bytes"))
    .option("--json", "print the summary as JSON")
    .action(
      async (
        files: string[],
        opts: {
          source?: string;
          follow?: boolean;
          fromStart?: boolean;
          chunkBytes?: number;
          json?: boolean;
        },
      ) => {
        await runShip(configFrom(program.opts()), files, {
          source: opts.source,
          follow: opts.follow ?? false,
          fromStart: opts.fromStart ?? false,
          chunkBytes: opts.chunkBytes,
          json: opts.json ?? false,
        });
      },
    );

  return program;
}

export async function main(argv = process.argv): Promise<number> {
  try {
    await buildCli().parseAsync(argv);
    return 0;
  } catch (err) {
    if (err instanceof AdclickError) {
      console.error(`adclick: ${err.message} [${err.code}]`);
      return 2;
    }
    console.error("adclick:", err);
    return 1;
  }
}
