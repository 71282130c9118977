// The recovered copy of a machine's workload: the source's StatefulSet or
// Deployment in the target namespace, pinned to the recovery site, with the
// machine's overrides, claiming the replica volumes by name; plus copies of the
// Services that select it. Created once; executing again only checks readiness.
// client-node models are classes, but these objects are JSON from the API server: spreading them loses nothing.
/* eslint-disable @typescript-eslint/no-misused-spread */
import type { V1Container } from "@kubernetes/client-node";
import type { FailoverRun, ProtectedMachine } from "../../../api/types.js";
import {
  deployments,
  isAlreadyExists,
  services,
  statefulSets,
  type Deployment,
  type KubeClient,
  type ResourceType,
  type Service,
  type StatefulSet,
} from "../../../runtime/index.js";
import { directionOf } from "../../protectedmachine/direction.js";
import { siteLabel } from "../../protectedmachine/names.js";
import type { StepOutcome } from "../machine.js";
import { configReferences, configSummary, copyConfig, copyRecord, planConfig } from "./config.js";
import { runLabels } from "./types.js";

export const replicasAnnotation = "dr.ksr.io/replicas-before-failover";
export const recoveredMachineLabel = "dr.ksr.io/recovered-machine";

type Workload = StatefulSet | Deployment;

/** One client call shape for both kinds: the calls used here (get, create, patch) read the same fields of either. */
export function workloadType(kind: string | undefined): ResourceType<Workload> {
  return kind === "StatefulSet" ? statefulSets : deployments;
}

/** The workload replication captures now: the original, or after a reprotect the recovered copy (direction.ts). */
export async function sourceWorkload(client: KubeClient, machine: ProtectedMachine): Promise<Workload | undefined> {
  const { kind, name } = machine.spec.source.workloadRef;
  const namespace = directionOf(machine).sourceNamespace;
  if (kind === "StatefulSet") return client.get(statefulSets, name, namespace);
  if (kind === "Deployment") return client.get(deployments, name, namespace);
  return undefined;
}

function overrideContainer(container: V1Container, machine: ProtectedMachine): V1Container {
  const override = machine.spec.target.overrides?.containers?.find((candidate) => candidate.name === container.name);
  if (override === undefined) return container;
  const env = [...(container.env ?? [])].filter((variable) => !override.env?.some((o) => o.name === variable.name));
  return {
    ...container,
    ...(override.image === undefined ? {} : { image: override.image }),
    env: [...env, ...(override.env ?? []).map((variable) => ({ name: variable.name, value: variable.value ?? "" }))],
    ...(override.resources === undefined ? {} : { resources: override.resources as V1Container["resources"] }),
  };
}

/** The copy to create; `claims` renames the pod template's claims (Deployments). */
export function recoveredCopy(
  source: Workload,
  machine: ProtectedMachine,
  run: FailoverRun,
  namespace: string,
  claims: ReadonlyMap<string, string>,
): Workload {
  const overrides = machine.spec.target.overrides;
  const template = source.spec?.template;
  const podSpec = template?.spec;
  const recorded = Number(source.metadata.annotations?.[replicasAnnotation]);
  const replicas = overrides?.replicas ?? (Number.isInteger(recorded) ? recorded : (source.spec?.replicas ?? 1));
  const spec = {
    ...source.spec,
    replicas,
    template: {
      ...template,
      metadata: {
        ...template?.metadata,
        labels: { ...template?.metadata?.labels, ...overrides?.labels, [recoveredMachineLabel]: machine.metadata.name },
        annotations: { ...template?.metadata?.annotations, ...overrides?.annotations },
      },
      spec: {
        ...podSpec,
        nodeSelector: { ...podSpec?.nodeSelector, ...overrides?.nodeSelector, [siteLabel]: machine.spec.target.site },
        ...(overrides?.serviceAccountName === undefined ? {} : { serviceAccountName: overrides.serviceAccountName }),
        containers: (podSpec?.containers ?? []).map((container) => overrideContainer(container, machine)),
        volumes: (podSpec?.volumes ?? []).map((volume) => {
          const claim = volume.persistentVolumeClaim?.claimName;
          const renamed = claim === undefined ? undefined : claims.get(claim);
          return renamed === undefined ? volume : { ...volume, persistentVolumeClaim: { claimName: renamed } };
        }),
      },
    },
  };
  return {
    apiVersion: "apps/v1",
    kind: source.kind,
    metadata: {
      name: source.metadata.name,
      namespace,
      labels: { ...source.metadata.labels, ...runLabels(run), [recoveredMachineLabel]: machine.metadata.name },
    },
    spec,
  } as Workload;
}

const ignoreExisting = (error: unknown) => {
  if (!isAlreadyExists(error)) throw error;
  return undefined;
};

