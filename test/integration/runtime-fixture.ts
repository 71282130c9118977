// Plumbing shared by the runtime integration suites: the Mirror CRD, managers
// on a test kubeconfig, and polling for convergence.
import { eventually } from "../fixture/eventually.js";
import type { KubeConfig } from "@kubernetes/client-node";
import {
  createLogger,
  isAlreadyExists,
  KubeClient,
  Manager,
  resourceType,
  type KubeObject,
  type ManagerOptions,
} from "../../src/runtime/index.js";
import { mirrors, type Mirror } from "./sample-controller.js";

interface CustomResourceDefinition extends KubeObject {
  spec: unknown;
  status?: { conditions?: { type: string; status: string }[] };
}

const crds = resourceType<CustomResourceDefinition>({
  group: "apiextensions.k8s.io",
  version: "v1",
  kind: "CustomResourceDefinition",
  plural: "customresourcedefinitions",
  namespaced: false,
});

const mirrorCrd: CustomResourceDefinition = {
  apiVersion: "apiextensions.k8s.io/v1",
  kind: "CustomResourceDefinition",
  metadata: { name: `${mirrors.plural}.${mirrors.group}` },
  spec: {
    group: mirrors.group,
    names: { kind: mirrors.kind, plural: mirrors.plural, singular: "mirror", listKind: "MirrorList" },
    scope: "Namespaced",
    versions: [
      {
        name: mirrors.version,
        served: true,
        storage: true,
        subresources: { status: {} },
        schema: {
          openAPIV3Schema: {
            type: "object",
            properties: {
              spec: {
                type: "object",
                required: ["data"],
                properties: {
                  data: { type: "object", additionalProperties: { type: "string" } },
                  paused: { type: "boolean" },
                },
              },
              status: { type: "object", "x-kubernetes-preserve-unknown-fields": true },
            },
          },
        },
      },
    ],
  },
};

/** A kind no API server serves: informers for it never sync. */
export const absentKind = resourceType({
  group: "absent.ksr.io",
  version: "v1",
  kind: "Absent",
  plural: "absents",
  namespaced: true,
});

/** Installs the Mirror CRD once per cluster and waits until the API serves it. */
export async function installMirrorCrd(kubeConfig: KubeConfig): Promise<void> {
  const client = new KubeClient(kubeConfig);
  try {
    await client.create(crds, mirrorCrd);
  } catch (error) {
    if (!isAlreadyExists(error)) throw error;
  }
  await waitFor("the Mirror CRD to be established", async () => {
    const crd = await client.get(crds, mirrorCrd.metadata.name);
    const established = crd?.status?.conditions?.some((c) => c.type === "Established" && c.status === "True");
    if (established !== true) return false;
    // Established can precede the first successful list by a moment.
    return client.list(mirrors, { namespace: "default" }).then(
      () => true,
      () => false,
    );
  });
  client.close();
}

export function mirror(namespace: string, name: string, data: Record<string, string>): Mirror {
  return {
    apiVersion: `${mirrors.group}/${mirrors.version}`,
    kind: mirrors.kind,
    metadata: { name, namespace },
    spec: { data },
  };
}

/** A manager for tests: fast informer back-off, silent unless KSR_LOG_LEVEL is set (e.g. KSR_LOG_LEVEL=debug). */
export function testManager(kubeConfig: KubeConfig, options: Partial<ManagerOptions> = {}): Manager {
  return new Manager({
    name: "runtime-test",
    kubeConfig,
    logger: createLogger({ name: "runtime-test", level: process.env.KSR_LOG_LEVEL ?? "silent" }),
    cache: { backoff: { initialMs: 100, maxMs: 2000, jitter: 0.5 }, ...options.cache },
    ...options,
  });
}

export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs = 30_000,
): Promise<void> {
  await eventually(what, async () => ((await check()) ? true : undefined), timeoutMs, { intervalMs: 100 });
}
