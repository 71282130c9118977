// `helm install` of charts/kube-site-recovery into `ksr local`, as a user on kind would run it:
// the CRDs, RBAC and the operator's two pods, one per site, Ready, one of them leading, with a
// notifications receiver from the chart's values; then protecting a StatefulSet with that operator
// (Protected), pausing it (a HealthChanged notification reaches a webhook served by a pod in the
// cluster), deleting it, and `helm uninstall` leaving no operator pod and no ClusterRole behind.
import { strict as assert } from "node:assert";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { protectedMachines, replicationPolicies, type ProtectedMachine } from "../../src/api/types.js";
import { crdName, kinds } from "../../src/api/crds.js";
import { clusterRoles } from "../../src/install/manifests.js";
import { siteLabel } from "../../src/local/node/layout.js";
import {
  customResourceDefinitions,
  KubeClient,
  leases,
  namespaces,
  nodes,
  pods,
  serviceAccounts,
  statefulSets,
  type Pod,
} from "../../src/runtime/index.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";
import { chartDir, helm } from "../fixture/tools.js";
import { appendSmall, fastPolicy, writerStatefulSet } from "../fixture/writer.js";
import { startWebhookSink, type WebhookSink } from "../fixture/webhook-sink.js";
import { httpText } from "./local-node-helpers.js";

