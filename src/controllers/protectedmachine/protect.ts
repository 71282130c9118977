// reconcileNormal and reconcilePaused: plan (every check before anything is created), place,
// observe, and record the status computed from what was observed.
import type { ProtectedMachine, ProtectedMachineStatus, ReplicationPolicy } from "../../api/types.js";
import {
  pods,
  type EventRecorder,
  type Informer,
  type KubeObject,
  type Namespace,
  type Node,
  type ReconcileContext,
  type ReconcileOutcome,
  type StatefulSet,
  type StatusWriter,
  type StorageClass,
} from "../../runtime/index.js";
import { parseByteSize } from "../../replicator/process-server/bandwidth.js";
import { healthValue, type MachineMetrics } from "../metrics.js";
import { journalClaimName, machineLabel, machineNamespaceLabel } from "./names.js";
import { observeVolumes, type JournalObservation, type ThroughputTracker } from "./observe.js";
import { replicasAnnotation } from "../failoverrun/steps/workload.js";
import { inDirection, replicatedView, directionOf } from "./direction.js";
import { planProtection, type Plan, type PlanInputs } from "./plan.js";
import type { ReplicatorClients } from "./replicator-clients.js";
import { ensureReplicators, servicePeer, type OwnCaches, type ReplicatorDeps } from "./replicators.js";
import { computeStatus, type StatusInput, type VolumeObservation } from "./status.js";
import { policyDurationMs } from "../replicationpolicy/flags.js";
import type { Problem, WorkloadObject } from "./workload.js";
import { cutDuePoints, type OperatorPoints } from "./operator-points.js";
import { driveResync } from "./resync.js";

export interface MachineCaches extends OwnCaches {
  machines: Informer<ProtectedMachine>;
  policies: Informer<ReplicationPolicy>;
  statefulSets: Informer<StatefulSet>;
  nodes: Informer<Node>;
  storageClasses: Informer<StorageClass>;
  namespaces: Informer<Namespace>;
}

export interface ProtectDeps extends ReplicatorDeps {
  caches: MachineCaches;
  events: EventRecorder;
  metrics: MachineMetrics;
  replicators: ReplicatorClients;
  throughput: ThroughputTracker;
  points: OperatorPoints;
}

/** How often status is refreshed from the replicators while nothing else changes. */
export const statusRefreshMs = 10_000;

function workloadOf(caches: MachineCaches, machine: ProtectedMachine): WorkloadObject | undefined {
  const { kind, name } = machine.spec.source.workloadRef;
  const namespace = machine.metadata.namespace;
  const found: KubeObject | undefined =
    kind === "StatefulSet"
      ? caches.statefulSets.get(name, namespace)
      : kind === "Deployment"
        ? caches.deployments.get(name, namespace)
        : caches.pods.get(name, namespace);
  return found;
}

/** What planning reads, for `view` (the machine as seen in its direction); the policy lives in the machine's namespace. */
function planInputs(caches: MachineCaches, view: ProtectedMachine, policyNamespace: string): PlanInputs {
  const machine = view;
  const namespace = machine.metadata.namespace ?? "";
  const claimedByOthers = new Map<string, string>();
  for (const other of caches.machines.list(namespace))
    if (other.metadata.uid !== machine.metadata.uid)
      for (const volume of other.status?.volumes ?? [])
        if (volume.claimName !== undefined) claimedByOthers.set(volume.claimName, other.metadata.name);
  return {
    machine,
    policy: caches.policies.get(machine.spec.policyRef.name, policyNamespace),
    workload: workloadOf(caches, machine),
    pods: caches.pods.list(namespace),
    claims: new Map(caches.claims.list(namespace).map((claim) => [claim.metadata.name, claim])),
    nodes: caches.nodes.list(),
    storageClasses: new Map(caches.storageClasses.list().map((sc) => [sc.metadata.name, sc])),
    namespaces: new Set(caches.namespaces.list().map((ns) => ns.metadata.name)),
    claimedByOthers,
  };
}

/** The plan in the machine's current direction (direction.ts), with the view it was made for. */
export function planInDirection(caches: MachineCaches, machine: ProtectedMachine) {
  const view = replicatedView(machine);
  const inputs = planInputs(caches, view, machine.metadata.namespace ?? "");
  const result = planProtection(inputs);
  const workload = inputs.workload;
  const stopped = workload?.spec?.replicas === 0 && workload.metadata.annotations?.[replicasAnnotation] !== undefined;
  return {
    view,
    result: result.ok ? { ok: true as const, plan: inDirection(result.plan, machine, stopped) } : result,
  };
}

