// The agent: captures a volume's changes (tree or block mode) and streams them to a process
// server. After a restart it continues from its manifest when the process server's durable seq
// proves the manifest matches; otherwise it resyncs against the replica's block hashes.
import { mkdir, stat } from "node:fs/promises";
import { Metadata } from "@grpc/grpc-js";
import { join } from "node:path";
import { setImmediate as nextTurn } from "node:timers/promises";
import {
  Consistency,
  IngestClient,
  IngestService,
  type ManifestEntry,
  type OpenReply,
} from "../../gen/ksr/replication/v1/replication.js";
import { makeGenericClientConstructor } from "@grpc/grpc-js";
import { loadBlockHasher } from "../block-hash.js";
import type { MarkerOp } from "../journal/change.js";
import { consistencyFromWire, consistencyToWire, type PointConsistency } from "../journal/point.js";
import type { QuiesceHook } from "../journal/quiesce.js";
import { encodePushRequest } from "./batch-encoder.js";
import { checkMachineId } from "../machine-id.js";
import { Signal, sleep } from "../signal.js";
import { clientCredentials, grpcOptions, type TlsFiles } from "../tls.js";
import { BlockSource } from "./block-source.js";
import { Manifest } from "./manifest.js";
import { CaptureLock, PointCutter, type CaptureStream, type CutFlush, type PointReport } from "./point-cutter.js";
import { ChangeSender, ResyncNeeded } from "./sender.js";
import type { ReportedCaptureStrategy } from "../capture-strategy.js";
import { CutFreeze } from "./cut-freeze.js";
import { startCapture, type Capture, type CaptureChoice, type CaptureRequest } from "./capture.js";
import { treeBytes, TreeSource, type ContentTracking } from "./tree-source.js";

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
  /** A crash (or best-effort) point this often; none when undefined. */
  crashPointIntervalMs?: number;
  /** An app-consistent point (quiesce hooks) this often; none when undefined. */
  appPointIntervalMs?: number;
  /** Quiesce hooks run for app-consistent points, validated with hookProblems(). */
  hooks?: readonly QuiesceHook[];
  /** Each point of the agent's own cadence, once the master target applied its marker. */
  onPoint?: (report: PointReport) => void;
  /** Tree mode: the capture strategy (default auto: write ranges where the machine allows, else tree scan). */
  capture?: CaptureRequest;
  /** Write ranges: the longest a cut holds new writes (the helper lets go on its own then). */
  writeHoldLimitMs?: number;
  /** Write ranges: a helper that answers no heartbeat this long is killed (its writers are let go). */
  watchdogMs?: number;
  /** Write ranges: the most a cut reads into memory to keep its write hold short (cut-freeze.ts). */
  cutFreezeLimitBytes?: number;
}

export const defaultWriteHoldLimitMs = 500;
export const defaultWatchdogMs = 2000;

export interface AgentLog {
  info(message: string): void;
  warn(message: string): void;
}

export interface AgentProgress {
  /** The capture strategy running and why (tree mode while replicating continuously). */
  capture?: CaptureChoice;
  bytesPushed: number;
  lastSeq: number;
  ackedSeq: number;
  appliedSeq: number;
  /** The newest recovery point this agent cut (its consistency and failed hooks, if any). */
  lastPoint?: { id: string; seq: number; consistency: PointConsistency; failedHooks: string[] };
}

export interface AgentSummary {
  entries: number;
  bytesPushed: number;
  lastSeq: number;
  seconds: number;
}

const retryMs = 500;
/** How often an agent whose resync is held asks whether it may start. */
const deferredPollMs = 5000;
const drainPollMs = 100;
const appliedPollMs = 50;
/**
 * Catch-up rounds a cut gives writes that keep arriving before it settles for best-effort. Each
 * round re-reads every file written since the last one while capture stands still, so more
 * rounds rarely turn a busy source quiet and only lengthen the stop.
 */
const cutCatchUpRounds = 1;

