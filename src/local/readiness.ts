// "Ready means usable": `ksr local up` returns only once a Pod applied in
// `default` would be accepted and run: both nodes Ready, the default
// namespace's ServiceAccount made by the controller-manager (admission
// refuses pods without it), each node's kubelet API answering /healthz
// to the apiserver's own client certificate, and, with a pod network, a
// ready CoreDNS pod on each node (the node's lookups go to its own). A node whose site is down
// (`ksr local site down`, which outlives `down`/`up`) is left out and reported:
// it comes back only with `ksr local site up`.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { CoreV1Api, KubeConfig, type V1Node, type V1Pod } from "@kubernetes/client-node";
import { localNodes } from "./node/layout.js";
import { downSites } from "./node/sites.js";
import { probe } from "./probe.js";

export interface Usability {
  usable: boolean;
  /** What is still missing, for progress and the timeout's error. */
  waitingFor: string[];
}

/** The apiserver's identity towards the nodes' kubelet API (DIR/pki/kube-apiserver-kubelet-client.crt). */
export const kubeletClient = "kube-apiserver-kubelet-client";

function kubeletHealthy(node: V1Node, tls: { ca: string; cert: string; key: string }): Promise<boolean> {
  const port = node.status?.daemonEndpoints?.kubeletEndpoint?.Port ?? 0;
  const address = node.status?.addresses?.find((a) => a.type === "InternalIP")?.address;
  if (port === 0 || address === undefined) return Promise.resolve(false);
  return probe(`https://${address}:${port}/healthz`, tls);
}

const podReady = (pod: V1Pod) => pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True");

export async function checkUsable(
  core: CoreV1Api,
  tls: { ca: string; cert: string; key: string },
  downNodes: ReadonlySet<string>,
  clusterDns: boolean,
): Promise<Usability> {
  const waitingFor: string[] = [];
  const nodes = await core.listNode().then(
    (list) => list.items,
    () => [] as V1Node[],
  );
  const dnsPods = clusterDns
    ? await core.listNamespacedPod({ namespace: "kube-system", labelSelector: "k8s-app=kube-dns" }).then(
        (list) => list.items,
        () => [] as V1Pod[],
      )
    : [];
  for (const { name } of localNodes.filter((identity) => !downNodes.has(identity.name))) {
    const node = nodes.find((n) => n.metadata?.name === name);
    if (node?.status?.conditions?.find((c) => c.type === "Ready")?.status !== "True")
      waitingFor.push(`node ${name} Ready`);
    else if (!(await kubeletHealthy(node, tls))) waitingFor.push(`the kubelet API of node ${name}`);
    else if (clusterDns && !dnsPods.some((pod) => pod.spec?.nodeName === name && podReady(pod)))
      waitingFor.push(`a ready CoreDNS pod on node ${name}`);
  }
  const serviceAccount = await core.readNamespacedServiceAccount({ name: "default", namespace: "default" }).then(
    () => true,
    () => false,
  );
  if (!serviceAccount) waitingFor.push('serviceaccount "default" in namespace default');
  return { usable: waitingFor.length === 0, waitingFor };
}

/** Polls until the cluster is usable; fails at the deadline naming what it still waited for. */
export async function waitUntilUsable(
  dir: string,
  clusterDns: boolean,
  deadline: number,
  progress: (message: string) => void,
): Promise<void> {
  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(join(dir, "kubeconfig"));
  const core = kubeConfig.makeApiClient(CoreV1Api);
  const pki = (file: string) => readFileSync(join(dir, "pki", file), "utf8");
  const tls = {
    ca: pki("ca.crt"),
    cert: pki(`${kubeletClient}.crt`),
    key: pki(`${kubeletClient}.key`),
  };
  const down = downSites(dir);
  for (const message of down.values()) progress(message);
  let reported = "";
  for (;;) {
    const { usable, waitingFor } = await checkUsable(core, tls, new Set(down.keys()), clusterDns);
    if (usable) return;
    const summary = waitingFor.join(", ");
    if (summary !== reported) progress(`waiting for ${summary}`);
    reported = summary;
    if (Date.now() > deadline)
      throw new Error(`the cluster in ${dir} did not become usable in time; still waiting for ${summary}`);
    await sleep(200);
  }
}
