// Installs or updates the four CRDs and waits until the API server serves them.
// Idempotent and safe to run from several processes: the operator at start-up,
// test suites on a shared cluster, `ksr` commands.
import { setTimeout as sleep } from "node:timers/promises";
import {
  ApiException,
  ApiextensionsV1Api,
  loadYaml,
  type KubeConfig,
  type V1CustomResourceDefinition,
} from "@kubernetes/client-node";
import { crdName, customResourceDefinition, kinds } from "./crds.js";
import type { KindDefinition } from "./kind.js";

export interface InstallCrdsOptions {
  /** How long to wait for every CRD to be Established (default 30 s). */
  readonly timeoutMs?: number;
}

const httpNotFound = 404;
const httpConflict = 409;

const statusOf = (error: unknown): number | undefined => (error instanceof ApiException ? error.code : undefined);

/** client-node's model of a kind's CRD (its serializer renames fields such as x-kubernetes-validations). */
export function crdModel(definition: KindDefinition): V1CustomResourceDefinition {
  return loadYaml<V1CustomResourceDefinition>(JSON.stringify(customResourceDefinition(definition)));
}

async function createOrReplace(api: ApiextensionsV1Api, body: V1CustomResourceDefinition): Promise<void> {
  const name = body.metadata?.name ?? "";
  for (;;) {
    const existing = await api.readCustomResourceDefinition({ name }).catch((error: unknown) => {
      if (statusOf(error) === httpNotFound) return undefined;
      throw error;
    });
    try {
      if (body.metadata !== undefined) body.metadata.resourceVersion = existing?.metadata?.resourceVersion;
      if (existing === undefined) await api.createCustomResourceDefinition({ body });
      else await api.replaceCustomResourceDefinition({ name, body });
      return;
    } catch (error) {
      // Someone else created or updated it between our read and write: read again.
      if (statusOf(error) !== httpConflict) throw error;
    }
  }
}

function isEstablished(crd: V1CustomResourceDefinition): boolean {
  return (crd.status?.conditions ?? []).some(
    (condition) => condition.type === "Established" && condition.status === "True",
  );
}

async function waitEstablished(api: ApiextensionsV1Api, name: string, deadline: number): Promise<void> {
  for (;;) {
    const crd = await api.readCustomResourceDefinition({ name });
    if (isEstablished(crd)) return;
    if (Date.now() > deadline) {
      const conditions = (crd.status?.conditions ?? []).map((c) => `${c.type}=${c.status} (${c.message ?? ""})`);
      throw new Error(`CRD ${name} is not Established in time: ${conditions.join("; ") || "no conditions yet"}`);
    }
    await sleep(100);
  }
}

/** Creates or updates every dr.ksr.io CRD, then waits until all are Established. */
export async function installCrds(kubeConfig: KubeConfig, options: InstallCrdsOptions = {}): Promise<void> {
  const api = kubeConfig.makeApiClient(ApiextensionsV1Api);
  for (const definition of kinds) await createOrReplace(api, crdModel(definition));
  const deadline = Date.now() + (options.timeoutMs ?? 30_000);
  for (const definition of kinds) await waitEstablished(api, crdName(definition), deadline);
}
