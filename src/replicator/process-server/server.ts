// The process server: accepts agents' changes, makes them durable in its cache before
// acknowledging, seals them (compression + AES-256-GCM) and forwards them to the master target.
import { mkdir, readdir } from "node:fs/promises";
import { makeGenericClientConstructor, type ServerDuplexStream, type ServerWritableStream } from "@grpc/grpc-js";
import {
  ApplyClient,
  ApplyService,
  type ChangeBatch,
  ControlService,
  IngestService,
  type CaptureInfo,
  type ControlServer,
  type Frame,
  type IngestServer,
  type ManifestEntry,
  type ManifestRequest,
  type OpenReply,
  type PushAck,
  type PushRequest,
} from "../../gen/ksr/replication/v1/replication.js";
import { loadBlockHasher } from "../block-hash.js";
import { isReportedCaptureStrategy, reportedCaptureStrategies } from "../capture-strategy.js";
import { codecFor, encodeFrame, maxBatchBytes, type CompressionName } from "../frame-codec.js";
import { createFrameSealer, type FrameSealer } from "../frame-sealer.js";
import { decodeChangeBatch, decodePushRequest, ownedMessageDecoder } from "../wire-reader.js";
import {
  answerUnary,
  shutdownServer,
  startServer,
  toStatus,
  type RunningServer,
  type StatusError,
} from "../grpc-util.js";
import { checkMachineId } from "../machine-id.js";
import { batchFormatVersion } from "../master-target/machine-applier.js";
import {
  clientCredentials,
  grpcOptions,
  requireAgentOf,
  requireRole,
  RevocationList,
  serverCredentials,
  type TlsFiles,
} from "../tls.js";
import { BandwidthLimit } from "./bandwidth.js";
import { GroupCommitter } from "./frame-cache.js";
import { Forwarder, type ForwarderLog } from "./forwarder.js";
import { MachineState } from "./machine-state.js";

export interface ProcessServerOptions {
  listen: string;
  tls: TlsFiles;
  encryptionKey: Buffer;
  cacheDir: string;
  masterTarget: string;
  compression: CompressionName;
  /** Per machine: above it the cache is dropped and the machine resyncs. */
  cacheLimitBytes: number;
  /** Per machine, towards the master target; 0 = unlimited. */
  bandwidthBytesPerSecond: number;
  log: ForwarderLog;
  /** Serials of revoked agent certificates, one per line (the operator's revocation ConfigMap, mounted). */
  revokedSerialsFile?: string;
  /** Threads that compress and seal frames; 0 seals on the event loop (default: cores − 1, at least 1). */
  codecWorkers?: number;
}

/** Agents are paused (HTTP/2 flow control) while this much of their data awaits fsync. */
const backpressureBytes = 32 * 1024 * 1024;
/** Batches of one push stream being sealed at once; more pause the stream until one is done. */
const sealingPerStream = 8;

export class PushRejected extends Error {
  constructor(message: string) {
    super(message);
    this.name = "PushRejected";
  }
}

/** An agent's capture report, checked before it is kept and shown to the operator. */
function checkCaptureInfo(capture: CaptureInfo | undefined): CaptureInfo | undefined {
  if (capture === undefined) return undefined;
  if (!isReportedCaptureStrategy(capture.strategy))
    throw new PushRejected(
      `capture.strategy must be one of ${reportedCaptureStrategies.join(", ")}, not "${capture.strategy.slice(0, 40)}"`,
    );
  if (capture.reason.length > 1024) throw new PushRejected("capture.reason must be at most 1024 characters");
  return { strategy: capture.strategy, reason: capture.reason };
}

/** The Apply client with the hand-written Frame encoder: one copy of the sealed bytes per frame sent. */
const FastApplyClient = makeGenericClientConstructor(
  { ...ApplyService, apply: { ...ApplyService.apply, requestSerialize: (frame: Frame) => encodeFrame(frame) } },
  "ksr.replication.v1.Apply",
) as unknown as typeof ApplyClient;

/**
 * The Ingest service with a Push decoder that leaves the batch in the buffer gRPC received it in,
 * which then moves to a sealer worker whole (no copy on the event loop).
 */
const ViewIngestService = {
  ...IngestService,
  push: { ...IngestService.push, requestDeserialize: ownedMessageDecoder(decodePushRequest) },
};

