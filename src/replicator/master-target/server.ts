// The master target: serves Apply to process servers and writes replicas.
import { lstat, mkdir } from "node:fs/promises";
import { join } from "node:path";
import { type ServerDuplexStream, type ServerWritableStream } from "@grpc/grpc-js";
import {
  ApplyService,
  RecoveryPointsService,
  type ApplyAck,
  type ApplyServer,
  type Frame,
  type ManifestEntry,
  type ManifestRequest,
} from "../../gen/ksr/replication/v1/replication.js";
import { loadBlockHasher } from "../block-hash.js";
import { DurableCounter } from "../durable-counter.js";
import { createFrameSealer, type FrameSealer } from "../frame-sealer.js";
import { checkMachineId } from "../machine-id.js";
import { decodeFrame, ownedMessageDecoder } from "../wire-reader.js";
import { shutdownServer, startServer, toStatus, type RunningServer } from "../grpc-util.js";
import { requireRole, serverCredentials, type TlsFiles } from "../tls.js";
import { describeEntry, describeImage, walkTree } from "../tree-walk.js";
import type { UndoJournal } from "../journal/undo-journal.js";
import { isRejection, MachineApplier } from "./machine-applier.js";
import {
  defaultRetentionMs,
  RecoveryPointsHost,
  type RecoveryPointOptions,
  type RecoveryPointsLog,
} from "./recovery-points.js";
import { BlockReplica, TreeReplica, type Replica } from "./replica.js";

export interface ReplicaSpec {
  machineId: string;
  kind: "tree" | "block";
  path: string;
}

export interface MasterTargetOptions {
  listen: string;
  tls: TlsFiles;
  encryptionKey: Buffer;
  stateDir: string;
  replicas: readonly ReplicaSpec[];
  /** Undo journals and retention of recovery points (default: 72h, pruned every minute). */
  recoveryPoints?: Partial<RecoveryPointOptions>;
  log?: RecoveryPointsLog;
  /** Threads that open and decompress frames; 0 opens on the event loop (default: cores − 1, at least 1). */
  codecWorkers?: number;
}

const silentLog: RecoveryPointsLog = { info: () => undefined, warn: () => undefined };

/**
 * The Apply service with a Frame decoder that leaves the sealed bytes in the buffer gRPC received
 * them in, which then moves to a sealer worker whole (no copy on the event loop).
 */
const ViewApplyService = {
  ...ApplyService,
  apply: { ...ApplyService.apply, requestDeserialize: ownedMessageDecoder(decodeFrame) },
};

async function openMachine(
  options: MasterTargetOptions,
  spec: ReplicaSpec,
  points: RecoveryPointsHost,
  sealer: FrameSealer,
): Promise<MachineApplier> {
  const journal = points.journal(spec.machineId);
  let replica: Replica;
  if (spec.kind === "tree") {
    await mkdir(spec.path, { recursive: true });
    const log = options.log ?? silentLog;
    replica = new TreeReplica(spec.path, journal, (path, what) => {
      log.warn(`machine ${spec.machineId}: the replica cannot keep ${what} of "${path}"`);
    });
  } else {
    replica = new BlockReplica(spec.path, journal);
  }
  const counter = await DurableCounter.open(join(options.stateDir, `${spec.machineId}.applied`));
  const applier = new MachineApplier(
    spec.machineId,
    replica,
    journal,
    counter,
    sealer,
    points.admission(spec.machineId),
  );
  points.attach(applier);
  return applier;
}

export interface RunningMasterTarget extends RunningServer {
  /** The undo journal of a machine's replica (for in-process callers such as tests). */
  journal(machineId: string): UndoJournal;
}

