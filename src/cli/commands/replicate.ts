// `ksr replicate --source DIR --target DIR`: the whole data path on this machine, for trying it
// without Kubernetes. Three separate processes, mutual TLS with a throwaway CA, encryption.
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { Command, Option } from "commander";
import { parseCompression } from "../../replicator/frame-codec.js";
import { LocalPipeline } from "../../replicator/local-pipeline.js";
import { checkSource, type AgentProgress } from "../../replicator/agent/agent.js";

function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${units[unit] ?? "B"}`;
}

function progressLine(started: number): (progress: AgentProgress) => void {
  return (progress) => {
    const seconds = Math.max((Date.now() - started) / 1000, 0.001);
    const lag = Math.max(progress.lastSeq - progress.appliedSeq, 0);
    process.stderr.write(
      `\rsent ${formatBytes(progress.bytesPushed)}  ${formatBytes(progress.bytesPushed / seconds)}/s  ` +
        `seq ${progress.lastSeq} durable ${progress.ackedSeq} applied ${progress.appliedSeq}  lag ${lag} changes   `,
    );
  };
}

export function replicateCommand(): Command {
  return new Command("replicate")
    .description("replicate a directory to another through agent, process server and master target on loopback")
    .requiredOption("--source <dir>", "directory to protect")
    .requiredOption("--target <dir>", "replica directory")
    .option("--work <dir>", "state of the three programs (PKI, key, cache, manifest); reuse it to resume")
    .option("--once", "exit when the initial replication is durable, printing a summary")
    .addOption(new Option("--compression <codec>").choices(["zstd", "lz4", "none"]).default("zstd"))
    .action(async (options: { source: string; target: string; work?: string; once?: boolean; compression: string }) => {
      await checkSource(resolve(options.source), "tree");
      const started = Date.now();
      const work = options.work === undefined ? await mkdtemp(join(tmpdir(), "ksr-replicate-")) : resolve(options.work);
      const pipeline = await LocalPipeline.create({
        source: resolve(options.source),
        target: resolve(options.target),
        work,
        once: options.once === true,
        compression: parseCompression(options.compression),
        onProgress: options.once === true ? undefined : progressLine(started),
      });
      const stop = () => {
        void pipeline.stopAll();
      };
      process.once("SIGINT", stop);
      process.once("SIGTERM", stop);
      try {
        await pipeline.startAll();
        const summary = await pipeline.agentExit();
        if (options.once === true) {
          const seconds = (Date.now() - started) / 1000;
          process.stdout.write(
            `replicated ${summary.entries} entries, ${formatBytes(summary.bytesPushed)} of changes ` +
              `(seq 1..${summary.lastSeq}) to ${resolve(options.target)} in ${seconds.toFixed(1)} s; durable at the master target\n` +
              `work directory: ${work}\n`,
          );
        }
      } finally {
        await pipeline.stopAll();
      }
    });
}
