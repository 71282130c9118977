// The run's own steps: stop the source, wait for the final changes, recover a
// machine, stop a recovered workload, commit, and clean a drill up.
import type { FailoverRun, ProtectedMachine, UsedRecoveryPoint, VolumeStatus } from "../../../api/types.js";
import {
  configMaps,
  deployments,
  isAlreadyExists,
  jobs,
  namespaces,
  networkPolicies,
  persistentVolumeClaims,
  secrets,
  services,
  statefulSets,
  type KubeClient,
  type KubeObject,
  type ResourceType,
} from "../../../runtime/index.js";
import { protectedMachines } from "../../../api/types.js";
import { directionOf } from "../../protectedmachine/direction.js";
import type { StepOutcome } from "../machine.js";
import { drillNamespaceOf, runMachines } from "../machine.js";
import { deleteHydratorSecrets, ensureIsolation, recoverDrill } from "./drill.js";
import { dataLossMs, selectPoints, type Selection } from "./points.js";
import { replicatedState, replicatedVolumes, replicationAnnotation, replicationRecord } from "./replicas.js";
import { recoverInPlace } from "./rollback.js";
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
    // Recorded before the source stops: a stopped workload has no pods, and its machine's status then no volumes.
    const record = replicationRecord(machine);
    if (record !== undefined && machine.metadata.annotations?.[replicationAnnotation] !== record)
      await context.client.patch(
        protectedMachines,
        { name: machine.metadata.name, namespace: machine.metadata.namespace },
        { metadata: { annotations: { [replicationAnnotation]: record } } },
        "merge",
      );
    const before = await scaleToZero(context.client, workload);
    const left = workload.status?.replicas ?? 0;
    // An unplanned run only fences: pods on an unreachable site stop when their node comes back (scaled to 0).
    if (context.run.spec.type === "Unplanned" || left === 0)
      return {
        state: "Succeeded",
        message: `${workload.kind} ${workload.metadata.name} scaled to 0 (was ${before})`,
      };
    return { state: "InProgress", message: `${left} source pods still running`, recheckAfterMs: 2000 };
  },
};

/** Every change captured before the source stopped is applied at the recovery site, by sequence numbers. */
export const finalSyncStep: StepExecutor = {
  execute(context) {
    const machine = machineOf(context);
    if (machine === undefined) return Promise.resolve(missing(context));
    const stopped = context.run.status?.steps?.find(
      (step) => step.name === `shutdown/${machine.metadata.name}`,
    )?.endTime;
    const sync = finalSyncState(machine.status?.volumes ?? [], stopped);
    return Promise.resolve(
      sync.done
        ? { state: "Succeeded", message: sync.message }
        : { state: "InProgress", message: sync.message, recheckAfterMs: 2000 },
    );
  },
};

/**
 * Whether the recovery site applied every change the source made before it stopped: for each
 * volume, an agent report observed after the stop (so it covers every write of the source) names
 * a captured sequence number, and the applied one is at or above it. Pure, for the table test.
 */
export function finalSyncState(
  volumes: readonly VolumeStatus[],
  stoppedAt: string | undefined,
): { done: boolean; message: string } {
  if (stoppedAt === undefined) return { done: false, message: "the source has not been stopped yet" };
  if (volumes.length === 0) return { done: false, message: "the machine's status lists no volume yet" };
  // The step's end time is whole seconds, rounded down: a report at least a second later was observed after the stop.
  const after = Date.parse(stoppedAt) + 1000;
  const waiting: string[] = [];
  for (const volume of volumes) {
    const applied = volume.lastAppliedSequence ?? 0;
    const captured = volume.capturedSequence;
    const reported = volume.capturedTime === undefined ? NaN : Date.parse(volume.capturedTime);
    if (captured === undefined || Number.isNaN(reported)) waiting.push(`${volume.name}: no report from its agent yet`);
    else if (reported < after)
      waiting.push(`${volume.name}: waiting for its agent's first report after the stop (${stoppedAt})`);
    else if (applied < captured) waiting.push(`${volume.name}: seq ${applied} of ${captured} applied`);
  }
  if (waiting.length > 0) return { done: false, message: waiting.join("; ") };
  const seqs = volumes
    .map((volume) => `${volume.name}@${volume.lastAppliedSequence ?? 0} >= ${volume.capturedSequence ?? 0}`)
    .join(", ");
  return { done: true, message: `every change captured after the stop is applied (${seqs})` };
}

