// Puts a machine's plan in place: keys and certificates first, then the master target (with a
// replica claim per protected claim), the process server and the agents. Every step is
// idempotent and nothing is created before the plan passed every check (plan.ts).
import { randomBytes } from "node:crypto";
import type { ProtectedMachine, QuiesceHook } from "../../api/types.js";
import {
  controllerReference,
  deployments,
  persistentVolumeClaims,
  pods,
  secrets,
  services,
  configMaps,
  type Deployment,
  type Informer,
  type KubeClient,
  type PersistentVolumeClaim,
  type Pod,
  type Secret,
  type Service,
  type ConfigMap,
} from "../../runtime/index.js";
import type { CertificateIssuer } from "../certificates/issuer.js";
import { apply } from "./apply.js";
import {
  agentStateClaimName,
  hooksConfigMapName,
  keySecretName,
  machineLabel,
  machineNamespaceLabel,
  policyLabel,
  replicatorLabel,
  replicatorPort,
  commonLabels,
} from "./names.js";
import {
  agentPod,
  agentStateClaim,
  masterTargetObjects,
  processServerObjects,
  replicaClaim,
  type AgentStream,
} from "./placement.js";
import type { Plan } from "./plan.js";
import type { PeerAddress } from "./replicator-clients.js";
import { policyDurationMs, replicatorFlags, type ReplicatorFlags } from "../replicationpolicy/flags.js";

/** The informers the controller reads its own objects from. */
export interface OwnCaches {
  pods: Informer<Pod>;
  claims: Informer<PersistentVolumeClaim>;
  deployments: Informer<Deployment>;
  services: Informer<Service>;
}

export interface ReplicatorDeps {
  client: KubeClient;
  /** The image the replicator pods run. */
  image: string;
  certificates: CertificateIssuer;
  caches: OwnCaches;
}

/** Service DNS name of a replicator: what its certificate carries and what peers dial. */
const streamAnnotation = "dr.ksr.io/stream";

export function serviceHost(name: string, namespace: string): string {
  return `${name}.${namespace}.svc`;
}

/**
 * The names a server certificate carries. One Secret serves every replicator of a role in a
 * namespace (the issuer keys it by role), so it names them all: the namespace's Services.
 */
export function serviceDnsNames(namespace: string): string[] {
  return [`*.${namespace}.svc`, `*.${namespace}.svc.cluster.local`];
}

/**
 * The address a replicator, or the operator, dials another one at: its Service's DNS name, which
 * cluster DNS and kube-proxy resolve and route (kind, and `ksr local` with its pod network), so
 * no one needs API access to find a peer.
 */
export function peerFlag(name: string, namespace: string): string {
  return `${serviceHost(name, namespace)}:${replicatorPort}`;
}

/** peerFlag as the operator's gRPC clients take it, checked against the name the certificate carries. */
export function servicePeer(name: string, namespace: string): PeerAddress {
  return { address: peerFlag(name, namespace), serverName: serviceHost(name, namespace) };
}

/** Labels that say which machine an object belongs to (a shared replicator carries its own). */
export function machineLabels(machine: ProtectedMachine): Record<string, string> {
  return {
    [machineLabel]: machine.metadata.name,
    [machineNamespaceLabel]: machine.metadata.namespace ?? "",
  };
}

/** The key both ends of the data path share: the policy's own, or one the operator made for the pair. */
async function ensureKeys(deps: ReplicatorDeps, machine: ProtectedMachine, plan: Plan): Promise<void> {
  const namespace = machine.metadata.namespace ?? "";
  const name = keySecretName(plan.masterTarget.name);
  const ref = plan.policy.spec.encryption?.keySecretRef;
  let key: string | undefined;
  if (ref !== undefined) {
    const home = plan.reverse?.homeNamespace ?? namespace;
    const secret = await deps.client.get(secrets, ref.name, home);
    key = secret?.data?.[ref.key];
    if (key === undefined || Buffer.from(key, "base64").length !== 32)
      throw new Error(
        `the policy's encryption key (Secret ${home}/${ref.name}, key ${ref.key}) is missing or not 32 bytes`,
      );
  }
  await ensureSharedKey(deps.client, {
    name,
    namespace,
    copyNamespace: plan.masterTarget.namespace,
    labels: { ...commonLabels("master-target"), [replicatorLabel]: plan.masterTarget.name },
    ...(key === undefined ? {} : { key }),
  });
}

