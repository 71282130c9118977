// Placement (DESIGN.md §3) as pure functions: the objects of a process server, a master target and
// an agent, built from what the controller resolved. Everything runs the project's image as
// `ksr replicator ...`; only the agent gets capabilities beyond the defaults, and no replicator
// gets API credentials (none of them calls the API).
import type { V1Container, V1SecurityContext, V1Volume, V1VolumeMount } from "@kubernetes/client-node";
import type { Deployment, OwnerReference, PersistentVolumeClaim, Pod, Service } from "../../runtime/index.js";
import { revocationListKey, revocationListName } from "../certificates/secret-issuer.js";
import {
  barrierBasePort,
  cacheClaimName,
  commonLabels,
  journalClaimName,
  replicatorPort,
  siteLabel,
  type Component,
} from "./names.js";

const tlsDir = "/etc/ksr/tls";
const keyDir = "/etc/ksr/key";
const revokedDir = "/etc/ksr/revoked";

/** Secret holding a replicator's mutual-TLS identity (ca.crt, tls.crt, tls.key). */
export interface TlsSecret {
  secretName: string;
}

export interface KeySecret {
  secretName: string;
  key: string;
}

interface Common {
  name: string;
  namespace: string;
  labels: Record<string, string>;
  ownerReferences?: OwnerReference[];
}

/** A replicator's pod: it runs the project's image, the one the operator was told to use. */
interface Replicator extends Common {
  image: string;
}

export interface ProcessServerInput extends Replicator {
  site: string;
  /** host:port of the master target it forwards to. */
  masterTarget: string;
  tls: TlsSecret;
  encryptionKey: KeySecret;
  /** Policy flags (compression, bandwidth limit). */
  flags: readonly string[];
  cacheSize: string;
}

export interface MasterTargetInput extends Replicator {
  site: string;
  /** Every stream it applies, with its replica claim, sorted by machine id. */
  replicas: readonly { machineId: string; claimName: string }[];
  tls: TlsSecret;
  encryptionKey: KeySecret;
  /** Policy flags (retention). */
  flags: readonly string[];
  journalSize: string;
  storageClassName?: string;
}

export interface AgentStream {
  machineId: string;
  claimName: string;
  tls: TlsSecret;
  mode: "tree" | "block";
}

export interface AgentInput extends Replicator {
  /** The node of the workload pod the agent sits beside. */
  nodeName: string;
  streams: readonly AgentStream[];
  processServer: string;
  stateClaimName: string;
  /** Policy flags (point cadences); hooks add --hooks-file. */
  flags: readonly string[];
  hooksConfigMap?: string;
}

export interface ReplicaClaimInput extends Common {
  size: string;
  storageClassName?: string;
  volumeMode?: string;
}

const replicatorSecurity: V1SecurityContext = {
  runAsUser: 0,
  runAsGroup: 0,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ["ALL"] },
  seccompProfile: { type: "RuntimeDefault" },
};

/**
 * The master target recreates numeric owners, modes, special files and file capabilities
 * (DESIGN.md §5, fidelity), which needs these capabilities and nothing else.
 */
