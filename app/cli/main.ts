import { Command, InvalidArgumentError } from "commander";
import { type AdclickConfig, ENV_VARS, loadConfig } from "../../src/config.js";
import { AdclickError } from "../../src/errors.js";
import { natsPermissionError } from "../../src/nats/connect.js";
import { benchCommand, benchOptionsFrom } from "../../tools/bench/options.js";
import { runGen } from "./gen.js";
import { runQuery } from "./query.js";
import { runReconcile } from "./reconcile.js";
import { runReplay } from "./replay.js";
import { runShip } from "./ship.js";

export function intArg(name: string) {
  return (v: string) => {
    if (!/^\d+$/.test(v)) throw new InvalidArgumentError(`${name} must be a whole number`);
    return Number(v);
  };
}

/** Global flags that map onto configuration settings (they win over ADCLICK_* variables). */
export function configFrom(opts: Record<string, unknown>): AdclickConfig {
  const o: Partial<AdclickConfig> = {};
  if (typeof opts.nats === "string") o.natsServers = opts.nats.split(",");
  if (typeof opts.cassandra === "string") o.cassandraContactPoints = opts.cassandra.split(",");
  if (typeof opts.keyspace === "string") o.cassandraKeyspace = opts.keyspace;
  if (typeof opts.partitions === "number") o.partitions = opts.partitions;
  return loadConfig(process.env, o);
}

/**
 * The `adclick` program. `extend` adds the commands that run actors (up, worker, admin):
 * they live in supervisor/ (the composition root), which src/ never imports.
 */
