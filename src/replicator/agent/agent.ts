// The agent: captures a volume's changes (tree or block mode) and streams them to a process
// server. After a restart it continues from its manifest when the process server's durable seq
// proves the manifest matches; otherwise it resyncs against the replica's block hashes.
import { mkdir, stat } from "node:fs/promises";
import { join } from "node:path";
import {
  Consistency,
  IngestClient,
  IngestService,
  type ManifestEntry,
  type OpenReply,
} from "../../gen/ksr/replication/v1/replication.js";
import { makeGenericClientConstructor } from "@grpc/grpc-js";
import { loadBlockHasher } from "../block-hash.js";
import { encodePushRequest } from "./batch-encoder.js";
import { checkMachineId } from "../machine-id.js";
import { sleep } from "../signal.js";
import { clientCredentials, grpcOptions, type TlsFiles } from "../tls.js";
import { BlockSource } from "./block-source.js";
import { Manifest } from "./manifest.js";
import { ChangeSender, ResyncNeeded } from "./sender.js";
import { TreeSource } from "./tree-source.js";
import { TreeWatcher } from "./watcher.js";

/** Refuses a source that does not exist or does not fit the capture mode, before anything is sent. */
export async function checkSource(source: string, mode: AgentOptions["mode"]): Promise<void> {
  let info;
  try {
    info = await stat(source);
  } catch (error) {
    throw new Error(
      `source ${source} cannot be read (${(error as NodeJS.ErrnoException).code ?? String(error)}); give an existing ${mode === "tree" ? "directory" : "image file or block device"}`,
    );
  }
  if (mode === "tree" && !info.isDirectory()) {
    throw new Error(
      `source ${source} is not a directory; tree capture replicates a directory (use block mode for an image file)`,
    );
  }
  if (mode === "block" && !info.isFile() && !info.isBlockDevice()) {
    throw new Error(
      `source ${source} is not an image file or block device; block capture needs one (use tree mode for a directory)`,
    );
  }
}

export interface AgentOptions {
  machineId: string;
  mode: "tree" | "block";
  source: string;
  stateDir: string;
  processServer: string;
  tls: TlsFiles;
  /** Exit once the initial replication is applied durably at the master target. */
  once: boolean;
  /** Tree mode: a verifying scan this often even without notifications. Block mode: the scan interval. */
  scanIntervalMs: number;
  log: AgentLog;
  progress?: (progress: AgentProgress) => void;
}

export interface AgentLog {
  info(message: string): void;
  warn(message: string): void;
}

export interface AgentProgress {
  bytesPushed: number;
  lastSeq: number;
  ackedSeq: number;
  appliedSeq: number;
}

export interface AgentSummary {
  entries: number;
  bytesPushed: number;
  lastSeq: number;
  seconds: number;
}

const retryMs = 500;
const drainPollMs = 100;

/** The Ingest client with the hand-written Push encoder (see batch-encoder.ts). */
const FastPushClient = makeGenericClientConstructor(
  { ...IngestService, push: { ...IngestService.push, requestSerialize: encodePushRequest } },
  "ksr.replication.v1.Ingest",
) as unknown as typeof IngestClient;
const manifestSaveIntervalMs = 2000;

export class Agent {
  private readonly client: IngestClient;
  private readonly manifestFile: string;
  private sender!: ChangeSender;
  private watcher: TreeWatcher | undefined;
  private stopped = false;
  private lastSave = 0;
  private scanDue = false;
  private appliedSeq = 0;
  private readonly startedAt = Date.now();

  private constructor(
    private readonly options: AgentOptions,
    private readonly manifest: Manifest,
    client: IngestClient,
  ) {
    this.client = client;
    this.manifestFile = join(options.stateDir, `${options.machineId}.manifest.json`);
  }

  static async create(options: AgentOptions): Promise<Agent> {
    checkMachineId(options.machineId);
    await checkSource(options.source, options.mode);
    await loadBlockHasher();
    await mkdir(options.stateDir, { recursive: true });
    const manifest = await Manifest.load(
      join(options.stateDir, `${options.machineId}.manifest.json`),
      options.machineId,
    );
    const client = new FastPushClient(options.processServer, await clientCredentials(options.tls), grpcOptions);
    return new Agent(options, manifest, client);
  }

  /** Read through a method: the flag changes from signal handlers while loops await. */
  private isStopped(): boolean {
    return this.stopped;
  }

  stop(): void {
    this.stopped = true;
    this.watcher?.changed.notify();
  }

  async run(): Promise<AgentSummary> {
    const { options } = this;
    this.sender = new ChangeSender(this.client, options.machineId, this.manifest.seq + 1);
    if (options.mode === "tree" && !options.once) {
      this.watcher = new TreeWatcher(options.source);
      this.watcher.start(); // before the first scan, so nothing changed during it goes unnoticed
    }
    try {
      await this.untilDone(() => this.start());
      if (options.once) {
        await this.untilDone(() => this.waitApplied());
      } else {
        await this.follow();
      }
      await this.saveManifest(true);
    } finally {
      this.watcher?.close();
      this.sender.close();
      this.client.close();
    }
    return {
      entries: this.manifest.entries.size,
      bytesPushed: this.sender.bytesPushed,
      lastSeq: this.sender.lastSeq,
      seconds: (Date.now() - this.startedAt) / 1000,
    };
  }