const masterTargetSecurity: V1SecurityContext = {
  runAsUser: 0,
  runAsGroup: 0,
  allowPrivilegeEscalation: false,
  readOnlyRootFilesystem: true,
  seccompProfile: { type: "RuntimeDefault" },
  capabilities: { drop: ["ALL"], add: ["CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "MKNOD", "SETFCAP"] },
};

/**
 * The agent reads every file of the volumes it captures, whoever owns them (DAC_READ_SEARCH), and
 * fanotify write-range capture needs SYS_ADMIN (DESIGN.md §5). Its volumes are mounted read-only.
 * allowPrivilegeEscalation stays unset: the API refuses false together with SYS_ADMIN.
 */
const agentSecurity: V1SecurityContext = {
  runAsUser: 0,
  runAsGroup: 0,
  readOnlyRootFilesystem: true,
  capabilities: { drop: ["ALL"], add: ["DAC_READ_SEARCH", "SYS_ADMIN"] },
  seccompProfile: { type: "RuntimeDefault" },
};

function metadata(input: Common, component: Component) {
  return {
    name: input.name,
    namespace: input.namespace,
    labels: { ...commonLabels(component), ...input.labels },
    ...(input.ownerReferences === undefined ? {} : { ownerReferences: input.ownerReferences }),
  };
}

function tlsArgs(dir: string): string[] {
  return ["--ca", `${dir}/ca.crt`, "--cert", `${dir}/tls.crt`, "--key", `${dir}/tls.key`];
}

function secretVolume(name: string, secretName: string): V1Volume {
  return { name, secret: { secretName, defaultMode: 0o400 } };
}

function claimVolume(name: string, claimName: string, readOnly = false): V1Volume {
  return { name, persistentVolumeClaim: { claimName, readOnly } };
}

function serverPorts() {
  return [{ name: "grpc", containerPort: replicatorPort, protocol: "TCP" }];
}

const serverProbe = { tcpSocket: { port: "grpc" }, periodSeconds: 5, failureThreshold: 3 };

function server(
  input: Common & { site: string },
  component: Component,
  container: V1Container,
  volumes: V1Volume[],
): Deployment {
  const selector = { ...input.labels, ...commonLabels(component) };
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: metadata(input, component),
    spec: {
      replicas: 1,
      // One process owns the cache or the journal: the old pod must be gone before the new one starts.
      strategy: { type: "Recreate" },
      selector: { matchLabels: selector },
      template: {
        metadata: { labels: selector },
        spec: {
          automountServiceAccountToken: false,
          enableServiceLinks: false,
          nodeSelector: { [siteLabel]: input.site },
          terminationGracePeriodSeconds: 30,
          containers: [container],
          volumes,
        },
      },
    },
  };
}

function service(input: Common, component: Component): Service {
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: metadata(input, component),
    spec: {
      selector: { ...input.labels, ...commonLabels(component) },
      ports: [{ name: "grpc", port: replicatorPort, targetPort: "grpc", protocol: "TCP" }],
    },
  };
}

function claim(input: Common, component: Component, size: string, storageClassName?: string, volumeMode?: string) {
  const result: PersistentVolumeClaim = {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: metadata(input, component),
    spec: {
      accessModes: ["ReadWriteOnce"],
      resources: { requests: { storage: size } },
      ...(storageClassName === undefined ? {} : { storageClassName }),
      ...(volumeMode === undefined ? {} : { volumeMode }),
    },
  };
  return result;
}

export function processServerObjects(input: ProcessServerInput): {
  deployment: Deployment;
  service: Service;
  cacheClaim: PersistentVolumeClaim;
} {
  const cache = cacheClaimName(input.name);
  const container: V1Container = {
    name: "process-server",
    image: input.image,
    command: ["ksr", "replicator", "process-server"],
    args: [
      "--listen",
      `0.0.0.0:${replicatorPort}`,
      "--cache",
      "/var/lib/ksr/cache",
      "--master-target",
      input.masterTarget,
      "--encryption-key",
      `${keyDir}/${input.encryptionKey.key}`,
      ...tlsArgs(tlsDir),
      "--revoked-serials",
      `${revokedDir}/${revocationListKey}`,
      ...input.flags,
    ],
    ports: serverPorts(),
    readinessProbe: serverProbe,
    resources: { requests: { cpu: "100m", memory: "128Mi" } },
    securityContext: replicatorSecurity,
    volumeMounts: [
      { name: "cache", mountPath: "/var/lib/ksr/cache" },
      { name: "revoked", mountPath: revokedDir, readOnly: true },
      { name: "tls", mountPath: tlsDir, readOnly: true },
      { name: "key", mountPath: keyDir, readOnly: true },
    ],
  };
  return {
    deployment: server(input, "process-server", container, [
      claimVolume("cache", cache),
      // Agents whose machine was deleted are refused from the moment the issuer lists them.
      { name: "revoked", configMap: { name: revocationListName, optional: true, defaultMode: 0o444 } },
      secretVolume("tls", input.tls.secretName),
      secretVolume("key", input.encryptionKey.secretName),
    ]),
    service: service(input, "process-server"),
    cacheClaim: claim({ ...input, name: cache }, "process-server", input.cacheSize),
  };
}

