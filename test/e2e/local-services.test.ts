// Service networking on the shared `ksr local` cluster, as a pod sees it in
// kind: names resolve through CoreDNS with the namespace's search path,
// ClusterIPs route through the node's kube-proxy to a pod on the other site,
// headless names return pod IPs, NodePorts answer on both nodes' addresses,
// and names outside the cluster do not resolve (nothing leaves the machine).
import { strict as assert } from "node:assert";
import { readFileSync } from "node:fs";
import { CoreV1Api, DiscoveryV1Api, type V1Pod } from "@kubernetes/client-node";
import { addressIn, reservedOctets } from "../../src/local/node/addresses.js";
import { siteLabel } from "../../src/local/node/layout.js";
import { readContainerLog } from "../../src/local/node/logs.js";
import { useCluster } from "../fixture/cluster.js";
import { webPod } from "./network-probers.js";
import {
  httpText,
  podCondition,
  serviceEndpoints,
  waitFor,
  waitForDefaultServiceAccount,
} from "./local-node-helpers.js";

/** Prints one JSON object: the pod's resolv.conf, what names resolve to, and what HTTP answers. */
const clientScript = `
import json, os, socket, urllib.request
ns = os.environ["NS"]
def addresses(name):
    try:
        return sorted({a[4][0] for a in socket.getaddrinfo(name, 80, socket.AF_INET, socket.SOCK_STREAM)})
    except socket.gaierror as error:
        return {socket.EAI_NONAME: "EAI_NONAME", socket.EAI_AGAIN: "EAI_AGAIN"}.get(error.args[0], str(error))
def get(url):
    return urllib.request.urlopen(url, timeout=5).read().decode().strip()
print(json.dumps({
    "resolvConf": open("/etc/resolv.conf").read(),
    "short": addresses("web"),
    "fqdn": addresses("web.%s.svc.cluster.local" % ns),
    "headless": addresses("web-headless.%s.svc.cluster.local" % ns),
    "kubernetes": addresses("kubernetes.default"),
    "outside": addresses("example.com"),
    "byName": get("http://web.%s.svc:80/hostname" % ns),
    "nodePorts": [get("http://%s:%s/hostname" % (ip, os.environ["NODE_PORT"])) for ip in os.environ["NODE_IPS"].split()],
}))
`;

