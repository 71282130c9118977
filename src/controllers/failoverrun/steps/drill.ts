// A drill's recovery of one machine: the chosen point of every volume is hydrated from the master
// target into new claims of the drill namespace (replication goes on), by a Job on the site where
// the points are taken (the recovery site; the original one after a reprotect) that runs `ksr replicator hydrate` with a certificate that may only read that machine's
// points; then the workload comes up there on the new claims. Every object carries the run's
// labels, so cleanup deletes exactly them. Executing again only reads what exists: the Job
// resumes an interrupted stream from the cursor it keeps on its own state claim.
import type { V1Container, V1NetworkPolicyIngressRule, V1Volume } from "@kubernetes/client-node";
import type { FailoverRun, ProtectedMachine } from "../../../api/types.js";
import {
  isAlreadyExists,
  jobs,
  networkPolicies,
  persistentVolumeClaims,
  pods,
  secrets,
  type Job,
  type KubeClient,
  type NetworkPolicy,
  type PersistentVolumeClaim,
} from "../../../runtime/index.js";
import { certificateSecretName } from "../../certificates/secret-issuer.js";
import { replicatedView } from "../../protectedmachine/direction.js";
import { componentLabel, replicatorPort, shorten, siteLabel } from "../../protectedmachine/names.js";
import type { StepOutcome } from "../machine.js";
import type { ChosenPoint } from "./points.js";
import { replicatedVolumes, type RecoveryPointAccess, type ReplicatedVolume } from "./replicas.js";
import { ensureJob } from "./script.js";
import { runLabels } from "./types.js";
import { ensureRecovered } from "./workload.js";

export const hydratorComponent = "hydrator";
const restoreDir = "/restore";
const stateDir = "/var/lib/ksr/hydrate";
const tlsDir = "/etc/ksr/tls";

export const hydrationJobName = (machine: string) => shorten(`ksr-hydrate-${machine}`, 63);
const stateClaimName = (machine: string) => shorten(`ksr-hydrate-${machine}-state`, 63);

const ignoreExisting = (error: unknown) => {
  if (!isAlreadyExists(error)) throw error;
};

function labels(run: FailoverRun, machine: ProtectedMachine): Record<string, string> {
  return { ...runLabels(run), [componentLabel]: hydratorComponent, "dr.ksr.io/machine": machine.metadata.name };
}

/** The drill's copy of a volume's claim: the source's size and modes, named as the recovered workload claims it. */
async function drillClaim(
  client: KubeClient,
  run: FailoverRun,
  machine: ProtectedMachine,
  volume: ReplicatedVolume,
  namespace: string,
): Promise<PersistentVolumeClaim> {
  const source = await client.get(persistentVolumeClaims, volume.claimName, machine.metadata.namespace);
  const storageClassName = machine.spec.target.storageClassName ?? source?.spec?.storageClassName;
  return {
    apiVersion: "v1",
    kind: "PersistentVolumeClaim",
    metadata: { name: volume.replicaClaimName, namespace, labels: runLabels(run) },
    spec: {
      accessModes: source?.spec?.accessModes ?? ["ReadWriteOnce"],
      resources: { requests: { storage: source?.spec?.resources?.requests?.storage ?? "1Gi" } },
      ...(storageClassName === undefined ? {} : { storageClassName }),
    },
  };
}

type PolicySpec = NonNullable<NetworkPolicy["spec"]>;

async function ensurePolicy(client: KubeClient, run: FailoverRun, namespace: string, name: string, spec: PolicySpec) {
  const policy: NetworkPolicy = {
    apiVersion: "networking.k8s.io/v1",
    kind: "NetworkPolicy",
    metadata: { name, namespace, labels: runLabels(run) },
    spec,
  };
  await client.create(networkPolicies, policy).catch(ignoreExisting);
}

