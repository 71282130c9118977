// What recovery steps ask of a machine's replicas: the master target's points per volume, a
// rollback in place, a drill hydrator's narrow identity, and the fence of the source's agents.
// One small interface, so the steps do not know how the master target is reached.
import type { ProtectedMachine } from "../../../api/types.js";
import type { RollbackReply } from "../../../gen/ksr/replication/v1/replication.js";
import type { EndpointSlice, Informer } from "../../../runtime/index.js";
import type { CertificateIssuer } from "../../certificates/issuer.js";
import { masterTargetName, streamId } from "../../protectedmachine/names.js";
import { endpointPeer } from "../../protectedmachine/observe.js";
import type { PeerAddress, ReplicatorClients } from "../../protectedmachine/replicator-clients.js";
import { peerFlag } from "../../protectedmachine/replicators.js";
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
}

export function replicatedVolumes(machine: ProtectedMachine): ReplicatedVolume[] {
  return (machine.status?.volumes ?? []).flatMap((volume) =>
    volume.claimName === undefined || volume.replicaClaimName === undefined
      ? []
      : [
          {
            name: volume.name,
            claimName: volume.claimName,
            replicaClaimName: volume.replicaClaimName,
            machineId: streamId(volume.claimName),
            block: volume.captureMode === "block",
          },
        ],
  );
}

function masterTargetOf(machine: ProtectedMachine): { name: string; namespace: string } {
  const name = masterTargetName(
    machine.spec.policyRef.name,
    machine.metadata.namespace ?? "",
    machine.spec.target.site,
  );
  return { name, namespace: machine.spec.target.namespace };
}

export class MasterTargetUnreachable extends Error {}

export function newRecoveryPointAccess(options: {
  replicators: ReplicatorClients;
  endpointSlices: Informer<EndpointSlice>;
  certificates: CertificateIssuer;
}): RecoveryPointAccess {
  const { replicators, endpointSlices, certificates } = options;
  const peerOf = (machine: ProtectedMachine): PeerAddress => {
    const { name, namespace } = masterTargetOf(machine);
    const peer = endpointPeer(endpointSlices, name, namespace);
    if (peer === undefined)
      throw new MasterTargetUnreachable(`the master target ${namespace}/${name} has no ready endpoint`);
    return peer;
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
      return certificates.revokeAgent({ namespace: machine.metadata.namespace ?? "", machineId });
    },
  };
}
