// NetworkPolicy on the shared `ksr local` cluster, enforced by
// kube-network-policies in each node's namespace; the cluster DNS is selected
// by its pods' labels, as on kind. Prober pods try their targets
// every half second and log one JSON line per round; a verdict counts once three
// rounds in a row agree (a new policy or pod takes the enforcer a moment).
import {
  CoreV1Api,
  NetworkingV1Api,
  type V1NetworkPolicy,
  type V1NetworkPolicySpec,
  type V1Pod,
} from "@kubernetes/client-node";
import { useCluster } from "../fixture/cluster.js";
import { podCondition, waitFor, waitForDefaultServiceAccount } from "./local-node-helpers.js";
import { prober, proberSettlesOn, webPod, type Verdicts } from "./network-probers.js";

/** A dropped lookup fails after a second, not the resolver's default 2 × 5 s, so a verdict comes quickly. */
function withQuickDnsTimeout(pod: V1Pod): V1Pod {
  const options = [
    { name: "timeout", value: "1" },
    { name: "attempts", value: "1" },
  ];
  if (pod.spec !== undefined) pod.spec.dnsConfig = { options };
  return pod;
}

describe("NetworkPolicy on ksr local (e2e)", function () {
  this.timeout(180_000);
  const cluster = useCluster("netpol");
  const core = () => cluster.kubeConfig.makeApiClient(CoreV1Api);
  const networking = () => cluster.kubeConfig.makeApiClient(NetworkingV1Api);
  const open = () => cluster.namespace;
  const isolated = () => `${cluster.namespace}-iso`;
  const ips = new Map<string, string>();

  const ready = (namespace: string, name: string) =>
    waitFor(`${namespace}/${name} Ready`, async () => {
      const pod = await core().readNamespacedPod({ name, namespace });
      return podCondition(pod, "Ready") === "True" ? pod : undefined;
    });
  const policy = (name: string, spec: V1NetworkPolicySpec): Promise<V1NetworkPolicy> =>
    networking().createNamespacedNetworkPolicy({ namespace: isolated(), body: { metadata: { name }, spec } });

  const settlesOn = (namespace: string, pod: string, expected: Verdicts) =>
    proberSettlesOn(cluster.state.dir, namespace, pod, expected);

  before(async function () {
    this.timeout(180_000);
    await core().createNamespace({ body: { metadata: { name: isolated() } } });
    for (const namespace of [open(), isolated()]) await waitForDefaultServiceAccount(core(), namespace);
    await core().createNamespacedPod({ namespace: open(), body: webPod("a-web", "primary") });
    await core().createNamespacedPod({ namespace: isolated(), body: webPod("b-web", "recovery") });
    for (const [namespace, name] of [
      [open(), "a-web"],
      [isolated(), "b-web"],
    ] as const)
      ips.set(name, (await ready(namespace, name)).status?.podIP ?? "");
    // Isolate the namespace before any prober starts: every pod in it, both directions. DNS is let
    // through with the usual rule, to the kube-dns pods by namespace and pod selector, for the
    // probers that carry dns=allowed only.
    await policy("isolate", { podSelector: {}, policyTypes: ["Ingress", "Egress"] });
    await policy("allow-dns", {
      podSelector: { matchLabels: { dns: "allowed" } },
      policyTypes: ["Egress"],
      egress: [
        {
          to: [
            {
              namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": "kube-system" } },
              podSelector: { matchLabels: { "k8s-app": "kube-dns" } },
            },
          ],
          ports: [
            { protocol: "UDP", port: 53 },
            { protocol: "TCP", port: 53 },
          ],
        },
      ],
    });
    const url = (name: string) => `http://${ips.get(name)}:8080/hostname`;
    await core().createNamespacedPod({
      namespace: isolated(),
      body: prober(
        "b-prober",
        "primary",
        { role: "prober", dns: "allowed" },
        {
          "a-web": url("a-web"),
          dns: `dns:kubernetes.default.svc.cluster.local`,
          "b-web": url("b-web"),
        },
      ),
    });
    // On the other node, so each node's CoreDNS pod is asked.
    await core().createNamespacedPod({
      namespace: isolated(),
      body: withQuickDnsTimeout(
        prober("b-no-dns", "recovery", { role: "no-dns" }, { dns: "dns:kubernetes.default.svc.cluster.local." }),
      ),
    });
    await core().createNamespacedPod({
      namespace: open(),
      body: prober("a-stranger", "primary", { role: "stranger" }, { "b-web": url("b-web"), "a-web": url("a-web") }),
    });
    await core().createNamespacedPod({
      namespace: open(),
      body: prober("a-friend", "recovery", { role: "friend" }, { "b-web": url("b-web") }),
    });
  });

  after(async () => {
    await core()
      .deleteNamespace({ name: isolated() })
      .catch(() => undefined);
  });

  it("keeps an isolated namespace's pods from reaching or being reached by another namespace, while DNS resolves", async () => {
    await settlesOn(isolated(), "b-prober", { "a-web": "blocked", "b-web": "blocked", dns: "ok" });
    await settlesOn(isolated(), "b-no-dns", { dns: "blocked" });
    await settlesOn(open(), "a-stranger", { "a-web": "ok", "b-web": "blocked" });
    await settlesOn(open(), "a-friend", { "b-web": "blocked" });
  });

  it("lets through what a policy allows: ingress by namespace and pod selector on a port, egress to an ipBlock", async () => {
    await policy("friends-to-web", {
      podSelector: { matchLabels: { app: "b-web" } },
      policyTypes: ["Ingress"],
      ingress: [
        {
          // The client's name for the field "from".
          _from: [
            {
              namespaceSelector: { matchLabels: { "kubernetes.io/metadata.name": open() } },
              podSelector: { matchLabels: { role: "friend" } },
            },
          ],
          ports: [{ protocol: "TCP", port: 8080 }],
        },
      ],
    });
    await policy("probers-to-a-web", {
      podSelector: { matchLabels: { role: "prober" } },
      policyTypes: ["Egress"],
      egress: [{ to: [{ ipBlock: { cidr: `${ips.get("a-web")}/32` } }], ports: [{ protocol: "TCP", port: 8080 }] }],
    });
    await settlesOn(open(), "a-friend", { "b-web": "ok" });
    await settlesOn(isolated(), "b-prober", { "a-web": "ok", "b-web": "blocked", dns: "ok" });
    await settlesOn(open(), "a-stranger", { "a-web": "ok", "b-web": "blocked" });
  });
});