/** Isolated drills: nothing in or out of the namespace except within it and DNS. */
export async function ensureIsolation(client: KubeClient, run: FailoverRun, namespace: string): Promise<void> {
  if (run.spec.drill?.isolation === "None") return;
  await ensurePolicy(client, run, namespace, "ksr-drill-isolation", {
    podSelector: {},
    policyTypes: ["Ingress", "Egress"],
    // The client sends JSON as written: the API's field is "from" (client-node's model names it _from,
    // which the API server would drop, leaving a rule that admits everyone).
    ingress: [{ from: [{ podSelector: {} }] } as unknown as V1NetworkPolicyIngressRule],
    egress: [
      { to: [{ podSelector: {} }] },
      {
        ports: [
          { protocol: "UDP", port: 53 },
          { protocol: "TCP", port: 53 },
        ],
      },
    ],
  });
}

/** The hydration pods' one way out of an isolated drill namespace: the master target's gRPC port. */
function ensureHydrationEgress(client: KubeClient, run: FailoverRun, machine: ProtectedMachine, namespace: string) {
  const target = machine.spec.target.namespace;
  return ensurePolicy(client, run, namespace, "ksr-drill-hydration", {
    podSelector: { matchLabels: { [componentLabel]: hydratorComponent } },
    policyTypes: ["Egress"],
    egress: [
      {
        to: [{ namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": target } } }],
        ports: [{ protocol: "TCP", port: replicatorPort }],
      },
    ],
  });
}

export function hydrationJob(options: {
  run: FailoverRun;
  machine: ProtectedMachine;
  namespace: string;
  masterTarget: string;
  image: string;
  volumes: readonly { volume: ReplicatedVolume; chosen: ChosenPoint; secretName: string }[];
}): Job {
  const { run, machine, namespace } = options;
  const volumes: V1Volume[] = [
    { name: "state", persistentVolumeClaim: { claimName: stateClaimName(machine.metadata.name) } },
  ];
  const containers: V1Container[] = options.volumes.map(({ volume, chosen, secretName }, index) => {
    volumes.push(
      { name: `data-${index}`, persistentVolumeClaim: { claimName: volume.replicaClaimName } },
      { name: `tls-${index}`, secret: { secretName, defaultMode: 0o400 } },
    );
    return {
      name: `hydrate-${index}`,
      image: options.image,
      command: ["ksr", "replicator", "hydrate"],
      args: [
        "--master-target",
        options.masterTarget,
        "--machine",
        chosen.machineId,
        "--point",
        chosen.point.id,
        "--dest",
        `${restoreDir}/${index}`,
        "--progress",
        `${stateDir}/${index}.json`,
        "--ca",
        `${tlsDir}/${index}/ca.crt`,
        "--cert",
        `${tlsDir}/${index}/tls.crt`,
        "--key",
        `${tlsDir}/${index}/tls.key`,
      ],
      terminationMessagePolicy: "FallbackToLogsOnError",
      volumeMounts: [
        { name: `data-${index}`, mountPath: `${restoreDir}/${index}` },
        { name: "state", mountPath: stateDir },
        { name: `tls-${index}`, mountPath: `${tlsDir}/${index}`, readOnly: true },
      ],
    };
  });
  return {
    apiVersion: "batch/v1",
    kind: "Job",
    metadata: { name: hydrationJobName(machine.metadata.name), namespace, labels: labels(run, machine) },
    spec: {
      backoffLimit: 4,
      template: {
        metadata: { labels: labels(run, machine) },
        spec: {
          restartPolicy: "Never",
          terminationGracePeriodSeconds: 5,
          nodeSelector: { [siteLabel]: machine.spec.target.site },
          automountServiceAccountToken: false,
          containers,
          volumes,
        },
      },
    },
  };
}

/** Deletes the hydrators' certificates: once the data is in, nothing in the drill may read points. */
export async function deleteHydratorSecrets(client: KubeClient, machine: ProtectedMachine, namespace: string) {
  for (const volume of replicatedVolumes(machine))
    await client.delete(secrets, {
      name: certificateSecretName({ role: "hydrator", machineId: volume.machineId }),
      namespace,
    });
}

/** What the hydration pods' failed containers said, for the step's message (the logs hold the rest). */
async function failedContainers(client: KubeClient, namespace: string, machine: ProtectedMachine): Promise<string> {
  const found = await client.list(pods, {
    namespace,
    labelSelector: `job-name=${hydrationJobName(machine.metadata.name)}`,
  });
  const failures = found.items.flatMap((pod) =>
    (pod.status?.containerStatuses ?? []).flatMap((container) => {
      const ended = container.state?.terminated;
      return ended === undefined || ended.exitCode === 0
        ? []
        : [
            `${pod.metadata.name}/${container.name} exited ${ended.exitCode}${ended.message === undefined ? "" : `: ${ended.message.trim().slice(-300)}`}`,
          ];
    }),
  );
  return failures.length === 0
    ? ""
    : ` (${failures.slice(-2).join("; ")}; kubectl logs -n ${namespace} POD -c CONTAINER)`;
}

export async function recoverDrill(options: {
  client: KubeClient;
  replicas: RecoveryPointAccess;
  image: string;
  run: FailoverRun;
  machine: ProtectedMachine;
  namespace: string;
  chosen: readonly ChosenPoint[];
  /** The step's message as recorded (ensureRecovered). */
  recorded: string | undefined;
}): Promise<StepOutcome> {
  const { client, replicas, run, namespace } = options;
  // A reprotected machine drills from where its points are taken now: the view's source claims,
  // master target and site (the original one), without the recovery site's class and overrides.
  const machine = replicatedView(options.machine);
  const volumes = replicatedVolumes(machine);
  const block = volumes.find((volume) => volume.block);
  if (block !== undefined)
    return {
      state: "Failed",
      message: `volume ${block.name} of ${machine.metadata.name} is a block replica; drills hydrate filesystem volumes only`,
    };
  const job = await client.get(jobs, hydrationJobName(machine.metadata.name), namespace);
  const done = job?.status?.conditions?.some((c) => c.type === "Complete" && c.status === "True") === true;
  if (!done) {
    await ensureHydrationEgress(client, run, machine, namespace);
    const stateClaim: PersistentVolumeClaim = {
      apiVersion: "v1",
      kind: "PersistentVolumeClaim",
      metadata: { name: stateClaimName(machine.metadata.name), namespace, labels: runLabels(run) },
      spec: { accessModes: ["ReadWriteOnce"], resources: { requests: { storage: "64Mi" } } },
    };
    await client.create(persistentVolumeClaims, stateClaim).catch(ignoreExisting);
    const planned = [];
    for (const volume of volumes) {
      await client
        .create(persistentVolumeClaims, await drillClaim(client, run, machine, volume, namespace))
        .catch(ignoreExisting);
      const chosen = options.chosen.find((candidate) => candidate.machineId === volume.machineId);
      if (chosen === undefined)
        return { state: "Failed", message: `no recovery point was chosen for volume ${volume.name}` };
      planned.push({ volume, chosen, secretName: await replicas.hydratorCertificate(namespace, volume.machineId) });
    }
    const masterTarget = replicas.masterTargetAddress(machine);
    const outcome = await ensureJob(
      client,
      run,
      hydrationJob({ run, machine, namespace, masterTarget, image: options.image, volumes: planned }),
    );
    if (outcome.state === "Failed")
      return { ...outcome, message: `${outcome.message ?? ""}${await failedContainers(client, namespace, machine)}` };
    if (outcome.state === "InProgress")
      return { ...outcome, message: `hydrating point ${options.chosen[0]?.point.id ?? ""}: ${outcome.message ?? ""}` };
  }
  await deleteHydratorSecrets(client, machine, namespace);
  const claims = new Map(volumes.map((volume) => [volume.claimName, volume.replicaClaimName] as const));
  return ensureRecovered(client, machine, run, namespace, claims, options.recorded);
}
