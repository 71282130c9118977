// Recovery points at the master target: one undo journal per machine, pruned on a timer, and the
// RecoveryPoints service (list, prune, hydrate, rollback) for the operator and the CLI.
import { createHash } from "node:crypto";
import { mkdir, readdir, rm } from "node:fs/promises";
import { join } from "node:path";
import { status, type sendUnaryData, type ServerWritableStream } from "@grpc/grpc-js";
import type {
  Frame,
  HydrateReply,
  HydrateRequest,
  JournalUsage,
  PointInfo,
  PruneReply,
  RecoveryPointsServer,
} from "../../gen/ksr/replication/v1/replication.js";
import { DurableCounter } from "../durable-counter.js";
import { answerUnary, CallError, toStatus } from "../grpc-util.js";
import { exists } from "../journal/durable.js";
import { JournalUsageError } from "../journal/errors.js";
import { hydrate, hydrateProgressPath, rollback } from "../journal/materialise.js";
import { consistencyToWire, maxPointIdLength, type RecoveryPoint } from "../journal/point.js";
import { UndoJournal } from "../journal/undo-journal.js";
import { checkMachineId } from "../machine-id.js";
import { requirePointReaderOf, requireRole } from "../tls.js";
import { FrameRejected, type FrameAdmission, type MachineApplier } from "./machine-applier.js";
import { checkCursor, measurePoint, pointReplies } from "./point-stream.js";

const hourMs = 3_600_000;
export const defaultRetentionMs = 72 * hourMs;
export const minRetentionMs = hourMs;
export const maxRetentionMs = 720 * hourMs;

export interface RecoveryPointOptions {
  /** Points older than this are pruned with the journal only they needed (1h to 720h). */
  retentionMs: number;
  /** How often the retention window is applied while no new points arrive. */
  pruneIntervalMs: number;
}

export interface RecoveryPointsLog {
  info(message: string): void;
  warn(message: string): void;
}

/** Throws a clear message for a retention outside the bounds the API allows. */
export function checkRetention(retentionMs: number): number {
  if (!Number.isSafeInteger(retentionMs) || retentionMs < minRetentionMs || retentionMs > maxRetentionMs)
    throw new JournalUsageError(`retention must be between 1h and 720h (got ${retentionMs / hourMs}h)`);
  return retentionMs;
}

export function toPointInfo(point: RecoveryPoint): PointInfo {
  return {
    id: point.id,
    seq: point.seq,
    timeUnixMs: point.timeUnixMs,
    consistency: consistencyToWire(point.consistency),
    consistencyGroup: point.group,
  };
}

/**
 * Admits a machine's frames around rollbacks: refused while one runs (or an interrupted one is
 * unfinished), and after it only a resync that read the rolled-back replica's manifest gets in.
 * The flag is durable, so a crash anywhere in between still demands the resync.
 */
export class RollbackAdmission implements FrameAdmission {
  running: RecoveryPoint | undefined;
  private manifestSinceRollback = false;

  constructor(
    private readonly machineId: string,
    private readonly journal: UndoJournal,
    readonly resyncNeeded: DurableCounter,
  ) {}

  refuseWhileRollingBack(): void {
    const target = this.running?.id ?? this.journal.pendingRollback;
    if (target !== undefined)
      throw new CallError(
        status.UNAVAILABLE,
        `the replica of machine "${this.machineId}" is being rolled back to recovery point "${target}"; its frames are refused until the rollback finished`,
      );
  }

  admit(frames: readonly Frame[]): void {
    this.refuseWhileRollingBack();
    if (this.resyncNeeded.value === 0) return;
    if (this.manifestSinceRollback && frames[0]?.afterGap === true) return;
    throw new FrameRejected(
      `the replica of machine "${this.machineId}" was rolled back to a recovery point; it takes changes again once the agent resynchronised against it`,
    );
  }

  async committed(frames: readonly Frame[]): Promise<void> {
    if (this.resyncNeeded.value !== 0 && frames[0]?.afterGap === true) {
      await this.resyncNeeded.set(0);
      this.manifestSinceRollback = false;
    }
  }

  /** The agent read the replica's block hashes (the first step of its resync). */
  manifestServed(): void {
    if (this.resyncNeeded.value !== 0 && this.running === undefined) this.manifestSinceRollback = true;
  }

  async beginRollback(point: RecoveryPoint): Promise<void> {
    this.running = point;
    this.manifestSinceRollback = false;
    await this.resyncNeeded.set(point.seq);
  }
}

interface MachinePoints {
  machineId: string;
  kind: "tree" | "block";
  replicaRoot: string;
  journal: UndoJournal;
  admission: RollbackAdmission;
  applier?: MachineApplier;
  /** Streams and stagings running now: rollback waits for none, pruning keeps their staging. */
  hydrations: Map<string, number>;
}