export function masterTargetObjects(input: MasterTargetInput): {
  deployment: Deployment;
  service: Service;
  journalClaim: PersistentVolumeClaim;
} {
  const journal = journalClaimName(input.name);
  const replicaMounts: V1VolumeMount[] = input.replicas.map((replica, index) => ({
    name: `replica-${index}`,
    mountPath: `/var/lib/ksr/replicas/${replica.machineId}`,
  }));
  const container: V1Container = {
    name: "master-target",
    image: input.image,
    command: ["ksr", "replicator", "master-target"],
    args: [
      "--listen",
      `0.0.0.0:${replicatorPort}`,
      "--state",
      "/var/lib/ksr/state",
      "--encryption-key",
      `${keyDir}/${input.encryptionKey.key}`,
      ...tlsArgs(tlsDir),
      ...input.replicas.flatMap((replica) => [
        "--replica",
        `${replica.machineId}=/var/lib/ksr/replicas/${replica.machineId}`,
      ]),
      ...input.flags,
    ],
    ports: serverPorts(),
    readinessProbe: serverProbe,
    resources: { requests: { cpu: "100m", memory: "128Mi" } },
    securityContext: masterTargetSecurity,
    volumeMounts: [
      { name: "journal", mountPath: "/var/lib/ksr/state" },
      { name: "tls", mountPath: tlsDir, readOnly: true },
      { name: "key", mountPath: keyDir, readOnly: true },
      ...replicaMounts,
    ],
  };
  return {
    deployment: server(input, "master-target", container, [
      claimVolume("journal", journal),
      secretVolume("tls", input.tls.secretName),
      secretVolume("key", input.encryptionKey.secretName),
      ...input.replicas.map((replica, index) => claimVolume(`replica-${index}`, replica.claimName)),
    ]),
    service: service(input, "master-target"),
    journalClaim: claim({ ...input, name: journal }, "master-target", input.journalSize, input.storageClassName),
  };
}

/** A replica claim in the target namespace, named as the recovered workload will claim it. */
export function replicaClaim(input: ReplicaClaimInput): PersistentVolumeClaim {
  return claim(input, "master-target", input.size, input.storageClassName, input.volumeMode);
}

/** The agent's state claim: its manifests survive a restart, so it resumes instead of resyncing. */
export function agentStateClaim(input: Common): PersistentVolumeClaim {
  return claim(input, "agent", "1Gi");
}

export function agentPod(input: AgentInput): Pod {
  const containers = input.streams.map((stream, index): V1Container => {
    const tls = `${tlsDir}/${index}`;
    return {
      name: `agent-${index}`,
      image: input.image,
      command: ["ksr", "replicator", "agent"],
      args: [
        "--machine",
        stream.machineId,
        "--mode",
        stream.mode,
        "--source",
        `/var/lib/ksr/volumes/${stream.claimName}`,
        "--state",
        "/var/lib/ksr/state",
        "--process-server",
        input.processServer,
        "--barrier-listen",
        `0.0.0.0:${barrierBasePort + index}`,
        ...tlsArgs(tls),
        ...input.flags,
        ...(input.hooksConfigMap === undefined ? [] : ["--hooks-file", "/etc/ksr/hooks/hooks.json"]),
      ],
      ports: [{ name: `barrier-${index}`, containerPort: barrierBasePort + index, protocol: "TCP" }],
      resources: { requests: { cpu: "50m", memory: "64Mi" } },
      securityContext: agentSecurity,
      volumeMounts: [
        { name: `source-${index}`, mountPath: `/var/lib/ksr/volumes/${stream.claimName}`, readOnly: true },
        { name: "state", mountPath: "/var/lib/ksr/state" },
        { name: `tls-${index}`, mountPath: tls, readOnly: true },
        ...(input.hooksConfigMap === undefined ? [] : [{ name: "hooks", mountPath: "/etc/ksr/hooks", readOnly: true }]),
      ],
    };
  });
  return {
    apiVersion: "v1",
    kind: "Pod",
    metadata: metadata(input, "agent"),
    spec: {
      // Beside the workload's pod, pinned as a DaemonSet pins its pods: the scheduler still binds the
      // state claim on that node.
      affinity: {
        nodeAffinity: {
          requiredDuringSchedulingIgnoredDuringExecution: {
            nodeSelectorTerms: [{ matchFields: [{ key: "metadata.name", operator: "In", values: [input.nodeName] }] }],
          },
        },
      },
      automountServiceAccountToken: false,
      enableServiceLinks: false,
      restartPolicy: "Always",
      terminationGracePeriodSeconds: 30,
      containers,
      volumes: [
        ...input.streams.map((stream, index) => claimVolume(`source-${index}`, stream.claimName, true)),
        ...input.streams.map((stream, index) => secretVolume(`tls-${index}`, stream.tls.secretName)),
        claimVolume("state", input.stateClaimName),
        ...(input.hooksConfigMap === undefined
          ? []
          : [{ name: "hooks", configMap: { name: input.hooksConfigMap, defaultMode: 0o444 } }]),
      ],
    },
  };
}