export async function startMasterTarget(options: MasterTargetOptions): Promise<RunningMasterTarget> {
  await loadBlockHasher();
  await mkdir(options.stateDir, { recursive: true });
  for (const spec of options.replicas) checkMachineId(spec.machineId);
  const points = await RecoveryPointsHost.open(
    options.stateDir,
    options.replicas,
    {
      retentionMs: options.recoveryPoints?.retentionMs ?? defaultRetentionMs,
      pruneIntervalMs: options.recoveryPoints?.pruneIntervalMs ?? 60_000,
    },
    options.log ?? silentLog,
  );
  const machines = new Map<string, MachineApplier>();
  const sealer = createFrameSealer(options.encryptionKey, options.codecWorkers);
  const closeAppliersAndPoints = async (): Promise<void> => {
    for (const applier of machines.values()) await applier.close();
    await points.close();
    await sealer.close();
  };
  try {
    for (const spec of options.replicas) machines.set(spec.machineId, await openMachine(options, spec, points, sealer));
  } catch (error) {
    await closeAppliersAndPoints();
    throw error;
  }

  const machine = (machineId: string): MachineApplier => {
    const found = machines.get(machineId);
    if (found === undefined) throw new UnknownMachine(machineId);
    return found;
  };
  const fail = (call: { emit(event: "error", error: unknown): boolean }, error: unknown) => {
    call.emit(
      "error",
      toStatus(error, (e) => isRejection(e) || e instanceof UnknownMachine),
    );
  };

  const implementation: ApplyServer = {
    status(call, callback) {
      try {
        requireRole(call, ["process-server"]);
        const found = machine(call.request.machineId);
        callback(null, { machineId: found.machineId, appliedSeq: found.appliedSeq, replicaKind: found.replica.kind });
      } catch (error) {
        callback(
          toStatus(error, (e) => e instanceof UnknownMachine),
          null,
        );
      }
    },
    apply(call) {
      try {
        requireRole(call, ["process-server"]);
      } catch (error) {
        fail(call, error);
        return;
      }
      serveApplyStream(call, machine, points).catch((error: unknown) => {
        fail(call, error);
      });
    },
    manifest(call) {
      streamManifest(call, machine, points).catch((error: unknown) => {
        fail(call, error);
      });
    },
  };
  let started;
  try {
    started = await startServer(options.listen, await serverCredentials(options.tls), [
      [ViewApplyService, implementation],
      [RecoveryPointsService, points.service()],
    ]);
  } catch (error) {
    await closeAppliersAndPoints();
    throw error;
  }
  const { server, port } = started;
  points.startPruning();
  return {
    port,
    journal: (machineId) => points.journal(machineId),
    async close() {
      await shutdownServer(server);
      await closeAppliersAndPoints();
    },
  };
}

class UnknownMachine extends Error {
  constructor(machineId: string) {
    super(`this master target holds no replica for machine "${machineId}"`);
    this.name = "UnknownMachine";
  }
}

/** Applies frames as they arrive; whatever queued up while the last group was made durable goes in one commit. */
async function serveApplyStream(
  call: ServerDuplexStream<Frame, ApplyAck>,
  machine: (machineId: string) => MachineApplier,
  points: RecoveryPointsHost,
): Promise<void> {
  const queued: Frame[] = [];
  let wake: (() => void) | undefined;
  const stream = { ended: false };
  call.on("data", (frame: Frame) => {
    queued.push(frame);
    wake?.();
  });
  call.on("end", () => {
    stream.ended = true;
    wake?.();
  });
  call.on("cancelled", () => {
    stream.ended = true;
    wake?.();
  });
  for (;;) {
    if (queued.length === 0) {
      if (stream.ended) break;
      await new Promise<void>((resolve) => (wake = resolve));
      wake = undefined;
      continue;
    }
    const group = queued.splice(0, queued.length);
    const applier = machine(group[0]?.machineId ?? "");
    if (group.some((frame) => frame.machineId !== applier.machineId))
      throw new UnknownMachine("(several machines on one apply stream)");
    points.refuseWhileRollingBack(applier.machineId);
    const appliedSeq = await applier.applyFrames(group);
    if (!call.cancelled) call.write({ machineId: applier.machineId, appliedSeq });
  }
  call.end();
}

async function streamManifest(
  call: ServerWritableStream<ManifestRequest, ManifestEntry>,
  machine: (machineId: string) => MachineApplier,
  points: RecoveryPointsHost,
): Promise<void> {
  requireRole(call, ["process-server"]);
  const applier = machine(call.request.machineId);
  await applier.exclusive(async () => {
    await applier.replica.sync();
    if (applier.replica.kind === "block") {
      call.write(await describeImage(applier.replica.root));
    } else {
      // The root first: its owner, mode and mtime are the volume's (a PGDATA at the mount point).
      const rootStats = await lstat(applier.replica.root, { bigint: true });
      const root = await describeEntry(applier.replica.root, { path: "", stats: rootStats });
      if (root !== undefined) call.write(root);
      for await (const entry of walkTree(applier.replica.root)) {
        const described = await describeEntry(applier.replica.root, entry);
        if (described !== undefined && !call.write(described))
          await new Promise((resolve) => call.once("drain", resolve));
        if (call.cancelled) return;
      }
    }
    points.manifestServed(applier.machineId);
  });
  call.end();
}