/** The Ingest client with the hand-written Push encoder (see batch-encoder.ts). */
const FastPushClient = makeGenericClientConstructor(
  { ...IngestService, push: { ...IngestService.push, requestSerialize: encodePushRequest } },
  "ksr.replication.v1.Ingest",
) as unknown as typeof IngestClient;
const manifestSaveIntervalMs = 2000;
const reportIntervalMs = 1000;

export class Agent implements CaptureStream {
  private readonly client: IngestClient;
  private readonly captureLock = new CaptureLock();
  private readonly stopping = new Signal();
  private ready = false;
  private lastPoint: AgentProgress["lastPoint"];
  /** Recovery points: the agent's cadence, the Barrier service and tests cut through it. */
  readonly points: PointCutter;
  private readonly manifestFile: string;
  private sender!: ChangeSender;
  private capture: Capture | undefined;
  private stopped = false;
  private lastSave = 0;
  private scanDue = false;
  /** A group member's cut content, read under its hold: sent once its writes are let go. */
  private frozenForGroup: CutFreeze | undefined;
  private appliedSeq = 0;
  private readonly startedAt = Date.now();
  /** What the agent reports to the process server (Ingest.Report) for the operator's status and RPO. */
  private readonly sync = { running: false, totalBytes: 0, progress: { examinedBytes: 0 } };
  private watermark = { observedUnixMs: 0, coveredSeq: 0 };

  private constructor(
    private readonly options: AgentOptions,
    private readonly manifest: Manifest,
    client: IngestClient,
  ) {
    this.client = client;
    this.manifestFile = join(options.stateDir, `${options.machineId}.manifest.json`);
    this.points = new PointCutter(
      options.machineId,
      this.captureLock,
      this,
      options.hooks ?? [],
      options.log,
      (report) => {
        options.onPoint?.(report);
      },
    );
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
    this.capture?.changed.notify();
    this.stopping.notify();
  }

