// `helm install` of charts/kube-site-recovery into `ksr local`, as a user on kind would run it:
// the CRDs, RBAC and the operator's two pods, one per site, Ready, one of them leading; then
// `helm uninstall` leaves no operator pod and no ClusterRole behind.
import { strict as assert } from "node:assert";
import { crdName, kinds } from "../../src/api/crds.js";
import { clusterRoles } from "../../src/install/manifests.js";
import { siteLabel } from "../../src/local/node/layout.js";
import { customResourceDefinitions, KubeClient, leases, nodes, pods, type Pod } from "../../src/runtime/index.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";
import { chartDir, helm } from "../fixture/tools.js";


describe("helm install of the chart into ksr local (e2e)", function () {
  this.timeout(20 * 60_000); // the first test may build helm
  const cluster = useCluster("chart");
  let client: KubeClient;
  const release = "ksr";
  const helmIn = (args: string[]) =>
    helm([...args, "--kubeconfig", cluster.state.kubeconfig, "--namespace", cluster.namespace]);
  before(() => {
    client = new KubeClient(cluster.kubeConfig);
  });
  after(async () => {
    await helmIn(["uninstall", release, "--ignore-not-found", "--wait"]);
    client.close();
  });

  const operatorPods = async (): Promise<Pod[]> =>
    (
      await client.list(pods, { namespace: cluster.namespace, labelSelector: "app.kubernetes.io/name=ksr-operator" })
    ).items.filter((pod) => pod.metadata.deletionTimestamp === undefined);
  const ready = (pod: Pod) => pod.status?.conditions?.some((c) => c.type === "Ready" && c.status === "True") === true;

  it("installs the CRDs and two Ready operator pods on different sites, one holding the Lease", async () => {
    const installed = await helmIn(["install", release, chartDir, "--wait", "--timeout", "5m"]);
    assert.equal(installed.code, 0, installed.stderr);
    assert.match(
      installed.stdout,
      new RegExp(`kube-site-recovery 0\\.1\\.0 is installed in namespace ${cluster.namespace}`),
    );
    assert.match(
      installed.stdout,
      /The operator runs 2 replica\(s\), one per value of the node label topology\.dr\.ksr\.io\/site/,
    );
    for (const kind of kinds) assert.ok(await client.get(customResourceDefinitions, crdName(kind)), `CRD ${crdName(kind)} missing`);
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
