// The cluster add-ons kind runs, built from their own Go modules with the
// control plane (hack/build-controlplane.sh): kube-proxy in nftables mode and
// kube-network-policies in each node's network namespace, where every packet
// of that node's pods passes, components of `ksr local up` like the control
// plane (recorded in cluster.json, logs in DIR/logs, stopped by `ksr local
// down`); and CoreDNS as the cluster DNS, a Deployment in kube-system on the
// pod network behind the kube-dns Service's fixed ClusterIP, as in kind.
import { execFile } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { promisify } from "node:util";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import {
  CoreV1Api,
  KubeConfig,
  KubernetesObjectApi,
  PatchStrategy,
  type KubernetesObject,
} from "@kubernetes/client-node";
import { stringify } from "yaml";
import { loadCertificateAuthority } from "../../pki/certificates.js";
import { probe } from "../probe.js";
import { renderKubeconfig } from "../kubeconfig.js";
import { addressIn, nodeNamespaceName, podPortPrefix, reservedOctets, type PodNetworkPlan } from "../node/addresses.js";
import { describeError, statusCode } from "../node/kube.js";
import { localNodes } from "../node/layout.js";
import { apiServicePort, clusterDnsAddress } from "../node/network.js";
import { clusterDomain } from "../node/resolv-conf.js";

/** How a component is started and judged healthy (the shape cluster.ts starts components from). */
export interface AddonSpec {
  name: string;
  stage: number;
  command: string;
  args: string[];
  env?: NodeJS.ProcessEnv;
  health: () => Promise<boolean>;
}

const nsenter = "/usr/bin/nsenter";
const unshare = "/usr/bin/unshare";
const fieldManager = "ksr-local";
const kubeProxyHealthPort = 10256;
const networkPolicyMetricsPort = 9080;
const serviceAccountDir = "/run/secrets/kubernetes.io/serviceaccount";
const policyQueue = 100;
const run = promisify(execFile);

/**
 * kube-network-policies queues packets with nftables' queue expression, which
 * some kernels lack (nft_queue not built: "Could not process rule: No such
 * file or directory") while the xtables NFQUEUE target works. There, every new
 * forwarded connection of the node's pods goes to the same queue through
 * iptables-nft, and the enforcer gives its verdict as usual (unselected pods
 * are allowed). Returns which path the node uses.
 */
export async function ensurePolicyQueue(netns: string, kubelet: string): Promise<"nftables" | "xtables"> {
  const probeTable = "ksr-queue-probe";
  try {
    await run("ip", [
      "netns",
      "exec",
      netns,
      "nft",
      `add table inet ${probeTable}; add chain inet ${probeTable} c; add rule inet ${probeTable} c queue num ${policyQueue} bypass`,
    ]);
    await run("ip", ["netns", "exec", netns, "nft", "delete", "table", "inet", probeTable]);
    return "nftables";
  } catch {
    await run("ip", ["netns", "exec", netns, "nft", "delete", "table", "inet", probeTable]).catch(() => undefined);
  }
  // The kubelet's probes are never subject to policy, as on a real node.
  const rule = [
    "FORWARD",
    "!",
    "-s",
    `${kubelet}/32`,
    "-m",
    "conntrack",
    "--ctstate",
    "NEW",
    "-j",
    "NFQUEUE",
    "--queue-num",
    String(policyQueue),
    "--queue-bypass",
  ];
  const present = await run("ip", ["netns", "exec", netns, "iptables-nft", "-C", ...rule]).then(
    () => true,
    () => false,
  );
  if (!present) await run("ip", ["netns", "exec", netns, "iptables-nft", "-A", ...rule]);
  return "xtables";
}

const addonDir = (clusterDir: string) => join(clusterDir, "addons");
const netnsPath = (name: string) => join("/run/netns", name);

interface AddonContext {
  clusterDir: string;
  binDir: string;
  plan: PodNetworkPlan;
}

