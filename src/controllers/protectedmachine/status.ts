// A ProtectedMachine's status computed from observations (the replicators' Control.Status and
// RecoveryPoints.ListPoints per volume, the problems found), and the Events its transitions
// deserve. Pure: the reconciler observes, this decides, the reconciler writes once.
import type {
  MachineHealth,
  ProtectedMachinePhase,
  ProtectedMachineStatus,
  RecoveryPointReference,
  RecoveryPointSummary,
  VolumeStatus,
} from "../../api/types.js";
import { Consistency, type ControlStatus, type PointInfo } from "../../gen/ksr/replication/v1/replication.js";
import { listedPointsLimit } from "../../api/protected-machine.js";
import { captureModeOf } from "../../replicator/capture-strategy.js";
import { rfc3339, type ConditionUpdate, type EventRecord } from "../../runtime/index.js";
import type { Problem } from "./workload.js";
import type { ResyncObservation } from "./resync.js";

export interface VolumeObservation {
  statusName: string;
  claimName: string;
  replicaClaimName: string;
  capacityBytes?: number;
  /** The process server's view; undefined while it cannot be asked. */
  control?: ControlStatus;
  /** The master target's points, oldest first; undefined while it cannot be asked. */
  points?: readonly PointInfo[];
  throughputBytesPerSecond?: number;
}

export interface StatusInput {
  previous: ProtectedMachineStatus | undefined;
  /** Something the user must fix: protection does not start (or stops being true) until then. */
  problem?: Problem;
  paused: boolean;
  /** Still placing replicators or waiting for pods; said in the Ready condition. */
  waiting?: Problem;
  rpoThresholdMs: number;
  /** The policy asks for app-consistent points but the machine has no quiesce hooks. */
  /** Why the policy's app-consistent points cannot be taken for this machine, if they cannot. */
  appConsistencyUnavailable?: Problem;
  activeSite?: string;
  /** status.replication.epoch: after a reprotect, the comparison in the new direction is the initial replication. */
  epoch?: number;
  /** A failover's commit recorded the workload as running at the target (status.replication.failedOverBy). */
  failedOver?: boolean;
  /** status.replication.fullCopyVolumes: volumes a reprotect copies in full, their original claims being gone. */
  fullCopyVolumes?: readonly string[];
  volumes: readonly VolumeObservation[];
  now: number;
  /** The resync schedule's view (resync.ts); absent: status.resync stays as it was. */
  resync?: ResyncObservation;
}

export interface StatusResult {
  /** Every field but conditions, which the status writer sets at the reconciled generation. */
  status: Omit<ProtectedMachineStatus, "conditions" | "observedGeneration">;
  conditions: ConditionUpdate[];
  events: EventRecord[];
  /** The machine's RPO in seconds while it is known (for the metrics). */
  rpoSeconds?: number;
  /** The policy's rpoThreshold, given together with rpoSeconds. */
  rpoThresholdSeconds?: number;
}

/** A volume has completed its full comparison once it stopped syncing and a watermark after it was applied. */
function synced(control: ControlStatus | undefined): boolean {
  return control !== undefined && control.lastReportUnixMs > 0 && !control.syncing && control.recoveryTimeUnixMs > 0;
}

/** "42s", "3m12s", "2h5m": what `status.rpo` shows. */
export function formatDuration(ms: number): string {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = seconds % 60;
  if (h > 0) return `${h}h${m > 0 ? `${m}m` : ""}`;
  if (m > 0) return `${m}m${s > 0 ? `${s}s` : ""}`;
  return `${s}s`;
}

function pointReference(point: PointInfo): RecoveryPointReference {
  const consistency =
    point.consistency === Consistency.CONSISTENCY_APP
      ? "AppConsistent"
      : point.consistency === Consistency.CONSISTENCY_CRASH
        ? "CrashConsistent"
        : "BestEffort";
  return { id: point.id, time: rfc3339(point.timeUnixMs), consistency };
}

