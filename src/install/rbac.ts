// The operator's permissions, in one place: `ksr install` applies them, the
// Helm chart is checked against them, docs/operator.md lists them. Least
// privilege: no wildcard verbs, resources or API groups; every rule says who
// needs it. Lease access is namespaced (a Role in the install namespace).
import { group } from "../api/common.js";
import { kinds } from "../api/crds.js";

export interface PolicyRule {
  apiGroups: string[];
  resources: string[];
  verbs: string[];
  /** Why the operator needs it (not part of the Kubernetes object). */
  reason: string;
}

const read = ["get", "list", "watch"];
/** What a controller needs for objects it creates and owns. */
const manage = [...read, "create", "update", "patch", "delete"];

/** Cluster-wide: workloads and replicators live in the users' namespaces. */
export const clusterRules: readonly PolicyRule[] = [
  {
    apiGroups: [group],
    resources: kinds.map((kind) => kind.plural),
    verbs: [...read, "update", "patch"],
    reason: "reconcile the four kinds; finalizers are added and removed by patch",
  },
  {
    apiGroups: [group],
    resources: kinds.map((kind) => `${kind.plural}/status`),
    verbs: ["get", "update", "patch"],
    reason: "write each kind's status subresource",
  },
  {
    apiGroups: [group],
    resources: kinds.map((kind) => `${kind.plural}/finalizers`),
    verbs: ["update"],
    reason: "set blockOwnerDeletion on objects owned by the kinds (OwnerReferencesPermissionEnforcement)",
  },
  {
    apiGroups: [""],
    resources: ["pods"],
    verbs: manage,
    reason: "find the workload's pods; run an agent next to each",
  },
  {
    apiGroups: [""],
    resources: ["pods/exec"],
    verbs: ["create", "get"],
    reason: "exec quiesce hooks for app-consistent points (create for WebSocket and SPDY, get for older clients)",
  },
  {
    apiGroups: [""],
    resources: ["services", "persistentvolumeclaims", "secrets", "configmaps"],
    verbs: manage,
    reason:
      "replicator Services; cache, replica and journal PVCs; the CA and replicator mTLS Secrets; the agent revocation list and agents' hooks files; recovered workloads' Services, Secrets and ConfigMaps copied from the source namespace (get, create), a drill's copies deleted at its cleanup (list, delete)",
  },
  {
    apiGroups: [""],
    resources: ["namespaces"],
    verbs: [...read, "create", "delete"],
    reason: "check that a machine's target namespace exists; a drill's own namespace, deleted at its cleanup",
  },
  {
    apiGroups: [""],
    resources: ["nodes"],
    verbs: read,
    reason: "place replicators by site label",
  },
  {
    apiGroups: ["apps"],
    resources: ["deployments", "statefulsets"],
    verbs: manage,
    reason: "resolve protected workloads; process servers and master targets; recovered workloads",
  },
  {
    apiGroups: ["batch"],
    resources: ["jobs"],
    verbs: manage,
    reason: "recovery plan script actions; a drill's hydration of recovery points into new claims",
  },
  {
    apiGroups: ["networking.k8s.io"],
    resources: ["networkpolicies"],
    verbs: manage,
    reason: "fence drills into their own network",
  },
  {
    apiGroups: ["storage.k8s.io"],
    resources: ["storageclasses"],
    verbs: read,
    reason: "check the recovery site's StorageClass exists",
  },
  {
    apiGroups: ["events.k8s.io"],
    resources: ["events"],
    verbs: ["create", "patch"],
    reason: "record Events (repeats patch one Event's series)",
  },
];

/** In the install namespace only. */
export const namespaceRules: readonly PolicyRule[] = [
  {
    apiGroups: ["coordination.k8s.io"],
    resources: ["leases"],
    verbs: ["get", "create", "update"],
    reason: "leader election",
  },
];

/** The rule as the API server takes it. */
export function rbacRule(rule: PolicyRule): { apiGroups: string[]; resources: string[]; verbs: string[] } {
  return { apiGroups: rule.apiGroups, resources: rule.resources, verbs: rule.verbs };
}

/** The rules as a Markdown table, as docs/operator.md shows them (a unit test keeps the two equal). */
export function rbacTable(): string {
  const row = (scope: string, rule: PolicyRule) =>
    `| ${scope} | ${rule.apiGroups.map((g) => (g === "" ? "core" : g)).join(", ")} | ${rule.resources.join(", ")} | ${rule.verbs.join(", ")} | ${rule.reason} |`;
  return [
    "| scope | API group | resources | verbs | why |",
    "| --- | --- | --- | --- | --- |",
    ...clusterRules.map((rule) => row("cluster", rule)),
    ...namespaceRules.map((rule) => row("install namespace", rule)),
  ].join("\n");
}