describe("Service networking on ksr local (e2e)", function () {
  this.timeout(120_000);
  const cluster = useCluster("svc");
  const core = () => cluster.kubeConfig.makeApiClient(CoreV1Api);
  const ns = () => cluster.namespace;
  const subnet = () => cluster.state.podNetwork?.subnet ?? "";
  const nodeIPs = () => [0, 1].map((i) => addressIn(subnet(), reservedOctets.firstNode + i));
  let serverIP = "";
  let clusterIP = "";
  let nodePort = 0;

  const finished = (name: string) =>
    waitFor(`${name} finished`, async () => {
      const pod = await core().readNamespacedPod({ name, namespace: ns() });
      return pod.status?.phase === "Succeeded" || pod.status?.phase === "Failed" ? pod : undefined;
    });

  before(async function () {
    this.timeout(120_000);
    await waitForDefaultServiceAccount(core(), ns());
    await core().createNamespacedPod({ namespace: ns(), body: webPod("web", "recovery") });
    const ports = [{ name: "http", port: 80, targetPort: "http" }];
    const service = (name: string, spec: object) =>
      core().createNamespacedService({
        namespace: ns(),
        body: { metadata: { name }, spec: { selector: { app: "web" }, ports, ...spec } },
      });
    clusterIP = (await service("web", {})).spec?.clusterIP ?? "";
    await service("web-headless", { clusterIP: "None" });
    nodePort = (await service("web-nodeport", { type: "NodePort" })).spec?.ports?.[0]?.nodePort ?? 0;
    const server = await waitFor("web Ready", async () => {
      const pod = await core().readNamespacedPod({ name: "web", namespace: ns() });
      return podCondition(pod, "Ready") === "True" ? pod : undefined;
    });
    serverIP = server.status?.podIP ?? "";
    const discovery = cluster.kubeConfig.makeApiClient(DiscoveryV1Api);
    await waitFor("web listed ready", async () =>
      (await serviceEndpoints(discovery, ns(), "web")).some((e) => e.address === serverIP && e.ready)
        ? true
        : undefined,
    );
    // Each node's kube-proxy programs the Services in its own time (a second or so, longer under load).
    for (const ip of nodeIPs())
      await waitFor(`kube-proxy on ${ip} serving the NodePort`, () =>
        httpText(`http://${ip}:${nodePort}/hostname`).then(
          (body) => (body.trim() === "web" ? true : undefined),
          () => undefined,
        ),
      );
  });

  it("resolves ClusterIP, headless and apiserver names from a pod on the other site and reaches them", async () => {
    const client: V1Pod = {
      metadata: { name: "client" },
      spec: {
        nodeSelector: { [siteLabel]: "primary" },
        restartPolicy: "Never",
        containers: [
          {
            name: "client",
            image: "debian:12",
            command: ["python3", "-c", clientScript],
            env: [
              { name: "NS", value: ns() },
              { name: "NODE_PORT", value: String(nodePort) },
              { name: "NODE_IPS", value: nodeIPs().join(" ") },
            ],
          },
        ],
      },
    };
    await core().createNamespacedPod({ namespace: ns(), body: client });
    const pod = await finished("client");
    const output = readContainerLog({ dir: cluster.state.dir, namespace: ns(), pod: "client" });
    assert.equal(pod.status?.phase, "Succeeded", output);
    const kubernetes = await core().readNamespacedService({ name: "kubernetes", namespace: "default" });
    const dns = await core().readNamespacedService({ name: "kube-dns", namespace: "kube-system" });
    assert.deepEqual(JSON.parse(output.trim().split("\n").at(-1) ?? "{}"), {
      resolvConf: [
        `nameserver ${dns.spec?.clusterIP}`,
        `search ${ns()}.svc.cluster.local svc.cluster.local cluster.local`,
        "options ndots:5",
        "",
      ].join("\n"),
      short: [clusterIP],
      fqdn: [clusterIP],
      headless: [serverIP],
      kubernetes: [kubernetes.spec?.clusterIP],
      outside: "EAI_NONAME",
      byName: "web",
      nodePorts: ["web", "web"],
    });
  });

  it("answers a NodePort on both nodes' addresses and the ClusterIP from the host, as on a kind node", async () => {
    for (const ip of nodeIPs()) assert.equal((await httpText(`http://${ip}:${nodePort}/hostname`)).trim(), "web");
    assert.equal((await httpText(`http://${clusterIP}/hostname`)).trim(), "web");
  });

  it("leaves a hostNetwork pod the machine's resolv.conf, and gives ClusterFirstWithHostNet the cluster's", async () => {
    const hostPod = (name: string, dnsPolicy: string): V1Pod => ({
      metadata: { name },
      spec: {
        hostNetwork: true,
        dnsPolicy,
        restartPolicy: "Never",
        nodeSelector: { [siteLabel]: "primary" },
        containers: [{ name: "cat", image: "busybox:1.36", command: ["cat", "/etc/resolv.conf"] }],
      },
    });
    await core().createNamespacedPod({ namespace: ns(), body: hostPod("host-default", "ClusterFirst") });
    await core().createNamespacedPod({ namespace: ns(), body: hostPod("host-cluster", "ClusterFirstWithHostNet") });
    await finished("host-default");
    await finished("host-cluster");
    const log = (pod: string) => readContainerLog({ dir: cluster.state.dir, namespace: ns(), pod });
    assert.equal(log("host-default"), readFileSync("/etc/resolv.conf", "utf8"));
    const dns = await core().readNamespacedService({ name: "kube-dns", namespace: "kube-system" });
    assert.match(log("host-cluster"), new RegExp(`^nameserver ${dns.spec?.clusterIP?.replace(/\./g, "\\.")}\n`));
  });
});