/**
 * The machine's points: with several volumes, a point counts only as far as every volume has
 * one, so latest is the volume whose newest point is oldest, oldest the volume whose oldest
 * point is newest, and count the smallest count.
 */
export function summarizePoints(perVolume: readonly (readonly PointInfo[])[]): RecoveryPointSummary | undefined {
  const usable = perVolume.map((points) => [...points].sort((a, b) => a.timeUnixMs - b.timeUnixMs));
  if (usable.length === 0) return undefined;
  /** One candidate per volume; none when a volume has none. */
  const pick = (candidates: (PointInfo | undefined)[], which: "earliest" | "latest") => {
    if (candidates.some((point) => point === undefined)) return undefined;
    const sorted = (candidates as PointInfo[]).sort((a, b) => a.timeUnixMs - b.timeUnixMs);
    return which === "earliest" ? sorted[0] : sorted.at(-1);
  };
  const latest = pick(
    usable.map((points) => points.at(-1)),
    "earliest",
  );
  const latestAppConsistent = pick(
    usable.map((points) => points.filter((point) => point.consistency === Consistency.CONSISTENCY_APP).at(-1)),
    "earliest",
  );
  const oldest = pick(
    usable.map((points) => points[0]),
    "latest",
  );
  // Each listed id selects an instant every volume can recover to (FailoverRun recoveryPoint.id):
  // the points between oldest and latest of the volume that has the most of them.
  const inRange = (points: readonly PointInfo[]) =>
    latest === undefined || oldest === undefined
      ? []
      : points.filter((point) => point.timeUnixMs >= oldest.timeUnixMs && point.timeUnixMs <= latest.timeUnixMs);
  const listed = usable.map(inRange).reduce((most, points) => (points.length > most.length ? points : most));
  const items = listed.slice(-listedPointsLimit).reverse().map(pointReference);
  return {
    ...(latest === undefined ? {} : { latest: pointReference(latest) }),
    ...(latestAppConsistent === undefined ? {} : { latestAppConsistent: pointReference(latestAppConsistent) }),
    ...(oldest === undefined ? {} : { oldest: pointReference(oldest) }),
    count: Math.min(...usable.map((points) => points.length)),
    ...(items.length === 0 ? {} : { items }),
  };
}

/**
 * Critical: not protected (a problem) or RPO above twice the threshold. Warning: RPO above the
 * threshold, replicators that cannot be asked, or paused (the recovery site falls behind by choice).
 */
function healthFor(
  phase: ProtectedMachinePhase,
  rpoMs: number | undefined,
  thresholdMs: number,
  reachable: boolean,
): MachineHealth {
  if (phase === "Error" || (rpoMs !== undefined && rpoMs > 2 * thresholdMs)) return "Critical";
  if (phase === "Paused" || phase === "FailedOver" || (rpoMs !== undefined && rpoMs > thresholdMs) || !reachable)
    return "Warning";
  return "Healthy";
}

/** Why healthFor answered what it did, in the words of a notification. */
function healthCause(
  phase: ProtectedMachinePhase,
  rpoMs: number | undefined,
  input: StatusInput,
  reachable: boolean,
): string {
  const threshold = formatDuration(input.rpoThresholdMs);
  if (phase === "Error") return input.problem?.message ?? "the machine cannot be protected";
  if (rpoMs !== undefined && rpoMs > 2 * input.rpoThresholdMs)
    return `RPO ${formatDuration(rpoMs)} is over twice the rpoThreshold ${threshold}`;
  if (phase === "Paused") return "replication is paused (spec.paused)";
  if (rpoMs !== undefined && rpoMs > input.rpoThresholdMs)
    return `RPO ${formatDuration(rpoMs)} is above the rpoThreshold ${threshold}`;
  if (!reachable) return "the replicators cannot be asked for their progress";
  return rpoMs === undefined ? `phase ${phase}` : `RPO ${formatDuration(rpoMs)} is within ${threshold}`;
}