function nodeAddressOf(plan: PodNetworkPlan, index: number): string {
  return addressIn(plan.subnet, reservedOctets.firstNode + index);
}

/** The add-on processes to start, in the namespaces the node agent made; none without a pod network. */
export function addonSpecs({ clusterDir, binDir, plan }: AddonContext): AddonSpec[] {
  const dir = addonDir(clusterDir);
  const perNode = localNodes.flatMap((identity, index): AddonSpec[] => {
    const netns = netnsPath(nodeNamespaceName(clusterDir, identity.site));
    const address = nodeAddressOf(plan, index);
    return [
      {
        name: `kube-proxy-${identity.site}`,
        stage: 200,
        command: nsenter,
        args: [
          `--net=${netns}`,
          "--",
          join(binDir, "kube-proxy"),
          `--config=${join(dir, `kube-proxy-${identity.site}.yaml`)}`,
        ],
        health: () => probe(`http://${address}:${kubeProxyHealthPort}/healthz`),
      },
      {
        name: `kube-network-policies-${identity.site}`,
        stage: 200,
        command: nsenter,
        // In-cluster configuration reads the token from a fixed path: a private mount namespace puts it there.
        args: [
          `--net=${netns}`,
          "--",
          unshare,
          "--mount",
          "--propagation",
          "private",
          "--",
          "/bin/sh",
          "-c",
          `mount -t tmpfs -o mode=0755,size=1m ksr-run /run && mkdir -p ${serviceAccountDir} && ` +
            `mount --bind "$1" ${serviceAccountDir} && shift && exec "$@"`,
          "ksr-serviceaccount",
          join(dir, "network-policies-serviceaccount"),
          join(binDir, "kube-network-policies"),
          `--hostname-override=${identity.name}`,
          `--metrics-bind-address=${address}:${networkPolicyMetricsPort}`,
          `--nfqueue-id=${policyQueue}`,
          // As the xtables fallback below: with the enforcer stopped, traffic flows (and is not checked).
          "--fail-open",
          "--v=1",
        ],
        env: {
          ...process.env,
          KUBERNETES_SERVICE_HOST: plan.hostAddress,
          KUBERNETES_SERVICE_PORT: String(apiServicePort),
        },
        health: () => probe(`http://${address}:${networkPolicyMetricsPort}/metrics`),
      },
    ];
  });
  return perNode;
}

/** True when the node agent built the routed pod network the add-ons run in (not the loopback fallback). */
export function podNetworkUp(clusterDir: string, plan: PodNetworkPlan | undefined): plan is PodNetworkPlan {
  return (
    plan !== undefined &&
    existsSync(netnsPath(plan.switchNamespace)) &&
    localNodes.every((identity) => existsSync(netnsPath(nodeNamespaceName(clusterDir, identity.site))))
  );
}

function kubeProxyConfig(clusterDir: string, plan: PodNetworkPlan, index: number): string {
  const identity = localNodes[index];
  const address = nodeAddressOf(plan, index);
  return stringify({
    apiVersion: "kubeproxy.config.k8s.io/v1alpha1",
    kind: "KubeProxyConfiguration",
    mode: "nftables",
    hostnameOverride: identity?.name,
    // Also the node IP kube-proxy uses; NodePorts answer on it, as on a kind node's address.
    bindAddress: address,
    nodePortAddresses: [`${address}/32`],
    healthzBindAddress: `${address}:${kubeProxyHealthPort}`,
    metricsBindAddress: "127.0.0.1:10249",
    // The node's own pods are those behind its pod veths (p + UID); what comes in from the core (the host,
    // NodePort clients elsewhere) is masqueraded, so replies return through this node's conntrack.
    detectLocalMode: "InterfaceNamePrefix",
    detectLocal: { interfaceNamePrefix: podPortPrefix },
    clientConnection: { kubeconfig: join(clusterDir, "kube-proxy.kubeconfig") },
    // Conntrack limits are the machine's: leave them alone.
    conntrack: { maxPerCore: 0, min: 0, tcpEstablishedTimeout: "0s", tcpCloseWaitTimeout: "0s" },
  });
}

