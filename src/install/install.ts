// `ksr install` and `ksr uninstall`. Install is idempotent: server-side apply
// of every object under one field manager, so a re-run converges on the same
// state (and takes back fields someone edited). Uninstall deletes the
// custom resources first, while the operator still runs to clear their
// finalizers, then everything install made, and waits until it is gone.
import type { KubeConfig } from "@kubernetes/client-node";
import { crdName, kinds } from "../api/crds.js";
import { installCrds } from "../api/install.js";
import { group, version } from "../api/common.js";
import {
  customResourceDefinitions,
  deployments,
  KubeClient,
  namespaces,
  pods,
  resourceType,
  leases,
  secrets,
  type Deployment,
  type KubeObject,
  type Pod,
  type ResourceType,
} from "../runtime/index.js";
import { caSecretName } from "../controllers/certificates/authority.js";
import { leaseName, operatorManifests, operatorName, partOfLabel, type InstallOptions } from "./manifests.js";

const fieldManager = "ksr-install";

export type Progress = (line: string) => void;

export interface WaitOptions {
  timeoutMs: number;
  progress: Progress;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export async function install(kubeConfig: KubeConfig, options: InstallOptions, progress: Progress): Promise<void> {
  await installCrds(kubeConfig);
  progress(`applied ${kinds.length} CustomResourceDefinitions (${kinds.map((k) => k.plural).join(", ")})`);
  const client = new KubeClient(kubeConfig);
  try {
    for (const { type, object } of operatorManifests(options)) {
      if (type === namespaces) {
        const existing = await client.get(namespaces, options.namespace);
        // Someone else's namespace: use it, but do not label it as ours (uninstall would delete it).
        if (existing !== undefined && !madeByInstall(existing)) continue;
      }
      await client.apply(type, object, { fieldManager, force: true });
      const where = object.metadata.namespace === undefined ? "" : `${object.metadata.namespace}/`;
      progress(`applied ${type.kind} ${where}${object.metadata.name}`);
    }
  } finally {
    client.close();
  }
}

/** Why a pod is not ready, in the words kubectl describe would use. */
export function podProblem(pod: Pod): string {
  const name = pod.metadata.name;
  const scheduled = pod.status?.conditions?.find((c) => c.type === "PodScheduled");
  if (pod.spec?.nodeName === undefined)
    return `pod ${name} is not scheduled${scheduled?.message === undefined ? "" : `: ${scheduled.message}`}`;
  for (const container of pod.status?.containerStatuses ?? []) {
    const waiting = container.state?.waiting;
    if (waiting !== undefined)
      return `pod ${name} on ${pod.spec.nodeName}: container ${container.name} waiting (${waiting.reason ?? "unknown"}${waiting.message === undefined ? "" : `: ${waiting.message}`})`;
    const terminated = container.state?.terminated;
    if (terminated !== undefined)
      return `pod ${name} on ${pod.spec.nodeName}: container ${container.name} exited ${terminated.exitCode} (${terminated.reason ?? ""}), restarts ${container.restartCount}`;
    if (!container.ready)
      return `pod ${name} on ${pod.spec.nodeName}: container ${container.name} running, not ready (/readyz failing)`;
  }
  return `pod ${name} on ${pod.spec.nodeName}: ${pod.status?.phase ?? "no status yet"}`;
}

interface Readiness {
  ready: boolean;
  summary: string;
  problems: string[];
}

async function operatorReadiness(client: KubeClient, namespace: string, replicas: number): Promise<Readiness> {
  const deployment: Deployment | undefined = await client.get(deployments, operatorName, namespace);
  const lease = await client.get(leases, leaseName, namespace);
  const listed = await client.list(pods, { namespace, labelSelector: `app.kubernetes.io/name=${operatorName}` });
  const current = listed.items.filter((pod) => pod.metadata.deletionTimestamp === undefined);
  const available = deployment?.status?.availableReplicas ?? 0;
  const updated = deployment?.status?.updatedReplicas ?? 0;
  const holder = lease?.spec?.holderIdentity ?? "";
  const problems = current
    .filter((pod) => pod.status?.conditions?.find((c) => c.type === "Ready")?.status !== "True")
    .map(podProblem);
  if (deployment === undefined) problems.unshift(`deployment ${namespace}/${operatorName} does not exist`);
  if (current.length < replicas) problems.push(`${current.length} of ${replicas} operator pods exist`);
  if (holder === "") problems.push(`no operator holds the lease ${namespace}/${leaseName} yet`);
  const generationSeen = (deployment?.status?.observedGeneration ?? 0) >= (deployment?.metadata.generation ?? 1);
  return {
    ready: generationSeen && available >= replicas && updated >= replicas && holder !== "" && problems.length === 0,
    summary: `${available}/${replicas} operator pods available, leader: ${holder === "" ? "none yet" : holder}`,
    problems,
  };
}

/** Waits until every operator replica is available and one holds the lease; the error names what is not ready. */
export async function waitForOperator(
  kubeConfig: KubeConfig,
  install: Pick<InstallOptions, "namespace" | "replicas">,
  options: WaitOptions,
): Promise<void> {
  const client = new KubeClient(kubeConfig);
  const deadline = Date.now() + options.timeoutMs;
  let last = "";
  try {
    for (;;) {
      const state = await operatorReadiness(client, install.namespace, install.replicas);
      const line = [state.summary, ...state.problems].join("; ");
      if (line !== last) options.progress(line);
      last = line;
      if (state.ready) return;
      if (Date.now() > deadline) {
        throw new Error(
          `the operator is not ready after ${Math.round(options.timeoutMs / 1000)} s: ${state.problems.join("; ") || state.summary}`,
        );
      }
      await sleep(500);
    }
  } finally {
    client.close();
  }
}

async function waitUntilGone(
  what: string,
  check: () => Promise<string[]>,
  options: WaitOptions,
  timeoutHint: string,
): Promise<void> {
  const deadline = Date.now() + options.timeoutMs;
  let last = "";
  for (;;) {
    const remaining = await check();
    if (remaining.length === 0) return;
    const line = `waiting for ${what} to go: ${remaining.join(", ")}`;
    if (line !== last) options.progress(line);
    last = line;
    if (Date.now() > deadline)
      throw new Error(`${what} still present after the timeout: ${remaining.join(", ")}. ${timeoutHint}`);
    await sleep(500);
  }
}

/**
 * Deletes the custom resources (the operator clears their finalizers), the
 * CRDs, the operator's cluster objects and its namespace, and waits for each.
 */
export async function uninstall(kubeConfig: KubeConfig, namespace: string, options: WaitOptions): Promise<void> {
  const client = new KubeClient(kubeConfig);
  try {
    const resourceTypes = kinds.map((kind) =>
      resourceType<KubeObject>({ group, version, kind: kind.kind, plural: kind.plural, namespaced: true }),
    );
    const existingCrds = new Set<string>();
    for (const kind of kinds)
      if ((await client.get(customResourceDefinitions, crdName(kind))) !== undefined) existingCrds.add(kind.kind);
    const served = resourceTypes.filter((type) => existingCrds.has(type.kind));
    const listAll = async () => {
      const names: string[] = [];
      for (const type of served) {
        for (const item of (await client.list(type)).items)
          names.push(`${type.kind} ${item.metadata.namespace ?? ""}/${item.metadata.name}`);
      }
      return names;
    };
    for (const type of served) {
      for (const item of (await client.list(type)).items) await client.delete(type, item.metadata);
    }
    await waitUntilGone(
      "custom resources",
      listAll,
      options,
      "Their finalizers need the operator running; check its logs, or remove the finalizers by hand.",
    );
    progressDeleted(options.progress, "custom resources");

    // Deleted one by one, the namespace last and only if install made it: it may be a namespace of the user's.
    const made = operatorManifests({ namespace, image: "", replicas: 0 }).filter((m) => m.type !== namespaces);
    const leftovers = [
      ...kinds.map((kind) => ({ type: customResourceDefinitions, name: crdName(kind), namespace: undefined })),
      ...made.map(({ type, object }) => ({ type, name: object.metadata.name, namespace: object.metadata.namespace })),
      ...operatorRuntimeObjects(namespace),
    ];
    for (const { type, name, namespace: where } of leftovers) await client.delete(type, { name, namespace: where });
    await waitUntilGone(
      "the operator's objects",
      async () => {
        const left: string[] = [];
        for (const { type, name, namespace: where } of leftovers)
          if ((await client.get(type, name, where)) !== undefined) left.push(`${type.kind} ${name}`);
        return left;
      },
      options,
      "",
    );
    progressDeleted(options.progress, "CRDs, the operator Deployment, its RBAC, CA Secret and Lease");

    const ns = await client.get(namespaces, namespace);
    if (ns === undefined || !madeByInstall(ns)) return;
    await client.delete(namespaces, { name: namespace });
    await waitUntilGone(
      `namespace ${namespace}`,
      async () => ((await client.get(namespaces, namespace)) === undefined ? [] : [namespace]),
      options,
      `A namespace waits for every object in it; see \`kubectl get all -n ${namespace}\`.`,
    );
    progressDeleted(options.progress, `namespace ${namespace}`);
  } finally {
    client.close();
  }
}

const madeByInstall = (object: KubeObject): boolean =>
  object.metadata.labels?.["app.kubernetes.io/part-of"] === partOfLabel["app.kubernetes.io/part-of"];

/** What the operator itself creates in its namespace: its Lease and its CA Secret. */
function operatorRuntimeObjects(
  namespace: string,
): { type: ResourceType<KubeObject>; name: string; namespace: string }[] {
  return [
    { type: leases, name: leaseName, namespace },
    { type: secrets, name: caSecretName, namespace },
  ];
}

function progressDeleted(progress: Progress, what: string): void {
  progress(`deleted ${what}`);
}