export class RecoveryPointsHost {
  private timer: NodeJS.Timeout | undefined;
  private pruning: Promise<void> = Promise.resolve();
  private readonly stagings = new Map<string, Promise<void>>();

  private constructor(
    private readonly stateDir: string,
    private readonly machines: Map<string, MachinePoints>,
    private readonly options: RecoveryPointOptions,
    private readonly log: RecoveryPointsLog,
  ) {}

  /** Opens every machine's journal (state dir journals/<machine>) before any frame can arrive. */
  static async open(
    stateDir: string,
    replicas: readonly { machineId: string; kind: "tree" | "block"; path: string }[],
    options: RecoveryPointOptions,
    log: RecoveryPointsLog,
  ): Promise<RecoveryPointsHost> {
    checkRetention(options.retentionMs);
    const machines = new Map<string, MachinePoints>();
    const host = new RecoveryPointsHost(stateDir, machines, options, log);
    try {
      for (const spec of replicas) {
        const journal = await UndoJournal.open(join(stateDir, "journals", spec.machineId), {
          retentionMs: options.retentionMs,
        });
        machines.set(spec.machineId, {
          machineId: spec.machineId,
          kind: spec.kind,
          replicaRoot: spec.path,
          journal,
          hydrations: new Map(),
          admission: new RollbackAdmission(
            spec.machineId,
            journal,
            await DurableCounter.open(join(stateDir, `${spec.machineId}.resync-after-rollback`)),
          ),
        });
      }
    } catch (error) {
      await host.close();
      throw error;
    }
    return host;
  }

  journal(machineId: string): UndoJournal {
    return this.machine(machineId).journal;
  }

  admission(machineId: string): RollbackAdmission {
    return this.machine(machineId).admission;
  }

  attach(applier: MachineApplier): void {
    this.machine(applier.machineId).applier = applier;
  }

  /** Applies the retention window now and then on the timer. */
  startPruning(): void {
    this.timer = setInterval(() => {
      this.pruning = this.pruning.then(() => this.pruneAll());
    }, this.options.pruneIntervalMs);
    this.timer.unref();
  }

  private async pruneAll(): Promise<void> {
    for (const machine of this.machines.values()) {
      try {
        const { removedPoints } = await machine.journal.prune(this.options.retentionMs, Date.now());
        await this.removeStaleStagings(machine);
        if (removedPoints.length === 0) continue;
        const usage = await machine.journal.size();
        this.log.info(
          `recovery points of ${machine.machineId}: pruned ${removedPoints.length} older than the retention window; ${usage.points} kept, journal ${usage.segmentBytes + usage.objectBytes} bytes`,
        );
      } catch (error) {
        this.log.warn(`pruning recovery points of ${machine.machineId} failed: ${(error as Error).message}`);
      }
    }
  }

  async close(): Promise<void> {
    clearInterval(this.timer);
    await this.pruning;
    for (const machine of this.machines.values()) {
      await machine.journal.close();
      await machine.admission.resyncNeeded.close();
    }
  }

  // ------------------------------------------------------------------ requests

  private machine(machineId: string): MachinePoints {
    try {
      checkMachineId(machineId);
    } catch (error) {
      throw new CallError(status.INVALID_ARGUMENT, (error as Error).message);
    }
    const found = this.machines.get(machineId);
    if (found === undefined)
      throw new CallError(status.NOT_FOUND, `this master target holds no replica for machine "${machineId}"`);
    return found;
  }

  private point(machine: MachinePoints, pointId: string, pointSeq: number): RecoveryPoint {
    if (pointId === "" || pointId.length > maxPointIdLength)
      throw new CallError(status.INVALID_ARGUMENT, `point id must be 1-${maxPointIdLength} characters`);
    if (!Number.isSafeInteger(pointSeq) || pointSeq < 0)
      throw new CallError(status.INVALID_ARGUMENT, `point seq ${pointSeq} is out of range`);
    const found = machine.journal
      .points()
      .filter((point) => point.id === pointId && (pointSeq === 0 || point.seq === pointSeq))
      .at(-1);
    if (found === undefined)
      throw new CallError(
        status.NOT_FOUND,
        `machine "${machine.machineId}" retains no recovery point "${pointId}"${pointSeq === 0 ? "" : ` at seq ${pointSeq}`} (list them with "points")`,
      );
    return found;
  }

  private async usage(machine: MachinePoints): Promise<JournalUsage> {
    const size = await machine.journal.size();
    return { segmentBytes: size.segmentBytes, objectBytes: size.objectBytes, segments: size.segments };
  }

