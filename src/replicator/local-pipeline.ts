// Runs agent, process server and master target as separate processes on loopback with a
// throwaway CA and key (`ksr replicate`, the crash tests and the benchmark). Ports are fixed
// up front so any of the three can be killed and restarted in place.
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { createInterface } from "node:readline";
import { freePort } from "../local/ports.js";
import { packageRoot } from "../util/package-root.js";
import { IngestClient, type OpenReply } from "../gen/ksr/replication/v1/replication.js";
import type { AgentProgress, AgentSummary } from "./agent/agent.js";
import type { PointReport } from "./agent/point-cutter.js";
import { callWithin } from "./grpc-util.js";
import type { CompressionName } from "./frame-codec.js";
import {
  agentCommonName,
  clientCredentials,
  coordinatorCommonName,
  operatorCommonName,
  grpcOptions,
  masterTargetCommonName,
  processServerCommonName,
  writeLoopbackPki,
  type TlsFiles,
} from "./tls.js";

export type Role = "agent" | "process-server" | "master-target";
/** Identities of the loopback PKI: the three programs, a coordinator that may cut points, an operator. */
export type Identity = Role | "coordinator" | "operator";

export interface PipelineOptions {
  source: string;
  target: string;
  work: string;
  machineId?: string;
  mode?: "tree" | "block";
  once: boolean;
  compression?: CompressionName;
  cacheLimit?: string;
  bandwidthLimit?: string;
  scanIntervalSeconds?: number;
  onProgress?: (progress: AgentProgress) => void;
  /** Each recovery point the agent cut, once the master target applied it. */
  onPoint?: (point: PointReport) => void;
  /** Extra agent flags (recovery point cadence, hooks). */
  agentArgs?: string[];
  /** Where each program's stderr goes (default: inherited). */
  logDir?: string;
  /** Extra node flags for the three programs (for example --cpu-prof). */
  nodeArgs?: string[];
}

interface Layout {
  tls: Map<Identity, TlsFiles>;
  key: string;
  ports: Record<"processServer" | "masterTarget", number>;
}

async function prepare(options: PipelineOptions, machineId: string): Promise<Layout> {
  await mkdir(options.work, { recursive: true });
  const pkiDir = join(options.work, "pki");
  const names: Record<Identity, string> = {
    agent: agentCommonName(machineId),
    "process-server": processServerCommonName,
    "master-target": masterTargetCommonName,
    coordinator: coordinatorCommonName,
    operator: operatorCommonName,
  };
  const issued = await writeLoopbackPki(pkiDir, Object.values(names));
  const tls = new Map<Identity, TlsFiles>();
  for (const [role, name] of Object.entries(names) as [Identity, string][]) {
    const files = issued.get(name);
    if (files !== undefined) tls.set(role, files);
  }
  const key = join(options.work, "encryption.key");
  if (!existsSync(key)) await writeFile(key, randomBytes(32).toString("hex"), { mode: 0o600 });
  return { tls, key, ports: { processServer: await freePort(), masterTarget: await freePort() } };
}

function tlsArgs(files: TlsFiles | undefined): string[] {
  if (files === undefined) throw new Error("missing TLS identity");
  return ["--ca", files.ca, "--cert", files.cert, "--key", files.key];
}

export class LocalPipeline {
  readonly processes = new Map<Role, ChildProcess>();
  private readonly machineId: string;
  private summary: AgentSummary | undefined;

  private constructor(
    private readonly options: PipelineOptions,
    private readonly layout: Layout,
  ) {
    this.machineId = options.machineId ?? "local";
  }

  static async create(options: PipelineOptions): Promise<LocalPipeline> {
    return new LocalPipeline(options, await prepare(options, options.machineId ?? "local"));
  }

  get processServerAddress(): string {
    return `localhost:${this.layout.ports.processServer}`;
  }

  get masterTargetAddress(): string {
    return `localhost:${this.layout.ports.masterTarget}`;
  }

  /** The certificate files a role uses (tests open their own connections as that role). */
  identity(role: Identity): TlsFiles {
    const files = this.layout.tls.get(role);
    if (files === undefined) throw new Error(`no identity for ${role}`);
    return files;
  }

