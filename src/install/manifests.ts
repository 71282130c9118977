// The objects `ksr install` applies besides the CRDs: the namespace, the
// operator's identity and permissions, its Deployment and its metrics Service.
import { createHash } from "node:crypto";
import { siteLabel } from "../local/node/layout.js";
import { operatorConfigKey, operatorConfigMapName } from "../notifications/config.js";
import {
  configMaps,
  deployments,
  namespaces,
  resourceType,
  serviceAccounts,
  services,
  type KubeObject,
  type ResourceType,
} from "../runtime/index.js";
import { parseImageReference } from "../local/node/images.js";
import { clusterRules, namespaceRules, rbacRule } from "./rbac.js";

export const operatorName = "ksr-operator";
export const defaultNamespace = "ksr-system";
/** The project's one image: the operator, the replicators it places and the CLI. */
export const projectImage = "kube-site-recovery";
/** A flag's image reference, checked as a registry would before anything uses it. */
export function imageFlag(value: string, flag: string): string {
  try {
    parseImageReference(value);
  } catch (error) {
    throw new Error(`${flag}: ${(error as Error).message} (expected REPOSITORY[:TAG][@DIGEST])`);
  }
  return value.trim();
}
/** The port of /metrics, /healthz and /readyz. */
export const operatorHealthPort = 8080;
export const leaseName = "ksr-operator";

export const partOfLabel = { "app.kubernetes.io/part-of": "kube-site-recovery" } as const;
const selectorLabels = { "app.kubernetes.io/name": operatorName, "app.kubernetes.io/component": "operator" };
const labels = { ...selectorLabels, ...partOfLabel, "app.kubernetes.io/managed-by": "ksr-install" };

const rbacGroup = { group: "rbac.authorization.k8s.io", version: "v1" };
export const clusterRoles = resourceType({
  ...rbacGroup,
  kind: "ClusterRole",
  plural: "clusterroles",
  namespaced: false,
});
export const clusterRoleBindings = resourceType({
  ...rbacGroup,
  kind: "ClusterRoleBinding",
  plural: "clusterrolebindings",
  namespaced: false,
});
export const roles = resourceType({ ...rbacGroup, kind: "Role", plural: "roles", namespaced: true });
export const roleBindings = resourceType({
  ...rbacGroup,
  kind: "RoleBinding",
  plural: "rolebindings",
  namespaced: true,
});

export interface Manifest {
  type: ResourceType<KubeObject>;
  object: KubeObject & Record<string, unknown>;
}

/** The operator's leader-election flags, as given (checked by the CLI before they get here). */
export interface LeaderElectionFlags {
  leaseDuration: string;
  renewDeadline: string;
  retryPeriod: string;
}

export interface InstallOptions {
  namespace: string;
  image: string;
  replicas: number;
  /** Absent: the operator's defaults. */
  leaderElection?: LeaderElectionFlags;
  /** The operator's configuration file (notifications), already checked; absent leaves the ConfigMap alone. */
  config?: string;
}

/** On the pod template: a changed configuration rolls the operator, which reads it at start. */
export const configHashAnnotation = "dr.ksr.io/config-sha256";

function operatorDeployment(options: InstallOptions): KubeObject & Record<string, unknown> {
  const probe = (path: string, periodSeconds: number) => ({
    httpGet: { path, port: "health" },
    periodSeconds,
    timeoutSeconds: 2,
    failureThreshold: 3,
  });
  return {
    metadata: { name: operatorName, namespace: options.namespace, labels },
    spec: {
      replicas: options.replicas,
      selector: { matchLabels: selectorLabels },
      template: {
        metadata: {
          labels,
          ...(options.config === undefined
            ? {}
            : { annotations: { [configHashAnnotation]: createHash("sha256").update(options.config).digest("hex") } }),
        },
        spec: {
          serviceAccountName: operatorName,
          // One replica per site, so the recovery site keeps a standby when the primary site is lost.
          topologySpreadConstraints: [
            {
              maxSkew: 1,
              topologyKey: siteLabel,
              whenUnsatisfiable: "DoNotSchedule",
              labelSelector: { matchLabels: selectorLabels },
            },
          ],
          affinity: {
            podAntiAffinity: {
              preferredDuringSchedulingIgnoredDuringExecution: [
                {
                  weight: 100,
                  podAffinityTerm: { topologyKey: siteLabel, labelSelector: { matchLabels: selectorLabels } },
                },
              ],
            },
          },
          securityContext: {
            runAsNonRoot: true,
            runAsUser: 65532,
            runAsGroup: 65532,
            seccompProfile: { type: "RuntimeDefault" },
          },
          terminationGracePeriodSeconds: 30,
          containers: [
            {
              name: "operator",
              image: options.image,
              // The replicators run the operator's own image, so one tag names the whole release.
              args: [
                "operator",
                "--namespace",
                "$(POD_NAMESPACE)",
                "--health-port",
                String(operatorHealthPort),
                "--replicator-image",
                options.image,
                ...(options.leaderElection === undefined
                  ? []
                  : [
                      ...["--lease-duration", options.leaderElection.leaseDuration],
                      ...["--renew-deadline", options.leaderElection.renewDeadline],
                      ...["--retry-period", options.leaderElection.retryPeriod],
                    ]),
              ],
              env: [
                { name: "POD_NAMESPACE", valueFrom: { fieldRef: { fieldPath: "metadata.namespace" } } },
                { name: "POD_NAME", valueFrom: { fieldRef: { fieldPath: "metadata.name" } } },
              ],
              ports: [{ name: "health", containerPort: operatorHealthPort, protocol: "TCP" }],
              livenessProbe: probe("/healthz", 10),
              readinessProbe: probe("/readyz", 5),
              resources: { requests: { cpu: "50m", memory: "128Mi" }, limits: { memory: "512Mi" } },
              securityContext: {
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ["ALL"] },
              },
            },
          ],
        },
      },
    },
  };
}

/** Every namespaced and cluster object of an install, in the order they are applied. */
export function operatorManifests(options: InstallOptions): Manifest[] {
  const { namespace } = options;
  const meta = (name: string, scoped = true) => ({ name, ...(scoped ? { namespace } : {}), labels });
  const subject = { kind: "ServiceAccount", name: operatorName, namespace };
  const roleRef = (kind: string) => ({ apiGroup: rbacGroup.group, kind, name: operatorName });
  return [
    { type: namespaces, object: { metadata: { name: namespace, labels: { ...partOfLabel } } } },
    { type: serviceAccounts, object: { metadata: meta(operatorName) } },
    { type: clusterRoles, object: { metadata: meta(operatorName, false), rules: clusterRules.map(rbacRule) } },
    {
      type: clusterRoleBindings,
      object: { metadata: meta(operatorName, false), roleRef: roleRef("ClusterRole"), subjects: [subject] },
    },
    { type: roles, object: { metadata: meta(operatorName), rules: namespaceRules.map(rbacRule) } },
    { type: roleBindings, object: { metadata: meta(operatorName), roleRef: roleRef("Role"), subjects: [subject] } },
    ...(options.config === undefined
      ? []
      : [
          {
            type: configMaps,
            object: { metadata: meta(operatorConfigMapName), data: { [operatorConfigKey]: options.config } },
          },
        ]),
    { type: deployments, object: operatorDeployment(options) },
    {
      type: services,
      object: {
        metadata: meta(`${operatorName}-metrics`),
        spec: {
          selector: selectorLabels,
          ports: [{ name: "metrics", port: operatorHealthPort, targetPort: "health", protocol: "TCP" }],
        },
      },
    },
  ];
}
