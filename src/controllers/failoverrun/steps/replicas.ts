// What recovery steps ask of a machine's replicas: the master target's points per volume, a
// rollback in place, a drill hydrator's narrow identity, and the fence of the source's agents.
// One small interface, so the steps do not know how the master target is reached.
import { status as grpcStatus } from "@grpc/grpc-js";
import type { ProtectedMachine, ReplicationDirectionStatus, VolumeStatus } from "../../../api/types.js";
import type { RollbackReply } from "../../../gen/ksr/replication/v1/replication.js";
import type { CertificateIssuer } from "../../certificates/issuer.js";
import { directionOf, epochStreamId } from "../../protectedmachine/direction.js";
import { masterTargetName } from "../../protectedmachine/names.js";
import type { PeerAddress, ReplicatorClients } from "../../protectedmachine/replicator-clients.js";
import { peerFlag, servicePeer } from "../../protectedmachine/replicators.js";
import type { ChosenPoint, VolumePoints } from "./points.js";

/** One replicated volume of a machine, as its status names it. */
export interface ReplicatedVolume {
  readonly name: string;
  readonly claimName: string;
  readonly replicaClaimName: string;
  readonly machineId: string;
  readonly block: boolean;
}

export interface VolumePointsReply extends VolumePoints {
  /** Non-empty while a rollback to this point id is unfinished. */
  readonly pendingRollback: string;
}

export interface RecoveryPointAccess {
  /** Every replicated volume's points, from the machine's master target. */
  points(machine: ProtectedMachine): Promise<VolumePointsReply[]>;
  rollback(machine: ProtectedMachine, chosen: ChosenPoint): Promise<RollbackReply>;
  /** host:port a pod dials the machine's master target at. */
  masterTargetAddress(machine: ProtectedMachine): string;
  /** A Secret in `namespace` with a certificate that may only list and hydrate `machineId`'s points. */
  hydratorCertificate(namespace: string, machineId: string): Promise<string>;
  /** The agent of `machineId` loses its identity: the process server refuses it from now on. */
  revokeAgent(machine: ProtectedMachine, machineId: string): Promise<void>;
  /**
   * Every point and the journal of the machine's streams in an ended direction, at that
   * direction's master target; returns the points released per stream. A master target that no
   * longer holds a stream has nothing of it left to release.
   */
  releaseEpoch(machine: ProtectedMachine, ended: ReplicationDirectionStatus): Promise<ReleasedStream[]>;
}

export interface ReleasedStream {
  readonly machineId: string;
  readonly points: number;
  readonly journalBytes: number;
}

/**
 * On the ProtectedMachine, written by the shutdown step before it stops the source: the volumes
 * and last sync its status showed. A stopped source has no pods, so the machine's status then
 * lists no volumes; the recovery steps read them from here.
 */
export const replicationAnnotation = "dr.ksr.io/replication-before-failover";

interface Replication {
  readonly volumes: readonly VolumeStatus[];
  readonly lastSyncTime?: string;
}

const isText = (value: unknown): value is string => typeof value === "string" && value !== "";
const isCount = (value: unknown): value is number => Number.isSafeInteger(value) && (value as number) >= 0;

/** The annotation's content when it is well formed (it can be edited by hand); otherwise none. */
function recordedReplication(machine: ProtectedMachine): Replication | undefined {
  const text = machine.metadata.annotations?.[replicationAnnotation];
  if (text === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    return undefined;
  }
  const { volumes, lastSyncTime } = (parsed ?? {}) as { volumes?: unknown; lastSyncTime?: unknown };
  if (!Array.isArray(volumes)) return undefined;
  const valid = volumes.filter((volume): volume is VolumeStatus => {
    const { name, claimName, replicaClaimName } = (volume ?? {}) as Record<string, unknown>;
    return isText(name) && isText(claimName) && isText(replicaClaimName);
  });
  return {
    volumes: valid.map((volume) => {
      const { name, claimName, replicaClaimName, captureMode, lastAppliedSequence, lastChangeSequence } = volume;
      const { lastChangeTime } = volume;
      const change =
        isCount(lastAppliedSequence) &&
        isCount(lastChangeSequence) &&
        isText(lastChangeTime) &&
        !Number.isNaN(Date.parse(lastChangeTime))
          ? { lastAppliedSequence, lastChangeSequence, lastChangeTime }
          : {};
      return {
        name,
        ...(claimName === undefined ? {} : { claimName }),
        ...(replicaClaimName === undefined ? {} : { replicaClaimName }),
        ...(captureMode === "block" ? { captureMode } : {}),
        ...change,
      };
    }),
    ...(isText(lastSyncTime) && !Number.isNaN(Date.parse(lastSyncTime)) ? { lastSyncTime } : {}),
  };
}

