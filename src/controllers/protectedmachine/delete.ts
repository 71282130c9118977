// The finalizer's work: the machine's agents (and their identities), its replicas, and every
// replicator no other machine uses, before the ProtectedMachine goes.
import type { ProtectedMachine } from "../../api/types.js";
import {
  deployments,
  persistentVolumeClaims,
  pods,
  removeFinalizer,
  secrets,
  services,
  type Deployment,
  type KubeClient,
  type Logger,
} from "../../runtime/index.js";
import { protectedMachines } from "../../api/types.js";
import type { CertificateIssuer } from "../certificates/issuer.js";
import { certificateSecretName } from "../certificates/secret-issuer.js";
import type { MachineMetrics } from "../metrics.js";
import {
  cacheClaimName,
  componentLabel,
  finalizer,
  journalClaimName,
  keySecretName,
  machineLabel,
  machineNamespaceLabel,
  masterTargetName,
  policyLabel,
  streamId,
} from "./names.js";
import { replicationOf } from "./direction.js";
import type { OwnCaches } from "./replicators.js";

export interface DeleteDeps {
  client: KubeClient;
  certificates: CertificateIssuer;
  metrics: MachineMetrics;
  caches: OwnCaches;
  /** Live machines (not being deleted) of a namespace. */
  machinesIn(namespace: string): ProtectedMachine[];
  forgetPeers(name: string, namespace: string): void;
}

/** A master target's Deployment without the given streams (their args, volumes and mounts). */
export function withoutReplicas(deployment: Deployment, streams: ReadonlySet<string>): Deployment {
  const spec = structuredClone(deployment.spec);
  const podSpec = spec?.template.spec;
  const container = podSpec?.containers[0];
  if (spec === undefined || podSpec === undefined || container === undefined) return deployment;
  const args = container.args ?? [];
  const kept: string[] = [];
  const goneMounts = new Set<string>();
  for (let i = 0; i < args.length; i++) {
    const value = args[i + 1] ?? "";
    if (args[i] === "--replica" && streams.has(value.slice(0, value.indexOf("=")))) {
      const path = value.slice(value.indexOf("=") + 1);
      for (const mount of container.volumeMounts ?? []) if (mount.mountPath === path) goneMounts.add(mount.name);
      i++;
      continue;
    }
    kept.push(args[i] ?? "");
  }
  container.args = kept;
  container.volumeMounts = (container.volumeMounts ?? []).filter((mount) => !goneMounts.has(mount.name));
  podSpec.volumes = (podSpec.volumes ?? []).filter((volume) => !goneMounts.has(volume.name));
  return { ...deployment, spec };
}

export async function reconcileDelete(deps: DeleteDeps, machine: ProtectedMachine, log: Logger): Promise<void> {
  const { client, caches } = deps;
  const namespace = machine.metadata.namespace ?? "";
  const { target, policyRef } = machine.spec;
  const mine = (labels: Record<string, string> | undefined) =>
    labels?.[machineLabel] === machine.metadata.name && labels[machineNamespaceLabel] === namespace;

  // Agents first: nothing captures or pushes for this machine any more.
  for (const pod of caches.pods.list(namespace).filter((p) => mine(p.metadata.labels)))
    await client.delete(pods, { name: pod.metadata.name, namespace });
  for (const claim of caches.claims.list(namespace).filter((c) => mine(c.metadata.labels)))
    await client.delete(persistentVolumeClaims, { name: claim.metadata.name, namespace });

  // Its replicas, and the agents' identities (denied from now on).
  const replicaClaims = caches.claims.list(target.namespace).filter((c) => mine(c.metadata.labels));
  const streams = new Set<string>([
    ...(machine.status?.volumes ?? []).flatMap((volume) =>
      volume.claimName === undefined ? [] : [streamId(volume.claimName)],
    ),
    ...replicaClaims.flatMap((claim) => claim.metadata.annotations?.["dr.ksr.io/stream"] ?? []),
  ]);
  for (const stream of streams) await deps.certificates.revokeAgent({ namespace, machineId: stream });

  const mt = masterTargetName(policyRef.name, namespace, target.site);
  const sharing = deps
    .machinesIn(namespace)
    .filter(
      (other) =>
        other.metadata.uid !== machine.metadata.uid &&
        other.spec.policyRef.name === policyRef.name &&
        other.spec.target.namespace === target.namespace &&
        other.spec.target.site === target.site,
    );
  const deployment = caches.deployments.get(mt, target.namespace);
  const trimmed = deployment === undefined ? undefined : withoutReplicas(deployment, streams);
  const remaining = (trimmed?.spec?.template.spec?.containers[0]?.args ?? []).filter((arg) => arg === "--replica");
  if (sharing.length > 0 && remaining.length > 0) {
    if (trimmed !== undefined && JSON.stringify(trimmed.spec) !== JSON.stringify(deployment?.spec))
      await client.patch(deployments, { name: mt, namespace: target.namespace }, { spec: trimmed.spec }, "merge");
  } else {
    // The last replica of this master target: it and its process servers go, with their storage
    // (a sharing machine that has no replica yet places them again when it gets one).
    await deleteServer(deps, "master-target", mt, target.namespace, journalClaimName(mt));
    await client.delete(secrets, { name: keySecretName(mt), namespace: target.namespace });
    const processServers = caches.deployments
      .list(namespace)
      .filter(
        (d) =>
          d.metadata.labels?.[componentLabel] === "process-server" &&
          d.metadata.labels[policyLabel] === policyRef.name &&
          (d.spec?.template.spec?.containers[0]?.args ?? []).some((arg) =>
            arg.startsWith(`${mt}.${target.namespace}.`),
          ),
      );
    for (const ps of processServers)
      await deleteServer(deps, "process-server", ps.metadata.name, namespace, cacheClaimName(ps.metadata.name));
    await client.delete(secrets, { name: keySecretName(mt), namespace });
  }
  // Replica claims last: the master target no longer mounts them. After a failover (or while
  // replicating back) they hold the workload's live data, so they stay.
  const replication = replicationOf(machine);
  const live = replication.direction === "Reverse" || replication.failedOverBy !== undefined;
  if (!live)
    for (const claim of replicaClaims)
      await client.delete(persistentVolumeClaims, { name: claim.metadata.name, namespace: target.namespace });

  deps.metrics.forget({ namespace, machine: machine.metadata.name });
  await removeFinalizer(client, protectedMachines, machine, finalizer);
  log.info({ streams: [...streams] }, "protection removed");
}

async function deleteServer(
  deps: DeleteDeps,
  role: "process-server" | "master-target",
  name: string,
  namespace: string,
  claim: string,
): Promise<void> {
  await deps.client.delete(deployments, { name, namespace });
  await deps.client.delete(services, { name, namespace });
  await deps.client.delete(persistentVolumeClaims, { name: claim, namespace });
  deps.forgetPeers(name, namespace);
  // The role's certificate serves every server of that role in the namespace: it goes with the last.
  const others = deps.caches.deployments
    .list(namespace)
    .filter((d) => d.metadata.name !== name && d.metadata.labels?.[componentLabel] === role);
  if (others.length === 0) await deps.client.delete(secrets, { name: certificateSecretName({ role }), namespace });
}
