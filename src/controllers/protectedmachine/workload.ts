// Workload resolution: which pods a ProtectedMachine's workload has, which PersistentVolumeClaims
// they mount, and which of those are replicated (one change stream per claim, captured by the
// agent beside one pod that mounts it). Pure: the caller hands in what the cache holds.
import type { ProtectedMachineSpec } from "../../api/types.js";
import type { PersistentVolumeClaim, Pod, StorageClass } from "../../runtime/index.js";
import type { V1PodSpec, V1PodTemplateSpec } from "@kubernetes/client-node";
import { replicasAnnotation } from "../failoverrun/steps/workload.js";
import { streamId } from "./names.js";

/** Something the user must fix before protection can start: a condition reason and a message naming the fix. */
export interface Problem {
  reason: string;
  message: string;
}

export interface WorkloadObject {
  metadata: { name: string; namespace?: string; uid?: string; annotations?: Record<string, string> };
  spec?: {
    replicas?: number;
    selector?: { matchLabels?: Record<string, string> };
    template?: V1PodTemplateSpec;
    volumeClaimTemplates?: { metadata?: { name?: string } }[];
  } & Partial<V1PodSpec>;
}

/** One replicated claim: one change stream, one replica claim, captured beside one pod. */
export interface ProtectedVolume {
  /** Entry in status.volumes: the pod volume name, with the ordinal for a StatefulSet's claims (data-0). */
  statusName: string;
  /** The pod template's volume name (a StatefulSet's volumeClaimTemplate name). */
  volumeName: string;
  claimName: string;
  /** The replica's claim in the target namespace: named as the recovered workload will claim it. */
  replicaClaimName: string;
  /** Machine id of the change stream (and of the agent's certificate). */
  machineId: string;
  /** The pod whose agent captures this claim, once one is running. */
  podName?: string;
}

export interface ResolvedWorkload {
  pods: Pod[];
  volumes: ProtectedVolume[];
}

export type Resolution = { ok: true; workload: ResolvedWorkload } | { ok: false; problem: Problem };

interface ClaimUse {
  volumeName: string;
  claimName: string;
  statusName: string;
  /** Pods expected to mount it (a StatefulSet's ordinal pod, or every pod). */
  podNames?: string[];
}

/**
 * Resolves the workload from what exists now. `workload` is the StatefulSet, Deployment or Pod
 * named by spec.source.workloadRef (undefined when missing); `pods` are the namespace's pods.
 */
export function resolveWorkload(
  spec: ProtectedMachineSpec,
  namespace: string,
  workload: WorkloadObject | undefined,
  pods: readonly Pod[],
): Resolution {
  const { kind, name } = spec.source.workloadRef;
  if (workload === undefined)
    return problem(
      "WorkloadNotFound",
      `${kind} ${namespace}/${name} does not exist; create it or fix spec.source.workloadRef`,
    );
  const ownPods = podsOf(kind, workload, pods);
  const uses = claimUses(kind, workload);
  if (uses.length === 0)
    return problem(
      "NoPersistentVolumes",
      `${kind} ${name} mounts no PersistentVolumeClaim; only PersistentVolumeClaims are replicated`,
    );
  const known = [...new Set(uses.map((use) => use.volumeName))].sort();
  const wanted = spec.source.volumes;
  const unknown = (wanted ?? []).filter((volume) => !known.includes(volume));
  if (unknown.length > 0)
    return problem(
      "VolumeNotFound",
      `spec.source.volumes names ${unknown.join(", ")}, which ${kind} ${name} does not mount as a PersistentVolumeClaim (it has: ${known.join(", ")})`,
    );
  const selected = uses.filter((use) => wanted === undefined || wanted.includes(use.volumeName));
  const running = ownPods.filter((pod) => pod.metadata.deletionTimestamp === undefined && pod.spec?.nodeName);
  const volumes = selected.map((use): ProtectedVolume => {
    const capturer = running.find(
      (pod) =>
        (use.podNames === undefined || use.podNames.includes(pod.metadata.name)) &&
        mountsClaim(pod.spec, use.claimName),
    );
    return {
      statusName: use.statusName,
      volumeName: use.volumeName,
      claimName: use.claimName,
      replicaClaimName: use.claimName,
      machineId: streamId(use.claimName),
      ...(capturer === undefined ? {} : { podName: capturer.metadata.name }),
    };
  });
  return { ok: true, workload: { pods: ownPods, volumes } };
}

