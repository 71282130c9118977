// Flags shared by the replicator commands: TLS identity, logging, recovery point cadences.
import { resolve } from "node:path";
import type { Command } from "commander";
import { readHooksFile } from "../../replicator/agent/hooks-file.js";
import type { QuiesceHook } from "../../replicator/journal/quiesce.js";
import type { TlsFiles } from "../../replicator/tls.js";
import { durationMs } from "../../util/duration.js";

export interface TlsOptions {
  ca: string;
  cert: string;
  key: string;
}

export function withTls(command: Command): Command {
  return command
    .requiredOption("--ca <file>", "PEM CA certificate that issued every peer's certificate")
    .requiredOption("--cert <file>", "PEM certificate of this program")
    .requiredOption("--key <file>", "PEM private key of this program");
}

export function tlsFiles(options: TlsOptions): TlsFiles {
  return { ca: resolve(options.ca), cert: resolve(options.cert), key: resolve(options.key) };
}

export const stderrLog = {
  info: (message: string) => process.stderr.write(`${message}\n`),
  warn: (message: string) => process.stderr.write(`warning: ${message}\n`),
};

export function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** A duration flag within bounds, with an error that says what is allowed. */
export function parseBoundedDuration(value: string, flag: string, minMs: number, maxMs: number): number {
  const ms = durationMs(value);
  const bounds = `between ${minMs / 1000}s and ${maxMs / 60_000}m`;
  if (ms === undefined) throw new Error(`${flag} "${value}": expected a duration like 30s, 5m or 1h (${bounds})`);
  if (ms < minMs || ms > maxMs) throw new Error(`${flag} "${value}": must be ${bounds}`);
  return ms;
}

/** A whole number flag within bounds (milliseconds and the like). */
export function parseBoundedInteger(value: string, flag: string, min: number, max: number): number {
  const number = /^\d+$/.test(value) ? Number(value) : Number.NaN;
  if (!(number >= min && number <= max))
    throw new Error(`${flag} "${value}": expected a whole number from ${min} to ${max}`);
  return number;
}

const pointCadenceBounds = {
  crash: { minMs: 30_000, maxMs: 3_600_000 },
  app: { minMs: 60_000, maxMs: 24 * 3_600_000 },
};

/** The agent's point cadences and hooks; app points need hooks (without them nothing is quiesced). */
export async function pointOptions(options: {
  crashPointInterval: string;
  appPointInterval?: string;
  hooksFile?: string;
}): Promise<{
  crashPointIntervalMs: number;
  appPointIntervalMs: number | undefined;
  hooks: QuiesceHook[];
}> {
  const { crash, app } = pointCadenceBounds;
  const crashPointIntervalMs = parseBoundedDuration(
    options.crashPointInterval,
    "--crash-point-interval",
    crash.minMs,
    crash.maxMs,
  );
  if (options.hooksFile === undefined) {
    if (options.appPointInterval !== undefined && options.appPointInterval !== "off")
      throw new Error("--app-point-interval needs --hooks-file: without quiesce hooks no point is app-consistent");
    return { crashPointIntervalMs, appPointIntervalMs: undefined, hooks: [] };
  }
  const hooks = await readHooksFile(resolve(options.hooksFile));
  const appValue = options.appPointInterval ?? "1h";
  const appPointIntervalMs =
    appValue === "off" ? undefined : parseBoundedDuration(appValue, "--app-point-interval", app.minMs, app.maxMs);
  return { crashPointIntervalMs, appPointIntervalMs, hooks };
}

/** The threads that compress and seal (or open) frames; 0 runs them on the event loop. */
export function withCodecWorkers(command: Command): Command {
  return command.option(
    "--codec-workers <n>",
    "threads that compress and encrypt frames, 0 to 64 (0 = on the event loop; default: cores - 1, at least 1)",
  );
}

export function codecWorkers(options: { codecWorkers?: string }): { codecWorkers?: number } {
  if (options.codecWorkers === undefined) return {};
  return { codecWorkers: parseBoundedInteger(options.codecWorkers, "--codec-workers", 0, 64) };
}