/**
 * The cluster zone from the API, reverse zones for pod and Service addresses,
 * and NXDOMAIN for every other name: there is no upstream, nothing leaves the
 * machine. Two server blocks, since the template plugin runs before kubernetes.
 */
const corefile = `${clusterDomain}:53 in-addr.arpa:53 ip6.arpa:53 {
    errors
    health {
        lameduck 5s
    }
    ready
    kubernetes ${clusterDomain} in-addr.arpa ip6.arpa {
        pods insecure
        ttl 30
    }
    prometheus :9153
    cache 30
    loadbalance
    reload
}
.:53 {
    errors
    template ANY ANY {
        rcode NXDOMAIN
    }
}
`;

/**
 * CoreDNS as kind runs it: a Deployment of two `k8s-app: kube-dns` pods on the
 * pod network (one per node, so one per site), so NetworkPolicies that select
 * the DNS pods by label match them. The kube-dns Service prefers the client's
 * own node (`trafficDistribution: PreferSameNode`), so a site that goes down
 * does not take the other site's lookups with it while its pod is still
 * listed as ready.
 */
function coreDnsObjects(plan: PodNetworkPlan): KubernetesObject[] {
  const labels = { "k8s-app": "kube-dns" };
  const ports = [
    { name: "dns", protocol: "UDP", port: 53 },
    { name: "dns-tcp", protocol: "TCP", port: 53 },
    { name: "metrics", protocol: "TCP", port: 9153 },
  ];
  return [
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "coredns", namespace: "kube-system" } },
    clusterRole("system:coredns", [
      { apiGroups: [""], resources: ["endpoints", "services", "pods", "namespaces"], verbs: ["list", "watch"] },
      { apiGroups: ["discovery.k8s.io"], resources: ["endpointslices"], verbs: ["list", "watch"] },
    ]),
    clusterRoleBinding("system:coredns", { kind: "ServiceAccount", name: "coredns", namespace: "kube-system" }),
    {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: "coredns", namespace: "kube-system" },
      data: { Corefile: corefile },
    } as KubernetesObject,
    {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "coredns", namespace: "kube-system", labels },
      spec: {
        replicas: localNodes.length,
        selector: { matchLabels: labels },
        strategy: { type: "RollingUpdate", rollingUpdate: { maxUnavailable: 1, maxSurge: 0 } },
        template: {
          metadata: { labels },
          spec: {
            serviceAccountName: "coredns",
            priorityClassName: "system-cluster-critical",
            dnsPolicy: "Default",
            affinity: {
              podAntiAffinity: {
                requiredDuringSchedulingIgnoredDuringExecution: [
                  { labelSelector: { matchLabels: labels }, topologyKey: "kubernetes.io/hostname" },
                ],
              },
            },
            tolerations: [{ key: "CriticalAddonsOnly", operator: "Exists" }],
            terminationGracePeriodSeconds: 5,
            containers: [
              {
                name: "coredns",
                // The local image table runs the CoreDNS built with the control plane (coredns_version in
                // hack/build-controlplane.sh) for any image named coredns; the tag says which that is.
                image: "registry.k8s.io/coredns/coredns:v1.15.0",
                args: ["-conf", "/etc/coredns/Corefile"],
                ports: ports.map((port) => ({ name: port.name, protocol: port.protocol, containerPort: port.port })),
                volumeMounts: [{ name: "config-volume", mountPath: "/etc/coredns", readOnly: true }],
                livenessProbe: { httpGet: { path: "/health", port: 8080 }, periodSeconds: 10, failureThreshold: 5 },
                readinessProbe: { httpGet: { path: "/ready", port: 8181 }, periodSeconds: 2 },
              },
            ],
            volumes: [
              { name: "config-volume", configMap: { name: "coredns", items: [{ key: "Corefile", path: "Corefile" }] } },
            ],
          },
        },
      },
    } as KubernetesObject,
    {
      apiVersion: "v1",
      kind: "Service",
      metadata: {
        name: "kube-dns",
        namespace: "kube-system",
        labels: { ...labels, "kubernetes.io/name": "CoreDNS", "kubernetes.io/cluster-service": "true" },
      },
      spec: {
        selector: labels,
        clusterIP: clusterDnsAddress(plan.serviceSubnet),
        trafficDistribution: "PreferSameNode",
        ports: ports.map((port) => ({ ...port, targetPort: port.port })),
      },
    } as KubernetesObject,
  ];
}