/**
 * The key Secret in the source namespace, created unless there, and its copy beside the master
 * target. The copy takes the key the source Secret holds once created, never this call's own:
 * machines sharing the pair reconcile concurrently, and each would otherwise copy the key it made
 * up while another's won the source (the master target would then refuse every frame).
 */
export async function ensureSharedKey(
  client: KubeClient,
  options: { name: string; namespace: string; copyNamespace: string; labels: Record<string, string>; key?: string },
): Promise<void> {
  const { name, namespace, copyNamespace, labels } = options;
  const secret = (ns: string, key: string): Secret => ({
    apiVersion: "v1",
    kind: "Secret",
    type: "Opaque",
    metadata: { name, namespace: ns, labels },
    data: { key },
  });
  const source = await client.get(secrets, name, namespace);
  const proposed = options.key ?? source?.data?.key ?? randomBytes(32).toString("base64");
  const written = await apply(client, secrets, secret(namespace, proposed), source, "keep");
  // Read again only when another reconcile created it between our read and our create.
  const key =
    written === "created"
      ? proposed
      : (source?.data?.key ?? (await client.get(secrets, name, namespace))?.data?.key ?? proposed);
  const copy = await client.get(secrets, name, copyNamespace);
  await apply(client, secrets, secret(copyNamespace, key), copy, "keep");
}

export interface Placed {
  processServer?: { name: string; namespace: string };
  masterTarget: { name: string; namespace: string };
}