export async function startProcessServer(options: ProcessServerOptions): Promise<RunningServer> {
  await loadBlockHasher();
  await mkdir(options.cacheDir, { recursive: true });
  const committer = new GroupCommitter();
  const sealer = createFrameSealer(options.encryptionKey, options.codecWorkers);
  const applyClient = new FastApplyClient(options.masterTarget, await clientCredentials(options.tls), grpcOptions);
  const machines = new Map<string, Promise<MachineState>>();
  const forwarders: Forwarder[] = [];
  const revoked = options.revokedSerialsFile === undefined ? undefined : new RevocationList(options.revokedSerialsFile);

  const machine = (machineId: string): Promise<MachineState> => {
    let opened = machines.get(machineId);
    if (opened === undefined) {
      opened = MachineState.open(options.cacheDir, checkMachineId(machineId), committer).then((state) => {
        const forwarder = new Forwarder(
          state,
          applyClient,
          new BandwidthLimit(options.bandwidthBytesPerSecond),
          options.log,
        );
        forwarders.push(forwarder);
        forwarder.start();
        return state;
      });
      machines.set(machineId, opened);
    }
    return opened;
  };
  for (const name of await readdir(options.cacheDir)) await machine(name); // resume forwarding what survived a restart

  const ingest: IngestServer = {
    open(call, callback) {
      answerUnary(
        callback,
        async (): Promise<OpenReply> => {
          requireAgentOf(call, call.request.machineId, revoked);
          const capture = checkCaptureInfo(call.request.capture);
          const state = await machine(call.request.machineId);
          if (capture !== undefined) state.capture = capture;
          return {
            durableSeq: state.cache.durableSeq,
            appliedSeq: state.appliedSeq ?? 0,
            masterTargetReachable: state.masterTargetReachable,
            resyncRequired: state.needsResync,
            pendingFrames: state.cache.frameCount,
            resyncDeferred: state.resyncDeferred,
          };
        },
        asStatus,
      );
    },
    push(call) {
      servePush(call, machine, options, revoked, sealer);
    },
    replicaManifest(call) {
      relayManifest(call, applyClient, revoked);
    },
    report(call, callback) {
      answerUnary(
        callback,
        async () => {
          requireAgentOf(call, call.request.machineId, revoked);
          (await machine(call.request.machineId)).progress.record(call.request, Date.now());
          return {};
        },
        asStatus,
      );
    },
  };
  const control: ControlServer = {
    status(call, callback) {
      answerUnary(
        callback,
        async () => {
          requireRole(call, ["operator"]);
          const state = await machine(call.request.machineId);
          const { progress } = state;
          const report = progress.latest;
          return {
            machineId: state.machineId,
            durableSeq: state.cache.durableSeq,
            appliedSeq: state.appliedSeq ?? 0,
            cachedBytes: state.cache.bytes,
            resyncRequired: state.needsResync,
            masterTargetReachable: state.masterTargetReachable,
            recoveryTimeUnixMs: progress.recoveryTimeAt(state.appliedSeq ?? 0),
            syncing: report?.syncing ?? false,
            syncBytesTotal: report?.syncBytesTotal ?? 0,
            syncBytesDone: report?.syncBytesDone ?? 0,
            lastReportUnixMs: progress.latestAt,
            receivedBytes: progress.receivedBytes,
            resyncHeld: state.resyncHeld,
            capture: state.capture,
            coveredSeq: report?.coveredSeq ?? 0,
            coveredUnixMs: report?.observedUnixMs ?? 0,
            lastChangeSeq: report?.lastChangeSeq ?? 0,
            lastChangeUnixMs: report?.lastChangeUnixMs ?? 0,
          };
        },
        asStatus,
      );
    },
    requestResync(call, callback) {
      answerUnary(
        callback,
        async () => {
          requireRole(call, ["operator"]);
          await (await machine(call.request.machineId)).dropForResync();
          return { accepted: true };
        },
        asStatus,
      );
    },
    holdResync(call, callback) {
      answerUnary(
        callback,
        async () => {
          requireRole(call, ["operator"]);
          const state = await machine(call.request.machineId);
          await state.resyncHold.set(call.request.held ? 1 : 0);
          state.changed.notify();
          return { accepted: true };
        },
        asStatus,
      );
    },
  };
  const { server, port } = await startServer(options.listen, await serverCredentials(options.tls), [
    [ViewIngestService, ingest],
    [ControlService, control],
  ]);
  return {
    port,
    async close() {
      await shutdownServer(server);
      for (const forwarder of forwarders) await forwarder.stop();
      applyClient.close();
      for (const state of machines.values()) await (await state).close();
      await sealer.close();
    },
  };
}

