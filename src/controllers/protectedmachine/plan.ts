// What protecting a machine takes, decided from what the caches hold: the checks of bad input
// (each a Problem naming what to fix, found before anything is created) and the placement of
// its replicators. Pure, so every case is a table test.
import type { ProtectedMachine, ReplicationPolicy } from "../../api/types.js";
import type { Node, PersistentVolumeClaim, Pod, StorageClass } from "../../runtime/index.js";
import { agentName, masterTargetName, processServerName, siteLabel } from "./names.js";
import { claimProblems, resolveWorkload, type Problem, type ProtectedVolume, type WorkloadObject } from "./workload.js";

export interface PlanInputs {
  machine: ProtectedMachine;
  policy: ReplicationPolicy | undefined;
  workload: WorkloadObject | undefined;
  /** The machine's namespace's pods and claims. */
  pods: readonly Pod[];
  claims: ReadonlyMap<string, PersistentVolumeClaim>;
  nodes: readonly Node[];
  storageClasses: ReadonlyMap<string, StorageClass>;
  namespaces: ReadonlySet<string>;
  /** Claims other machines of the namespace protect, by claim name → machine name. */
  claimedByOthers: ReadonlyMap<string, string>;
}

export interface AgentPlan {
  name: string;
  podName: string;
  nodeName: string;
  podIP?: string;
  volumes: ProtectedVolume[];
}

export interface Plan {
  policy: ReplicationPolicy;
  volumes: ProtectedVolume[];
  sourceSite?: string;
  processServer: string;
  masterTarget: { name: string; namespace: string };
  storageClassName?: string;
  agents: AgentPlan[];
  /**
   * Set when replication runs back from the recovery site (status.replication Reverse, see
   * direction.ts): the machine lives in homeNamespace, so what is placed in the source namespace
   * cannot be owned by it (owner references do not cross namespaces) and the policy's key is read there.
   */
  reverse?: { homeNamespace: string };
  /** The workload was scaled to 0 by a failover: its agents stay until the machine is paused, for the final sync. */
  keepAgents?: boolean;
  /** Protection cannot go further yet (pods not running): normal, said in the Ready condition. */
  waiting?: Problem;
}

export type PlanResult = { ok: true; plan: Plan } | { ok: false; problem: Problem };

const defaultClassAnnotation = "storageclass.kubernetes.io/is-default-class";

const fail = (reason: string, message: string): PlanResult => ({ ok: false, problem: { reason, message } });

export function planProtection(inputs: PlanInputs): PlanResult {
  const { machine, policy } = inputs;
  const namespace = machine.metadata.namespace ?? "";
  const { target, policyRef } = machine.spec;
  if (policy === undefined)
    return fail(
      "PolicyNotFound",
      `ReplicationPolicy ${namespace}/${policyRef.name} does not exist; create it or fix spec.policyRef.name`,
    );
  const resolution = resolveWorkload(machine.spec, namespace, inputs.workload, inputs.pods);
  if (!resolution.ok) return { ok: false, problem: resolution.problem };
  const { volumes, pods } = resolution.workload;

  if (target.namespace === namespace)
    return fail(
      "TargetNamespaceConflict",
      `spec.target.namespace is the machine's own namespace ${namespace}: the replicas are named as the recovered workload claims them, so they need another namespace`,
    );
  if (!inputs.namespaces.has(target.namespace))
    return fail(
      "TargetNamespaceNotFound",
      `namespace ${target.namespace} (spec.target.namespace) does not exist; create it (kubectl create namespace ${target.namespace})`,
    );
  const sites = [...new Set(inputs.nodes.map((node) => node.metadata.labels?.[siteLabel]).filter(isString))].sort();
  if (!sites.includes(target.site))
    return fail(
      "SiteNotFound",
      `no node has the label ${siteLabel}=${target.site} (spec.target.site); sites with nodes: ${sites.join(", ") || "none"}; label the recovery site's nodes or fix spec.target.site`,
    );
  const storageClassName = target.storageClassName;
  if (storageClassName !== undefined && !inputs.storageClasses.has(storageClassName))
    return fail(
      "StorageClassNotFound",
      `StorageClass ${storageClassName} (spec.target.storageClassName) does not exist in the recovery site; create it or name one of: ${[...inputs.storageClasses.keys()].sort().join(", ") || "none"}`,
    );
  if (
    storageClassName === undefined &&
    ![...inputs.storageClasses.values()].some((sc) => sc.metadata.annotations?.[defaultClassAnnotation] === "true")
  )
    return fail(
      "NoDefaultStorageClass",
      "spec.target.storageClassName is not set and the cluster has no default StorageClass; set it to a StorageClass of the recovery site",
    );
  for (const volume of volumes) {
    const other = inputs.claimedByOthers.get(volume.claimName);
    if (other !== undefined)
      return fail(
        "ClaimProtectedTwice",
        `PersistentVolumeClaim ${volume.claimName} is already protected by ProtectedMachine ${other}; protect each claim once`,
      );
  }
  const claimProblem = claimProblems(volumes, inputs.claims, inputs.storageClasses);
  if (claimProblem !== undefined) return { ok: false, problem: claimProblem };

  const nodesByName = new Map(inputs.nodes.map((node) => [node.metadata.name, node]));
  const podsByName = new Map(pods.map((pod) => [pod.metadata.name, pod]));
  const agents = new Map<string, AgentPlan>();
  const sourceSites = new Set<string>();
  for (const volume of volumes) {
    const pod = volume.podName === undefined ? undefined : podsByName.get(volume.podName);
    const nodeName = pod?.spec?.nodeName;
    if (pod === undefined || nodeName === undefined) continue;
    const site = nodesByName.get(nodeName)?.metadata.labels?.[siteLabel];
    if (site === undefined)
      return fail(
        "SourceSiteUnknown",
        `node ${nodeName}, where pod ${pod.metadata.name} runs, has no ${siteLabel} label; label it with its site`,
      );
    sourceSites.add(site);
    const agent = agents.get(pod.metadata.name) ?? {
      name: agentName(pod.metadata.name),
      podName: pod.metadata.name,
      nodeName,
      ...(pod.status?.podIP === undefined ? {} : { podIP: pod.status.podIP }),
      volumes: [],
    };
    agent.volumes.push(volume);
    agents.set(pod.metadata.name, agent);
  }
  if (sourceSites.has(target.site))
    return fail(
      "TargetSiteIsSourceSite",
      `the workload runs in site ${target.site}, which spec.target.site names as the recovery site; recover into another site`,
    );
  if (sourceSites.size > 1)
    return fail(
      "WorkloadSpansSites",
      `the workload's pods run in several sites (${[...sourceSites].sort().join(", ")}); a machine is replicated from one site`,
    );
  const sourceSite = [...sourceSites][0];
  const missing = volumes.filter((volume) => volume.podName === undefined).map((volume) => volume.claimName);
  const plan: Plan = {
    policy,
    volumes,
    ...(sourceSite === undefined ? {} : { sourceSite }),
    processServer: processServerName(policyRef.name, sourceSite ?? "", target.namespace),
    masterTarget: {
      name: masterTargetName(policyRef.name, namespace, target.site),
      namespace: target.namespace,
    },
    ...(storageClassName === undefined ? {} : { storageClassName }),
    agents: [...agents.values()],
    ...(missing.length === 0
      ? {}
      : {
          waiting: {
            reason: "WaitingForPods",
            message: `no running pod of the workload mounts ${missing.join(", ")} yet`,
          },
        }),
  };
  return { ok: true, plan };
}

function isString(value: string | undefined): value is string {
  return value !== undefined;
}