export async function ensureReplicators(
  deps: ReplicatorDeps,
  machine: ProtectedMachine,
  plan: Plan,
  claimSizes: ReadonlyMap<string, { size: string; volumeMode?: string }>,
): Promise<Placed> {
  const { client, caches, certificates } = deps;
  const namespace = machine.metadata.namespace ?? "";
  const mt = plan.masterTarget;
  const policyName = machine.spec.policyRef.name;
  const hooks = machine.spec.source.quiesce;
  const httpHooks = hooks !== undefined && hooks.pre.http !== undefined;
  const flags = agentFlagsFor(replicatorFlags(plan.policy.spec), httpHooks);
  await ensureKeys(deps, machine, plan);
  const encryptionKey = { secretName: keySecretName(mt.name), key: "key" };

  // Master target: a replica claim per protected claim, then the server over all its replicas.
  const sharedLabels = (name: string) => ({ [replicatorLabel]: name, [policyLabel]: policyName });
  for (const volume of plan.volumes) {
    const size = claimSizes.get(volume.claimName);
    if (size === undefined) continue; // the source claim does not exist yet (a StatefulSet's next ordinal)
    const desired = replicaClaim({
      name: volume.replicaClaimName,
      namespace: mt.namespace,
      labels: { ...sharedLabels(mt.name), ...machineLabels(machine) },
      size: size.size,
      ...(plan.storageClassName === undefined ? {} : { storageClassName: plan.storageClassName }),
      ...(size.volumeMode === undefined ? {} : { volumeMode: size.volumeMode }),
    });
    desired.metadata.annotations = { [streamAnnotation]: volume.machineId };
    const existing = caches.claims.get(volume.replicaClaimName, mt.namespace);
    await apply(client, persistentVolumeClaims, desired, existing, "keep");
    // A claim that already holds data (the original volume after a reprotect, or a replica in a new
    // epoch) is kept as it is, only marked as this master target's replica of the new stream.
    if (existing !== undefined && existing.metadata.annotations?.[streamAnnotation] !== volume.machineId)
      await client.patch(
        persistentVolumeClaims,
        { name: volume.replicaClaimName, namespace: mt.namespace },
        {
          metadata: {
            labels: sharedLabels(mt.name),
            annotations: { [streamAnnotation]: volume.machineId },
          },
        },
        "merge",
      );
  }
  const replicas = masterTargetReplicas(caches.claims, mt, [
    ...plan.volumes
      .filter((volume) => claimSizes.has(volume.claimName))
      .map((volume) => ({ machineId: volume.machineId, claimName: volume.replicaClaimName })),
  ]);
  if (replicas.length > 0) {
    const tls = await certificates.ensureReplicatorCertificate({
      namespace: mt.namespace,
      role: "master-target",
      dnsNames: serviceDnsNames(mt.namespace),
    });
    const objects = masterTargetObjects({
      image: deps.image,
      name: mt.name,
      namespace: mt.namespace,
      labels: sharedLabels(mt.name),
      site: machine.spec.target.site,
      replicas,
      tls: { secretName: tls },
      encryptionKey,
      flags: flags.masterTarget,
      journalSize: "10Gi",
      ...(plan.storageClassName === undefined ? {} : { storageClassName: plan.storageClassName }),
    });
    await apply(
      client,
      persistentVolumeClaims,
      objects.journalClaim,
      caches.claims.get(objects.journalClaim.metadata.name, mt.namespace),
      "keep",
    );
    await apply(client, services, objects.service, caches.services.get(mt.name, mt.namespace), "patch");
    await apply(client, deployments, objects.deployment, caches.deployments.get(mt.name, mt.namespace), "patch");
  }
  if (plan.sourceSite === undefined) return { masterTarget: mt };

  // Process server of the source site.
  const ps = { name: plan.processServer, namespace };
  const psTls = await certificates.ensureReplicatorCertificate({
    namespace,
    role: "process-server",
    dnsNames: serviceDnsNames(namespace),
  });
  const psObjects = processServerObjects({
    ...ps,
    image: deps.image,
    labels: sharedLabels(ps.name),
    site: plan.sourceSite,
    masterTarget: peerFlag(mt.name, mt.namespace),
    tls: { secretName: psTls },
    encryptionKey,
    flags: flags.processServer,
    cacheSize: "10Gi",
  });
  await apply(
    client,
    persistentVolumeClaims,
    psObjects.cacheClaim,
    caches.claims.get(psObjects.cacheClaim.metadata.name, namespace),
    "keep",
  );
  await apply(client, services, psObjects.service, caches.services.get(ps.name, namespace), "patch");
  await apply(client, deployments, psObjects.deployment, caches.deployments.get(ps.name, namespace), "patch");

  // Agents beside the workload's pods; agents of pods that are gone go too.
  // Owner references do not cross namespaces: reversed, the agents are removed by label instead.
  const owner = plan.reverse === undefined ? [controllerReference(machine)] : [];
  for (const agent of plan.agents) {
    const streams: AgentStream[] = [];
    for (const volume of agent.volumes) {
      const secretName = await certificates.ensureReplicatorCertificate({
        namespace,
        role: "agent",
        machineId: volume.machineId,
        ...(plan.reverse === undefined ? { owner: machine } : {}),
      });
      streams.push({
        machineId: volume.machineId,
        claimName: volume.claimName,
        tls: { secretName },
        mode: claimSizes.get(volume.claimName)?.volumeMode === "Block" ? "block" : "tree",
      });
    }
    const labels = { ...machineLabels(machine), [replicatorLabel]: agent.name };
    const stateClaim = agentStateClaim({
      name: agentStateClaimName(agent.podName),
      namespace,
      labels,
      ownerReferences: owner,
    });
    await apply(
      client,
      persistentVolumeClaims,
      stateClaim,
      caches.claims.get(stateClaim.metadata.name, namespace),
      "keep",
    );
    let hooksConfigMap: string | undefined;
    if (httpHooks && agent.podIP !== undefined) {
      hooksConfigMap = hooksConfigMapName(agent.name);
      const hooksFile = agentHooksFile(hooks, agent.podIP);
      const desired: ConfigMap = {
        apiVersion: "v1",
        kind: "ConfigMap",
        metadata: { name: hooksConfigMap, namespace, labels, ownerReferences: owner },
        data: { "hooks.json": JSON.stringify(hooksFile) },
      };
      await apply(client, configMaps, desired, await client.get(configMaps, hooksConfigMap, namespace), "patch");
    }
    const desired = agentPod({
      image: deps.image,
      name: agent.name,
      namespace,
      labels,
      ownerReferences: owner,
      nodeName: agent.nodeName,
      streams,
      processServer: peerFlag(ps.name, namespace),
      stateClaimName: stateClaim.metadata.name,
      flags: flags.agent,
      ...(hooksConfigMap === undefined ? {} : { hooksConfigMap }),
    });
    await apply(client, pods, desired, caches.pods.get(agent.name, namespace), "recreate");
  }
  // Agents of pods that are gone or moved away go too (their replacements were placed above).
  const wanted = new Set(plan.agents.map((agent) => agent.name));
  if (plan.keepAgents !== true)
    for (const pod of caches.pods.list(namespace))
      if (
        pod.metadata.labels?.["app.kubernetes.io/component"] === "agent" &&
        (pod.metadata.ownerReferences?.some((ref) => ref.uid === machine.metadata.uid) === true ||
          (plan.reverse !== undefined && isMachines(pod, machine))) &&
        !wanted.has(pod.metadata.name) &&
        pod.metadata.deletionTimestamp === undefined
      )
        await client.delete(pods, { name: pod.metadata.name, namespace });
  return { processServer: ps, masterTarget: mt };
}