function claimFigures(caches: MachineCaches, namespace: string) {
  const sizes = new Map<string, { size: string; volumeMode?: string }>();
  const capacities = new Map<string, number>();
  for (const claim of caches.claims.list(namespace)) {
    const size = claim.status?.capacity?.storage ?? claim.spec?.resources?.requests?.storage;
    if (claim.status?.phase !== "Bound" || size === undefined) continue;
    const volumeMode = claim.spec?.volumeMode;
    sizes.set(claim.metadata.name, { size, ...(volumeMode === undefined ? {} : { volumeMode }) });
    const bytes = quantityBytes(size);
    if (bytes !== undefined) capacities.set(claim.metadata.name, bytes);
  }
  return { sizes, capacities };
}

/** A claim's size in bytes; undefined for a quantity the process server's parser does not take (e.g. 1e9). */
function quantityBytes(quantity: string): number | undefined {
  try {
    return parseByteSize(quantity, "capacity");
  } catch {
    return undefined;
  }
}

async function observe(deps: ProtectDeps, machine: ProtectedMachine, plan: Plan, context: ReconcileContext) {
  const namespace = machine.metadata.namespace ?? "";
  const { capacities } = claimFigures(deps.caches, namespace);
  const journalClaim = deps.caches.claims.get(journalClaimName(plan.masterTarget.name), plan.masterTarget.namespace);
  const journalSize = journalClaim?.status?.capacity?.storage;
  const journalCapacityBytes = journalSize === undefined ? undefined : quantityBytes(journalSize);
  const observed = await observeVolumes({
    volumes: plan.volumes,
    capacities,
    processServer: servicePeer(plan.processServer, namespace),
    masterTarget: servicePeer(plan.masterTarget.name, plan.masterTarget.namespace),
    clients: deps.replicators,
    throughput: deps.throughput,
    machineKey: `${namespace}/${machine.metadata.name}`,
    now: context.clock.now(),
    log: context.log,
  });
  return {
    ...observed,
    ...(observed.journal === undefined || journalCapacityBytes === undefined
      ? {}
      : { journal: { ...observed.journal, capacityBytes: journalCapacityBytes } }),
  };
}

/** Fields this controller never computes: conditions (set one by one), and replication (FailoverRuns write it). */
const keptFields = new Set<keyof ProtectedMachineStatus>(["conditions", "observedGeneration", "replication"]);

function record(
  deps: ProtectDeps,
  machine: ProtectedMachine,
  status: StatusWriter<ProtectedMachine>,
  context: ReconcileContext,
  fields: Omit<
    StatusInput,
    | "previous"
    | "now"
    | "rpoThresholdMs"
    | "appConsistencyUnavailable"
    | "activeSite"
    | "epoch"
    | "failedOver"
    | "fullCopyVolumes"
  > & {
    policy?: ReplicationPolicy;
    sourceSite?: string;
  },
  newBytes = 0,
  /** Why the operator's own app-consistent cuts gave none lately (a failed hook). */
  appProblem?: Problem,
  journal?: JournalObservation & { capacityBytes?: number },
): void {
  const { policy, sourceSite, ...rest } = fields;
  const replication = directionOf(machine);
  const result = computeStatus({
    ...rest,
    epoch: replication.epoch,
    failedOver: replication.failedOverBy !== undefined,
    ...(replication.fullCopyVolumes === undefined ? {} : { fullCopyVolumes: replication.fullCopyVolumes }),
    previous: machine.status,
    now: context.clock.now(),
    rpoThresholdMs: policyDurationMs(policy?.spec.rpoThreshold ?? "15m", "rpoThreshold"),
    ...(appProblem === undefined ? appConsistency(policy, machine) : { appConsistencyUnavailable: appProblem }),
    ...(sourceSite === undefined ? {} : { activeSite: sourceSite }),
  });
  // Fields the new status no longer has are cleared, not left from the previous one.
  const cleared: Partial<ProtectedMachineStatus> = {};
  for (const key of Object.keys(machine.status ?? {}) as (keyof ProtectedMachineStatus)[])
    if (!keptFields.has(key) && !(key in result.status)) cleared[key] = undefined;
  status.set({ ...cleared, ...result.status });
  for (const condition of result.conditions) status.condition(condition);
  if (!context.signal.aborted) for (const event of result.events) void deps.events.record(machine, event);

  const labels = { namespace: machine.metadata.namespace ?? "", machine: machine.metadata.name };
  const { metrics } = deps;
  if (result.rpoSeconds === undefined || result.rpoThresholdSeconds === undefined) {
    metrics.rpoSeconds.remove(labels);
    metrics.rpoThresholdSeconds.remove(labels);
  } else {
    metrics.rpoSeconds.set(labels, result.rpoSeconds);
    metrics.rpoThresholdSeconds.set(labels, result.rpoThresholdSeconds);
  }
  metrics.pendingBytes.set(
    labels,
    sum(fields.volumes, (volume) => volume.control?.cachedBytes ?? 0),
  );
  if (newBytes > 0) metrics.replicatedBytes.inc(labels, newBytes);
  metrics.recoveryPoints.set(labels, result.status.recoveryPoints?.count ?? 0);
  metrics.health.set(labels, healthValue[result.status.health ?? "Healthy"]);
  if (journal !== undefined) {
    metrics.journalUsedBytes.set(labels, journal.usedBytes);
    metrics.journalRetentionSeconds.set(labels, journal.retentionMs / 1000);
    if (journal.capacityBytes !== undefined) metrics.journalCapacityBytes.set(labels, journal.capacityBytes);
    const oldest = result.status.recoveryPoints?.oldest?.time;
    if (oldest !== undefined)
      metrics.journalOldestPointAgeSeconds.set(labels, Math.max(0, context.clock.now() - Date.parse(oldest)) / 1000);
  }
}

