// The operator as a user runs it: `ksr install --wait` on the local two-site
// cluster (the operator as pods of the project's image), one leader and a
// standby on the other site, a takeover after the leader's process is killed,
// a re-install that changes nothing, and `ksr uninstall` leaving nothing.
import { strict as assert } from "node:assert";
import { replicationPolicies, type ReplicationPolicy } from "../../src/api/types.js";
import { crdName, kinds } from "../../src/api/crds.js";
import { clusterRoleBindings, clusterRoles, leaseName, operatorName } from "../../src/install/manifests.js";
import { siteLabel } from "../../src/local/node/layout.js";
import {
  deployments,
  findCondition,
  KubeClient,
  leases,
  namespaces,
  customResourceDefinitions,
  nodes,
  pods,
  type Pod,
} from "../../src/runtime/index.js";
import { eventually } from "../fixture/eventually.js";
import { ksr } from "../fixture/ksr-cli.js";
import { killLeader } from "../fixture/leader-killer.js";
import { forgetOperator, useOperator } from "../fixture/operator.js";
import { httpText } from "./local-node-helpers.js";

describe("operator installed by ksr install (e2e)", function () {
  this.timeout(180_000);
  const cluster = useOperator("operator");
  let client: KubeClient;
  before(() => {
    client = new KubeClient(cluster.kubeConfig);
  });
  after(() => {
    client.close();
  });

  const operatorPods = async (): Promise<Pod[]> =>
    (
      await client.list(pods, {
        namespace: cluster.operatorNamespace,
        labelSelector: `app.kubernetes.io/name=${operatorName}`,
      })
    ).items.filter((pod) => pod.metadata.deletionTimestamp === undefined);
  const holder = async () =>
    (await client.get(leases, leaseName, cluster.operatorNamespace))?.spec?.holderIdentity ?? "";
  const siteOf = async (pod: Pod) =>
    (await client.get(nodes, pod.spec?.nodeName ?? ""))?.metadata.labels?.[siteLabel] ?? "no site";

  const policy = (name: string): ReplicationPolicy => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ReplicationPolicy",
    metadata: { name, namespace: cluster.namespace },
    spec: {} as ReplicationPolicy["spec"], // the API server fills in every default
  });
  const readyPolicy = (name: string) =>
    eventually(
      `ReplicationPolicy ${name} Ready`,
      async () => {
        const current = await client.get(replicationPolicies, name, cluster.namespace);
        const ready = findCondition(current?.status?.conditions, "Ready");
        return ready?.status === "True" && ready.observedGeneration === current?.metadata.generation
          ? current
          : undefined;
      },
      90_000,
    );

  it("runs two operator pods on different sites, exactly one holding the lease, and reconciles", async () => {
    assert.match(cluster.install.stderr, /the operator is ready in namespace ksr-system/);
    const running = await operatorPods();
    assert.equal(running.length, 2, `pods: ${running.map((p) => p.metadata.name).join(", ")}`);
    const sites = await Promise.all(running.map(siteOf));
    assert.deepEqual([...sites].sort(), ["primary", "recovery"]);
    const leader = await holder();
    const leaders = running.filter((pod) => leader.startsWith(`${pod.metadata.name}_`));
    assert.equal(leaders.length, 1, `lease holder ${leader} is one of the pods`);

    await client.create(replicationPolicies, policy("reconciled"));
    const ready = await readyPolicy("reconciled");

    // One registry on /metrics: controller-runtime's metrics next to the protection metrics.
    const leaderPod = leaders[0];
    const metrics = await httpText(`http://${leaderPod?.status?.podIP ?? ""}:8080/metrics`);
    assert.match(
      metrics,
      /controller_runtime_reconcile_total\{controller="replicationpolicy",result="requeue_after"\} [1-9]/,
    );
    assert.match(metrics, /leader_election_master_status\{name="ksr-operator"\} 1/);
    for (const name of ["rpo_seconds", "pending_bytes", "health", "recovery_points"])
      assert.match(metrics, new RegExp(`# TYPE ksr_machine_${name} gauge|# TYPE ksr_${name} gauge`));
    assert.match(metrics, /# TYPE ksr_replicated_bytes_total counter/);
    assert.equal(ready.status?.protectedMachines, 0);
    assert.equal(findCondition(ready.status.conditions, "EncryptionKeyValid")?.reason, "EncryptionDisabled");
  });

  it("re-running ksr install changes nothing", async () => {
    const before = await client.get(deployments, operatorName, cluster.operatorNamespace);
    const again = await ksr(["install", "--kubeconfig", cluster.state.kubeconfig]);
    assert.equal(again.code, 0, again.stderr);
    const after = await client.get(deployments, operatorName, cluster.operatorNamespace);
    assert.equal(after?.metadata.resourceVersion, before?.metadata.resourceVersion);
    assert.equal(after?.metadata.generation, before?.metadata.generation);
  });

  it("hands over to the standby on the other site when the leader's process is killed with SIGKILL", async () => {
    const { holder: leader, at: killedAt } = await killLeader(client, cluster.operatorNamespace);
    const successor = await eventually(
      "another operator to take the lease",
      async () => {
        const current = await holder();
        return current !== "" && current !== leader ? current : undefined;
      },
      90_000,
    );
    const takeoverMs = Date.now() - killedAt;
    await client.create(replicationPolicies, policy("after-takeover"));
    await readyPolicy("after-takeover");
    const reconciledMs = Date.now() - killedAt;
    process.stdout.write(
      `      operator takeover: lease taken ${Math.round(takeoverMs)} ms after SIGKILL, a new policy Ready ${Math.round(reconciledMs)} ms after\n`,
    );
    const live = (await operatorPods()).map((pod) => pod.metadata.name);
    assert.ok(
      live.some((name) => successor.startsWith(`${name}_`)),
      `lease holder ${successor} (after ${leader}) is one of the live pods ${live.join(", ")}`,
    );
  });

  it("ksr uninstall leaves nothing behind", async () => {
    const result = await ksr(["uninstall", "--kubeconfig", cluster.state.kubeconfig]);
    forgetOperator();
    assert.equal(result.code, 0, result.stderr);
    for (const kind of kinds)
      assert.equal(await client.get(customResourceDefinitions, crdName(kind)), undefined, crdName(kind));
    assert.equal(await client.get(clusterRoles, operatorName), undefined);
    assert.equal(await client.get(clusterRoleBindings, operatorName), undefined);
    assert.equal(await client.get(namespaces, cluster.operatorNamespace), undefined);
    assert.equal((await operatorPods()).length, 0);
  });
});
