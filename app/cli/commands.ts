import type { Command } from "commander";
import { runUp, runWorker } from "../up.js";
import { runAdmin, runAdminJob } from "./admin.js";
import { credentialsReport } from "./credentials.js";
import { configFrom, main as coreMain, intArg } from "./main.js";

/** Adds the commands that run actors (up, worker) and talk to them (admin). */
export function extendCli(program: Command): void {
  program
    .command("up")
    .description(
      "run the whole local stack in the foreground: nats-server and Cassandra (started where none answers), every actor, the query and admin services; Ctrl-C stops it",
    )
    .option(
      "--generate <rate>",
      "also generate this many synthetic clicks per second",
      intArg("--generate"),
    )
    .option("--refresh <s>", "seconds between live-view refreshes (default 3)", intArg("--refresh"))
    .option("--once", "exit after reporting healthy (stops what it started)")
    .option(
      "--nats-cluster",
      "start a local 3-node NATS cluster (the NATS port and the next two, 4222-4224 by default; stores under the data folder) with streams and KV buckets at R3, instead of one nats-server",
    )
    .action(
      async (o: { generate?: number; refresh?: number; once?: boolean; natsCluster?: boolean }) => {
        await runUp(configFrom(program.opts()), {
          once: o.once ?? false,
          generate: o.generate ?? 0,
          refreshSeconds: o.refresh ?? 3,
          natsCluster: o.natsCluster ?? false,
        });
      },
    );
  program
    .command("worker")
    .description(
      "run the actors and services of one worker process against running NATS and Cassandra",
    )
    .action(async () => {
      await runWorker(configFrom(program.opts()));
    });
  const admin = program.command("admin").description("supervisor admin commands (over NATS)");
  admin
    .command("status")
    .option("--json", "print JSON")
    .action(async (o) => {
      process.exitCode = await runAdmin(configFrom(program.opts()), "status", undefined, o.json);
    });
  admin
    .command("actors")
    .option("--json", "print JSON")
    .action(async (o) => {
      process.exitCode = await runAdmin(configFrom(program.opts()), "actors", undefined, o.json);
    });
  for (const cmd of ["kill", "pause", "resume"] as const) {
    admin
      .command(cmd)
      .argument("<id>", "actor id, e.g. aggregator-3 (see: adclick admin actors)")
      .description(
        cmd === "kill"
          ? "crash an actor (no orderly stop); the supervisor restarts it"
          : `${cmd} an actor`,
      )
      .option("--worker <name>", "only on this worker (as `admin actors` names it)")
      .action(async (id: string, o: { worker?: string }) => {
        process.exitCode = await runAdmin(configFrom(program.opts()), cmd, id, false, o.worker);
      });
  }
  admin
    .command("replay")
    .description("replay a range inside the cluster (see adclick replay)")
    .requiredOption("--from <iso>", "range start")
    .requiredOption("--to <iso>", "range end (exclusive)")
    .option("--apply", "overwrite the range's aggregates")
    .option("--timeout <s>", "seconds to wait for the report (default 1800)", intArg("--timeout"))
    .action(async (o: { from: string; to: string; apply?: boolean; timeout?: number }) => {
      process.exitCode = await runAdminJob(
        configFrom(program.opts()),
        "replay",
        { from: o.from, to: o.to, apply: o.apply ?? false },
        (o.timeout ?? 1800) * 1000,
      );
    });
  admin
    .command("reconcile")
    .description("reconcile a range inside the cluster (see adclick reconcile)")
    .requiredOption("--from <iso>", "range start")
    .requiredOption("--to <iso>", "range end (exclusive)")
    .option("--repair", "apply the recount")
    .option("--timeout <s>", "seconds to wait for the report (default 1800)", intArg("--timeout"))
    .action(async (o: { from: string; to: string; repair?: boolean; timeout?: number }) => {
      process.exitCode = await runAdminJob(
        configFrom(program.opts()),
        "reconcile",
        { from: o.from, to: o.to, repair: o.repair ?? false },
        (o.timeout ?? 1800) * 1000,
      );
    });
  admin
    .command("snapshot")
    .argument("[id]", "one aggregator (default: all)")
    .description("take snapshots now")
    .action(async (id?: string) => {
      process.exitCode = await runAdmin(configFrom(program.opts()), "snapshot", id, false);
    });
  program
    .command("credentials")
    .description(
      "show AdClick's credentials (created on first use): per-role NATS nkey seeds, Cassandra passwords",
    )
    .option("--nats-config", "print the authorization block for your own nats-server instead")
    .action((o: { natsConfig?: boolean }) => {
      console.log(credentialsReport(configFrom(program.opts()), o.natsConfig ?? false));
    });
}

export function main(argv = process.argv): Promise<number> {
  return coreMain(argv, extendCli);
}