const clusterRole = (name: string, rules: object[]): KubernetesObject =>
  ({ apiVersion: "rbac.authorization.k8s.io/v1", kind: "ClusterRole", metadata: { name }, rules }) as KubernetesObject;

const clusterRoleBinding = (name: string, subject: object): KubernetesObject =>
  ({
    apiVersion: "rbac.authorization.k8s.io/v1",
    kind: "ClusterRoleBinding",
    metadata: { name },
    roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "ClusterRole", name },
    subjects: [subject],
  }) as KubernetesObject;

const listWatch = ["get", "list", "watch"];

/** What the add-ons need in the API: identities, RBAC and the two Services pods dial by name. */
function addonObjects(plan: PodNetworkPlan): KubernetesObject[] {
  const endpointSlice = (namespace: string, service: string, address: string, ports: object[]): KubernetesObject =>
    ({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: {
        name: `${service}-ksr-local`,
        namespace,
        // Selector-less Services: the EndpointSlice controller leaves slices of another manager alone.
        labels: { "kubernetes.io/service-name": service, "endpointslice.kubernetes.io/managed-by": "local.ksr.io" },
      },
      addressType: "IPv4",
      endpoints: [{ addresses: [address], conditions: { ready: true, serving: true, terminating: false } }],
      ports,
    }) as KubernetesObject;
  return [
    ...coreDnsObjects(plan),
    { apiVersion: "v1", kind: "ServiceAccount", metadata: { name: "kube-network-policies", namespace: "kube-system" } },
    clusterRole("kube-network-policies", [
      { apiGroups: [""], resources: ["pods", "namespaces", "nodes"], verbs: listWatch },
      { apiGroups: ["networking.k8s.io"], resources: ["networkpolicies"], verbs: listWatch },
    ]),
    clusterRoleBinding("kube-network-policies", {
      kind: "ServiceAccount",
      name: "kube-network-policies",
      namespace: "kube-system",
    }),
    {
      apiVersion: "v1",
      kind: "Secret",
      metadata: {
        name: "kube-network-policies-token",
        namespace: "kube-system",
        annotations: { "kubernetes.io/service-account.name": "kube-network-policies" },
      },
      type: "kubernetes.io/service-account-token",
    } as KubernetesObject,
    // The apiserver's own Service: its endpoint is the node agent's forwarder (loopback endpoints are refused).
    endpointSlice("default", "kubernetes", plan.hostAddress, [
      { name: "https", protocol: "TCP", port: apiServicePort },
    ]),
  ];
}

async function apply(objects: KubernetesObjectApi, object: KubernetesObject): Promise<void> {
  try {
    await objects.patch(object, undefined, undefined, fieldManager, true, PatchStrategy.ServerSideApply);
  } catch (error) {
    // A Service's clusterIP cannot change: a kube-dns from an earlier Service range is replaced.
    if (object.kind !== "Service" || statusCode(error) !== 422) throw error;
    await objects.delete(object);
    await objects.patch(object, undefined, undefined, fieldManager, true, PatchStrategy.ServerSideApply);
  }
}