  /** Runs a step until it succeeds: a resync when one is needed, a retry after other failures. */
  private async untilDone(step: () => Promise<void>): Promise<void> {
    while (!this.stopped) {
      try {
        await step();
        return;
      } catch (error) {
        if (error instanceof ResyncNeeded) {
          this.options.log.warn(`${error.message}; resynchronizing`);
          step = () => this.resync();
          continue;
        }
        this.options.log.warn(`replication step failed (retrying): ${(error as Error).message}`);
        this.scanDue = true; // the notifications it had taken are gone: verify everything

        await sleep(retryMs);
      }
    }
  }

  private async start(): Promise<void> {
    const reply = await this.sender.open();
    const proven = this.manifest.seq > 0 && !reply.resyncRequired && reply.durableSeq === this.manifest.seq;
    if (!proven) {
      this.options.log.info(
        this.manifest.seq === 0
          ? "no manifest: initial replication compares with the replica"
          : `manifest is at seq ${this.manifest.seq}, the process server at ${reply.durableSeq}: resynchronizing`,
      );
      await this.resync();
      return;
    }
    await this.scan();
  }

  private async scan(): Promise<void> {
    if (this.options.mode === "tree") await new TreeSource(this.options.source, this.manifest, this.sender).fullScan();
    else await new BlockSource(this.options.source, this.manifest, this.sender).scan();
    await this.settle();
  }

  /** Compares the source with the replica's block hashes and sends only what differs. */
  private async resync(): Promise<void> {
    const reply = await this.waitUntilDrained();
    const entries = await this.replicaManifest();
    const replica = Manifest.fromReplica(this.options.machineId, entries);
    this.manifest.replaceWith(replica);
    const nextSeq = Math.max(reply.durableSeq, reply.appliedSeq, this.manifest.seq, this.sender.lastSeq) + 1;
    this.sender.beginResync(nextSeq);
    // Always at least one change, so the process server sees the resync start; not a recovery point.
    await this.sender.emit({
      $case: "marker",
      value: {
        id: `resync-${nextSeq}`,
        consistency: Consistency.CONSISTENCY_UNSPECIFIED,
        timeUnixMs: Date.now(),
        consistencyGroup: "",
      },
    });
    this.watcher?.take();
    await this.scan();
  }

  private async waitUntilDrained(): Promise<OpenReply> {
    for (;;) {
      const reply = await this.sender.open();
      if (reply.masterTargetReachable && reply.pendingFrames === 0) return reply;
      if (this.stopped) throw new Error("stopped");
      await sleep(drainPollMs);
    }
  }

  private replicaManifest(): Promise<ManifestEntry[]> {
    return new Promise((resolve, reject) => {
      const entries: ManifestEntry[] = [];
      const call = this.client.replicaManifest({ machineId: this.options.machineId });
      call.on("data", (entry: ManifestEntry) => entries.push(entry));
      call.on("error", reject);
      call.on("end", () => {
        resolve(entries);
      });
    });
  }

  /** Waits for acknowledgements and persists the manifest now and then. */
  private async settle(): Promise<void> {
    await this.sender.drain();
    await this.saveManifest(false);
    this.report();
  }

  private async saveManifest(force: boolean): Promise<void> {
    if (!force && Date.now() - this.lastSave < manifestSaveIntervalMs) return;
    if (this.sender.ackedSeq !== this.sender.lastSeq) return; // the manifest may only claim what is durable
    this.manifest.seq = this.sender.lastSeq;
    await this.manifest.save(this.manifestFile);
    this.lastSave = Date.now();
  }

  private async waitApplied(): Promise<void> {
    await this.sender.drain();
    for (;;) {
      const reply = await this.sender.open();
      if (reply.resyncRequired) throw new ResyncNeeded("the process server requires it");
      this.appliedSeq = reply.appliedSeq;
      this.report();
      if (reply.appliedSeq >= this.sender.lastSeq) return;
      await sleep(50);
    }
  }

  private async follow(): Promise<void> {
    let lastScan = Date.now();
    while (!this.stopped) {
      await this.untilDone(async () => {
        const watcher = this.watcher;
        const due = this.scanDue || Date.now() - lastScan >= this.options.scanIntervalMs;
        if (watcher === undefined || due) {
          lastScan = Date.now();
          this.scanDue = false;
          watcher?.take();
          await this.scan();
          return;
        }
        const { paths, overflowed } = watcher.take();
        if (overflowed) {
          this.options.log.warn("change notifications were lost; running a verifying scan");
          await this.scan();
        } else if (paths.length > 0) {
          await new TreeSource(this.options.source, this.manifest, this.sender).syncPaths(paths);
          await this.settle();
        }
      });
      if (this.isStopped()) break;
      const watcher = this.watcher;
      if (watcher === undefined) await sleep(this.options.scanIntervalMs);
      else if (!watcher.pending) await watcher.changed.wait(Math.min(1000, this.options.scanIntervalMs));
      await this.refreshApplied();
    }
  }

  private async refreshApplied(): Promise<void> {
    if (this.options.progress === undefined) return;
    try {
      this.appliedSeq = (await this.sender.open()).appliedSeq;
    } catch {
      // progress only
    }
    this.report();
  }

  private report(): void {
    this.options.progress?.({
      bytesPushed: this.sender.bytesPushed,
      lastSeq: this.sender.lastSeq,
      ackedSeq: this.sender.ackedSeq,
      appliedSeq: this.appliedSeq,
    });
  }
}
