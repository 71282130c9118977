// Proves the local control plane is a real Kubernetes: controllers run, garbage collection and RBAC are enforced, kubectl works.
import { strict as assert } from "node:assert";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { AppsV1Api, CoreV1Api, KubeConfig, RbacAuthorizationV1Api, type V1Status } from "@kubernetes/client-node";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";

const run = promisify(execFile);

describe("local control plane", function () {
  const cluster = useCluster("cp");

  it("serves kubectl through the admin kubeconfig", async () => {
    const kubectl = join(cluster.state.binDir, "kubectl");
    const readyz = await run(kubectl, ["--kubeconfig", cluster.state.kubeconfig, "get", "--raw", "/readyz"]);
    assert.equal(readyz.stdout.trim(), "ok");
    const ns = await run(kubectl, ["--kubeconfig", cluster.state.kubeconfig, "get", "ns", "-o", "name"]);
    assert.match(ns.stdout, /namespace\/kube-system/);
    assert.match(ns.stdout, new RegExp(`namespace/${cluster.namespace}`));
  });

  it("runs the real deployment controller: a Deployment gets a ReplicaSet", async () => {
    const { kubeConfig, namespace } = cluster;
    const apps = kubeConfig.makeApiClient(AppsV1Api);
    const labels = { app: "web" };
    await apps.createNamespacedDeployment({
      namespace,
      body: {
        metadata: { name: "web" },
        spec: {
          replicas: 1,
          selector: { matchLabels: labels },
          template: {
            metadata: { labels },
            spec: { containers: [{ name: "web", image: "busybox", command: ["sleep", "3600"] }] },
          },
        },
      },
    });
    const rs = await eventually("a ReplicaSet owned by the Deployment", async () => {
      const list = await apps.listNamespacedReplicaSet({ namespace });
      return list.items.find((item) =>
        item.metadata?.ownerReferences?.some((o) => o.kind === "Deployment" && o.name === "web"),
      );
    });
    assert.equal(rs.spec?.replicas, 1);
  });

  it("garbage-collects an object when its owner is deleted", async () => {
    const { kubeConfig, namespace } = cluster;
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const owner = await core.createNamespacedConfigMap({ namespace, body: { metadata: { name: "owner" } } });
    const uid = owner.metadata?.uid ?? "";
    await core.createNamespacedSecret({
      namespace,
      body: {
        metadata: { name: "dependent", ownerReferences: [{ apiVersion: "v1", kind: "ConfigMap", name: "owner", uid }] },
        stringData: { k: "v" },
      },
    });
    await core.deleteNamespacedConfigMap({ namespace, name: "owner", propagationPolicy: "Background" });
    await eventually("the dependent Secret to be garbage-collected", async () => {
      const secrets = await core.listNamespacedSecret({ namespace });
      return secrets.items.some((s) => s.metadata?.name === "dependent") ? undefined : true;
    });
  });

  it("denies a service account what its Role does not grant", async () => {
    const { kubeConfig, namespace } = cluster;
    const core = kubeConfig.makeApiClient(CoreV1Api);
    const rbac = kubeConfig.makeApiClient(RbacAuthorizationV1Api);
    await core.createNamespacedServiceAccount({ namespace, body: { metadata: { name: "reader" } } });
    await rbac.createNamespacedRole({
      namespace,
      body: {
        metadata: { name: "configmap-reader" },
        rules: [{ apiGroups: [""], resources: ["configmaps"], verbs: ["get", "list"] }],
      },
    });
    await rbac.createNamespacedRoleBinding({
      namespace,
      body: {
        metadata: { name: "reader" },
        roleRef: { apiGroup: "rbac.authorization.k8s.io", kind: "Role", name: "configmap-reader" },
        subjects: [{ kind: "ServiceAccount", name: "reader", namespace }],
      },
    });
    const token = await core.createNamespacedServiceAccountToken({
      namespace,
      name: "reader",
      body: { spec: { audiences: [], expirationSeconds: 600 } },
    });
    const restricted = new KubeConfig();
    const admin = kubeConfig.getCurrentCluster();
    assert.ok(admin);
    restricted.loadFromOptions({
      clusters: [admin],
      users: [{ name: "reader", token: token.status?.token }],
      contexts: [{ name: "reader", cluster: admin.name, user: "reader" }],
      currentContext: "reader",
    });
    const asReader = restricted.makeApiClient(CoreV1Api);
    const allowed = await eventually("the RoleBinding to take effect", async () =>
      asReader.listNamespacedConfigMap({ namespace }).catch(() => undefined),
    );
    assert.ok(allowed.items.length >= 1);
    await assert.rejects(asReader.listNamespacedSecret({ namespace }), (error: { code?: number; body?: string }) => {
      assert.equal(error.code, 403);
      const status = JSON.parse(String(error.body)) as V1Status;
      assert.equal(status.reason, "Forbidden");
      assert.match(String(status.message), /cannot list resource "secrets" in API group "" in the namespace/);
      return true;
    });
    await assert.rejects(asReader.deleteNamespacedConfigMap({ namespace, name: "kube-root-ca.crt" }), { code: 403 });
  });
});
