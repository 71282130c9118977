// Pod networking on the local node against the shared `ksr local` cluster:
// each pod in its own network namespace with a 198.18.0.0/15 address, so the
// real EndpointSlice controller publishes pods, readiness moves them in and
// out, pods on both sites reach each other and the apiserver, and pods on one
// node can bind the same port.
import { strict as assert } from "node:assert";
import { existsSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { CoreV1Api, DiscoveryV1Api, type V1Container, type V1Pod } from "@kubernetes/client-node";
import { podNamespaceName } from "../../src/local/node/addresses.js";
import { nodeLayout, siteLabel } from "../../src/local/node/layout.js";
import { readContainerLog } from "../../src/local/node/logs.js";
import { useCluster } from "../fixture/cluster.js";
import { networkNamespaces } from "../fixture/network.js";
import {
  httpText,
  idle,
  isPodAddress,
  podCondition,
  serviceEndpoints,
  shellContainer,
  waitFor,
  waitForDefaultServiceAccount,
} from "./local-node-helpers.js";

/** Serves the pod's /etc (so /hostname names the pod) on 0.0.0.0:8080, ready once it answers. */
function etcServer(): V1Container {
  return {
    name: "web",
    image: "debian:12",
    command: ["python3", "-m", "http.server", "8080", "--directory", "/etc"],
    ports: [{ name: "http", containerPort: 8080 }],
    readinessProbe: { httpGet: { path: "/hostname", port: "http" }, periodSeconds: 1 },
  };
}

/**
 * Fetches the server pod's /hostname by pod IP, then asks the apiserver who it
 * is (SelfSubjectReview) through KUBERNETES_SERVICE_HOST with the pod's token,
 * verifying the serving certificate against the projected ca.crt.
 */
const clientScript = `
import json, os, ssl, urllib.request
print(urllib.request.urlopen("http://%s:8080/hostname" % os.environ["SERVER"], timeout=5).read().decode().strip())
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
api = "https://%s:%s" % (os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"])
review = urllib.request.Request(
    api + "/apis/authentication.k8s.io/v1/selfsubjectreviews",
    data=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}).encode(),
    headers={"Authorization": "Bearer " + open(sa + "/token").read(), "Content-Type": "application/json"},
    method="POST",
)
context = ssl.create_default_context(cafile=sa + "/ca.crt")
print(json.load(urllib.request.urlopen(review, context=context, timeout=5))["status"]["userInfo"]["username"])
print(os.environ["KUBERNETES_SERVICE_HOST"])
`;

describe("local node pod network (e2e)", function () {
  this.timeout(90_000);
  const cluster = useCluster("net");
  const core = () => cluster.kubeConfig.makeApiClient(CoreV1Api);
  const ns = () => cluster.namespace;
  before(() => waitForDefaultServiceAccount(core(), ns()));

  const readyPod = (name: string) =>
    waitFor(`${name} Ready`, async () => {
      const pod = await core().readNamespacedPod({ name, namespace: ns() });
      return podCondition(pod, "Ready") === "True" ? pod : undefined;
    });
  const podOn = (name: string, site: string, containers: V1Container[], extra: Partial<V1Pod["spec"]> = {}) =>
    core().createNamespacedPod({
      namespace: ns(),
      body: {
        metadata: { name, labels: { app: name } },
        spec: { nodeSelector: { [siteLabel]: site }, containers, ...extra },
      },
    });

  it("takes a pod out of its Service's ready endpoints while its readiness probe fails, and back when it passes", async () => {
    await podOn("gate", "primary", [
      shellContainer("main", idle, {
        readinessProbe: { exec: { command: ["test", "-f", "/tmp/ready"] }, periodSeconds: 1, failureThreshold: 1 },
        ports: [{ containerPort: 9000 }],
      }),
    ]);
    await core().createNamespacedService({
      namespace: ns(),
      body: { metadata: { name: "gate" }, spec: { selector: { app: "gate" }, ports: [{ port: 9000 }] } },
    });
    const pod = await waitFor("gate running", async () => {
      const p = await core().readNamespacedPod({ name: "gate", namespace: ns() });
      return p.status?.containerStatuses?.[0]?.state?.running !== undefined ? p : undefined;
    });
    const ip = pod.status?.podIP ?? "";
    assert.ok(isPodAddress(cluster.state, ip), ip);
    // The pod's /tmp is a folder of the node on the host: the test flips readiness without racing a timer.
    const readyFile = join(nodeLayout(cluster.state.dir).pods, pod.metadata?.uid ?? "", "tmp", "ready");
    const discovery = cluster.kubeConfig.makeApiClient(DiscoveryV1Api);
    const listedAs = (ready: boolean) =>
      waitFor(`gate listed with ready=${ready}`, async () => {
        const endpoints = await serviceEndpoints(discovery, ns(), "gate");
        return endpoints.length === 1 && endpoints[0]?.address === ip && endpoints[0].ready === ready
          ? endpoints
          : undefined;
      });
    await listedAs(false);
    writeFileSync(readyFile, "");
    await listedAs(true);
    rmSync(readyFile);
    await listedAs(false);
    writeFileSync(readyFile, "");
    await listedAs(true);
  });

  it("connects a pod on the primary node to a pod on the recovery node by pod IP, and to the apiserver with its token", async () => {
    await podOn("server", "recovery", [etcServer()]);
    const server = await readyPod("server");
    const serverIP = server.status?.podIP ?? "";
    await podOn(
      "client",
      "primary",
      [
        {
          name: "client",
          image: "debian:12",
          command: ["python3", "-c", clientScript],
          env: [{ name: "SERVER", value: serverIP }],
        },
      ],
      { restartPolicy: "Never" },
    );
    const client = await waitFor("client finished", async () => {
      const p = await core().readNamespacedPod({ name: "client", namespace: ns() });
      return p.status?.phase === "Succeeded" || p.status?.phase === "Failed" ? p : undefined;
    });
    const output = readContainerLog({ dir: cluster.state.dir, namespace: ns(), pod: "client" });
    assert.deepEqual(
      { phase: client.status?.phase, lines: output.trim().split("\n") },
      {
        phase: "Succeeded",
        lines: ["server", `system:serviceaccount:${ns()}:default`, cluster.state.podNetwork?.hostAddress],
      },
      output,
    );
    assert.notEqual(client.status?.podIP, serverIP);
    assert.ok(isPodAddress(cluster.state, client.status?.podIP ?? ""));
  });

  it("keeps a hostNetwork pod in the node's network namespace, with the node's address", async () => {
    // /proc/net/dev lists the interfaces of the reader's network namespace: only the node's has the host veth.
    const seesHostVeth = ["grep", "-q", `${cluster.state.podNetwork?.hostInterface}:`, "/proc/net/dev"];
    await podOn(
      "on-host",
      "recovery",
      [shellContainer("main", idle, { readinessProbe: { exec: { command: seesHostVeth }, periodSeconds: 1 } })],
      {
        hostNetwork: true,
      },
    );
    const pod = await readyPod("on-host");
    assert.deepEqual([pod.status?.podIP, pod.status?.hostIP], ["127.0.0.1", "127.0.0.1"]);
    assert.equal(networkNamespaces().includes(podNamespaceName(cluster.state.dir, pod.metadata?.uid ?? "")), false);
  });

  it("lets two pods on one node bind 0.0.0.0 on the same port, and removes a pod's namespace with the pod", async () => {
    await Promise.all(["twin-a", "twin-b"].map((name) => podOn(name, "primary", [etcServer()])));
    const twins = await Promise.all(["twin-a", "twin-b"].map(readyPod));
    const answers = await Promise.all(twins.map((pod) => httpText(`http://${pod.status?.podIP}:8080/hostname`)));
    assert.deepEqual(answers, ["twin-a\n", "twin-b\n"]);

    const netns = podNamespaceName(cluster.state.dir, twins[0]?.metadata?.uid ?? "");
    assert.ok(networkNamespaces().includes(netns), `${netns} exists while the pod runs`);
    assert.ok(existsSync(`/run/netns/${netns}`));
    await core().deleteNamespacedPod({ name: "twin-a", namespace: ns(), gracePeriodSeconds: 0 });
    await waitFor(`${netns} deleted with its pod`, () =>
      Promise.resolve(networkNamespaces().includes(netns) ? undefined : true),
    );
  });
});