  service(): RecoveryPointsServer {
    const answer = <Reply>(
      call: Parameters<typeof requireRole>[0],
      callback: sendUnaryData<Reply>,
      work: () => Promise<Reply>,
      authorize: () => void = () => {
        requireRole(call, ["operator"]);
      },
    ): void => {
      answerUnary(
        callback,
        () => {
          authorize();
          return work();
        },
        (error) => toStatus(error, isUsageError),
      );
    };
    return {
      listPoints: (call, callback) => {
        answer(
          call,
          callback,
          async () => {
            const machine = this.machine(call.request.machineId);
            return {
              points: machine.journal.points().map(toPointInfo),
              usage: await this.usage(machine),
              replicaKind: machine.kind,
              retentionMs: this.options.retentionMs,
              pendingRollback: machine.journal.pendingRollback ?? "",
            };
          },
          () => {
            requirePointReaderOf(call, call.request.machineId);
          },
        );
      },
      prune: (call, callback) => {
        answer(call, callback, async () => {
          const machine = this.machine(call.request.machineId);
          if (call.request.releaseAll) return this.releaseAll(machine);
          checkRetentionArgument(call.request.retentionMs);
          const { removedPoints, floor } = await machine.journal.prune(call.request.retentionMs, Date.now());
          await this.removeStaleStagings(machine);
          return {
            removed: removedPoints.map(toPointInfo),
            oldestKept: floor === null ? undefined : toPointInfo(floor),
            usage: await this.usage(machine),
          };
        });
      },
      rollback: (call, callback) => {
        answer(call, callback, async () => {
          const machine = this.machine(call.request.machineId);
          const point = this.point(machine, call.request.pointId, call.request.pointSeq);
          const discarded = machine.journal.points().filter((newer) => newer.seq > point.seq).length;
          await this.rollback(machine, point);
          return { point: toPointInfo(point), discardedPoints: discarded };
        });
      },
      hydrate: (call) => {
        this.hydrate(call).catch((error: unknown) => {
          call.emit("error", toStatus(error, isUsageError));
        });
      },
    };
  }

  // ------------------------------------------------------------------ release

  /** Every point and the whole journal of a stream whose epoch ended; frames wait meanwhile. */
  private async releaseAll(machine: MachinePoints): Promise<PruneReply> {
    if (machine.admission.running !== undefined || machine.hydrations.size > 0)
      throw new CallError(
        status.FAILED_PRECONDITION,
        `a rollback or hydration of machine "${machine.machineId}" is running; release its points after it finished`,
      );
    const release = () => machine.journal.releaseAll();
    const removed = await (machine.applier === undefined ? release() : machine.applier.exclusive(release));
    await this.removeStaleStagings(machine);
    const usage = await this.usage(machine);
    if (removed.length > 0)
      this.log.info(
        `recovery points of ${machine.machineId} released: ${removed.length} points and the journal (its epoch ended); journal ${usage.segmentBytes + usage.objectBytes} bytes`,
      );
    return { removed: removed.map(toPointInfo), oldestKept: undefined, usage };
  }

  // ------------------------------------------------------------------ rollback

  private async rollback(machine: MachinePoints, point: RecoveryPoint): Promise<void> {
    const { applier, admission } = machine;
    if (applier === undefined) throw new CallError(status.UNAVAILABLE, "the master target is still starting");
    if (admission.running !== undefined)
      throw new CallError(
        status.FAILED_PRECONDITION,
        `a rollback of machine "${machine.machineId}" to "${admission.running.id}" is running`,
      );
    if (machine.hydrations.size > 0)
      throw new CallError(
        status.FAILED_PRECONDITION,
        `a hydration of machine "${machine.machineId}" is running; roll back after it finished`,
      );
    await admission.beginRollback(point);
    try {
      await applier.exclusive(async () => {
        await applier.replica.release();
        await rollback(machine.journal, machine.replicaRoot, point);
        await applier.replica.release();
      });
      this.log.info(`replica of ${machine.machineId} rolled back to recovery point ${point.id} (seq ${point.seq})`);
    } finally {
      admission.running = undefined;
    }
    await this.removeStaleStagings(machine);
  }

  /** The apply stream asks first: frames arriving during a rollback are refused at once. */
  refuseWhileRollingBack(machineId: string): void {
    this.machines.get(machineId)?.admission.refuseWhileRollingBack();
  }

  manifestServed(machineId: string): void {
    this.machines.get(machineId)?.admission.manifestServed();
  }

  // ------------------------------------------------------------------ hydrate

