// Shared helpers for the local-node end-to-end suites.
import { get as httpGet } from "node:http";
import type { CoreV1Api, DiscoveryV1Api, V1Container, V1Pod } from "@kubernetes/client-node";
import type { ClusterState } from "../../src/local/cluster.js";
import { eventually } from "../fixture/eventually.js";

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

/** True when ip lies in the cluster's recorded pod subnet (a /24, so the first three octets decide). */
export function isPodAddress(state: ClusterState, ip: string): boolean {
  const prefix = state.podNetwork?.subnet.replace(/\.0\/24$/, ".");
  return prefix !== undefined && ip.startsWith(prefix) && /^\d+$/.test(ip.slice(prefix.length));
}

export interface ListedEndpoint {
  address: string;
  ready: boolean;
  node?: string;
  port?: number;
}

/** Every endpoint the Service's EndpointSlices list, as the EndpointSlice controller wrote them. */
export async function serviceEndpoints(
  discovery: DiscoveryV1Api,
  namespace: string,
  service: string,
): Promise<ListedEndpoint[]> {
  const slices = await discovery.listNamespacedEndpointSlice({
    namespace,
    labelSelector: `kubernetes.io/service-name=${service}`,
  });
  // The type says endpoints is always there; the API sends null for a slice without any.
  return slices.items
    .filter((slice) => Array.isArray(slice.endpoints))
    .flatMap((slice) =>
      slice.endpoints.flatMap((endpoint) =>
        endpoint.addresses.map((address) => ({
          address,
          ready: endpoint.conditions?.ready === true,
          ...(endpoint.nodeName === undefined ? {} : { node: endpoint.nodeName }),
          ...(slice.ports?.[0]?.port === undefined ? {} : { port: slice.ports[0].port }),
        })),
      ),
    );
}

/** The body of a plain HTTP GET (pods are reached by pod IP from the test process). */
export function httpText(url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    httpGet(url, { timeout: 2000 }, (res) => {
      let body = "";
      res.on("data", (chunk: Buffer) => (body += chunk.toString()));
      res.on("end", () => {
        resolve(body);
      });
    }).on("error", reject);
  });
}