describe("helm install of the chart into ksr local (e2e)", function () {
  this.timeout(20 * 60_000); // the first test may build helm
  const cluster = useCluster("chart");
  let client: KubeClient;
  const release = "ksr";
  const helmIn = (args: string[]) =>
    helm([...args, "--kubeconfig", cluster.state.kubeconfig, "--namespace", cluster.namespace]);
  let app = "";
  let target = "";
  let control = "";
  before(async () => {
    client = new KubeClient(cluster.kubeConfig);
    app = `${cluster.namespace}-app`;
    target = `${cluster.namespace}-dr`;
    control = await mkdtemp(join(tmpdir(), "ksr-chart-ctl-"));
    for (const name of [app, target]) await client.create(namespaces, { metadata: { name } });
  });
  after(async () => {
    await client.delete(protectedMachines, { name: "app", namespace: app }).catch(() => undefined);
    await helmIn(["uninstall", release, "--ignore-not-found", "--wait"]);
    for (const name of [app, target]) await client.delete(namespaces, { name }).catch(() => undefined);
    client.close();
    await rm(control, { recursive: true, force: true });
  });

  let sink: WebhookSink | undefined;
  const sinkLog = async () => (await sink?.posts())?.map((post) => `POST ${post.path} ${post.body}`).join("\n") ?? "";

  const operatorPods = async (): Promise<Pod[]> =>
    (
      await client.list(pods, { namespace: cluster.namespace, labelSelector: "app.kubernetes.io/name=ksr-operator" })
    ).items.filter((pod) => pod.metadata.deletionTimestamp === undefined);
  const ready = (pod: Pod) => pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;

  it("installs the CRDs and two Ready operator pods on different sites, one holding the Lease", async () => {
    sink = await startWebhookSink(client, {
      name: "notify-sink",
      namespace: cluster.namespace,
      clusterDir: cluster.state.dir,
    });
    const receivers = JSON.stringify({
      receivers: [
        {
          name: "sink",
          categories: ["MachineHealth"],
          webhook: { url: `${sink.url}/hook` },
        },
      ],
    });
    const installed = await helmIn([
      "install",
      release,
      chartDir,
      "--set-json",
      `notifications=${receivers}`,
      "--wait",
      "--timeout",
      "5m",
    ]);
    assert.equal(installed.code, 0, installed.stderr);
    assert.match(
      installed.stdout,
      new RegExp(`kube-site-recovery 0\\.1\\.0 is installed in namespace ${cluster.namespace}`),
    );
    assert.match(
      installed.stdout,
      /The operator runs 2 replica\(s\), one per value of the node label topology\.dr\.ksr\.io\/site/,
    );
    for (const kind of kinds)
      assert.ok(await client.get(customResourceDefinitions, crdName(kind)), `CRD ${crdName(kind)} missing`);
    assert.ok(
      await client.get(clusterRoles, `ksr-operator-${cluster.namespace}`),
      "the chart's ClusterRole is missing",
    );

    const running = await eventually(
      "two Ready operator pods",
      async () => {
        const current = await operatorPods();
        return current.length === 2 && current.every(ready) ? current : undefined;
      },
      120_000,
      { describe: async () => JSON.stringify((await operatorPods()).map((p) => [p.metadata.name, p.status?.phase])) },
    );
    const sites = await Promise.all(
      running.map(async (pod) => (await client.get(nodes, pod.spec?.nodeName ?? ""))?.metadata.labels?.[siteLabel]),
    );
    assert.deepEqual(sites.sort(), ["primary", "recovery"]);
    const holder = await eventually(
      "an operator pod holding the Lease",
      async () => {
        const identity = (await client.get(leases, "ksr-operator", cluster.namespace))?.spec?.holderIdentity ?? "";
        return running.some((pod) => identity.startsWith(`${pod.metadata.name}_`)) ? identity : undefined;
      },
      60_000,
    );
    assert.ok(holder.length > 0);
  });

  it("the chart's operator protects a StatefulSet, and a health change reaches the chart's webhook receiver", async () => {
    await eventually("the default service account", async () => client.get(serviceAccounts, "default", app));
    await client.create(replicationPolicies, fastPolicy(app));
    await client.create(
      statefulSets,
      writerStatefulSet({ name: "app", namespace: app, mib: 4, control, whileWriting: appendSmall }),
    );
    const machine: ProtectedMachine = {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "ProtectedMachine",
      metadata: { name: "app", namespace: app },
      spec: {
        policyRef: { name: "fast" },
        source: { workloadRef: { kind: "StatefulSet", name: "app" } },
        target: { site: "recovery", namespace: target, storageClassName: "standard" },
        paused: false,
      },
    };
    await client.create(protectedMachines, machine);
    const describeMachine = async () => JSON.stringify((await client.get(protectedMachines, "app", app))?.status ?? {});
    const isProtected = await eventually(
      "ProtectedMachine app Protected and Healthy",
      async () => {
        const found = await client.get(protectedMachines, "app", app);
        return found?.status?.phase === "Protected" && found.status.health === "Healthy" ? found : undefined;
      },
      5 * 60_000,
      { describe: describeMachine, intervalMs: 1000 },
    );
    assert.equal(isProtected.status?.initialReplication?.progressPercent, 100);

    // The journal gauges the PrometheusRule's journal alerts read, from the leader's /metrics.
    const sample = (metrics: string, name: string) => {
      const match = new RegExp(`^${name}\\{namespace="${app}",machine="app"\\} (\\S+)$`, "m").exec(metrics);
      return match === null ? undefined : Number(match[1]);
    };
    const journal = await eventually(
      "the leader exporting ksr_journal_* for the machine",
      async () => {
        const identity = (await client.get(leases, "ksr-operator", cluster.namespace))?.spec?.holderIdentity ?? "";
        const leader = (await operatorPods()).find((pod) => identity.startsWith(`${pod.metadata.name}_`));
        if (leader?.status?.podIP === undefined) return undefined;
        const metrics = await httpText(`http://${leader.status.podIP}:8080/metrics`).catch(() => "");
        const values = {
          used: sample(metrics, "ksr_journal_used_bytes"),
          capacity: sample(metrics, "ksr_journal_capacity_bytes"),
          oldestAge: sample(metrics, "ksr_journal_oldest_point_age_seconds"),
          retention: sample(metrics, "ksr_journal_retention_seconds"),
        };
        const { used, capacity, oldestAge, retention } = values;
        return used !== undefined &&
          used > 0 &&
          capacity !== undefined &&
          oldestAge !== undefined &&
          retention !== undefined
          ? { used, capacity, oldestAge, retention }
          : undefined;
      },
      2 * 60_000,
      { intervalMs: 2000 },
    );
    assert.equal(journal.retention, 3600, "the policy's recoveryPointRetention 1h");
    assert.equal(journal.capacity, 10 * 2 ** 30, "the master target's 10Gi journal claim");
    assert.ok(journal.used < journal.capacity);
    assert.ok(journal.oldestAge >= 0 && journal.oldestAge < 3600);

    await client.patch(protectedMachines, { name: "app", namespace: app }, { spec: { paused: true } }, "merge");
    const posted = await eventually(
      "the HealthChanged notification at the sink",
      async () => {
        const line = (await sinkLog())
          .split("\n")
          .find((l) => l.startsWith("POST /hook ") && l.includes("HealthChanged"));
        return line;
      },
      2 * 60_000,
      { describe: sinkLog, intervalMs: 1000 },
    );
    const body = JSON.parse(posted.slice("POST /hook ".length)) as { text: string };
    assert.match(
      body.text,
      new RegExp(
        `^\\[Warning\\] ProtectedMachine ${app}/app: HealthChanged: health Healthy → Warning: replication is paused`,
      ),
    );

    await client.delete(protectedMachines, { name: "app", namespace: app });
    await eventually(
      "the ProtectedMachine gone (the chart's operator cleared its finalizer)",
      async () => ((await client.get(protectedMachines, "app", app)) === undefined ? true : undefined),
      3 * 60_000,
      { describe: describeMachine, intervalMs: 1000 },
    );
  });

  it("helm uninstall removes the operator and its cluster-wide RBAC", async () => {
    const removed = await helmIn(["uninstall", release, "--wait", "--timeout", "2m"]);
    assert.equal(removed.code, 0, removed.stderr);
    await eventually(
      "no operator pod left",
      async () => ((await operatorPods()).length === 0 ? true : undefined),
      60_000,
    );
    assert.equal(await client.get(clusterRoles, `ksr-operator-${cluster.namespace}`), undefined);
  });
});