function problem(reason: string, message: string): Resolution {
  return { ok: false, problem: { reason, message } };
}

function podsOf(kind: string, workload: WorkloadObject, pods: readonly Pod[]): Pod[] {
  if (kind === "Pod") return pods.filter((pod) => pod.metadata.name === workload.metadata.name);
  const selector = workload.spec?.selector?.matchLabels ?? {};
  const entries = Object.entries(selector);
  if (entries.length === 0) return [];
  return pods
    .filter((pod) => entries.every(([key, value]) => pod.metadata.labels?.[key] === value))
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
}

function claimUses(kind: string, workload: WorkloadObject): ClaimUse[] {
  const podSpec = kind === "Pod" ? (workload.spec as V1PodSpec | undefined) : workload.spec?.template?.spec;
  const direct = (podSpec?.volumes ?? []).flatMap((volume): ClaimUse[] =>
    volume.persistentVolumeClaim === undefined
      ? []
      : [{ volumeName: volume.name, claimName: volume.persistentVolumeClaim.claimName, statusName: volume.name }],
  );
  if (kind !== "StatefulSet") return direct;
  const name = workload.metadata.name;
  // A workload scaled to 0 by a failover still has its claims: they are what a failback returns to.
  const before = Number(workload.metadata.annotations?.[replicasAnnotation]);
  const replicas =
    workload.spec?.replicas === 0 && Number.isInteger(before) && before > 0 ? before : (workload.spec?.replicas ?? 1);
  const templated = (workload.spec?.volumeClaimTemplates ?? []).flatMap((template) => {
    const volumeName = template.metadata?.name;
    if (volumeName === undefined) return [];
    return Array.from({ length: replicas }, (_, ordinal): ClaimUse => ({
      volumeName,
      claimName: `${volumeName}-${name}-${ordinal}`,
      statusName: `${volumeName}-${ordinal}`,
      podNames: [`${name}-${ordinal}`],
    }));
  });
  return [...templated, ...direct];
}

function mountsClaim(spec: V1PodSpec | undefined, claimName: string): boolean {
  return (spec?.volumes ?? []).some((volume) => volume.persistentVolumeClaim?.claimName === claimName);
}

/** Problems of the claims themselves: each must be Bound and shareable with an agent on its node. */
export function claimProblems(
  volumes: readonly ProtectedVolume[],
  claims: ReadonlyMap<string, PersistentVolumeClaim>,
  storageClasses: ReadonlyMap<string, StorageClass>,
): Problem | undefined {
  for (const volume of volumes) {
    const claim = claims.get(volume.claimName);
    if (claim === undefined) continue; // a StatefulSet creates its claims as its pods come: waited for, not an error
    const modes = claim.spec?.accessModes ?? [];
    if (modes.includes("ReadWriteOncePod"))
      return {
        reason: "ClaimIsReadWriteOncePod",
        message: `PersistentVolumeClaim ${volume.claimName} is ReadWriteOncePod, so the agent cannot mount it beside the workload's pod; use ReadWriteOnce (or ReadWriteMany) for protected volumes`,
      };
    const phase = claim.status?.phase;
    if (
      phase !== "Bound" &&
      claim.metadata.deletionTimestamp === undefined &&
      !awaitsFirstConsumer(claim, volume, storageClasses)
    )
      return {
        reason: "ClaimNotBound",
        message: `PersistentVolumeClaim ${volume.claimName} is ${phase ?? "Pending"}, not Bound; check its StorageClass and events (kubectl describe pvc ${volume.claimName})`,
      };
  }
  return undefined;
}

/** A WaitForFirstConsumer claim is Pending until a pod using it is scheduled: normal, not a problem. */
function awaitsFirstConsumer(
  claim: PersistentVolumeClaim,
  volume: ProtectedVolume,
  storageClasses: ReadonlyMap<string, StorageClass>,
): boolean {
  const className = claim.spec?.storageClassName;
  const storageClass = className === undefined ? undefined : storageClasses.get(className);
  return storageClass?.volumeBindingMode === "WaitForFirstConsumer" && volume.podName === undefined;
}