  /** Asks the process server for the machine's durable and applied seqs, as the agent would. */
  async openAsAgent(): Promise<OpenReply> {
    const client = new IngestClient(
      this.processServerAddress,
      await clientCredentials(this.identity("agent")),
      grpcOptions,
    );
    try {
      return await callWithin(client.open.bind(client), { machineId: this.machineId, capture: undefined }, 2000);
    } finally {
      client.close();
    }
  }

  args(role: Role): string[] {
    const { options, layout } = this;
    const base = ["replicator", role, ...tlsArgs(layout.tls.get(role))];
    switch (role) {
      case "master-target":
        return [
          ...base,
          "--listen",
          `localhost:${layout.ports.masterTarget}`,
          "--encryption-key",
          layout.key,
          "--state",
          join(options.work, "master-target"),
          options.mode === "block" ? "--block-replica" : "--replica",
          `${this.machineId}=${options.target}`,
        ];
      case "process-server":
        return [
          ...base,
          "--listen",
          `localhost:${layout.ports.processServer}`,
          "--encryption-key",
          layout.key,
          "--cache",
          join(options.work, "process-server"),
          "--master-target",
          `localhost:${layout.ports.masterTarget}`,
          "--compression",
          options.compression ?? "zstd",
          "--cache-limit",
          options.cacheLimit ?? "10Gi",
          "--bandwidth-limit",
          options.bandwidthLimit ?? "0",
        ];
      case "agent":
        return [
          ...base,
          "--machine",
          this.machineId,
          "--mode",
          options.mode ?? "tree",
          "--source",
          options.source,
          "--state",
          join(options.work, "agent"),
          "--process-server",
          `localhost:${layout.ports.processServer}`,
          "--scan-interval",
          String(options.scanIntervalSeconds ?? 60),
          "--progress",
          ...(options.once ? ["--once"] : []),
          ...(options.agentArgs ?? []),
        ];
    }
  }

  /** Starts one program; servers resolve once they listen. */
  async start(role: Role): Promise<ChildProcess> {
    const stderr = this.options.logDir === undefined ? "inherit" : "pipe";
    const child = spawn(
      process.execPath,
      [...(this.options.nodeArgs ?? []), join(packageRoot, "bin", "ksr.js"), ...this.args(role)],
      {
        stdio: ["ignore", "pipe", stderr],
      },
    );
    if (this.options.logDir !== undefined) {
      child.stderr?.pipe(createWriteStream(join(this.options.logDir, `${role}.log`), { flags: "a" }));
    }
    this.processes.set(role, child);
    const listening = new Promise<void>((resolve, reject) => {
      const lines = createInterface({ input: child.stdout ?? process.stdin });
      lines.on("line", (line) => {
        const message = JSON.parse(line) as {
          listening?: number;
          progress?: AgentProgress;
          summary?: AgentSummary;
          point?: PointReport;
        };
        if (message.listening !== undefined) resolve();
        if (message.progress !== undefined) this.options.onProgress?.(message.progress);
        if (message.point !== undefined) this.options.onPoint?.(message.point);
        if (message.summary !== undefined) this.summary = message.summary;
      });
      child.once("exit", (code, signal) => {
        reject(new Error(`${role} exited (${signal ?? `code ${code}`}) before it was ready`));
      });
    });
    if (role !== "agent") await listening;
    else listening.catch(() => undefined);
    return child;
  }

  async startAll(): Promise<void> {
    // The process server retries the master target on its own, so both servers boot together.
    await Promise.all([this.start("master-target"), this.start("process-server")]);
    await this.start("agent");
  }

  /** SIGKILL: no chance to flush or say goodbye. */
  async kill(role: Role): Promise<void> {
    const child = this.processes.get(role);
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGKILL");
    await exited;
  }

  /** Resolves with the agent's summary when it exits (with --once) or throws on failure. */
  async agentExit(): Promise<AgentSummary> {
    const child = this.processes.get("agent");
    if (child === undefined) throw new Error("the agent is not running");
    const code = child.exitCode ?? (await new Promise<number | null>((resolve) => child.once("exit", resolve)));
    if (code !== 0 || this.summary === undefined) throw new Error(`the agent failed (exit code ${code})`);
    return this.summary;
  }

  async stopAll(): Promise<void> {
    for (const role of ["agent", "process-server", "master-target"] as const) {
      const child = this.processes.get(role);
      if (child === undefined || child.exitCode !== null || child.signalCode !== null) continue;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), 5000);
      await exited;
      clearTimeout(timer);
    }
  }
}
