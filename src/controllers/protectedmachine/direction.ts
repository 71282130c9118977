// The direction replication runs in. status.replication (written by FailoverRuns: a failover's
// commit, a Reprotect run) says from which namespace and site to which; absent, it is Forward from
// the machine's namespace to spec.target. The controller places replicators for whatever direction
// it reads, through one view of the machine: the machine as if it were protected from the current
// source to the current target, so plan, placement and observation stay one code path.
import type { ProtectedMachine, ReplicationDirectionStatus } from "../../api/types.js";
import { processServerName, shorten, streamId } from "./names.js";
import type { Plan } from "./plan.js";

/** The machine's direction; Forward from its own namespace to spec.target when none is recorded. */
export function directionOf(machine: ProtectedMachine): ReplicationDirectionStatus {
  const recorded = machine.status?.replication;
  if (recorded !== undefined) return recorded;
  const activeSite = machine.status?.activeSite;
  return {
    direction: "Forward",
    sourceNamespace: machine.metadata.namespace ?? "",
    ...(activeSite === undefined ? {} : { sourceSite: activeSite }),
    targetNamespace: machine.spec.target.namespace,
    targetSite: machine.spec.target.site,
    epoch: 0,
  };
}

/**
 * The replication after a reprotect: from where the workload runs now back to where it ran, as a
 * new epoch (new change streams). `fullCopyVolumes` names the volumes whose claim is gone at the
 * new target: they are copied in full.
 */
export function reversedReplication(
  current: ReplicationDirectionStatus,
  run: string,
  now: string,
  fullCopyVolumes: readonly string[],
): ReplicationDirectionStatus {
  if (current.sourceSite === undefined)
    throw new Error("the site the workload ran in before the failover is not recorded; it cannot be reprotected");
  return {
    ...turnedAround(current),
    epoch: current.epoch + 1,
    reprotectedBy: run,
    ...(fullCopyVolumes.length === 0 ? {} : { fullCopyVolumes: [...fullCopyVolumes] }),
    lastTransitionTime: now,
  };
}

/** From where replication wrote to where it read: a reprotect's new direction, or the one it ended. */
function turnedAround(current: ReplicationDirectionStatus): ReplicationDirectionStatus {
  return {
    direction: current.direction === "Forward" ? "Reverse" : "Forward",
    sourceNamespace: current.targetNamespace,
    sourceSite: current.targetSite,
    targetNamespace: current.sourceNamespace,
    targetSite: current.sourceSite ?? "",
    epoch: current.epoch,
  };
}

/**
 * The direction a reprotect ended (epoch N, when `current` is epoch N+1): where its master target
 * ran and which streams it applied. Undefined before any reprotect.
 */
export function endedReplication(current: ReplicationDirectionStatus): ReplicationDirectionStatus | undefined {
  return current.epoch === 0 ? undefined : { ...turnedAround(current), epoch: current.epoch - 1 };
}

/**
 * The machine as placement sees it: in the Reverse direction its namespace is the recovery
 * namespace (where the recovered workload and its agents run) and its target the original
 * namespace and site. The storage class and overrides of spec.target belong to the recovery site,
 * so they are not carried back.
 */
export function replicatedView(machine: ProtectedMachine): ProtectedMachine {
  const replication = directionOf(machine);
  if (replication.direction === "Forward") return machine;
  return {
    ...machine,
    metadata: { ...machine.metadata, namespace: replication.sourceNamespace },
    spec: {
      ...machine.spec,
      target: { namespace: replication.targetNamespace, site: replication.targetSite },
    },
  };
}

/** The change stream of a claim in an epoch: epoch 0 keeps the ids machines were first protected with. */
export function epochStreamId(claimName: string, epoch: number): string {
  if (epoch === 0) return streamId(claimName);
  const suffix = `.e${epoch}`;
  return shorten(claimName, 54 - suffix.length) + suffix;
}

/**
 * The plan in the machine's direction: streams of the epoch, and where the home namespace is. A
 * workload a failover scaled to 0 (`stopped`) keeps its site, process server and agents, so the
 * final sync sees every change captured before it stopped.
 */
export function inDirection(plan: Plan, machine: ProtectedMachine, stopped: boolean): Plan {
  const replication = directionOf(machine);
  const { epoch, direction } = replication;
  const home = machine.metadata.namespace ?? "";
  const sourceSite = plan.sourceSite ?? (stopped ? replication.sourceSite : undefined);
  const volumes = plan.volumes.map((volume) => ({ ...volume, machineId: epochStreamId(volume.claimName, epoch) }));
  const agents = plan.agents.map((agent) => ({
    ...agent,
    volumes: agent.volumes.map((volume) => ({ ...volume, machineId: epochStreamId(volume.claimName, epoch) })),
  }));
  return {
    ...plan,
    volumes,
    agents,
    ...(sourceSite === undefined
      ? {}
      : {
          sourceSite,
          processServer: processServerName(machine.spec.policyRef.name, sourceSite, plan.masterTarget.namespace),
        }),
    ...(stopped ? { keepAgents: true } : {}),
    ...(direction === "Reverse" ? { reverse: { homeNamespace: home } } : {}),
  };
}
