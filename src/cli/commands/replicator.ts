// `ksr replicator agent|process-server|master-target`: the three programs of the data path.
// Servers print one JSON line {"listening": port} on stdout once they accept connections.
import { resolve } from "node:path";
import { Command, Option } from "commander";
import { Agent, defaultWatchdogMs, defaultWriteHoldLimitMs } from "../../replicator/agent/agent.js";
import { captureStrategies, type CaptureRequest } from "../../replicator/agent/capture.js";
import { startBarrierServer } from "../../replicator/agent/barrier-server.js";
import { groupCommands } from "./group.js";
import {
  codecWorkers,
  collect,
  parseBoundedInteger,
  pointOptions,
  stderrLog,
  tlsFiles,
  withCodecWorkers,
  withTls,
  type TlsOptions,
} from "./replicator-flags.js";
import { parseCompression, readEncryptionKey } from "../../replicator/frame-codec.js";
import { startMasterTarget, type ReplicaSpec } from "../../replicator/master-target/server.js";
import { checkRetention } from "../../replicator/master-target/recovery-points.js";
import { parseRetention } from "./journal.js";
import { parseByteSize } from "../../replicator/process-server/bandwidth.js";
import { startProcessServer } from "../../replicator/process-server/server.js";
import type { RunningServer } from "../../replicator/grpc-util.js";

export function parseReplicaFlag(value: string, kind: ReplicaSpec["kind"], flag: string): ReplicaSpec {
  const separator = value.indexOf("=");
  if (separator <= 0 || separator === value.length - 1) throw new Error(`${flag} "${value}": expected MACHINE_ID=PATH`);
  return { machineId: value.slice(0, separator), kind, path: resolve(value.slice(separator + 1)) };
}

function parseSeconds(value: string, flag: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds <= 0)
    throw new Error(`${flag}: "${value}" is not a positive number of seconds`);
  return seconds;
}

/** Keeps a server until SIGTERM/SIGINT, then closes it gracefully. */
async function serveUntilSignalled(server: RunningServer): Promise<void> {
  process.stdout.write(`${JSON.stringify({ listening: server.port })}\n`);
  await new Promise<void>((done) => {
    const stop = () => {
      void server.close().then(done);
    };
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
  });
}

function masterTargetCommand(): Command {
  return withCodecWorkers(withTls(new Command("master-target")))
    .description("apply replicated changes to replica directories or images, durably and in order")
    .requiredOption("--listen <address>", "host:port to serve on (port 0 picks a free one)")
    .requiredOption("--encryption-key <file>", "AES-256 key shared with the process server (32 bytes, hex or base64)")
    .requiredOption("--state <dir>", "directory for the applied sequence numbers")
    .option("--replica <id=dir>", "a tree replica: machine id and directory (repeatable)", collect, [])
    .option("--block-replica <id=image>", "a block replica: machine id and image file (repeatable)", collect, [])
    .option("--retention <duration>", "keep recovery points this long, 1h to 720h (journals in STATE/journals)", "72h")
    .option("--prune-interval <duration>", "apply the retention window this often", "1m")
    .action(
      async (
        options: TlsOptions & {
          listen: string;
          encryptionKey: string;
          state: string;
          replica: string[];
          blockReplica: string[];
          retention: string;
          pruneInterval: string;
          codecWorkers?: string;
        },
      ) => {
        const retentionMs = checkRetention(parseRetention(options.retention));
        const replicas = [
          ...options.replica.map((value) => parseReplicaFlag(value, "tree", "--replica")),
          ...options.blockReplica.map((value) => parseReplicaFlag(value, "block", "--block-replica")),
        ];
        if (replicas.length === 0) throw new Error("give at least one --replica or --block-replica");
        const server = await startMasterTarget({
          listen: options.listen,
          tls: tlsFiles(options),
          encryptionKey: await readEncryptionKey(options.encryptionKey),
          stateDir: resolve(options.state),
          replicas,
          recoveryPoints: { retentionMs, pruneIntervalMs: parseRetention(options.pruneInterval, "--prune-interval") },
          log: stderrLog,
          ...codecWorkers(options),
        });
        await serveUntilSignalled(server);
      },
    );
}

function processServerCommand(): Command {
  return withCodecWorkers(withTls(new Command("process-server")))
    .description("cache agents' changes durably, compress and encrypt them, forward them to a master target")
    .requiredOption("--listen <address>", "host:port to serve on (port 0 picks a free one)")
    .requiredOption(
      "--encryption-key <file>",
      "AES-256 key (32 bytes, hex or base64); the cache at rest is encrypted with it",
    )
    .requiredOption("--cache <dir>", "directory of the durable cache")
    .requiredOption("--master-target <address>", "host:port of the master target")
    .addOption(
      new Option("--compression <codec>", "frame compression").choices(["zstd", "lz4", "none"]).default("zstd"),
    )
    .option("--cache-limit <size>", "per machine; beyond it the cache is dropped and the machine resyncs", "10Gi")
    .option("--bandwidth-limit <size>", "per machine, bytes per second towards the master target (0 = unlimited)", "0")
    .option(
      "--revoked-serials <file>",
      "serial numbers of revoked agent certificates, one per line (re-read when it changes)",
    )
    .action(
      async (
        options: TlsOptions & {
          listen: string;
          encryptionKey: string;
          cache: string;
          masterTarget: string;
          compression: string;
          cacheLimit: string;
          bandwidthLimit: string;
          revokedSerials?: string;
          codecWorkers?: string;
        },
      ) => {
        const server = await startProcessServer({
          listen: options.listen,
          tls: tlsFiles(options),
          encryptionKey: await readEncryptionKey(options.encryptionKey),
          cacheDir: resolve(options.cache),
          masterTarget: options.masterTarget,
          compression: parseCompression(options.compression),
          cacheLimitBytes: parseByteSize(options.cacheLimit, "--cache-limit"),
          bandwidthBytesPerSecond: parseByteSize(options.bandwidthLimit, "--bandwidth-limit"),
          log: stderrLog,
          ...(options.revokedSerials === undefined ? {} : { revokedSerialsFile: resolve(options.revokedSerials) }),
          ...codecWorkers(options),
        });
        await serveUntilSignalled(server);
      },
    );
}