/** Read through a function: the forwarder flips it while the push loop awaits. */
function isReachable(state: MachineState): boolean {
  return state.masterTargetReachable;
}

function asStatus(error: unknown): StatusError {
  return toStatus(error, isInvalid);
}

function isInvalid(error: unknown): boolean {
  return error instanceof PushRejected || (error instanceof Error && error.message.startsWith("machine id"));
}

/** Checks what a push holds by itself: sizes, sequence range and the batch inside. */
function checkBatch(request: PushRequest): void {
  if (request.batch.length > maxBatchBytes)
    throw new PushRejected(`batch of ${request.batch.length} bytes is over ${maxBatchBytes}`);
  const { firstSeq, lastSeq } = request;
  if (!Number.isSafeInteger(firstSeq) || firstSeq < 1 || lastSeq < firstSeq)
    throw new PushRejected(`invalid sequence range ${firstSeq}..${lastSeq}`);
  let batch: ChangeBatch;
  try {
    batch = decodeChangeBatch(request.batch); // views: dropped before the batch goes to the sealer
  } catch (error) {
    throw new PushRejected(`batch ${firstSeq}..${lastSeq} is not a valid ChangeBatch: ${(error as Error).message}`);
  }
  if (batch.formatVersion !== batchFormatVersion)
    throw new PushRejected(`batch format ${batch.formatVersion} is not supported`);
  if (batch.machineId !== request.machineId) throw new PushRejected(`batch names machine "${batch.machineId}"`);
  if (
    batch.changes.length !== lastSeq - firstSeq + 1 ||
    batch.changes.some((change, index) => change.seq !== firstSeq + index)
  )
    throw new PushRejected(`batch ${firstSeq}..${lastSeq} does not hold exactly those seqs in order`);
}

/** Checks a push against its machine's cache: it must continue the sequence (or start a resync past it). */
function checkOrder(request: PushRequest, state: MachineState): void {
  if (request.machineId !== state.machineId)
    throw new PushRejected(`push for machine "${request.machineId}" on the stream of "${state.machineId}"`);
  const accepted = state.cache.lastAcceptedSeq;
  const { firstSeq } = request;
  if (firstSeq !== accepted + 1 && !(request.resync && firstSeq > accepted))
    throw new PushRejected(`out of order: batch starts at seq ${firstSeq}, expected ${accepted + 1}`);
}

/**
 * A push as checked on arrival: refused (raised in stream order, an invalid batch only after the
 * machine's resync state is known) or being sealed.
 */
type ArrivedPush = { request: PushRequest; batchBytes: number } & (
  { refused: "unauthorized" | "invalid"; error: unknown } | { refused: false; sealed: Promise<Frame> }
);

/** Stream-level pause with several independent reasons: resumed only when none is left. */
class PauseReasons {
  private readonly reasons = new Set<string>();
  constructor(private readonly call: { pause(): void; resume(): void }) {}

  set(reason: string, paused: boolean): void {
    const before = this.reasons.size;
    if (paused) this.reasons.add(reason);
    else this.reasons.delete(reason);
    if (before === 0 && this.reasons.size > 0) this.call.pause();
    if (before > 0 && this.reasons.size === 0) this.call.resume();
  }
}

/**
 * One agent's push stream. Each batch is checked and handed to the sealer as it arrives, so several
 * are sealed at once (off the event loop with the worker pool); the ordered step then takes them one
 * at a time in arrival order, checks them against the cache and appends them, so the cache and the
 * acks keep the stream's order and seqs.
 */
