import { strict as assert } from "node:assert";
import type { ProtectedMachine, ReplicationPolicy } from "../../src/api/types.js";
import { planProtection, type PlanInputs } from "../../src/controllers/protectedmachine/plan.js";
import type { Node, PersistentVolumeClaim, Pod, StorageClass } from "../../src/runtime/index.js";

const machine = (target: Partial<ProtectedMachine["spec"]["target"]> = {}): ProtectedMachine => ({
  apiVersion: "dr.ksr.io/v1alpha1",
  kind: "ProtectedMachine",
  metadata: { name: "db", namespace: "app", uid: "u1" },
  spec: {
    policyRef: { name: "gold" },
    source: { workloadRef: { kind: "StatefulSet", name: "db" } },
    target: { site: "recovery", namespace: "app-dr", ...target },
    paused: false,
  },
});
const policy = { metadata: { name: "gold", namespace: "app" }, spec: {} } as unknown as ReplicationPolicy;
const node = (name: string, site?: string): Node => ({
  metadata: { name, labels: site === undefined ? {} : { "topology.dr.ksr.io/site": site } },
});
const pod = (nodeName: string): Pod => ({
  metadata: { name: "db-0", namespace: "app", labels: { app: "db" } },
  spec: {
    nodeName,
    containers: [{ name: "c" }],
    volumes: [{ name: "data", persistentVolumeClaim: { claimName: "data-db-0" } }],
  },
  status: { podIP: "198.18.0.5" },
});
const claim = (accessModes = ["ReadWriteOnce"], phase = "Bound"): PersistentVolumeClaim => ({
  metadata: { name: "data-db-0", namespace: "app" },
  spec: { accessModes, storageClassName: "standard" },
  status: { phase },
});
const standard: StorageClass = {
  metadata: { name: "standard", annotations: { "storageclass.kubernetes.io/is-default-class": "true" } },
  provisioner: "local.ksr.io/node-path",
  volumeBindingMode: "WaitForFirstConsumer",
};

const inputs = (changes: Partial<PlanInputs> = {}): PlanInputs => ({
  machine: machine(),
  policy,
  workload: {
    metadata: { name: "db", namespace: "app" },
    spec: {
      replicas: 1,
      selector: { matchLabels: { app: "db" } },
      template: { spec: { containers: [] } },
      volumeClaimTemplates: [{ metadata: { name: "data" } }],
    },
  },
  pods: [pod("ksr-primary")],
  claims: new Map([["data-db-0", claim()]]),
  nodes: [node("ksr-primary", "primary"), node("ksr-recovery", "recovery")],
  storageClasses: new Map([["standard", standard]]),
  namespaces: new Set(["app", "app-dr"]),
  claimedByOthers: new Map(),
  ...changes,
});

describe("protectedmachine: plan", () => {
  it("places one agent beside the pod, a process server in its site and a master target in the target namespace", () => {
    const result = planProtection(inputs());
    assert.ok(result.ok);
    const { plan } = result;
    assert.equal(plan.sourceSite, "primary");
    assert.equal(plan.masterTarget.namespace, "app-dr");
    assert.deepEqual(
      plan.agents.map((a) => [a.name, a.nodeName, a.podIP, a.volumes.map((v) => v.claimName)]),
      [["ksr-agent-db-0", "ksr-primary", "198.18.0.5", ["data-db-0"]]],
    );
    assert.equal(plan.waiting, undefined);
  });

  it("waits, without a problem, while no pod of the workload runs", () => {
    const result = planProtection(inputs({ pods: [] }));
    assert.ok(result.ok);
    assert.equal(result.plan.waiting?.reason, "WaitingForPods");
    assert.deepEqual(result.plan.agents, []);
  });

  const bad: { name: string; changes: Partial<PlanInputs>; reason: string; names: RegExp }[] = [
    {
      name: "a missing policy",
      changes: { policy: undefined },
      reason: "PolicyNotFound",
      names: /ReplicationPolicy app\/gold/,
    },
    {
      name: "a missing workload",
      changes: { workload: undefined },
      reason: "WorkloadNotFound",
      names: /StatefulSet app\/db/,
    },
    {
      name: "a claim that is not Bound",
      changes: { claims: new Map([["data-db-0", claim(["ReadWriteOnce"], "Pending")]]) },
      reason: "ClaimNotBound",
      names: /data-db-0/,
    },
    {
      name: "a ReadWriteOncePod claim",
      changes: { claims: new Map([["data-db-0", claim(["ReadWriteOncePod"])]]) },
      reason: "ClaimIsReadWriteOncePod",
      names: /ReadWriteOnce/,
    },
    {
      name: "a StorageClass missing in the recovery site",
      changes: { machine: machine({ storageClassName: "gold-ssd" }) },
      reason: "StorageClassNotFound",
      names: /gold-ssd.*standard/,
    },
    {
      name: "a site label no node has",
      changes: { machine: machine({ site: "moon" }) },
      reason: "SiteNotFound",
      names: /topology.dr.ksr.io\/site=moon.*primary, recovery/,
    },
    {
      name: "a target namespace that does not exist",
      changes: { namespaces: new Set(["app"]) },
      reason: "TargetNamespaceNotFound",
      names: /kubectl create namespace app-dr/,
    },
    {
      name: "the machine's own namespace as target",
      changes: { machine: machine({ namespace: "app" }) },
      reason: "TargetNamespaceConflict",
      names: /another namespace/,
    },
    {
      name: "a recovery site the workload runs in",
      changes: { pods: [pod("ksr-recovery")] },
      reason: "TargetSiteIsSourceSite",
      names: /recovery/,
    },
    {
      name: "a node without a site label",
      changes: { nodes: [node("ksr-primary"), node("ksr-recovery", "recovery")] },
      reason: "SourceSiteUnknown",
      names: /node ksr-primary/,
    },
    {
      name: "a claim another machine protects",
      changes: { claimedByOthers: new Map([["data-db-0", "db-old"]]) },
      reason: "ClaimProtectedTwice",
      names: /db-old/,
    },
  ];
  for (const { name, changes, reason, names } of bad)
    it(`refuses ${name} with ${reason}, naming what to fix`, () => {
      const result = planProtection(inputs(changes));
      assert.ok(!result.ok);
      assert.equal(result.problem.reason, reason);
      assert.match(result.problem.message, names);
    });
});