function agentCommand(): Command {
  return withTls(new Command("agent"))
    .description("capture a volume's changes and stream them to a process server")
    .requiredOption("--machine <id>", "machine id (the certificate's common name must be ksr-agent:<id>)")
    .addOption(
      new Option("--mode <mode>", "tree: a directory; block: an image file").choices(["tree", "block"]).default("tree"),
    )
    .requiredOption("--source <path>", "directory (tree) or image file (block) to replicate")
    .requiredOption("--state <dir>", "directory for the agent's manifest")
    .requiredOption("--process-server <address>", "host:port of the process server")
    .option("--once", "exit once the initial replication is durable at the master target")
    .addOption(
      new Option(
        "--capture <strategy>",
        "tree mode: write-ranges (fanotify, Linux 6.14+, CAP_SYS_ADMIN), tree-scan (inotify + block hashes), or auto (write ranges where possible)",
      )
        .choices(["auto", ...captureStrategies])
        .default("auto"),
    )
    .option(
      "--write-hold-limit-ms <ms>",
      "write ranges: the longest a crash-consistent cut holds new writes (10 to 5000)",
      String(defaultWriteHoldLimitMs),
    )
    .option(
      "--capture-watchdog-ms <ms>",
      "write ranges: a fanotify helper that answers no heartbeat this long is killed, releasing its writers (250 to 60000)",
      String(defaultWatchdogMs),
    )
    .option("--scan-interval <seconds>", "verifying scan period (tree) or hash scan period (block)", "60")
    .option("--progress", "print progress (and each recovery point once applied) as JSON lines on stdout")
    .option("--crash-point-interval <duration>", "a crash-consistent recovery point this often (30s to 1h)", "5m")
    .option(
      "--app-point-interval <duration>",
      'an app-consistent point (quiesce hooks) this often, 1m to 24h, or "off"; default 1h with --hooks-file',
    )
    .option("--hooks-file <file>", "YAML or JSON quiesce hooks run for app-consistent points")
    .option(
      "--barrier-listen <address>",
      "host:port to serve the Barrier service on (consistency groups, on-demand points)",
    )
    .action(
      async (
        options: TlsOptions & {
          machine: string;
          mode: "tree" | "block";
          source: string;
          state: string;
          processServer: string;
          once?: boolean;
          scanInterval: string;
          capture: CaptureRequest;
          writeHoldLimitMs: string;
          captureWatchdogMs: string;
          progress?: boolean;
          crashPointInterval: string;
          appPointInterval?: string;
          hooksFile?: string;
          barrierListen?: string;
        },
      ) => {
        if (options.once === true && options.barrierListen !== undefined)
          throw new Error("--barrier-listen cannot be used with --once: points are cut while replication runs");
        const printJson = (line: object) => process.stdout.write(`${JSON.stringify(line)}\n`);
        const agent = await Agent.create({
          ...(await pointOptions(options)),
          machineId: options.machine,
          mode: options.mode,
          source: resolve(options.source),
          stateDir: resolve(options.state),
          processServer: options.processServer,
          tls: tlsFiles(options),
          once: options.once === true,
          scanIntervalMs: parseSeconds(options.scanInterval, "--scan-interval") * 1000,
          capture: options.capture,
          writeHoldLimitMs: parseBoundedInteger(options.writeHoldLimitMs, "--write-hold-limit-ms", 10, 5000),
          watchdogMs: parseBoundedInteger(options.captureWatchdogMs, "--capture-watchdog-ms", 250, 60_000),
          log: stderrLog,
          progress: options.progress === true ? (progress) => printJson({ progress }) : undefined,
          onPoint: options.progress === true ? (point) => printJson({ point }) : undefined,
        });
        const barrier =
          options.barrierListen === undefined
            ? undefined
            : await startBarrierServer({
                listen: options.barrierListen,
                tls: tlsFiles(options),
                machineId: options.machine,
                points: agent.points,
              });
        if (barrier !== undefined) printJson({ listening: barrier.port });
        process.once("SIGTERM", () => {
          agent.stop();
        });
        process.once("SIGINT", () => {
          agent.stop();
        });
        const summary = await agent.run().finally(() => barrier?.close());
        printJson({ summary });
      },
    );
}

export function replicatorCommand(): Command {
  return new Command("replicator")
    .description("the replication data path: agent, process server and master target")
    .addCommand(agentCommand())
    .addCommand(processServerCommand())
    .addCommand(masterTargetCommand())
    .addCommand(groupCommands.cut())
    .addCommand(groupCommands.coordinator());
}
