// The run's own steps: stop the source, wait for the final changes, recover a
// machine, stop a recovered workload, commit, and clean a drill up.
import type { FailoverRun, ProtectedMachine } from "../../../api/types.js";
import {
  deployments,
  isAlreadyExists,
  jobs,
  namespaces,
  networkPolicies,
  persistentVolumeClaims,
  services,
  statefulSets,
  type KubeClient,
  type KubeObject,
  type ResourceType,
} from "../../../runtime/index.js";
import { protectedMachines } from "../../../api/types.js";
import { replicationOf } from "../../protectedmachine/direction.js";
import type { StepOutcome } from "../machine.js";
import { drillNamespaceOf } from "../machine.js";
import { createdByRun, runLabel, runLabels, runNamespaceLabel, type StepContext, type StepExecutor } from "./types.js";
import { ensureRecovered, scaleToZero, sourceWorkload, workloadType } from "./workload.js";

const machineOf = (context: StepContext): ProtectedMachine | undefined =>
  context.machines.get(context.work.step.machine ?? "");

const missing = (context: StepContext): StepOutcome => ({
  state: "Failed",
  message: `ProtectedMachine ${context.work.step.machine ?? ""} no longer exists`,
});

export const shutDownSourceStep: StepExecutor = {
  async execute(context) {
    const machine = machineOf(context);
    if (machine === undefined) return missing(context);
    const workload = await sourceWorkload(context.client, machine);
    if (workload === undefined) return { state: "Succeeded", message: "the source workload does not exist" };
    await scaleToZero(context.client, workload);
    const left = workload.status?.replicas ?? 0;
    // An unplanned run only fences: pods on an unreachable site stop when their node comes back (scaled to 0).
    if (context.run.spec.type === "Unplanned" || left === 0)
      return {
        state: "Succeeded",
        message: `${workload.kind} ${workload.metadata.name} scaled to 0 (was ${workload.spec?.replicas ?? 0})`,
      };
    return { state: "InProgress", message: `${left} source pods still running`, recheckAfterMs: 2000 };
  },
};

/** Every change captured before the source stopped is applied at the recovery site: nothing pending, synced after the stop. */
export const finalSyncStep: StepExecutor = {
  execute(context) {
    const machine = machineOf(context);
    if (machine === undefined) return Promise.resolve(missing(context));
    const stopped = context.run.status?.steps?.find(
      (step) => step.name === `shutdown/${machine.metadata.name}`,
    )?.endTime;
    const volumes = machine.status?.volumes ?? [];
    const pending = volumes.reduce((sum, volume) => sum + (volume.pendingBytes ?? 0), 0);
    const synced = machine.status?.lastSyncTime;
    const caughtUp =
      pending === 0 && synced !== undefined && stopped !== undefined && Date.parse(synced) >= Date.parse(stopped);
    const seqs = volumes.map((volume) => `${volume.name}@${volume.lastAppliedSequence ?? 0}`).join(", ");
    return Promise.resolve(
      caughtUp && volumes.length > 0
        ? { state: "Succeeded", message: `every change applied (${seqs})` }
        : {
            state: "InProgress",
            message: `${pending} bytes pending; last sync ${synced ?? "never"}`,
            recheckAfterMs: 2000,
          },
    );
  },
};

async function ensureNamespace(client: KubeClient, run: FailoverRun, name: string): Promise<void> {
  if ((await client.get(namespaces, name)) !== undefined) return;
  await client
    .create(namespaces, { apiVersion: "v1", kind: "Namespace", metadata: { name, labels: runLabels(run) } })
    .catch((error: unknown) => {
      if (!isAlreadyExists(error)) throw error;
    });
}

/** Isolated drills: nothing in or out of the namespace except within it and DNS. */
async function ensureIsolation(client: KubeClient, run: FailoverRun, namespace: string): Promise<void> {
  if (run.spec.drill?.isolation === "None") return;
  await client
    .create(networkPolicies, {
      apiVersion: "networking.k8s.io/v1",
      kind: "NetworkPolicy",
      metadata: { name: "ksr-drill-isolation", namespace, labels: runLabels(run) },
      spec: {
        podSelector: {},
        policyTypes: ["Ingress", "Egress"],
        ingress: [{ _from: [{ podSelector: {} }] }],
        egress: [
          { to: [{ podSelector: {} }] },
          {
            ports: [
              { protocol: "UDP", port: 53 },
              { protocol: "TCP", port: 53 },
            ],
          },
        ],
      },
    })
    .catch((error: unknown) => {
      if (!isAlreadyExists(error)) throw error;
    });
}