export function buildCli(extend?: (program: Command) => void): Command {
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
    .command("ship")
    .description(
      "ship click log files to JetStream (one-shot, or --follow like a log agent); every file is a source of its own, several are shipped in turns by event time",
    )
    .argument("<files...>", "log files (e.g. several servers' logs of the same period)")
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

  const query = program
    .command("query")
    .description("ask the query service (NATS request-reply); --json prints the reply");
  const queryOptions = (cmd: Command) =>
    cmd
      .option("--minutes <m>", "the M most recent whole minutes (default 1)", intArg("--minutes"))
      .option("--from <iso>", "range start, ISO-8601 UTC on a minute boundary")
      .option("--to <iso>", "range end (exclusive)")
      .option("--country <c>", "only clicks from this country")
      .option("--ip <ip>", "only clicks from this ip")
      .option("--user <id>", "only clicks of this user_id")
      .option("--json", "print the reply JSON")
      .option("--wait-final", "repeat the query until the reply is final")
      .option(
        "--timeout <s>",
        "seconds to wait with --wait-final (default 120)",
        intArg("--timeout"),
      );
  queryOptions(
    query.command("count").description("clicks of one ad").requiredOption("--ad <id>", "the ad_id"),
  ).action(async (o) => {
    process.exitCode = await runQuery(configFrom(program.opts()), "count", o);
  });
  queryOptions(
    query
      .command("series")
      .description("per-minute clicks of one ad")
      .requiredOption("--ad <id>", "the ad_id"),
  ).action(async (o) => {
    process.exitCode = await runQuery(configFrom(program.opts()), "series", o);
  });
  queryOptions(
    query
      .command("top")
      .description("the top N ads")
      .option("--n <n>", "how many ads (default 100)", intArg("--n")),
  ).action(async (o) => {
    process.exitCode = await runQuery(configFrom(program.opts()), "top", o);
  });

  const num = (name: string) => (v: string) => {
    const n = Number(v);
    if (!Number.isFinite(n)) throw new InvalidArgumentError(`${name} must be a number`);
    return n;
  };
  program
    .command("gen")
    .description(
      "generate a synthetic click log (to a file, stdout, or published directly with --publish)",
    )
    .option("--lines <n>", "lines to generate (default 10000)", intArg("--lines"))
    .option("--out <file>", "write the log here (default: stdout)")
    .option("--publish", "publish the clicks to JetStream instead of writing a log")
    .option(
      "--rate <n>",
      "publish live clicks (stamped now) at this rate per second",
      intArg("--rate"),
    )
    .option("--duration <s>", "with --rate: stop after this many seconds", intArg("--duration"))
    .option("--seed <n>", "random seed (the same seed gives the same log)", intArg("--seed"))
    .option("--ads <n>", "distinct ads (default 1000)", intArg("--ads"))
    .option("--zipf <s>", "Zipf exponent of ad popularity (default 1.1)", num("--zipf"))
    .option("--start <iso>", "event time of the first click (default: 5 minutes ago)")
    .option("--span-minutes <m>", "event-time span (default 5)", intArg("--span-minutes"))
    .option(
      "--duplicates <ratio>",
      "share of lines repeating a click_id (default 0.02)",
      num("--duplicates"),
    )
    .option("--late <ratio>", "share of clicks later than the lateness (default 0)", num("--late"))
    .option("--malformed <ratio>", "share of malformed lines (default 0.01)", num("--malformed"))
    .option("--countries <list>", "comma-separated countries")
    .action(async (o) => {
      await runGen(configFrom(program.opts()), {
        ...o,
        lines: o.lines ?? 10_000,
        publish: o.publish ?? false,
      });
    });

  program
    .command("replay")
    .description(
      "recount a time range from the raw store with a dedicated aggregation instance; --apply overwrites its aggregates (resumable: rerun the same command after a crash)",
    )
    .requiredOption(
      "--from <iso>",
      "range start, ISO-8601 (UTC unless a zone is given), rounded down to the minute",
    )
    .requiredOption("--to <iso>", "range end (exclusive), rounded up to the minute")
    .option(
      "--apply",
      "overwrite the range's aggregates with the recount (default: report what would change)",
    )
    .option("--run-id <id>", "run to start or resume (default: derived from the range)")
    .option("--json", "print the report as JSON")
    .action(
      async (opts: {
        from: string;
        to: string;
        apply?: boolean;
        runId?: string;
        json?: boolean;
      }) => {
        await runReplay(configFrom(program.opts()), {
          from: opts.from,
          to: opts.to,
          apply: opts.apply ?? false,
          json: opts.json ?? false,
          ...(opts.runId ? { runId: opts.runId } : {}),
        });
      },
    );

  program
    .command("reconcile")
    .description(
      "compare stored aggregates with a recount of the raw store: every differing (ad, minute[, dimension]) with its likely cause; exits 1 when there are mismatches (unless repaired)",
    )
    .requiredOption(
      "--from <iso>",
      "range start, ISO-8601 (UTC unless a zone is given), rounded down to the minute",
    )
    .requiredOption("--to <iso>", "range end (exclusive), rounded up to the minute")
    .option("--repair", "apply the recount to the range (as replay --apply)")
    .option("--json", "print the report as JSON")
    .action(async (opts: { from: string; to: string; repair?: boolean; json?: boolean }) => {
      const report = await runReconcile(configFrom(program.opts()), {
        from: opts.from,
        to: opts.to,
        repair: opts.repair ?? false,
        json: opts.json ?? false,
      });
      if (!opts.repair && report.mismatchCount > 0) process.exitCode = 1;
    });

  benchCommand(program.command("bench")).action(async (opts: Record<string, unknown>) => {
    // `--partitions` is also a global option, which commander gives precedence to.
    const global = program.opts();
    const { runBench } = await import("../../tools/bench/run.js");
    process.exitCode = await runBench(
      benchOptionsFrom({
        ...opts,
        ...(typeof global.partitions === "number" ? { partitions: global.partitions } : {}),
      }),
    );
  });

  extend?.(program);
  return program;
}

export async function main(
  argv = process.argv,
  extend?: (program: Command) => void,
): Promise<number> {
  try {
    await buildCli(extend).parseAsync(argv);
    return typeof process.exitCode === "number" ? process.exitCode : 0;
  } catch (thrown) {
    // A request the server refused to this role: say so in one line, like our own errors.
    const err = natsPermissionError(thrown, `adclick ${argv.slice(2, 4).join(" ")}`) ?? thrown;
    if (err instanceof AdclickError) {
      console.error(`adclick: ${err.message} [${err.code}]`);
      return 2;
    }
    // Anything else: say what happened in one line (the stack with ADCLICK_DEBUG=1).
    console.error(`adclick: ${err instanceof Error ? err.message : String(err)}`);
    if (process.env.ADCLICK_DEBUG) console.error(err);
    return 1;
  }
}
