// The RecoveryPlan and FailoverRun controllers on a real API server. The
// machines' status is written by this test, standing in for the ProtectedMachine
// controller; everything else (Deployments, Jobs' dry runs, the runs' steps,
// approvals through kubectl dr) is real.
import { match, ok, strictEqual } from "node:assert/strict";
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { installCrds } from "../../src/api/install.js";
import {
  failoverRuns,
  protectedMachines,
  recoveryPlans,
  type FailoverRun,
  type ProtectedMachine,
  type RecoveryPlan,
} from "../../src/api/types.js";
import { operatorDeps } from "../../src/controllers/deps.js";
import { addFailoverRunController } from "../../src/controllers/failoverrun/controller.js";
import { MachineMetrics } from "../../src/controllers/metrics.js";
import { addRecoveryPlanController } from "../../src/controllers/recoveryplan/controller.js";
import { deployments, isConflict, KubeClient, namespaces, type Manager } from "../../src/runtime/index.js";
import { useCluster } from "../fixture/cluster.js";
import { testManager, waitFor } from "../fixture/runtime.js";

const plugin = fileURLToPath(new URL("../../../bin/kubectl-dr.js", import.meta.url));
const run = promisify(execFile);

describe("RecoveryPlan and FailoverRun controllers on a real API server", function () {
  this.timeout(120_000);
  const cluster = useCluster("rcv");
  let client: KubeClient;
  let manager: Manager;
  const target = () => `${cluster.namespace}-dr`;

  const getRun = async (name: string): Promise<FailoverRun> => {
    const found = await client.get(failoverRuns, name, cluster.namespace);
    ok(found !== undefined);
    return found;
  };
  const newRun = (name: string, spec: Partial<FailoverRun["spec"]> & Pick<FailoverRun["spec"], "type">) =>
    client.create(failoverRuns, {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "FailoverRun",
      metadata: { name, namespace: cluster.namespace },
      spec: { planRef: { name: "shop" }, commit: false, cleanup: false, ...spec },
    });
  const phaseOf = async (name: string) => (await getRun(name)).status?.phase;
  const plan = async () => {
    const found = await client.get(recoveryPlans, "shop", cluster.namespace);
    ok(found !== undefined);
    return found;
  };
  const valid = async () => (await plan()).status?.conditions?.find((condition) => condition.type === "Valid");

  before(async () => {
    await installCrds(cluster.kubeConfig);
    client = new KubeClient(cluster.kubeConfig);
    const namespace = cluster.namespace;
    await client.create(namespaces, { apiVersion: "v1", kind: "Namespace", metadata: { name: target() } });
    await client.create(deployments, {
      apiVersion: "apps/v1",
      kind: "Deployment",
      metadata: { name: "db", namespace },
      spec: {
        replicas: 0,
        selector: { matchLabels: { app: "db" } },
        template: {
          metadata: { labels: { app: "db" } },
          spec: { containers: [{ name: "db", image: "busybox", command: ["sleep", "3600"] }] },
        },
      },
    });
    const machine: ProtectedMachine = {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "ProtectedMachine",
      metadata: { name: "db", namespace },
      spec: {
        policyRef: { name: "shop" },
        source: { workloadRef: { kind: "Deployment", name: "db" } },
        target: { site: "recovery", namespace: target() },
        paused: false,
      },
    };
    await client.create(protectedMachines, machine);
    const shop: RecoveryPlan = {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "RecoveryPlan",
      metadata: { name: "shop", namespace },
      spec: {
        groups: [
          {
            name: "database",
            machines: ["db"],
            preActions: [
              { name: "confirm", runOn: ["Planned", "Unplanned"], onFailure: "Abort", manual: { instructions: "Go?" } },
            ],
            postActions: [
              // No containers: the server refuses this Job, which the plan's Valid condition must say.
              {
                name: "smoke",
                runOn: ["Test"],
                onFailure: "Abort",
                script: { jobTemplate: { spec: { template: { spec: {} } } } },
              },
            ],
          },
        ],
      },
    };
    await client.create(recoveryPlans, shop);
    manager = testManager(cluster.kubeConfig);
    const deps = operatorDeps(manager, {
      metrics: new MachineMetrics(manager.metrics.registry),
      certificates: {
        ensureReplicatorCertificate: () => Promise.reject(new Error("no certificates in this suite")),
        revokeAgent: () => Promise.resolve(),
      },
      namespace,
    });
    addRecoveryPlanController(manager, deps);
    addFailoverRunController(manager, deps);
    await manager.start();
  });
  after(async () => {
    await manager.stop();
    await client.delete(namespaces, { name: target() });
    client.close();
  });

  it("the plan is not Valid while its machine is not Protected and a script Job is refused", async () => {
    await waitFor("the plan's Valid condition", async () => (await valid()) !== undefined);
    const condition = await valid();
    strictEqual(condition?.status, "False");
    match(condition.message, /ProtectedMachine db is NotReconciled, not Protected/);
    match(condition.message, /database\/smoke: its Job is refused/);
    strictEqual((await plan()).status?.machineCount, 1);
  });

  it("becomes Valid once the machine is Protected and the Job template is fixed", async () => {
    const machine = await client.get(protectedMachines, "db", cluster.namespace);
    ok(machine !== undefined);
    await client.replaceStatus(protectedMachines, {
      ...machine,
      status: {
        phase: "Protected",
        activeSite: "primary",
        // The recovery site holds everything: nothing pending, synced (in the future, so after any shutdown).
        lastSyncTime: new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d+Z$/, "Z"),
        volumes: [
          { name: "data", claimName: "db-data", replicaClaimName: "db-data", pendingBytes: 0, lastAppliedSequence: 42 },
        ],
        recoveryPoints: {
          count: 1,
          latest: { id: "p1", time: "2026-12-01T10:00:00Z", consistency: "CrashConsistent" },
        },
      },
    });
    // The controller writes the plan's status meanwhile, so the edit retries on a conflict, as kubectl edit would.
    await waitFor("the plan's fixed Job template to be stored", async () => {
      const current = await plan();
      const groups = structuredClone(current.spec.groups);
      const smoke = groups[0]?.postActions?.[0];
      ok(smoke?.script !== undefined);
      smoke.script.jobTemplate.spec = {
        template: {
          spec: { restartPolicy: "Never", containers: [{ name: "smoke", image: "busybox", command: ["true"] }] },
        },
      };
      try {
        await client.replace(recoveryPlans, { ...current, spec: { groups } });
        return true;
      } catch (error) {
        if (isConflict(error)) return false;
        throw error;
      }
    });
    await waitFor("the plan to be Valid", async () => (await valid())?.status === "True");
  });

  it("runs a planned failover in order, holds a second run until the first is committed, and counts it", async () => {
    await newRun("move", { type: "Planned" });
    await waitFor("the run to wait for approval", async () => (await phaseOf("move")) === "WaitingForApproval");
    const waiting = await getRun("move");
    const steps = waiting.status?.steps ?? [];
    strictEqual(steps.find((step) => step.name === "shutdown/db")?.phase, "Succeeded");
    strictEqual(steps.find((step) => step.name === "final-sync/db")?.message, "every change applied (data@42)");
    strictEqual(steps.find((step) => step.name === "database/recover/db")?.phase, "Pending");

    await newRun("drill", { type: "Test" });
    await waitFor("the drill to wait for the failover", async () => {
      const drill = await getRun("drill");
      return drill.status?.conditions?.[0]?.reason === "AnotherRunInProgress";
    });
    strictEqual((await getRun("drill")).status?.steps, undefined);

    await run("node", [
      plugin,
      "--kubeconfig",
      cluster.state.kubeconfig,
      "-n",
      cluster.namespace,
      "approve",
      "move",
      "database/confirm",
    ]);
    await waitFor("the failover to succeed", async () => (await phaseOf("move")) === "Succeeded", 60_000);
    const done = await getRun("move");
    strictEqual(done.status?.dataLossWindow, "0s");
    ok(done.status.rto !== undefined);
    const copy = await client.get(deployments, "db", target());
    strictEqual(copy?.metadata.labels?.["dr.ksr.io/failover-run"], "move");
    strictEqual(copy.spec?.template.spec?.nodeSelector?.["topology.dr.ksr.io/site"], "recovery");
    strictEqual((await client.get(protectedMachines, "db", cluster.namespace))?.spec.paused, true);
    strictEqual((await getRun("drill")).status?.startTime, undefined, "the drill still waits for the commit");

    await run("node", [plugin, "--kubeconfig", cluster.state.kubeconfig, "-n", cluster.namespace, "commit", "move"]);
    await waitFor("the commit", async () => (await phaseOf("move")) === "Committed");
    await waitFor("the drill to start", async () => (await getRun("drill")).status?.startTime !== undefined);
    const metrics = await manager.metrics.registry.getSingleMetricAsString("ksr_failover_runs_total");
    match(metrics, /ksr_failover_runs_total\{type="Planned",result="Committed"\} 1/);
  });

  it("fails a Reprotect run with a clear reason", async () => {
    await newRun("back", { type: "Reprotect" });
    await waitFor("the reprotect to fail", async () => (await phaseOf("back")) === "Failed");
    match((await getRun("back")).status?.steps?.[0]?.message ?? "", /not supported yet/);
  });
});