/** The policy asks for app-consistent points; can this machine's hooks give them? */
function appConsistency(
  policy: ReplicationPolicy | undefined,
  machine: ProtectedMachine,
): Pick<StatusInput, "appConsistencyUnavailable"> {
  if (policy?.spec.appConsistentFrequency === undefined) return {};
  const quiesce = machine.spec.source.quiesce;
  if (quiesce === undefined)
    return {
      appConsistencyUnavailable: {
        reason: "NoQuiesceHooks",
        message:
          "the policy sets appConsistentFrequency but this machine has no spec.source.quiesce hooks: only crash-consistent points are taken",
      },
    };
  return {};
}

function sum(volumes: readonly VolumeObservation[], value: (volume: VolumeObservation) => number): number {
  return volumes.reduce((total, volume) => total + value(volume), 0);
}

export async function reconcileNormal(
  deps: ProtectDeps,
  machine: ProtectedMachine,
  status: StatusWriter<ProtectedMachine>,
  context: ReconcileContext,
): Promise<ReconcileOutcome> {
  const { view, result } = planInDirection(deps.caches, machine);
  if (!result.ok) {
    // Nothing is placed for a machine with bad input; the watches bring it back when it is fixed.
    record(deps, machine, status, context, { problem: result.problem, paused: false, volumes: [] });
    context.log.info({ reason: result.problem.reason }, result.problem.message);
    return undefined;
  }
  const { plan } = result;
  const { sizes } = claimFigures(deps.caches, view.metadata.namespace ?? "");
  await ensureReplicators(deps, view, plan, sizes);
  const observed = await observe(deps, view, plan, context);
  const resync = await driveResync(deps, view, plan, observed.volumes, observed.newBytes, context);
  const points = await cutDuePoints(deps, machine, plan, observed.volumes, context);
  const waiting: Problem | undefined = plan.waiting;
  record(
    deps,
    machine,
    status,
    context,
    {
      paused: false,
      volumes: observed.volumes,
      policy: plan.policy,
      resync,
      ...(waiting === undefined ? {} : { waiting }),
      ...(plan.sourceSite === undefined ? {} : { sourceSite: plan.sourceSite }),
    },
    observed.newBytes,
    points.appConsistencyUnavailable,
    observed.journal,
  );
  return { requeueAfterMs: statusRefreshMs };
}

/** Paused: the agents go (nothing is shipped); their manifests stay, so resuming sends only what changed. */
export async function reconcilePaused(
  deps: ProtectDeps,
  machine: ProtectedMachine,
  status: StatusWriter<ProtectedMachine>,
  context: ReconcileContext,
): Promise<ReconcileOutcome> {
  const { view, result } = planInDirection(deps.caches, machine);
  const namespace = view.metadata.namespace ?? "";
  for (const pod of deps.caches.pods.list(namespace))
    if (
      pod.metadata.labels?.[machineLabel] === machine.metadata.name &&
      pod.metadata.labels[machineNamespaceLabel] === namespace &&
      pod.metadata.labels["app.kubernetes.io/component"] === "agent"
    )
      await deps.client.delete(pods, { name: pod.metadata.name, namespace });
  const observed = result.ok ? await observe(deps, view, result.plan, context) : { volumes: [], newBytes: 0 };
  // A failed-over machine's workload runs at the target of the direction it was failed over in.
  const replication = directionOf(machine);
  const activeSite = replication.failedOverBy === undefined ? undefined : replication.targetSite;
  record(deps, machine, status, context, {
    paused: true,
    ...(activeSite === undefined ? {} : { sourceSite: activeSite }),
    volumes: observed.volumes,
    ...(result.ok ? { policy: result.plan.policy } : {}),
  });
  return { requeueAfterMs: statusRefreshMs };
}