/** What the machine replicates: its status while it lists volumes, else what the shutdown step recorded. */
export function replicatedState(machine: ProtectedMachine): Replication {
  const live = machine.status?.volumes ?? [];
  if (live.some((volume) => volume.replicaClaimName !== undefined))
    return {
      volumes: live,
      ...(machine.status?.lastSyncTime === undefined ? {} : { lastSyncTime: machine.status.lastSyncTime }),
    };
  return recordedReplication(machine) ?? { volumes: [] };
}

/** The annotation the shutdown step writes, or none while the status lists no volume to record. */
export function replicationRecord(machine: ProtectedMachine): string | undefined {
  const live = machine.status?.volumes ?? [];
  if (!live.some((volume) => volume.replicaClaimName !== undefined)) return undefined;
  const { volumes, lastSyncTime } = replicatedState(machine);
  return JSON.stringify({
    volumes: volumes.map((volume) => ({
      name: volume.name,
      claimName: volume.claimName,
      replicaClaimName: volume.replicaClaimName,
      captureMode: volume.captureMode,
      // For the data-loss window of a recovery after the source stopped.
      lastAppliedSequence: volume.lastAppliedSequence,
      lastChangeSequence: volume.lastChangeSequence,
      lastChangeTime: volume.lastChangeTime,
    })),
    lastSyncTime,
  });
}

export function replicatedVolumes(machine: ProtectedMachine): ReplicatedVolume[] {
  return replicatedState(machine).volumes.flatMap((volume) =>
    volume.claimName === undefined || volume.replicaClaimName === undefined
      ? []
      : [
          {
            name: volume.name,
            claimName: volume.claimName,
            replicaClaimName: volume.replicaClaimName,
            machineId: epochStreamId(volume.claimName, directionOf(machine).epoch),
            block: volume.captureMode === "block",
          },
        ],
  );
}

/** The master target of a direction (by default the machine's current one: after a reprotect, at the original site). */
function masterTargetOf(
  machine: ProtectedMachine,
  direction: ReplicationDirectionStatus = directionOf(machine),
): { name: string; namespace: string } {
  const name = masterTargetName(machine.spec.policyRef.name, direction.sourceNamespace, direction.targetSite);
  return { name, namespace: direction.targetNamespace };
}

export function newRecoveryPointAccess(options: {
  replicators: ReplicatorClients;
  certificates: CertificateIssuer;
}): RecoveryPointAccess {
  const { replicators, certificates } = options;
  const peerOf = (machine: ProtectedMachine): PeerAddress => {
    const { name, namespace } = masterTargetOf(machine);
    return servicePeer(name, namespace);
  };
  return {
    async points(machine) {
      const peer = peerOf(machine);
      return Promise.all(
        replicatedVolumes(machine).map(async (volume) => {
          const reply = await replicators.listPoints(peer, volume.machineId);
          return { machineId: volume.machineId, points: reply.points, pendingRollback: reply.pendingRollback };
        }),
      );
    },
    rollback(machine, chosen) {
      return replicators.rollback(peerOf(machine), chosen.machineId, chosen.point.id, chosen.point.seq);
    },
    masterTargetAddress(machine) {
      const { name, namespace } = masterTargetOf(machine);
      return peerFlag(name, namespace);
    },
    hydratorCertificate(namespace, machineId) {
      return certificates.ensureReplicatorCertificate({ namespace, role: "hydrator", machineId });
    },
    revokeAgent(machine, machineId) {
      return certificates.revokeAgent({ namespace: directionOf(machine).sourceNamespace, machineId });
    },
    async releaseEpoch(machine, ended) {
      const { name, namespace } = masterTargetOf(machine, ended);
      const peer = servicePeer(name, namespace);
      const released: ReleasedStream[] = [];
      for (const volume of replicatedVolumes(machine)) {
        const machineId = epochStreamId(volume.claimName, ended.epoch);
        try {
          const reply = await replicators.releaseAll(peer, machineId);
          const usage = reply.usage;
          released.push({
            machineId,
            points: reply.removed.length,
            journalBytes: (usage?.segmentBytes ?? 0) + (usage?.objectBytes ?? 0),
          });
        } catch (error) {
          if ((error as { code?: unknown }).code !== grpcStatus.NOT_FOUND) throw error;
          released.push({ machineId, points: 0, journalBytes: 0 });
        }
      }
      return released;
    },
  };
}
