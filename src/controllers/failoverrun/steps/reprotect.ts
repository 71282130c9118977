// The two writes a run makes to a machine's status.replication (protectedmachine/direction.ts):
// a failover's commit records the machine as failed over, and a Reprotect run's Reverse step turns
// replication around (from where the workload runs now to where it ran), unpauses the machine and
// waits until the ProtectedMachine controller reports it protected in the new direction. The
// controller compares block hashes first (a new epoch starts new streams against volumes that
// already hold data), so only differences travel; a volume whose claim is gone is copied in full.
import type { ProtectedMachine, ReplicationDirectionStatus } from "../../../api/types.js";
import { protectedMachines } from "../../../api/types.js";
import { persistentVolumeClaims, rfc3339, type KubeClient } from "../../../runtime/index.js";
import { directionOf, endedReplication, reversedReplication } from "../../protectedmachine/direction.js";
import { runMachines, type StepOutcome } from "../machine.js";
import type { StepContext, StepExecutor } from "./types.js";

/** Optional fields of status.replication: written as null when absent, so a merge patch removes them. */
const optionalFields = [
  "sourceSite",
  "failedOverBy",
  "reprotectedBy",
  "fullCopyVolumes",
  "lastTransitionTime",
] as const;

async function writeReplication(
  client: KubeClient,
  machine: ProtectedMachine,
  replication: ReplicationDirectionStatus,
): Promise<void> {
  const cleared = Object.fromEntries(optionalFields.map((field) => [field, null]));
  await client.patch(
    protectedMachines,
    { name: machine.metadata.name, namespace: machine.metadata.namespace },
    { status: { replication: { ...cleared, ...replication } } },
    "merge",
    "status",
  );
}

const describe = (replication: ReplicationDirectionStatus): string =>
  `${replication.sourceNamespace} (${replication.sourceSite ?? "?"}) → ${replication.targetNamespace} (${replication.targetSite})`;

/** A commit step that also records every machine of the run as failed over (what Reprotect requires). */
export function recordingFailover(commit: StepExecutor): StepExecutor {
  return {
    async execute(context) {
      const outcome = await commit.execute(context);
      if (outcome.state !== "Succeeded") return outcome;
      const { run } = context;
      for (const name of runMachines(run, context.plan)) {
        const machine = context.machines.get(name);
        if (machine === undefined) continue;
        const replication = directionOf(machine);
        if (replication.failedOverBy === run.metadata.name) continue;
        const sourceSite = replication.sourceSite ?? run.status?.sourceSite;
        await writeReplication(context.client, machine, {
          ...replication,
          ...(sourceSite === undefined ? {} : { sourceSite }),
          failedOverBy: run.metadata.name,
          lastTransitionTime: rfc3339(context.clock.now()),
        });
      }
      return outcome;
    },
  };
}

/** Volumes (status.volumes names) whose claim is gone where the workload ran before the failover. */
async function goneVolumes(client: KubeClient, machine: ProtectedMachine, namespace: string): Promise<string[]> {
  const gone: string[] = [];
  for (const volume of machine.status?.volumes ?? []) {
    if (volume.claimName === undefined) continue;
    const claim = await client.get(persistentVolumeClaims, volume.claimName, namespace);
    if (claim === undefined || claim.metadata.deletionTimestamp !== undefined) gone.push(volume.name);
  }
  return gone;
}

function fullCopyNote(replication: ReplicationDirectionStatus): string {
  const gone = replication.fullCopyVolumes ?? [];
  return gone.length === 0
    ? "only differing blocks were sent"
    : `the original claims of ${gone.join(", ")} were gone: they were copied in full`;
}

/**
 * Once the new epoch is protected, the points of the one it ended describe no volume that can be
 * recovered (its replicas are the workload's volumes now): they are released with their journal
 * at the old master target. Repeating it releases nothing more.
 */
async function releaseEnded(
  context: StepContext,
  machine: ProtectedMachine,
  replication: ReplicationDirectionStatus,
): Promise<StepOutcome> {
  const ended = endedReplication(replication);
  if (ended === undefined) return { state: "Succeeded" };
  try {
    const released = await context.replicas.releaseEpoch(machine, ended);
    const points = released.reduce((total, stream) => total + stream.points, 0);
    const streams = released.map((stream) => stream.machineId).join(", ");
    if (points === 0)
      return {
        state: "Succeeded",
        message: `no recovery point of epoch ${ended.epoch} (${streams}) was left at ${ended.targetNamespace} (${ended.targetSite}): the failover's commit released them`,
      };
    return {
      state: "Succeeded",
      message: `${points === 1 ? "the 1 recovery point" : `the ${points} recovery points`} of epoch ${ended.epoch} (${streams}) ${points === 1 ? "was" : "were"} released with their journal at ${ended.targetNamespace} (${ended.targetSite})`,
    };
  } catch (error) {
    return {
      state: "InProgress",
      message: `protected in epoch ${replication.epoch}; releasing the recovery points of epoch ${ended.epoch} at ${ended.targetNamespace} (${ended.targetSite}): ${(error as Error).message}`,
      recheckAfterMs: 5000,
    };
  }
}

export const reverseStep: StepExecutor = {
  async execute(context: StepContext) {
    const { run, client } = context;
    const name = context.work.step.machine ?? "";
    const machine = context.machines.get(name);
    if (machine === undefined) return { state: "Failed", message: `ProtectedMachine ${name} no longer exists` };
    const replication = directionOf(machine);
    if (replication.reprotectedBy !== run.metadata.name) {
      if (replication.failedOverBy === undefined)
        return {
          state: "Failed",
          message: `ProtectedMachine ${name} is not failed over by a committed run: nothing to reprotect`,
        };
      if (replication.sourceSite === undefined)
        return {
          state: "Failed",
          message: `the site ProtectedMachine ${name} ran in before its failover is not recorded (status.activeSite was empty): nothing to replicate back to`,
        };
      const gone = await goneVolumes(client, machine, replication.sourceNamespace);
      const next = reversedReplication(replication, run.metadata.name, rfc3339(context.clock.now()), gone);
      await writeReplication(client, machine, next);
      return {
        state: "InProgress",
        message: `replication reversed: ${describe(next)}; ${gone.length === 0 ? "comparing block hashes" : fullCopyNote(next).replace("were copied", "are copied")}`,
        recheckAfterMs: 1000,
      };
    }
    if (machine.spec.paused)
      await client.patch(
        protectedMachines,
        { name, namespace: machine.metadata.namespace },
        { spec: { paused: false } },
        "merge",
      );
    const status = machine.status;
    const initial = status?.initialReplication;
    const compared = (initial?.epoch ?? 0) === replication.epoch && initial?.completionTime !== undefined;
    if (status?.phase === "Protected" && compared) {
      const released = await releaseEnded(context, machine, replication);
      if (released.state !== "Succeeded") return released;
      return {
        state: "Succeeded",
        message: `protected ${describe(replication)}: ${initial.bytesTotal ?? 0} bytes compared; ${fullCopyNote(replication)}; ${released.message ?? ""}`,
      };
    }
    return {
      state: "InProgress",
      message: `${status?.phase ?? "Enabling"} ${describe(replication)}: ${initial?.progressPercent ?? 0}% compared`,
      recheckAfterMs: 2000,
    };
  },
};