  /**
   * The point is materialised once into the state directory (resumable, beside the applier, while
   * replication continues), then streamed from there; the staging is removed after a complete
   * stream and kept for resuming after an interrupted one (until its point is pruned).
   */
  private async hydrate(call: ServerWritableStream<HydrateRequest, HydrateReply>): Promise<void> {
    requirePointReaderOf(call, call.request.machineId);
    const machine = this.machine(call.request.machineId);
    const point = this.point(machine, call.request.pointId, call.request.pointSeq);
    const cursor = { path: call.request.resume?.path ?? "", offset: call.request.resume?.offset ?? 0 };
    checkCursor(cursor);
    if (machine.kind === "block" && cursor.path !== "")
      throw new CallError(status.INVALID_ARGUMENT, "a block replica's point has only the root entry");
    if (machine.admission.running !== undefined)
      throw new CallError(
        status.FAILED_PRECONDITION,
        `the replica of machine "${machine.machineId}" is being rolled back to "${machine.admission.running.id}"; hydrate after it`,
      );
    const staging = this.stagingPath(machine, point);
    machine.hydrations.set(staging, (machine.hydrations.get(staging) ?? 0) + 1);
    let complete = false;
    try {
      await this.stage(machine, point, staging);
      const totals = await measurePoint(staging);
      await send(call, {
        item: { $case: "totals", value: { point: toPointInfo(point), replicaKind: machine.kind, ...totals } },
      });
      for await (const reply of pointReplies(staging, cursor)) {
        if (call.cancelled) return;
        await send(call, reply);
      }
      complete = true;
      call.end();
    } finally {
      const left = (machine.hydrations.get(staging) ?? 1) - 1;
      if (left === 0) machine.hydrations.delete(staging);
      else machine.hydrations.set(staging, left);
      if (complete && left === 0) await removeStaging(staging);
    }
  }

  private stagingPath(machine: MachinePoints, point: RecoveryPoint): string {
    const idHash = createHash("sha256").update(point.id).digest("hex").slice(0, 12);
    return join(this.stagingRoot(machine), `${point.seq}-${idHash}`);
  }

  private stagingRoot(machine: MachinePoints): string {
    return join(this.stateDir, "hydrations", machine.machineId);
  }

  /** Materialises the point once, however many calls ask for it at the same time. */
  private stage(machine: MachinePoints, point: RecoveryPoint, staging: string): Promise<void> {
    const running = this.stagings.get(staging);
    if (running !== undefined) return running;
    const work = (async () => {
      if ((await exists(staging)) && !(await exists(hydrateProgressPath(staging)))) return; // materialised before
      await mkdir(this.stagingRoot(machine), { recursive: true });
      const started = Date.now();
      await hydrate(machine.journal, machine.replicaRoot, point, staging);
      this.log.info(
        `recovery point ${point.id} of ${machine.machineId} materialised for hydration in ${((Date.now() - started) / 1000).toFixed(1)} s`,
      );
    })().finally(() => this.stagings.delete(staging));
    this.stagings.set(staging, work);
    return work;
  }

  /** Staged copies of points no longer retained (pruned, or discarded by a rollback) go. */
  private async removeStaleStagings(machine: MachinePoints): Promise<void> {
    const retained = new Set(machine.journal.points().map((point) => this.stagingPath(machine, point)));
    const names = await readdir(this.stagingRoot(machine)).catch(() => [] as string[]);
    for (const name of names) {
      const staging = join(this.stagingRoot(machine), name.replace(/\.ksr-hydrate\.json(\.cursor)?$/, ""));
      if (!retained.has(staging) && !machine.hydrations.has(staging)) await removeStaging(staging);
    }
  }
}

async function removeStaging(staging: string): Promise<void> {
  await rm(staging, { recursive: true, force: true });
  await rm(hydrateProgressPath(staging), { force: true });
  await rm(`${hydrateProgressPath(staging)}.cursor`, { force: true });
}

function checkRetentionArgument(retentionMs: number): void {
  try {
    checkRetention(retentionMs);
  } catch (error) {
    throw new CallError(status.INVALID_ARGUMENT, (error as Error).message);
  }
}

/** Library refusals (a pending rollback, a point no longer retained) are the caller's to fix. */
function isUsageError(error: unknown): boolean {
  return error instanceof JournalUsageError;
}

/** Writes with backpressure; a cancelled call stops waiting. */
async function send(call: ServerWritableStream<HydrateRequest, HydrateReply>, reply: HydrateReply): Promise<void> {
  if (call.write(reply) || call.cancelled) return;
  await new Promise<void>((resolve) => {
    const done = () => {
      call.off("drain", done);
      call.off("cancelled", done);
      resolve();
    };
    call.on("drain", done);
    call.on("cancelled", done);
  });
}