const phaseEvents: Partial<Record<ProtectedMachinePhase, { reason: string; note: string }>> = {
  InitialReplication: {
    reason: "InitialReplicationStarted",
    note: "replicators are running; the initial copy started",
  },
  Protected: { reason: "Protected", note: "the recovery site holds a complete replica; changes stream continuously" },
  Resynchronizing: { reason: "ResynchronizationStarted", note: "a volume is being compared with its replica" },
  Paused: { reason: "ReplicationPaused", note: "spec.paused is true: changes are not shipped" },
  FailedOver: {
    reason: "FailedOver",
    note: "the failover is committed: the workload runs at the recovery site; reprotect to replicate it back",
  },
  Reprotecting: {
    reason: "ReprotectStarted",
    note: "replicating in the new direction: the volumes are compared block by block and only differences are sent",
  },
};

export function computeStatus(input: StatusInput): StatusResult {
  const { previous, now } = input;
  const events: EventRecord[] = [];
  const conditions: ConditionUpdate[] = [];
  const set = (type: string, status: "True" | "False" | "Unknown", reason: string, message: string) => {
    conditions.push({ type, status, reason, message });
  };

  const controls = input.volumes.map((volume) => volume.control);
  const observed = input.volumes.length > 0 && controls.every((control) => control !== undefined);
  const epoch = input.epoch ?? 0;
  const sameEpoch = (previous?.initialReplication?.epoch ?? 0) === epoch;
  const everProtected = sameEpoch && previous?.initialReplication?.completionTime !== undefined;
  const allSynced = observed && controls.every(synced);
  const anySyncing = controls.some((control) => control?.syncing === true);

  let phase: ProtectedMachinePhase;
  if (input.problem !== undefined) phase = "Error";
  else if (input.paused) phase = input.failedOver === true ? "FailedOver" : "Paused";
  else if (!everProtected && epoch > 0) phase = allSynced ? "Protected" : "Reprotecting";
  else if (!everProtected) phase = allSynced ? "Protected" : observed ? "InitialReplication" : "Enabling";
  else
    phase =
      anySyncing || input.resync?.waiting !== undefined || input.resync?.status?.state === "Running"
        ? "Resynchronizing"
        : "Protected";

  const recoveryTimes = controls.map((control) => control?.recoveryTimeUnixMs ?? 0);
  const recoveryTime = observed && recoveryTimes.every((time) => time > 0) ? Math.min(...recoveryTimes) : undefined;
  const rpoMs = recoveryTime === undefined ? undefined : Math.max(0, now - recoveryTime);
  const tracked = phase === "Protected" || phase === "Resynchronizing";
  const health = healthFor(phase, tracked ? rpoMs : undefined, input.rpoThresholdMs, observed || !everProtected);

  const initialReplication = sameEpoch ? { ...(previous?.initialReplication ?? {}) } : {};
  if (epoch > 0) initialReplication.epoch = epoch;
  if (!everProtected && observed) {
    const total = controls.reduce((sum, control) => sum + control.syncBytesTotal, 0);
    const done = controls.reduce((sum, control) => sum + Math.min(control.syncBytesDone, control.syncBytesTotal), 0);
    initialReplication.bytesTotal = total;
    initialReplication.bytesReplicated = allSynced ? total : done;
    // Examined is not yet applied: 100 only once the recovery site confirmed it.
    initialReplication.progressPercent = allSynced
      ? 100
      : total === 0
        ? 0
        : Math.min(99, Math.floor((100 * done) / total));
    initialReplication.startTime ??= rfc3339(now);
    if (allSynced) initialReplication.completionTime = rfc3339(now);
  }

  // Conditions: what is true now, each with the generation it was computed from.
  if (input.problem !== undefined) set("Ready", "False", input.problem.reason, input.problem.message);
  else if (phase === "FailedOver")
    set("Ready", "False", "FailedOver", "the workload runs at the recovery site; run a Reprotect to protect it again");
  else if (input.paused) set("Ready", "False", "Paused", "spec.paused is true: changes are tracked but not shipped");
  else if (input.waiting !== undefined) set("Ready", "False", input.waiting.reason, input.waiting.message);
  else if (input.resync?.waiting !== undefined)
    set("Ready", "False", input.resync.waiting.reason, input.resync.waiting.message);
  else if (phase === "Protected") set("Ready", "True", "Protected", "every volume is replicated to the recovery site");
  else if (phase === "Resynchronizing")
    set("Ready", "False", "Resynchronizing", "a volume is being compared with its replica");
  else if (phase === "Reprotecting")
    set(
      "Ready",
      "False",
      "Reprotecting",
      `comparing with the volumes at the other site: ${initialReplication.progressPercent ?? 0}% done`,
    );
  else if (phase === "InitialReplication")
    set("Ready", "False", "InitialReplication", `initial replication ${initialReplication.progressPercent ?? 0}% done`);
  else set("Ready", "False", "Enabling", "waiting for the replicators to report");

  if (tracked && rpoMs !== undefined) {
    const threshold = formatDuration(input.rpoThresholdMs);
    if (rpoMs > input.rpoThresholdMs)
      set(
        "RpoWithinThreshold",
        "False",
        "RpoThresholdExceeded",
        `RPO ${formatDuration(rpoMs)} is above the policy's rpoThreshold ${threshold}`,
      );
    else set("RpoWithinThreshold", "True", "RpoWithinThreshold", `RPO ${formatDuration(rpoMs)} is within ${threshold}`);
  }
  if (input.appConsistencyUnavailable !== undefined)
    set(
      "AppConsistencyUnavailable",
      "True",
      input.appConsistencyUnavailable.reason,
      input.appConsistencyUnavailable.message,
    );
  else set("AppConsistencyUnavailable", "False", "NotNeeded", "app-consistent points need no hooks here, or have them");

  const fullCopy = input.fullCopyVolumes ?? [];
  if (epoch > 0)
    set(
      "FullCopy",
      fullCopy.length > 0 ? "True" : "False",
      fullCopy.length > 0 ? "OriginalVolumesGone" : "Compared",
      fullCopy.length > 0
        ? `the claims of ${fullCopy.join(", ")} were gone at the target when replication was reversed: copied in full`
        : "every volume was compared with the one left at the target: only differences are sent",
    );

  // Events: one per transition, never per reconcile.
  const previousFullCopy = previous?.conditions?.find((condition) => condition.type === "FullCopy");
  if (fullCopy.length > 0 && epoch > 0 && previousFullCopy?.status !== "True")
    events.push({
      type: "Warning",
      reason: "OriginalVolumesGone",
      action: "Reprotect",
      note: `reprotect copies ${fullCopy.join(", ")} in full: their claims at the target were gone`,
    });
  const previousReady = previous?.conditions?.find((condition) => condition.type === "Ready");
  if (input.problem !== undefined && previousReady?.reason !== input.problem.reason)
    events.push({ type: "Warning", reason: input.problem.reason, action: "Protect", note: input.problem.message });
  if (phase !== previous?.phase) {
    const event = phaseEvents[phase];
    if (event !== undefined) events.push({ type: "Normal", ...event, action: "Protect" });
    if (previous?.phase === "Paused" && phase !== "Error")
      events.push({
        type: "Normal",
        reason: "ReplicationResumed",
        action: "Protect",
        note: "spec.paused is false: changes are shipped again",
      });
  }
  const wasOver = previous?.health === "Warning" || previous?.health === "Critical";
  const isOver = health === "Warning" || health === "Critical";
  if (
    isOver &&
    tracked &&
    rpoMs !== undefined &&
    rpoMs > input.rpoThresholdMs &&
    (!wasOver || previous.health !== health)
  )
    events.push({
      type: "Warning",
      reason: "RpoThresholdExceeded",
      action: "Replicate",
      note: `RPO ${formatDuration(rpoMs)} is above the policy's rpoThreshold ${formatDuration(input.rpoThresholdMs)} (health ${health})`,
    });
  if (wasOver && health === "Healthy" && tracked)
    events.push({
      type: "Normal",
      reason: "RpoWithinThreshold",
      action: "Replicate",
      note: "RPO is back within the policy's rpoThreshold",
    });

  if (previous?.health !== undefined && previous.health !== health)
    events.push({
      type: health === "Healthy" ? "Normal" : "Warning",
      reason: "HealthChanged",
      action: "Protect",
      note: `health ${previous.health} → ${health}: ${healthCause(phase, tracked ? rpoMs : undefined, input, observed || !everProtected)}`,
    });

  const points = input.volumes.every((volume) => volume.points !== undefined)
    ? summarizePoints(input.volumes.map((volume) => volume.points ?? []))
    : previous?.recoveryPoints;
  const volumes = input.volumes.map((volume): VolumeStatus =>
    volumeStatus(
      volume,
      previous?.volumes?.find((known) => known.name === volume.statusName),
    ),
  );
  const resync = input.resync?.status ?? previous?.resync;
  events.push(...(input.resync?.events ?? []));

  const status: StatusResult["status"] = {
    phase,
    health,
    ...(tracked && rpoMs !== undefined ? { rpo: formatDuration(rpoMs) } : {}),
    ...(input.activeSite === undefined ? {} : { activeSite: input.activeSite }),
    // While the process server cannot be asked (a lost site), the last sync known stays: a failover's data loss counts from it.
    ...(recoveryTime !== undefined
      ? { lastSyncTime: rfc3339(recoveryTime) }
      : previous?.lastSyncTime === undefined
        ? {}
        : { lastSyncTime: previous.lastSyncTime }),
    ...(Object.keys(initialReplication).length === 0 ? {} : { initialReplication }),
    ...(points === undefined ? {} : { recoveryPoints: points }),
    ...(volumes.length === 0 ? {} : { volumes }),
    ...(resync === undefined ? {} : { resync }),
  };
  return {
    status,
    conditions,
    events,
    ...(tracked && rpoMs !== undefined
      ? { rpoSeconds: rpoMs / 1000, rpoThresholdSeconds: input.rpoThresholdMs / 1000 }
      : {}),
  };
}