async function ensureNamespace(client: KubeClient, run: FailoverRun, name: string): Promise<void> {
  if ((await client.get(namespaces, name)) !== undefined) return;
  await client
    .create(namespaces, { apiVersion: "v1", kind: "Namespace", metadata: { name, labels: runLabels(run) } })
    .catch((error: unknown) => {
      if (!isAlreadyExists(error)) throw error;
    });
}

/** The points the step recovers to: a change's own selector, else the point recorded for the machine or the run's selector. */
async function choosePoint(
  context: StepContext,
  machine: ProtectedMachine,
  change: number | undefined,
): Promise<{ ok: true; selection: Extract<Selection, { ok: true }> } | { ok: false; outcome: StepOutcome }> {
  const { run, replicas } = context;
  const name = machine.metadata.name;
  const recorded = run.status?.recoveryPoints?.find((point) => point.machine === name);
  const selector =
    change === undefined
      ? (run.spec.recoveryPoint ?? { select: "LatestProcessed" })
      : (run.spec.recoveryPointChanges?.[change - 1] ?? { select: "LatestProcessed" });
  let volumes;
  try {
    volumes = await replicas.points(machine);
  } catch (error) {
    return {
      ok: false,
      outcome: {
        state: "InProgress",
        message: `asking the master target for the points of ${name}: ${(error as Error).message}`,
        recheckAfterMs: 5000,
      },
    };
  }
  // A change always resolves its own selector: after its rollback that point is the newest, so it resolves the same.
  const selection = selectPoints(name, volumes, selector, change === undefined ? recorded : undefined);
  if (selection.ok) return { ok: true, selection };
  const discarded =
    change !== undefined && recorded !== undefined
      ? `; the rollback to ${recorded.id} (${recorded.time}) discarded every newer point, so a change of recovery point can only move to that point or an older retained one`
      : "";
  return { ok: false, outcome: { state: "Failed", message: `${selection.message}${discarded}` } };
}

const sameUsed = (a: UsedRecoveryPoint | undefined, b: UsedRecoveryPoint) =>
  a !== undefined && a.id === b.id && a.time === b.time && a.consistency === b.consistency;

export const recoverStep: StepExecutor = {
  async execute(context) {
    const { run, work, client, replicas } = context;
    const machine = machineOf(context);
    if (machine === undefined) return missing(context);
    if (run.spec.type === "Planned" && work.change === undefined) {
      // The point a planned failover recovers to is the final sync's: every change applied, recorded first.
      const point = finalSyncPoint(machine);
      if (work.recordedPoint === undefined && point !== undefined)
        return { state: "InProgress", point, message: `recovering to ${point.id}`, recheckAfterMs: 500 };
      return recoverPlanned(client, machine, run, work.step.message);
    }
    const chosen = await choosePoint(context, machine, work.change);
    if (!chosen.ok) return chosen.outcome;
    const { used, volumes } = chosen.selection;
    // The point is recorded in status before anything acts on it.
    if (!sameUsed(work.recordedPoint, used))
      return {
        state: "InProgress",
        point: used,
        message: `recovering ${machine.metadata.name} to ${used.id} (${used.time}, ${used.consistency})`,
        recheckAfterMs: 1000,
      };
    const replicated = replicatedState(machine);
    const byStream = new Map(
      replicatedVolumes(machine).map((volume) => [
        volume.machineId,
        replicated.volumes.find((known) => known.name === volume.name),
      ]),
    );
    const loss = dataLossMs(volumes, (stream) => byStream.get(stream), replicated.lastSyncTime);
    let outcome: StepOutcome;
    if (run.spec.type === "Test") {
      const namespace = drillNamespaceOf(run);
      await ensureNamespace(client, run, namespace);
      await ensureIsolation(client, run, namespace);
      outcome = await recoverDrill({
        client,
        replicas,
        image: context.replicatorImage,
        run,
        machine,
        namespace,
        chosen: volumes,
        recorded: work.step.message,
      });
    } else {
      outcome = await recoverInPlace({
        client,
        replicas,
        run,
        step: work.step.name,
        machine,
        chosen: volumes,
        fence: run.spec.type === "Unplanned" && work.change === undefined,
        signal: context.signal,
        recorded: work.step.message,
      });
    }
    return outcome.state === "Succeeded" ? { ...outcome, dataLossMs: loss } : outcome;
  },
};