/**
 * Creates the copy, the Secrets and ConfigMaps it refers to, and copies of the Services selecting
 * the source pods; succeeds when it is ready. `recorded` is the step's message as status holds it:
 * the names of the Secrets and ConfigMaps to copy are recorded there before they are created.
 */
export async function ensureRecovered(
  client: KubeClient,
  machine: ProtectedMachine,
  run: FailoverRun,
  namespace: string,
  claims: ReadonlyMap<string, string>,
  recorded: string | undefined,
): Promise<StepOutcome> {
  const source = await sourceWorkload(client, machine);
  if (source === undefined)
    return {
      state: "InProgress",
      message: `the source ${machine.spec.source.workloadRef.kind} is gone; nothing to recreate from`,
      recheckAfterMs: 2000,
    };
  const from = source.metadata.namespace ?? "";
  let summary = "";
  if (from !== namespace) {
    const config = await planConfig(client, run, configReferences(source.spec?.template.spec), from, namespace);
    if (!config.ok) return { state: "Failed", message: config.message };
    if (config.copy.length > 0) {
      const record = copyRecord(config, from, namespace);
      if (recorded !== record) return { state: "InProgress", message: record, recheckAfterMs: 500 };
      await copyConfig(client, run, config.copy, from, namespace);
    }
    summary = configSummary(config, namespace);
  }
  const type = workloadType(source.kind);
  const name = source.metadata.name;
  let copy = await client.get(type, name, namespace);
  if (copy === undefined) {
    await client.create(type, recoveredCopy(source, machine, run, namespace, claims)).catch(ignoreExisting);
    copy = await client.get(type, name, namespace);
  } else if (copy.spec?.replicas === 0 && copy.metadata.annotations?.[replicasAnnotation] !== undefined) {
    // Failing back (or over again): the workload a failover stopped there comes back on its own claims.
    copy = await scaleBack(client, copy);
  }
  const labels = source.spec?.template.metadata?.labels ?? {};
  const sourceServices = await client.list(services, { namespace: machine.metadata.namespace });
  for (const service of sourceServices.items) {
    const selector = service.spec?.selector;
    if (selector === undefined || Object.entries(selector).some(([key, value]) => labels[key] !== value)) continue;
    await client.create(services, serviceCopy(service, run, namespace)).catch(ignoreExisting);
  }
  const wanted = copy?.spec?.replicas ?? 1;
  const ready = copy?.status?.readyReplicas ?? 0;
  const message = `${source.kind} ${namespace}/${name}: ${ready}/${wanted} ready${summary}`;
  return ready >= wanted ? { state: "Succeeded", message } : { state: "InProgress", message, recheckAfterMs: 2000 };
}

/** A Service of the source namespace as it is created elsewhere: no cluster IPs or node ports of its own. */
export function serviceCopy(
  service: Service,
  run: FailoverRun,
  namespace: string,
  selector?: Record<string, string>,
): Service {
  const { clusterIP: _ip, clusterIPs: _ips, healthCheckNodePort: _port, ...spec } = service.spec ?? {};
  return {
    apiVersion: "v1",
    kind: "Service",
    metadata: { name: service.metadata.name, namespace, labels: { ...service.metadata.labels, ...runLabels(run) } },
    spec: {
      ...spec,
      ...(selector === undefined ? {} : { selector }),
      ports: spec.ports?.map(({ nodePort: _nodePort, ...port }) => port),
    },
  };
}

/** Scales a workload stopped by scaleToZero back to the replicas it had, and forgets the record. */
async function scaleBack(client: KubeClient, workload: Workload): Promise<Workload> {
  const recorded = Number(workload.metadata.annotations?.[replicasAnnotation]);
  return client.patch(
    workloadType(workload.kind),
    { name: workload.metadata.name, namespace: workload.metadata.namespace },
    {
      metadata: { annotations: { [replicasAnnotation]: null } },
      spec: { replicas: Number.isInteger(recorded) && recorded > 0 ? recorded : 1 },
    },
    "merge",
  );
}

/**
 * Scales a workload to zero, recording the replicas it had (once: a repeat keeps the first record).
 * Returns the recorded count, so a repeat still reports what the workload ran before it stopped.
 */
export async function scaleToZero(client: KubeClient, workload: Workload): Promise<string> {
  const type = workloadType(workload.kind);
  const recorded = workload.metadata.annotations?.[replicasAnnotation] ?? String(workload.spec?.replicas ?? 1);
  await client.patch(
    type,
    { name: workload.metadata.name, namespace: workload.metadata.namespace },
    { metadata: { annotations: { [replicasAnnotation]: recorded } }, spec: { replicas: 0 } },
    "merge",
  );
  return recorded;
}
