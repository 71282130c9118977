// `ksr replicator group-cut|group-coordinator`: consistency group points across agents, cut
// through each member agent's Barrier service and committed to the group point log.
import { resolve } from "node:path";
import { Command, Option } from "commander";
import { GroupCoordinator, parseMemberFlag } from "../../replicator/group-coordinator.js";
import type { GroupCutResult } from "../../replicator/journal/consistency-group.js";
import { maxPointIdLength, type PointConsistency } from "../../replicator/journal/point.js";
import { sleep } from "../../replicator/signal.js";
import { collect, parseBoundedDuration, stderrLog, tlsFiles, withTls, type TlsOptions } from "./replicator-flags.js";

interface GroupFlags extends TlsOptions {
  group: string;
  member: string[];
  log: string;
  consistency: PointConsistency;
  timeout: string;
}

function withGroupFlags(command: Command): Command {
  return withTls(command)
    .requiredOption("--group <name>", "consistency group name (recorded with every member's marker)")
    .requiredOption(
      "--member <id=host:port>",
      "a member machine and its agent's --barrier-listen address (repeatable)",
      collect,
      [],
    )
    .requiredOption("--log <file>", "the group point log (committed group points are appended)")
    .addOption(
      new Option("--consistency <kind>", "app runs every member's quiesce hooks; crash holds their streams")
        .choices(["app", "crash"])
        .default("app"),
    )
    .option("--timeout <duration>", "each phase (hold, mark) must finish within this, for every member", "30s");
}

async function coordinator(options: GroupFlags): Promise<GroupCoordinator> {
  if (options.group === "" || options.group.length > maxPointIdLength)
    throw new Error(`--group must be 1-${maxPointIdLength} characters`);
  return GroupCoordinator.create({
    group: options.group,
    members: options.member.map(parseMemberFlag),
    tls: tlsFiles(options),
    logFile: resolve(options.log),
    requested: options.consistency,
    phaseTimeoutMs: parseBoundedDuration(options.timeout, "--timeout", 1000, 600_000),
    log: stderrLog,
  });
}

function printResult(result: GroupCutResult): void {
  process.stdout.write(`${JSON.stringify(result.ok ? { point: result.point } : { failed: result })}\n`);
}

function cutCommand(): Command {
  return withGroupFlags(new Command("group-cut"))
    .description("cut one consistency group point now; exits 1 when no group point was made")
    .action(async (options: GroupFlags) => {
      const group = await coordinator(options);
      try {
        const result = await group.cut();
        printResult(result);
        if (!result.ok) process.exitCode = 1;
      } finally {
        group.close();
      }
    });
}

function coordinatorCommand(): Command {
  return withGroupFlags(new Command("group-coordinator"))
    .description("cut consistency group points on a cadence until SIGTERM/SIGINT")
    .requiredOption("--interval <duration>", "a group point this often (1m to 24h)")
    .action(async (options: GroupFlags & { interval: string }) => {
      const intervalMs = parseBoundedDuration(options.interval, "--interval", 60_000, 24 * 3_600_000);
      const group = await coordinator(options);
      let signalled = false;
      // Read through a function: the flag changes from signal handlers while the loop awaits.
      const stopped = () => signalled;
      const stop = () => {
        signalled = true;
      };
      process.once("SIGTERM", stop);
      process.once("SIGINT", stop);
      try {
        while (!stopped()) {
          const started = Date.now();
          const result = await group.cut();
          printResult(result);
          if (!result.ok) stderrLog.warn(`no group point this time: ${result.reason}`);
          while (!stopped() && Date.now() - started < intervalMs) await sleep(Math.min(1000, intervalMs));
        }
      } finally {
        group.close();
      }
    });
}

export const groupCommands = { cut: cutCommand, coordinator: coordinatorCommand };