function servePush(
  call: ServerDuplexStream<PushRequest, PushAck>,
  machine: (machineId: string) => Promise<MachineState>,
  options: ProcessServerOptions,
  revoked: RevocationList | undefined,
  sealer: FrameSealer,
): void {
  let queue: Promise<void> = Promise.resolve();
  let acks: Promise<void> = Promise.resolve();
  let failed = false;
  let sealing = 0;
  const pauses = new PauseReasons(call);
  const codec = codecFor(options.compression);
  const fail = (error: unknown) => {
    if (failed) return;
    failed = true;
    call.emit("error", asStatus(error));
  };
  const arrive = (request: PushRequest): ArrivedPush => {
    const arrived = { request, batchBytes: request.batch.length };
    try {
      requireAgentOf(call, request.machineId, revoked);
    } catch (error) {
      return { ...arrived, refused: "unauthorized", error };
    }
    try {
      checkBatch(request);
    } catch (error) {
      return { ...arrived, refused: "invalid", error };
    }
    sealing++;
    pauses.set("sealing", sealing >= sealingPerStream);
    const sealed = sealer.seal(codec, request, request.batch).finally(() => {
      sealing--;
      pauses.set("sealing", sealing >= sealingPerStream);
    });
    sealed.catch(() => undefined); // awaited in stream order, or dropped when the stream failed
    return { ...arrived, refused: false, sealed };
  };
  const handle = async (arrived: ArrivedPush): Promise<void> => {
    const { request, batchBytes } = arrived;
    if (arrived.refused === "unauthorized") throw arrived.error;
    const state = await machine(request.machineId);
    if (state.needsResync && !request.resync) {
      acks = acks.then(() => {
        call.write({ durableSeq: state.cache.durableSeq, resyncRequired: true });
      });
      return;
    }
    if (arrived.refused !== false) throw arrived.error;
    checkOrder(request, state);
    state.progress.receivedBytes += batchBytes;
    // While the master target drains the cache, agents wait (backpressure); only an outage drops it.
    // An empty cache always takes one batch, however large, so progress is possible.
    const overLimit = () => state.cache.bytes > 0 && state.cache.bytes + batchBytes > options.cacheLimitBytes;
    if (overLimit() && state.masterTargetReachable) {
      pauses.set("cache limit", true);
      while (overLimit() && isReachable(state)) await state.changed.wait(1000);
      pauses.set("cache limit", false);
    }
    if (overLimit()) {
      options.log.warn(
        `cache of ${state.machineId} is over its limit of ${options.cacheLimitBytes} bytes; ordering a resync`,
      );
      await state.dropForResync();
      acks = acks.then(() => {
        call.write({ durableSeq: state.cache.durableSeq, resyncRequired: true });
      });
      return;
    }
    if (request.firstSeq > state.cache.lastAcceptedSeq + 1) await state.gapAt.set(request.firstSeq);
    const frame = await arrived.sealed;
    const { durable } = await state.cache.append(frame);
    state.uncommittedBytes += frame.sealed.length;
    if (state.uncommittedBytes > backpressureBytes) pauses.set("fsync", true);
    const settled = durable.then(async () => {
      state.uncommittedBytes -= frame.sealed.length;
      if (state.uncommittedBytes <= backpressureBytes) pauses.set("fsync", false);
      if (request.resync) await state.resyncRequired.set(0);
      state.changed.notify();
    });
    state.lastDurable = settled;
    acks = acks
      .then(() => settled)
      .then(() => {
        if (!call.cancelled) call.write({ durableSeq: frame.lastSeq, resyncRequired: false });
      });
    acks.catch(fail);
  };
  call.on("data", (request: PushRequest) => {
    if (failed) return;
    const arrived = arrive(request);
    queue = queue.then(() => (failed ? undefined : handle(arrived))).catch(fail);
  });
  call.on("end", () => {
    void queue.then(() => acks).then(() => call.end(), fail);
  });
}

function relayManifest(
  call: ServerWritableStream<ManifestRequest, ManifestEntry>,
  client: ApplyClient,
  revoked: RevocationList | undefined,
): void {
  try {
    requireAgentOf(call, call.request.machineId, revoked);
  } catch (error) {
    call.emit("error", asStatus(error));
    return;
  }
  const upstream = client.manifest({ machineId: call.request.machineId });
  upstream.on("data", (entry: ManifestEntry) => {
    if (!call.write(entry)) {
      upstream.pause();
      call.once("drain", () => upstream.resume());
    }
  });
  upstream.on("end", () => call.end());
  upstream.on("error", (error) => call.emit("error", error));
  call.on("cancelled", () => {
    upstream.cancel();
  });
}
