// NetworkPolicy on the shared `ksr local` cluster, enforced by
// kube-network-policies in each node's namespace. Prober pods try their targets
// every half second and log one JSON line per round; a verdict counts once three
// rounds in a row agree (a new policy or pod takes the enforcer a moment).
import {
  CoreV1Api,
  NetworkingV1Api,
  type V1NetworkPolicy,
  type V1NetworkPolicySpec,
  type V1Pod,
} from "@kubernetes/client-node";
import { siteLabel } from "../../src/local/node/layout.js";
import { readContainerLog } from "../../src/local/node/logs.js";
import { useCluster } from "../fixture/cluster.js";
import { podCondition, waitFor, waitForDefaultServiceAccount } from "./local-node-helpers.js";

const proberScript = `
import json, os, socket, time, urllib.request
targets = json.loads(os.environ["TARGETS"])
while True:
    results = {}
    for name, target in sorted(targets.items()):
        try:
            if target.startswith("dns:"):
                socket.getaddrinfo(target[4:], 80, socket.AF_INET, socket.SOCK_STREAM)
            else:
                urllib.request.urlopen(target, timeout=1).read()
            results[name] = "ok"
        except Exception:
            results[name] = "blocked"
    print(json.dumps(results), flush=True)
    time.sleep(0.5)
`;

type Verdicts = Record<string, "ok" | "blocked">;

describe("NetworkPolicy on ksr local (e2e)", function () {
  this.timeout(180_000);
  const cluster = useCluster("netpol");
  const core = () => cluster.kubeConfig.makeApiClient(CoreV1Api);
  const networking = () => cluster.kubeConfig.makeApiClient(NetworkingV1Api);
  const open = () => cluster.namespace;
  const isolated = () => `${cluster.namespace}-iso`;
  const ips = new Map<string, string>();

  const webPod = (name: string, site: string): V1Pod => ({
    metadata: { name, labels: { app: name } },
    spec: {
      nodeSelector: { [siteLabel]: site },
      containers: [
        {
          name: "web",
          image: "debian:12",
          command: ["python3", "-m", "http.server", "8080", "--directory", "/etc"],
          ports: [{ name: "http", containerPort: 8080 }],
          readinessProbe: { httpGet: { path: "/hostname", port: "http" }, periodSeconds: 1 },
        },
      ],
    },
  });
  const prober = (
    name: string,
    site: string,
    labels: Record<string, string>,
    targets: Record<string, string>,
  ): V1Pod => ({
    metadata: { name, labels },
    spec: {
      nodeSelector: { [siteLabel]: site },
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: "probe",
          image: "debian:12",
          command: ["python3", "-u", "-c", proberScript],
          env: [{ name: "TARGETS", value: JSON.stringify(targets) }],
        },
      ],
    },
  });
  const ready = (namespace: string, name: string) =>
    waitFor(`${namespace}/${name} Ready`, async () => {
      const pod = await core().readNamespacedPod({ name, namespace });
      return podCondition(pod, "Ready") === "True" ? pod : undefined;
    });
  const policy = (name: string, spec: V1NetworkPolicySpec): Promise<V1NetworkPolicy> =>
    networking().createNamespacedNetworkPolicy({ namespace: isolated(), body: { metadata: { name }, spec } });

  /** The prober's log so far; empty until its first start. */
  const proberLog = (namespace: string, pod: string) => {
    try {
      return readContainerLog({ dir: cluster.state.dir, namespace, pod }).trim();
    } catch {
      return "";
    }
  };

  /** Waits until the prober's last three rounds all show the expected verdicts. */
  const settlesOn = (namespace: string, pod: string, expected: Verdicts) =>
    waitFor(
      `${namespace}/${pod} sees ${JSON.stringify(expected)}`,
      () => {
        const lines = proberLog(namespace, pod).split("\n").slice(-3);
        if (lines.length < 3 || lines.some((line) => !line.startsWith("{"))) return Promise.resolve(undefined);
        const rounds = lines.map((line) => JSON.parse(line) as Verdicts);
        return Promise.resolve(
          rounds.every((round) => JSON.stringify(round) === JSON.stringify(expected)) ? true : undefined,
        );
      },
      90_000,
      () =>
        Promise.resolve(readContainerLog({ dir: cluster.state.dir, namespace, pod }).trim().split("\n").at(-1) ?? ""),
    );

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
    // Isolate the namespace before any prober starts: every pod in it, both directions, DNS still allowed.
    await policy("isolate", {
      podSelector: {},
      policyTypes: ["Ingress", "Egress"],
      egress: [
        {
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
        { role: "prober" },
        {
          "a-web": url("a-web"),
          dns: `dns:kubernetes.default.svc.cluster.local`,
          "b-web": url("b-web"),
        },
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
