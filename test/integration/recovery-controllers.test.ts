// The RecoveryPlan and FailoverRun controllers on a real API server. The
// machines' status is written by this test, standing in for the ProtectedMachine
// controller; everything else (Deployments, Jobs' dry runs, the runs' steps,
// approvals through kubectl dr) is real.
import { projectImage } from "../../src/install/manifests.js";
import { deepStrictEqual, match, ok, rejects, strictEqual } from "node:assert/strict";
import { createServer, type IncomingHttpHeaders, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { pino } from "pino";
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
import {
  deployments,
  eventsV1,
  isConflict,
  KubeClient,
  namespaces,
  secrets,
  type Deployment,
  type Manager,
} from "../../src/runtime/index.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";
import { kubectlDr } from "../fixture/kubectl-dr.js";
import { testManager, waitFor } from "../fixture/runtime.js";

/** A Deployment at 0 replicas: a source workload that has nothing to stop. */
function stoppedDeployment(name: string, namespace: string): Deployment {
  return {
    apiVersion: "apps/v1",
    kind: "Deployment",
    metadata: { name, namespace },
    spec: {
      replicas: 0,
      selector: { matchLabels: { app: name } },
      template: {
        metadata: { labels: { app: name } },
        spec: { containers: [{ name, image: "busybox", command: ["sleep", "3600"] }] },
      },
    },
  };
}

function doesNotMatchJson(value: unknown, pattern: RegExp, what: string): void {
  ok(!pattern.test(JSON.stringify(value)), `${what} must not hold ${pattern.source}`);
}

describe("RecoveryPlan and FailoverRun controllers on a real API server", function () {
  this.timeout(120_000);
  const cluster = useCluster("rcv");
  let client: KubeClient;
  let manager: Manager;
  /** Everything the controllers logged, at debug level: secrets must never be in it. */
  const logged: string[] = [];
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
    await client.create(deployments, stoppedDeployment("db", namespace));
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
    manager = testManager(cluster.kubeConfig, {
      logger: pino({ level: "debug" }, { write: (line: string) => void logged.push(line) }),
    });
    const deps = operatorDeps(manager, {
      metrics: new MachineMetrics(manager.metrics.registry),
      certificates: {
        ensureReplicatorCertificate: () => Promise.reject(new Error("no certificates in this suite")),
        revokeAgent: () => Promise.resolve(),
      },
      namespace,
      replicatorImage: projectImage,
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
        // The recovery site holds everything: the agent's report (in the future, so after any shutdown) names seq 42, applied.
        lastSyncTime: new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d+Z$/, "Z"),
        volumes: [
          {
            name: "data",
            claimName: "db-data",
            replicaClaimName: "db-data",
            pendingBytes: 0,
            lastAppliedSequence: 42,
            capturedSequence: 42,
            capturedTime: new Date(Date.now() + 3_600_000).toISOString(),
          },
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
    strictEqual(
      steps.find((step) => step.name === "final-sync/db")?.message,
      "every change captured after the stop is applied (data@42 >= 42)",
    );
    strictEqual(steps.find((step) => step.name === "database/recover/db")?.phase, "Pending");

    await newRun("drill", { type: "Test" });
    await waitFor("the drill to wait for the failover", async () => {
      const drill = await getRun("drill");
      return drill.status?.conditions?.[0]?.reason === "AnotherRunInProgress";
    });
    strictEqual((await getRun("drill")).status?.steps, undefined);

    const approved = await kubectlDr(cluster.state.kubeconfig, [
      "-n",
      cluster.namespace,
      "approve",
      "move",
      "database/confirm",
    ]);
    strictEqual(approved.code, 0, approved.stderr);
    await waitFor("the failover to succeed", async () => (await phaseOf("move")) === "Succeeded", 60_000);
    const done = await getRun("move");
    strictEqual(done.status?.dataLossWindow, "0s");
    ok(done.status.rto !== undefined);
    const copy = await client.get(deployments, "db", target());
    strictEqual(copy?.metadata.labels?.["dr.ksr.io/failover-run"], "move");
    strictEqual(copy.spec?.template.spec?.nodeSelector?.["topology.dr.ksr.io/site"], "recovery");
    strictEqual((await client.get(protectedMachines, "db", cluster.namespace))?.spec.paused, true);
    strictEqual((await getRun("drill")).status?.startTime, undefined, "the drill still waits for the commit");

    const committed = await kubectlDr(cluster.state.kubeconfig, ["-n", cluster.namespace, "commit", "move"]);
    strictEqual(committed.code, 0, committed.stderr);
    await waitFor("the commit", async () => (await phaseOf("move")) === "Committed");
    await waitFor("the drill to start", async () => (await getRun("drill")).status?.startTime !== undefined);
    const metrics = await manager.metrics.registry.getSingleMetricAsString("ksr_failover_runs_total");
    match(metrics, /ksr_failover_runs_total\{type="Planned",result="Committed"\} 1/);
  });

  it("records the committed failover on the machine, and a Reprotect run reverses its replication", async () => {
    const failedOver = await client.get(protectedMachines, "db", cluster.namespace);
    strictEqual(failedOver?.status?.replication?.failedOverBy, "move");
    strictEqual(failedOver.status.replication.sourceSite, "primary");
    // The drill started after the commit holds the machine until it is cleaned up.
    const cleanup = await kubectlDr(cluster.state.kubeconfig, ["-n", cluster.namespace, "cleanup", "drill"]);
    strictEqual(cleanup.code, 0, cleanup.stderr);
    await waitFor("the drill cleaned up", async () => (await phaseOf("drill")) === "CleanedUp", 60_000);
    await newRun("back", { type: "Reprotect" });
    // No ProtectedMachine controller runs here: the run reverses and unpauses, then waits for Protected.
    await eventually(
      "the machine's replication reversed",
      async () => {
        const found = await client.get(protectedMachines, "db", cluster.namespace);
        return found?.status?.replication?.reprotectedBy === "back" && !found.spec.paused ? true : undefined;
      },
      30_000,
      { describe: async () => JSON.stringify((await getRun("back")).status?.steps) },
    );
    const reversed = (await client.get(protectedMachines, "db", cluster.namespace))?.status?.replication;
    deepStrictEqual(
      [reversed?.direction, reversed?.sourceNamespace, reversed?.sourceSite, reversed?.targetSite, reversed?.epoch],
      ["Reverse", target(), "recovery", "primary", 1],
    );
    strictEqual(reversed?.failedOverBy, undefined);
    strictEqual(await phaseOf("back"), "Running");
    match((await getRun("back")).status?.steps?.find((step) => step.action === "Reverse")?.message ?? "", /% compared/);
  });

  describe("webhook actions", () => {
    interface Received {
      method: string;
      path: string;
      headers: IncomingHttpHeaders;
      body: Record<string, unknown>;
    }
    const received: Received[] = [];
    let sink: Server;
    let base = "";
    const token = "Bearer s3cr3t-never-logged";

    before(async () => {
      // A local HTTP sink: /ok answers 204, anything else 500.
      sink = createServer((request, response) => {
        let text = "";
        request.on("data", (chunk: Buffer) => (text += chunk.toString()));
        request.on("end", () => {
          received.push({
            method: request.method ?? "",
            path: request.url ?? "",
            headers: request.headers,
            body: JSON.parse(text) as Record<string, unknown>,
          });
          response.writeHead(request.url === "/ok" ? 204 : 500).end();
        });
      });
      await new Promise<void>((resolve) => sink.listen(0, "127.0.0.1", resolve));
      base = `http://127.0.0.1:${(sink.address() as AddressInfo).port}`;
      const namespace = cluster.namespace;
      await client.create(secrets, {
        apiVersion: "v1",
        kind: "Secret",
        metadata: { name: "hook-headers", namespace },
        stringData: { authorization: token, "x-team": "dr" },
      });
      await client.create(deployments, stoppedDeployment("hooks", namespace));
      const machine = await client.create(protectedMachines, {
        apiVersion: "dr.ksr.io/v1alpha1",
        kind: "ProtectedMachine",
        metadata: { name: "hooks", namespace },
        spec: {
          policyRef: { name: "shop" },
          source: { workloadRef: { kind: "Deployment", name: "hooks" } },
          target: { site: "recovery", namespace: target() },
          paused: false,
        },
      });
      await client.replaceStatus(protectedMachines, {
        ...machine,
        status: {
          phase: "Protected",
          activeSite: "primary",
          lastSyncTime: new Date(Date.now() + 3_600_000).toISOString().replace(/\.\d+Z$/, "Z"),
          // The agent's report after any shutdown (in the future) names seq 0, applied.
          volumes: [
            {
              name: "data",
              claimName: "hooks-data",
              replicaClaimName: "hooks-data",
              pendingBytes: 0,
              lastAppliedSequence: 0,
              capturedSequence: 0,
              capturedTime: new Date(Date.now() + 3_600_000).toISOString(),
            },
          ],
          recoveryPoints: {
            count: 1,
            latest: { id: "p1", time: "2026-12-01T10:00:00Z", consistency: "CrashConsistent" },
          },
        },
      });
    });
    after(
      () =>
        new Promise<void>((resolve) =>
          sink.close(() => {
            resolve();
          }),
        ),
    );

    const notifyPlan = (url: string): RecoveryPlan => ({
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "RecoveryPlan",
      metadata: { name: "notify", namespace: cluster.namespace },
      spec: {
        groups: [
          {
            name: "notify",
            machines: ["hooks"],
            postActions: [
              {
                name: "tell",
                runOn: ["Planned"],
                onFailure: "Abort",
                webhook: { url: `${url}/ok`, method: "PUT", headersSecretRef: { name: "hook-headers" } },
              },
              {
                name: "broken",
                runOn: ["Planned"],
                onFailure: "Continue",
                timeout: "10s",
                webhook: { url: `${url}/fail`, method: "POST" },
              },
              { name: "after", runOn: ["Planned"], onFailure: "Abort", wait: { duration: "1s" } },
            ],
          },
        ],
      },
    });

    it("refuses URLs that are not http(s) with a host, or carry credentials, at admission", async () => {
      for (const [url, message] of [
        ["ftp://127.0.0.1", /absolute http:\/\/ or https:\/\/ URL/],
        ["http://user:pw@127.0.0.1", /must not carry credentials/],
        ["/relative/path", /absolute http:\/\/ or https:\/\/ URL/],
      ] as const)
        await rejects(client.create(recoveryPlans, notifyPlan(url)), message, url);
      strictEqual(await client.get(recoveryPlans, "notify", cluster.namespace), undefined);
    });

    it("calls the URL once with a JSON body of run and step and the Secret's headers, which appear nowhere else", async () => {
      await client.create(recoveryPlans, notifyPlan(base));
      await newRun("announce", { type: "Planned", planRef: { name: "notify" } });
      await waitFor("the announcing run to succeed", async () => (await phaseOf("announce")) === "Succeeded", 60_000);
      const done = await getRun("announce");
      const steps = new Map((done.status?.steps ?? []).map((step) => [step.name, step]));
      strictEqual(steps.get("notify/post/tell")?.phase, "Succeeded");
      match(steps.get("notify/post/tell")?.message ?? "", /PUT 127\.0\.0\.1:\d+: 204/);
      strictEqual(steps.get("notify/post/broken")?.phase, "Failed", "a 500 fails the step");
      match(steps.get("notify/post/broken")?.message ?? "", /answered 500/);
      strictEqual(steps.get("notify/post/after")?.phase, "Succeeded", "onFailure: Continue goes on");

      const told = received.filter((request) => request.path === "/ok");
      strictEqual(told.length, 1);
      const [call] = told;
      ok(call !== undefined);
      strictEqual(call.method, "PUT");
      strictEqual(call.headers.authorization, token);
      strictEqual(call.headers["x-team"], "dr");
      match(call.headers["content-type"] ?? "", /application\/json/);
      deepStrictEqual(call.body.run, {
        name: "announce",
        namespace: cluster.namespace,
        uid: done.metadata.uid,
        type: "Planned",
      });
      strictEqual(call.body.plan, "notify");
      deepStrictEqual(call.body.step, { name: "notify/post/tell", group: "notify", action: "tell", attempt: 1 });
      strictEqual(call.body.idempotencyKey, `${done.metadata.uid ?? ""}/notify/post/tell/1`);
      strictEqual(received.find((request) => request.path === "/fail")?.headers.authorization, undefined);

      const secret = /s3cr3t/;
      ok(
        logged.some((line) => line.includes("notify/post/tell")),
        "the step was logged",
      );
      strictEqual(logged.filter((line) => secret.test(line)).length, 0, "the header value was logged");
      doesNotMatchJson(done.status, secret, "the run's status");
      const events = await client.list(eventsV1, { namespace: cluster.namespace });
      doesNotMatchJson(events.items, secret, "the events");
    });
  });
});