/** The state a final sync reached: each volume's last applied sequence, at the last sync. */
function finalSyncPoint(machine: ProtectedMachine): UsedRecoveryPoint | undefined {
  const volumes = machine.status?.volumes ?? [];
  const time = machine.status?.lastSyncTime;
  if (volumes.length === 0 || time === undefined) return undefined;
  const id = `final-sync:${volumes.map((volume) => `${volume.name}@${volume.lastAppliedSequence ?? 0}`).join(",")}`;
  // The source was stopped before the sync: no write was in flight.
  return { machine: machine.metadata.name, id: id.slice(0, 128), time, consistency: "CrashConsistent" };
}

/** Planned: replication stops (the machine is paused), the workload comes up on the replicas themselves. */
async function recoverPlanned(
  client: KubeClient,
  machine: ProtectedMachine,
  run: FailoverRun,
  recorded: string | undefined,
): Promise<StepOutcome> {
  if (!machine.spec.paused)
    await client.patch(
      protectedMachines,
      { name: machine.metadata.name, namespace: machine.metadata.namespace },
      { spec: { paused: true } },
      "merge",
    );
  const claims = new Map(
    replicatedVolumes(machine).map((volume) => [volume.claimName, volume.replicaClaimName] as const),
  );
  const target = directionOf(machine).targetNamespace;
  const outcome = await ensureRecovered(client, machine, run, target, claims, recorded);
  return outcome.state === "Succeeded" ? { ...outcome, dataLossMs: 0 } : outcome;
}

/** Before a recovery point change: the recovered workload stops. */
export const stopStep: StepExecutor = {
  async execute(context) {
    const machine = machineOf(context);
    if (machine === undefined) return missing(context);
    // A point the change cannot reach fails it here, before the recovered workload is stopped.
    const change = /^change-([0-9]+)\//.exec(context.work.step.name)?.[1];
    if (change !== undefined) {
      const chosen = await choosePoint(context, machine, Number(change));
      if (!chosen.ok) return chosen.outcome;
    }
    const { kind, name } = machine.spec.source.workloadRef;
    const type = workloadType(kind);
    const copy = await context.client.get(type, name, directionOf(machine).targetNamespace);
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

/**
 * A committed failover cannot go back to another point (ASR: commit deletes the recovery points):
 * the points of each recovered machine are released with their journal at its master target.
 * Repeating it releases nothing more. A master target that cannot be reached does not hold the
 * commit back: the next reprotect releases what is left.
 */
export const commitStep: StepExecutor = {
  async execute(context) {
    let points = 0;
    const kept: string[] = [];
    for (const name of runMachines(context.run, context.plan)) {
      const machine = context.machines.get(name);
      if (machine === undefined) continue;
      const replication = directionOf(machine);
      try {
        for (const stream of await context.replicas.releaseEpoch(machine, replication)) points += stream.points;
      } catch (error) {
        kept.push(`${name} (${replication.targetNamespace}: ${(error as Error).message})`);
      }
    }
    const releasedNote = `${points === 1 ? "1 recovery point" : `${points} recovery points`} released with their journal`;
    const keptNote =
      kept.length === 0 ? "" : ` (the points of ${kept.join(", ")} stay until kubectl dr reprotect releases them)`;
    return {
      state: "Succeeded",
      message: `failover committed; ${releasedNote}${keptNote}; the replicas now serve the recovered workloads (kubectl dr reprotect replicates them back)`,
    };
  },
};

const drillKinds: readonly ResourceType<KubeObject>[] = [
  deployments,
  secrets,
  configMaps,
  statefulSets,
  services,
  jobs,
  networkPolicies,
  persistentVolumeClaims,
] as ResourceType<KubeObject>[];

/** Deletes what the run created in its drill namespace (by label), then the namespace if the run created it. */
export const cleanupStep: StepExecutor = {
  async execute({ run, client, machines }) {
    const namespace = drillNamespaceOf(run);
    // The hydrators' Secrets are the issuer's (not labelled by the run); a drill cleaned up mid-hydration leaves them.
    for (const machine of machines.values()) await deleteHydratorSecrets(client, machine, namespace);
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
