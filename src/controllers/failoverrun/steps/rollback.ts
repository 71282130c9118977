// Unplanned failover and changes of recovery point: the replica itself is rolled back to the
// chosen point through the master target, then the workload comes up on it (no copy).
//
// The fence, before anything is rolled back (docs/recovery.md, "Fencing the source"): the
// machine is paused (its agent pods are deleted), every agent certificate is revoked (the
// process server refuses them), and agents still running on a reachable node are waited for.
// After the rollback the master target refuses the machine's frames until an agent
// resynchronises, which a revoked agent cannot do.
//
// Idempotent: the rollback is recorded on the machine (annotation naming the run and step) before
// the workload is brought up, and repeated only while that record is missing (a repeat before
// the workload started changes nothing: the journal newer than the point is gone).
import type { FailoverRun, ProtectedMachine } from "../../../api/types.js";
import { status as grpcStatus } from "@grpc/grpc-js";
import { nodes, pods, type KubeClient } from "../../../runtime/index.js";
import { protectedMachines } from "../../../api/types.js";
import { componentLabel, machineLabel, machineNamespaceLabel } from "../../protectedmachine/names.js";
import type { StepOutcome } from "../machine.js";
import type { ChosenPoint } from "./points.js";
import { replicatedVolumes, type RecoveryPointAccess } from "./replicas.js";
import { ensureRecovered, replicasAnnotation, workloadType } from "./workload.js";
import { directionOf } from "../../protectedmachine/direction.js";

/** On the ProtectedMachine: the run step whose rollback of the replicas finished. */
export const rolledBackAnnotation = "dr.ksr.io/replicas-rolled-back-by";

const isReady = (node: { status?: { conditions?: { type: string; status: string }[] } } | undefined) =>
  node?.status?.conditions?.some((condition) => condition.type === "Ready" && condition.status === "True") === true;

/** Pause and revoke; then the agents that still run where a node can stop them. */
async function fenceSource(
  client: KubeClient,
  replicas: RecoveryPointAccess,
  machine: ProtectedMachine,
): Promise<string | undefined> {
  const namespace = machine.metadata.namespace ?? "";
  if (!machine.spec.paused)
    await client.patch(
      protectedMachines,
      { name: machine.metadata.name, namespace },
      { spec: { paused: true } },
      "merge",
    );
  for (const volume of replicatedVolumes(machine)) await replicas.revokeAgent(machine, volume.machineId);
  const agents = await client.list(pods, {
    namespace,
    labelSelector: `${machineLabel}=${machine.metadata.name},${machineNamespaceLabel}=${namespace},${componentLabel}=agent`,
  });
  for (const agent of agents.items) {
    const node = agent.spec?.nodeName === undefined ? undefined : await client.get(nodes, agent.spec.nodeName);
    // On a lost node the pod is deleted at the API server: the node stops it when it returns.
    if (isReady(node)) return `waiting for agent pod ${agent.metadata.name} to stop before the rollback`;
  }
  return undefined;
}

function grpcCode(error: unknown): number | undefined {
  const code = (error as { code?: unknown }).code;
  return typeof code === "number" ? code : undefined;
}

export async function recoverInPlace(options: {
  client: KubeClient;
  replicas: RecoveryPointAccess;
  run: FailoverRun;
  step: string;
  machine: ProtectedMachine;
  chosen: readonly ChosenPoint[];
  /** Fence the source first (an unplanned failover; a change of point is already fenced). */
  fence: boolean;
  /** Aborted when the operator stops or loses its lease: no further rollback is started. */
  signal: AbortSignal;
  /** The step's message as recorded (ensureRecovered). */
  recorded: string | undefined;
}): Promise<StepOutcome> {
  const { client, replicas, run, machine, chosen } = options;
  const namespace = machine.metadata.namespace ?? "";
  const record = `${run.metadata.namespace ?? ""}/${run.metadata.name}/${options.step}`;
  const { kind, name } = machine.spec.source.workloadRef;
  const type = workloadType(kind);
  const target = directionOf(machine).targetNamespace;
  const copy = await client.get(type, name, target);
  // Read from the API, not the cache: a stale record would repeat a rollback under a started workload.
  const fresh = await client.get(protectedMachines, machine.metadata.name, namespace);
  if (fresh?.metadata.annotations?.[rolledBackAnnotation] !== record) {
    if (options.fence) {
      const waiting = await fenceSource(client, replicas, machine);
      if (waiting !== undefined) return { state: "InProgress", message: waiting, recheckAfterMs: 2000 };
    }
    if ((copy?.status?.replicas ?? 0) > 0)
      return {
        state: "InProgress",
        message: `waiting for the recovered ${kind} ${target}/${name} to stop before the rollback`,
        recheckAfterMs: 2000,
      };
    const discarded: string[] = [];
    for (const volume of chosen) {
      if (options.signal.aborted) return { state: "InProgress", message: "stopped: the operator is stopping" };
      try {
        const reply = await replicas.rollback(machine, volume);
        if (reply.discardedPoints > 0) discarded.push(`${volume.machineId}: ${reply.discardedPoints}`);
      } catch (error) {
        const message = `rolling ${volume.machineId} back to point ${volume.point.id}: ${(error as Error).message}`;
        const code = grpcCode(error);
        if (code === grpcStatus.UNAVAILABLE || code === grpcStatus.DEADLINE_EXCEEDED || code === undefined)
          return { state: "InProgress", message, recheckAfterMs: 5000 };
        return { state: "Failed", message };
      }
    }
    await client.patch(
      protectedMachines,
      { name: machine.metadata.name, namespace },
      { metadata: { annotations: { [rolledBackAnnotation]: record } } },
      "merge",
    );
    if (discarded.length > 0)
      return {
        state: "InProgress",
        message: `replicas rolled back to ${chosen[0]?.point.id ?? ""}; newer points discarded (${discarded.join(", ")})`,
        recheckAfterMs: 500,
      };
  }
  // A change of point stopped the copy (scaled to 0, its replicas recorded): it starts again.
  const recorded = Number(copy?.metadata.annotations?.[replicasAnnotation]);
  if (copy !== undefined && (copy.spec?.replicas ?? 0) === 0 && Number.isInteger(recorded) && recorded > 0) {
    await client.patch(type, { name, namespace: target }, { spec: { replicas: recorded } }, "merge");
  }
  const claims = new Map(
    replicatedVolumes(machine).map((volume) => [volume.claimName, volume.replicaClaimName] as const),
  );
  return ensureRecovered(client, machine, run, target, claims, options.recorded);
}