function isMachines(object: { metadata: { labels?: Record<string, string> } }, machine: ProtectedMachine): boolean {
  const labels = object.metadata.labels;
  return (
    labels?.[machineLabel] === machine.metadata.name && labels[machineNamespaceLabel] === machine.metadata.namespace
  );
}

/** Every replica a master target holds: its claims in the cache plus the ones just created. */
export function masterTargetReplicas(
  claims: Informer<PersistentVolumeClaim>,
  mt: { name: string; namespace: string },
  fresh: readonly { machineId: string; claimName: string }[],
): { machineId: string; claimName: string }[] {
  const byId = new Map<string, string>();
  for (const claim of claims.list(mt.namespace)) {
    const stream = claim.metadata.annotations?.[streamAnnotation];
    if (claim.metadata.labels?.[replicatorLabel] !== mt.name || stream === undefined) continue;
    if (claim.metadata.deletionTimestamp !== undefined) continue;
    byId.set(stream, claim.metadata.name);
  }
  for (const replica of fresh) byId.set(replica.machineId, replica.claimName);
  return [...byId.entries()]
    .map(([machineId, claimName]) => ({ machineId, claimName }))
    .sort((a, b) => a.machineId.localeCompare(b.machineId));
}

/** The agent's hooks file for HTTP hooks: the workload pod's own address and port. */
export function agentHooksFile(quiesce: NonNullable<ProtectedMachine["spec"]["source"]["quiesce"]>, podIP: string) {
  const url = (hook: QuiesceHook) =>
    hook.http === undefined
      ? undefined
      : {
          http: `${hook.http.scheme.toLowerCase()}://${podIP}:${hook.http.port}${hook.http.path}`,
          method: hook.http.method,
        };
  const pre = url(quiesce.pre);
  const post = quiesce.post === undefined ? undefined : url(quiesce.post);
  const timeoutSeconds = Math.max(
    1,
    Math.round(policyDurationMs(quiesce.timeout, "spec.source.quiesce.timeout") / 1000),
  );
  return {
    hooks: [
      {
        name: "workload",
        timeoutSeconds,
        ...(pre === undefined ? {} : { pre }),
        ...(post === undefined ? {} : { post }),
      },
    ],
  };
}

/** Without hooks nothing is quiesced, so the agent refuses an app cadence (the machine's status says why). */
function agentFlagsFor(flags: ReplicatorFlags, hooks: boolean): ReplicatorFlags {
  if (hooks) return flags;
  const agent = [...flags.agent];
  const at = agent.indexOf("--app-point-interval");
  if (at >= 0) agent.splice(at, 2);
  return { ...flags, agent };
}