async function issueClient(
  clusterDir: string,
  name: string,
  commonName: string,
): Promise<{ cert: string; key: string }> {
  const pki = join(clusterDir, "pki");
  const cert = join(pki, `${name}.crt`);
  const key = join(pki, `${name}.key`);
  if (existsSync(cert) && existsSync(key)) return { cert: readFileSync(cert, "utf8"), key: readFileSync(key, "utf8") };
  const authority = loadCertificateAuthority({
    cert: readFileSync(join(pki, "ca.crt"), "utf8"),
    key: readFileSync(join(pki, "ca.key"), "utf8"),
  });
  const pair = await authority.issue({ commonName, usage: "client" });
  writeFileSync(cert, pair.cert);
  writeFileSync(key, pair.key, { mode: 0o600 });
  return pair;
}

/** The legacy token Secret's token, once the controller-manager's token controller has filled it in. */
async function serviceAccountToken(core: CoreV1Api, deadline: number): Promise<string> {
  for (;;) {
    const secret = await core.readNamespacedSecret({ name: "kube-network-policies-token", namespace: "kube-system" });
    const token = secret.data?.token;
    if (token !== undefined && token !== "") return Buffer.from(token, "base64").toString("utf8");
    if (Date.now() > deadline)
      throw new Error("the token controller did not fill kube-system/kube-network-policies-token in time");
    await sleep(200);
  }
}

/**
 * Writes the add-ons' identities, configuration and API objects. Their
 * kubeconfigs point at the node agent's forwarder (.254:443): the add-ons live
 * in the pod network's namespaces, where the apiserver's loopback is not.
 */
export async function prepareAddons(
  clusterDir: string,
  plan: PodNetworkPlan,
  adminKubeconfig: string,
  deadline: number,
): Promise<void> {
  const dir = addonDir(clusterDir);
  mkdirSync(join(dir, "network-policies-serviceaccount"), { recursive: true, mode: 0o700 });
  const caCert = readFileSync(join(clusterDir, "pki", "ca.crt"), "utf8");
  const server = `https://${plan.hostAddress}:${apiServicePort}`;
  const user = "system:kube-proxy";
  const client = await issueClient(clusterDir, "kube-proxy", user);
  writeFileSync(join(clusterDir, "kube-proxy.kubeconfig"), renderKubeconfig({ server, caCert, user, client }), {
    mode: 0o600,
  });
  for (const index of localNodes.keys()) {
    const site = localNodes[index]?.site ?? "";
    writeFileSync(join(dir, `kube-proxy-${site}.yaml`), kubeProxyConfig(clusterDir, plan, index));
  }

  const queues: string[] = [];
  for (const identity of localNodes) {
    const path = await ensurePolicyQueue(
      nodeNamespaceName(clusterDir, identity.site),
      addressIn(plan.subnet, reservedOctets.kubelet),
    );
    queues.push(`${identity.name}: ${path}`);
  }
  writeFileSync(join(dir, "policy-queue"), queues.join("\n") + "\n");

  const kubeConfig = new KubeConfig();
  kubeConfig.loadFromFile(adminKubeconfig);
  const objects = KubernetesObjectApi.makeApiClient(kubeConfig);
  for (const object of addonObjects(plan)) {
    try {
      await apply(objects, object);
    } catch (error) {
      throw new Error(`could not apply ${object.kind} ${object.metadata?.name}: ${describeError(error)}`);
    }
  }
  // Clusters made while CoreDNS ran as a process gave kube-dns a slice of their own: its pods replace it.
  await objects
    .delete({
      apiVersion: "discovery.k8s.io/v1",
      kind: "EndpointSlice",
      metadata: { name: "kube-dns-ksr-local", namespace: "kube-system" },
    })
    .catch((error: unknown) => {
      if (statusCode(error) !== 404) throw error;
    });
  const token = await serviceAccountToken(kubeConfig.makeApiClient(CoreV1Api), deadline);
  const sa = join(dir, "network-policies-serviceaccount");
  writeFileSync(join(sa, "token"), token, { mode: 0o600 });
  writeFileSync(join(sa, "ca.crt"), caCert);
  writeFileSync(join(sa, "namespace"), "kube-system");
}
