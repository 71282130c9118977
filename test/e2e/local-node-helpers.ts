// Shared helpers for the local-node end-to-end suites.
import { eventually } from "../fixture/eventually.js";
import type { CoreV1Api, V1Container, V1Pod } from "@kubernetes/client-node";

/** Polls until check returns a value (not undefined), or fails naming what it waited for and the last state seen. */
export function waitFor<T>(
  what: string,
  check: () => Promise<T | undefined>,
  timeoutMs = 60_000,
  describe?: () => Promise<string>,
): Promise<T> {
  return eventually(what, check, timeoutMs, describe === undefined ? {} : { describe });
}

export const podCondition = (pod: V1Pod, type: string) => pod.status?.conditions?.find((c) => c.type === type)?.status;

export async function podsWithLabel(core: CoreV1Api, namespace: string, selector: string): Promise<V1Pod[]> {
  return (await core.listNamespacedPod({ namespace, labelSelector: selector })).items;
}

export function summarize(pods: V1Pod[]): string {
  return JSON.stringify(
    pods.map((p) => ({
      name: p.metadata?.name,
      node: p.spec?.nodeName,
      phase: p.status?.phase,
      ip: p.status?.podIP,
      containers: p.status?.containerStatuses?.map((c) => c.state),
    })),
  );
}

/** A busybox container that exits promptly on SIGTERM, so deletions in tests do not wait out the grace period. */
export function shellContainer(name: string, script: string, extra: Partial<V1Container> = {}): V1Container {
  return { name, image: "busybox:1.36", command: ["sh", "-c", `trap 'exit 0' TERM; ${script}`], ...extra };
}

/** Keeps the shell responsive to SIGTERM while idling. */
export const idle = "while true; do sleep 1; done";

/** Pods are refused until the service-account controller has made the namespace's "default" account. */
export async function waitForDefaultServiceAccount(core: CoreV1Api, namespace: string): Promise<void> {
  await waitFor(`serviceaccount ${namespace}/default`, () =>
    core.readNamespacedServiceAccount({ name: "default", namespace }).then(
      () => true,
      () => undefined,
    ),
  );
}