export const recoverStep: StepExecutor = {
  async execute(context) {
    const { run, work, client } = context;
    const machine = machineOf(context);
    if (machine === undefined) return missing(context);
    if (run.spec.type === "Test") {
      const namespace = drillNamespaceOf(run);
      await ensureNamespace(client, run, namespace);
      await ensureIsolation(client, run, namespace);
      return {
        state: "Failed",
        message: "hydrating a recovery point into new claims of the drill namespace is not implemented yet",
      };
    }
    if (run.spec.type === "Unplanned" || work.change !== undefined)
      return {
        state: "Failed",
        message: "rolling the replica back to a recovery point through the master target is not implemented yet",
      };
    // Planned: replication stops (the machine is paused), the workload comes up on the replicas themselves.
    if (!machine.spec.paused)
      await client.patch(
        protectedMachines,
        { name: machine.metadata.name, namespace: machine.metadata.namespace },
        { spec: { paused: true } },
        "merge",
      );
    const claims = new Map(
      (machine.status?.volumes ?? []).flatMap((volume) =>
        volume.claimName === undefined || volume.replicaClaimName === undefined
          ? []
          : [[volume.claimName, volume.replicaClaimName] as const],
      ),
    );
    const target = replicationOf(machine).targetNamespace;
    const { ready, message } = await ensureRecovered(client, machine, run, target, claims);
    return ready
      ? { state: "Succeeded", message, dataLossMs: 0 }
      : { state: "InProgress", message, recheckAfterMs: 2000 };
  },
};

/** Before a recovery point change: the recovered workload stops. */
export const stopStep: StepExecutor = {
  async execute(context) {
    const machine = machineOf(context);
    if (machine === undefined) return missing(context);
    const { kind, name } = machine.spec.source.workloadRef;
    const type = workloadType(kind);
    const copy = await context.client.get(type, name, machine.spec.target.namespace);
    if (copy === undefined) return { state: "Succeeded", message: "no recovered workload to stop" };
    await scaleToZero(context.client, copy);
    return (copy.status?.replicas ?? 0) === 0
      ? { state: "Succeeded", message: `${kind} ${name} stopped` }
      : {
          state: "InProgress",
          message: `${copy.status?.replicas ?? 0} recovered pods still running`,
          recheckAfterMs: 2000,
        };
  },
};

export const commitStep: StepExecutor = {
  execute() {
    return Promise.resolve({
      state: "Succeeded",
      message: "failover committed; the replicas now serve the recovered workloads (reprotect replicates back, #15)",
    });
  },
};

const drillKinds: readonly ResourceType<KubeObject>[] = [
  deployments,
  statefulSets,
  services,
  jobs,
  networkPolicies,
  persistentVolumeClaims,
] as ResourceType<KubeObject>[];

/** Deletes what the run created in its drill namespace (by label), then the namespace if the run created it. */
export const cleanupStep: StepExecutor = {
  async execute({ run, client }) {
    const namespace = drillNamespaceOf(run);
    const selector = `${runLabel}=${run.metadata.name},${runNamespaceLabel}=${run.metadata.namespace ?? ""}`;
    let left = 0;
    for (const type of drillKinds) {
      const found = await client.list(type, { namespace, labelSelector: selector });
      for (const object of found.items) {
        left++;
        await client.delete(type, { name: object.metadata.name, namespace }, { propagationPolicy: "Background" });
      }
    }
    const ns = await client.get(namespaces, namespace);
    if (ns !== undefined && createdByRun(ns, run)) {
      await client.delete(namespaces, { name: namespace });
      return { state: "InProgress", message: `deleting namespace ${namespace}`, recheckAfterMs: 2000 };
    }
    return left === 0
      ? { state: "Succeeded", message: `what the drill created in ${namespace} is deleted` }
      : { state: "InProgress", message: `${left} objects being deleted`, recheckAfterMs: 2000 };
  },
};