function volumeStatus(volume: VolumeObservation, previous: VolumeStatus | undefined): VolumeStatus {
  const control = volume.control;
  const changedAt = control?.lastChangeUnixMs ?? 0;
  const coveredAt = control?.coveredUnixMs ?? 0;
  // The last change known stays while the process server cannot be asked (a lost site): a failover's data loss counts from it.
  const lastChange =
    control === undefined
      ? { lastChangeSequence: previous?.lastChangeSequence, lastChangeTime: previous?.lastChangeTime }
      : changedAt > 0
        ? { lastChangeSequence: control.lastChangeSeq ?? 0, lastChangeTime: new Date(changedAt).toISOString() }
        : {};
  const mode = captureModeOf(control?.capture?.strategy);
  return {
    name: volume.statusName,
    claimName: volume.claimName,
    replicaClaimName: volume.replicaClaimName,
    ...(mode === undefined ? {} : { captureMode: mode }),
    ...(volume.capacityBytes === undefined ? {} : { capacityBytes: volume.capacityBytes }),
    ...(control === undefined ? {} : { pendingBytes: control.cachedBytes, lastAppliedSequence: control.appliedSeq }),
    ...(control === undefined || coveredAt <= 0
      ? {}
      : { capturedSequence: control.coveredSeq ?? 0, capturedTime: new Date(coveredAt).toISOString() }),
    ...(lastChange.lastChangeTime === undefined ? {} : lastChange),
    ...(volume.throughputBytesPerSecond === undefined
      ? {}
      : { throughputBytesPerSecond: Math.round(volume.throughputBytesPerSecond) }),
  };
}