  async run(): Promise<AgentSummary> {
    const { options } = this;
    this.sender = new ChangeSender(this.client, options.machineId, this.manifest.seq + 1);
    if (options.mode === "tree" && !options.once) {
      // Started before the first scan, so nothing changed during it goes unnoticed.
      this.capture = await startCapture(options.capture ?? "auto", options.source, this.manifest, {
        watchdogMs: options.watchdogMs ?? defaultWatchdogMs,
        log: options.log,
      });
    }
    const reporting = setInterval(() => {
      this.sendReport();
    }, reportIntervalMs);
    this.sender.capture = this.captureInfo();
    try {
      await this.untilDone(() => this.start());
      this.ready = !this.stopped;
      if (options.once) {
        await this.untilDone(() => this.waitAllApplied());
      } else {
        await Promise.all([this.follow(), this.cadence()]);
      }
      await this.saveManifest(true);
    } finally {
      clearInterval(reporting);
      this.capture?.close();
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

  /**
   * Runs a step until it succeeds: a resync when one is needed, a retry after other failures.
   * Each attempt holds the capture lock, so a cut never lands in the middle of one.
   */
  private async untilDone(step: () => Promise<void>): Promise<void> {
    while (!this.stopped) {
      try {
        await this.captureLock.run(step);
        return;
      } catch (error) {
        if (error instanceof ResyncNeeded) {
          this.options.log.warn(`${error.message}; resynchronizing`);
          step = () => this.resync();
          continue;
        }
        this.options.log.warn(`replication step failed (retrying): ${(error as Error).message}`);
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

  private captureInfo(): { strategy: ReportedCaptureStrategy; reason: string } {
    if (this.options.mode === "block")
      return { strategy: "block-scan", reason: "an image file is hashed at the scan interval" };
    return this.capture?.choice ?? { strategy: "tree-scan", reason: "--once: one scan, no notifications" };
  }

  /**
   * A tree source for one round; with `tracking`, known files' content is left to write ranges.
   * The capture strategy may have changed (a failed helper falls back), so Open reports it anew.
   */
  private treeSource(tracking?: ContentTracking): TreeSource {
    this.sender.capture = this.captureInfo();
    return new TreeSource(this.options.source, this.manifest, this.sender, tracking);
  }

  /** A verifying scan: `content` re-reads every file whose stat changed, otherwise only the namespace. */
  private async scan(content = true): Promise<void> {
    const observedUnixMs = Date.now();
    if (this.options.mode === "tree")
      await this.treeSource(content ? undefined : this.capture?.tracking).fullScan(this.sync.progress);
    else await new BlockSource(this.options.source, this.manifest, this.sender).scan();
    await this.settle();
    this.observed(observedUnixMs);
  }

  /** Every change observed before observedUnixMs has been sent (a seq at or below the last one). */
  private observed(observedUnixMs: number): void {
    if (observedUnixMs > this.watermark.observedUnixMs)
      this.watermark = { observedUnixMs, coveredSeq: this.sender.lastSeq };
  }

  /** Best effort, once a second: the report only feeds status and RPO, and the next one repeats it. */
  private sendReport(): void {
    const { running, totalBytes, progress } = this.sync;
    const report = {
      machineId: this.options.machineId,
      ...this.watermark,
      ...this.sender.lastChange,
      syncing: running,
      syncBytesTotal: totalBytes,
      syncBytesDone: Math.min(progress.examinedBytes, totalBytes),
    };
    this.client.report(report, new Metadata(), { deadline: Date.now() + reportIntervalMs * 5 }, () => undefined);
  }

  /** Compares the source with the replica's block hashes and sends only what differs. */
  private async resync(): Promise<void> {
    await this.whileDeferred();
    this.sync.running = true;
    this.sync.progress.examinedBytes = 0;
    this.sync.totalBytes =
      this.options.mode === "tree" ? await treeBytes(this.options.source) : (await stat(this.options.source)).size;
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
    this.capture?.discard();
    const pushedBefore = this.sender.bytesPushed;
    await this.scan();
    if (this.options.mode === "block") this.sync.progress.examinedBytes = this.sync.totalBytes;
    this.sync.running = false;
    // What a resync cost on the wire against what it compared (a reprotect reads this line).
    this.options.log.info(
      `resync done: ${this.sync.totalBytes} bytes compared, ${this.sender.bytesPushed - pushedBefore} bytes sent`,
    );
  }

  /**
   * The operator may hold a required resync until the policy's window opens (or a manual
   * `kubectl dr resync`): the watcher keeps collecting changes meanwhile, and the resync that
   * follows compares everything anyway.
   */
  private async whileDeferred(): Promise<void> {
    let told = false;
    for (;;) {
      const reply = await this.sender.open();
      if (!reply.resyncDeferred) return;
      if (!told)
        this.options.log.info("resync required but held by the operator (resync window or manual mode): waiting");
      told = true;
      if (this.stopped) throw new Error("stopped");
      await sleep(deferredPollMs);
    }
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

  private async waitAllApplied(): Promise<void> {
    await this.sender.drain();
    for (;;) {
      const reply = await this.sender.open();
      if (reply.resyncRequired) throw new ResyncNeeded("the process server requires it");
      this.appliedSeq = reply.appliedSeq;
      this.report();
      if (reply.appliedSeq >= this.sender.lastSeq) return;
      await sleep(appliedPollMs);
    }
  }

  private async follow(): Promise<void> {
    let lastScan = Date.now();
    while (!this.stopped) {
      await this.untilDone(async () => {
        const due = this.scanDue || Date.now() - lastScan >= this.options.scanIntervalMs;
        if (this.capture === undefined || due) lastScan = Date.now();
        const observedUnixMs = Date.now();
        await this.captureRound(due);
        this.observed(observedUnixMs);
      });
      if (this.isStopped()) break;
      const capture = this.capture;
      if (capture === undefined) await sleep(this.options.scanIntervalMs);
      else if (!capture.pending) {
        // Going idle: a manifest saved at the acknowledged seq lets a restart continue without a resync.
        if (this.manifest.seq !== this.sender.lastSeq) await this.saveManifest(true).catch(() => undefined);
        await capture.changed.wait(Math.min(1000, this.options.scanIntervalMs));
      }
      await this.refreshApplied();
    }
  }

  /**
   * Sends what changed: everything (a verifying scan) when due or when notifications were lost.
   * `settle` waits for the process server's acknowledgements (a cut's rounds do not: the marker
   * after them is what gets waited for).
   */
  private async captureRound(scanDue: boolean, settle = true, lost = false, freeze?: CutFreeze): Promise<void> {
    try {
      await this.captureChanges(scanDue, settle, lost, freeze);
    } catch (error) {
      // The notifications it took are gone, whoever called it (a follow step or a cut): verify everything.
      this.scanDue = true;
      throw error;
    }
  }

  private async captureChanges(scanDue: boolean, settle: boolean, lost: boolean, freeze?: CutFreeze): Promise<void> {
    const capture = this.capture;
    if (capture === undefined || scanDue || lost) {
      freeze?.clear(); // the scan reads everything live: nothing older may follow it
      // A periodic scan under write ranges checks the namespace; a lost notification, everything.
      const content = capture?.tracking === undefined || lost || this.scanDue;
      this.scanDue = false;
      // A namespace scan only touches the files whose stat changed: their recorded ranges are
      // what the next round reads, so they must not be dropped.
      capture?.discard(!content);
      await this.scan(content);
      return;
    }
    const outcome = await capture.round((tracking) => this.treeSource(tracking), freeze);
    if (outcome === "lost") {
      this.options.log.warn("change notifications were lost; running a verifying scan");
      freeze?.clear();
      capture.discard();
      await this.scan(true);
    } else if (outcome === "sent" && settle) await this.settle();
  }

  /** The agent's own points: crash on one cadence, app on another (an app point also resets crash). */
  private async cadence(): Promise<void> {
    const { crashPointIntervalMs, appPointIntervalMs } = this.options;
    if (crashPointIntervalMs === undefined && appPointIntervalMs === undefined) return;
    const due = (interval: number | undefined) => (interval === undefined ? Infinity : Date.now() + interval);
    let nextCrash = due(crashPointIntervalMs);
    let nextApp = due(appPointIntervalMs);
    while (!this.isStopped()) {
      const waitMs = Math.min(nextCrash, nextApp) - Date.now();
      if (waitMs > 0) {
        await this.stopping.wait(Math.min(waitMs, 60_000));
        continue;
      }
      const requested: PointConsistency = Date.now() >= nextApp ? "app" : "crash";
      try {
        const report = await this.points.cut(requested, false);
        this.lastPoint = {
          id: report.id,
          seq: report.seq,
          consistency: report.consistency,
          failedHooks: report.failedHooks,
        };
        this.report();
      } catch (error) {
        this.options.log.warn(`no ${requested} recovery point this time: ${(error as Error).message}`);
      }
      nextCrash = due(crashPointIntervalMs);
      if (requested === "app") nextApp = due(appPointIntervalMs);
    }
  }

  async whenReady(): Promise<void> {
    while (!this.ready) {
      if (this.isStopped()) throw new Error("the agent is stopping");
      await this.stopping.wait(100);
    }
  }

  /**
   * Sends every change observed up to now. The cut is quiet, and the point crash-consistent, when
   * after sending no new notification (and no lost one) is waiting; otherwise it catches up a few
   * rounds and, if writes keep arriving, reports them as in flight.
   */
  async flushForCut(group: boolean): Promise<CutFlush> {
    const capture = this.capture;
    if (capture === undefined) return { writesInFlight: await this.flushBlockForCut(), writesHeld: false };
    if (capture.holdWrites !== undefined && capture.tracking !== undefined) return this.flushHeld(capture, group);
    for (let round = 0; ; round++) {
      // Two turns of the event loop: every notification the kernel queued by now is delivered.
      await nextTurn();
      await nextTurn();
      if (!capture.pending && !this.scanDue) return { writesInFlight: false, writesHeld: false };
      if (round === cutCatchUpRounds) return { writesInFlight: true, writesHeld: false };
      await this.captureRound(this.scanDue, false);
    }
  }

  /**
   * Write ranges: reads what changed so far into memory (cut-freeze.ts, twice), holds new writes, reads
   * what landed before the hold, and checks that no namespace change (which fanotify does not
   * hold) came meanwhile. A single machine's cut then lets the writes go and sends what it read;
   * a group member keeps them held until its Mark (releaseWrites). Hashing and shipping happen
   * after the hold, so it lasts about as long as the reads of the last moment's writes.
   */
  private async flushHeld(capture: Capture, group: boolean): Promise<CutFlush> {
    const freeze = new CutFreeze(this.options.source, this.options.cutFreezeLimitBytes);
    // Twice: the second pass reads only what was written during the first, so what is left for
    // the hold is what a short read's time lets through.
    await this.captureRound(this.scanDue, false, false, freeze);
    await this.captureRound(this.scanDue, false, false, freeze);
    const limitMs = this.options.writeHoldLimitMs ?? defaultWriteHoldLimitMs;
    const started = performance.now();
    let quiet = (await capture.holdWrites?.(limitMs)) ?? false;
    try {
      await nextTurn();
      await nextTurn();
      await this.captureRound(this.scanDue, false, false, freeze);
      await nextTurn();
      await nextTurn();
      if (capture.unheldChangesPending || this.scanDue) quiet = false;
    } catch (error) {
      await capture.releaseWrites?.();
      throw error;
    }
    if (group && quiet) {
      this.frozenForGroup = freeze;
      return { writesInFlight: false, writesHeld: true, heldSince: started };
    }
    const heldThroughout = (await capture.releaseWrites?.()) ?? false;
    const heldMs = performance.now() - started;
    await this.sendFrozen(freeze);
    return { writesInFlight: !(quiet && heldThroughout), writesHeld: false, heldMs };
  }

  /** Sends what a cut read under its hold; a failure leaves a verifying scan due, like any round. */
  private async sendFrozen(freeze: CutFreeze): Promise<void> {
    if (freeze.size === 0) return;
    try {
      await freeze.send(this.treeSource(this.capture?.tracking));
    } catch (error) {
      this.scanDue = true;
      throw error;
    }
  }

  /** Group cuts: lets the held writes go at Mark; true when they were held (and nothing else changed) all along. */
  async releaseWrites(heldSince?: number): Promise<boolean> {
    const capture = this.capture;
    if (capture?.releaseWrites === undefined) return false;
    await nextTurn();
    await nextTurn();
    const namespaceQuiet = !capture.unheldChangesPending;
    const held = await capture.releaseWrites();
    if (heldSince !== undefined)
      this.options.log.info(`writes held ${(performance.now() - heldSince).toFixed(1)} ms for a group cut`);
    const frozen = this.frozenForGroup;
    this.frozenForGroup = undefined;
    if (frozen !== undefined) await this.sendFrozen(frozen);
    return held && namespaceQuiet;
  }

  /** Block mode has no notifications: quiet means a second hash pass found nothing new. */
  private async flushBlockForCut(): Promise<boolean> {
    await this.scan();
    const afterFirstPass = this.sender.lastSeq;
    await this.scan();
    return this.sender.lastSeq !== afterFirstPass;
  }

  /** Appends the marker and pushes it; waitApplied() is what waits for it. */
  async emitMarker(marker: MarkerOp): Promise<number> {
    const consistency = consistencyToWire(consistencyFromWire(marker.consistency));
    const { id, timeUnixMs, consistencyGroup } = marker;
    await this.sender.emit({ $case: "marker", value: { id, consistency, timeUnixMs, consistencyGroup } });
    const seq = this.sender.lastSeq;
    await this.sender.flush();
    return seq;
  }

  async waitApplied(seq: number): Promise<void> {
    for (;;) {
      const reply = await this.sender.open();
      this.appliedSeq = Math.max(this.appliedSeq, reply.appliedSeq);
      if (reply.appliedSeq >= seq) return;
      if (reply.resyncRequired) throw new ResyncNeeded(`seq ${seq} may never be applied`);
      if (this.isStopped()) throw new Error("the agent is stopping");
      await sleep(appliedPollMs);
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
      ...(this.capture === undefined ? {} : { capture: this.capture.choice }),
      bytesPushed: this.sender.bytesPushed,
      lastSeq: this.sender.lastSeq,
      ackedSeq: this.sender.ackedSeq,
      appliedSeq: this.appliedSeq,
      ...(this.lastPoint === undefined ? {} : { lastPoint: this.lastPoint }),
    });
  }
}
