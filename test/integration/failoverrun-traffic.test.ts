// The plan's traffic action on a real API server: a drill copies the Service into its own
// namespace and leaves production's as it was; a failover into another namespace turns
// production's Service into an ExternalName of the recovered copy, keeping its spec; the failback
// into the Service's own namespace gives it back, selecting the recovered pods. Each step twice:
// an executor called again (after a restart) changes nothing more.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import type { FailoverRun, PlanAction, ProtectedMachine } from "../../src/api/types.js";
import { trafficStep, originalServiceAnnotation } from "../../src/controllers/failoverrun/steps/traffic.js";
import type { StepContext } from "../../src/controllers/failoverrun/steps/types.js";
import { recoveredMachineLabel } from "../../src/controllers/failoverrun/steps/workload.js";
import { projectImage } from "../../src/install/manifests.js";
import { KubeClient, namespaces, services, systemClock, type Logger, type Service } from "../../src/runtime/index.js";
import { useCluster } from "../fixture/cluster.js";

describe("FailoverRun traffic action (integration)", function () {
  this.timeout(120_000);
  const cluster = useCluster("trf");
  let client: KubeClient;
  const prod = () => cluster.namespace;
  const recovery = () => `${cluster.namespace}-dr`;
  const drill = () => `${cluster.namespace}-drill`;

  const action: PlanAction = {
    name: "switch-traffic",
    onFailure: "Abort",
    runOn: ["Test", "Planned", "Unplanned"],
    traffic: { service: "web", machine: "web" },
  };
  const machine = (replication?: ProtectedMachine["status"]): ProtectedMachine => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ProtectedMachine",
    metadata: { name: "web", namespace: prod() },
    spec: {
      policyRef: { name: "shop" },
      source: { workloadRef: { kind: "Deployment", name: "web" } },
      target: { namespace: recovery(), site: "recovery" },
      paused: false,
    },
    ...(replication === undefined ? {} : { status: replication }),
  });
  const run = (name: string, type: FailoverRun["spec"]["type"]): FailoverRun => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "FailoverRun",
    metadata: { name, namespace: prod(), uid: `uid-${name}` },
    spec: {
      planRef: { name: "shop" },
      type,
      commit: false,
      cleanup: false,
      ...(type === "Test" ? { drill: { namespace: drill(), isolation: "Isolated" } } : {}),
    },
  });
  const execute = (failoverRun: FailoverRun, pm: ProtectedMachine) =>
    trafficStep.execute({
      run: failoverRun,
      work: { step: { name: "web/post/switch-traffic", action: "Traffic", phase: "Running" }, action },
      plan: undefined,
      machines: new Map([["web", pm]]),
      client,
      clock: systemClock,
      signal: new AbortController().signal,
      log: {} as Logger,
      replicas: {} as StepContext["replicas"],
      replicatorImage: projectImage,
    });
  const service = async (namespace: string): Promise<Service> => {
    const found = await client.get(services, "web", namespace);
    ok(found !== undefined, `no Service ${namespace}/web`);
    return found;
  };

  before(async () => {
    client = new KubeClient(cluster.kubeConfig);
    for (const name of [recovery(), drill()]) await client.create(namespaces, { metadata: { name } });
    await client.create(services, {
      metadata: { name: "web", namespace: prod() },
      spec: { selector: { app: "web" }, ports: [{ name: "http", port: 80, targetPort: 8080 }] },
    });
  });
  after(() => {
    client.close();
  });

  it("a drill copies the Service into the drill namespace, selecting the drilled pods; production is untouched", async () => {
    const before = await service(prod());
    for (const attempt of [1, 2]) {
      const outcome = await execute(run("drill", "Test"), machine());
      strictEqual(outcome.state, "Succeeded", `attempt ${attempt}: ${outcome.message ?? ""}`);
      strictEqual(outcome.message, `Service ${drill()}/web selects the drill's pods`);
    }
    const copy = await service(drill());
    deepStrictEqual(copy.spec?.selector, { app: "web", [recoveredMachineLabel]: "web" });
    strictEqual(copy.metadata.labels?.["dr.ksr.io/failover-run"], "drill", "cleanup finds it by the run's label");
    ok(copy.spec.clusterIP !== before.spec?.clusterIP, "the copy has a cluster IP of its own");
    const after = await service(prod());
    strictEqual(after.metadata.resourceVersion, before.metadata.resourceVersion, "production's Service was written");
  });

  it("a failover points production's Service at the recovered copy and keeps its spec; the failback gives it back", async () => {
    const original = await service(prod());
    for (const attempt of [1, 2]) {
      const outcome = await execute(run("failover", "Planned"), machine());
      strictEqual(outcome.state, "Succeeded", `attempt ${attempt}: ${outcome.message ?? ""}`);
      strictEqual(outcome.message, `Service ${prod()}/web now points at web.${recovery()}.svc.cluster.local`);
    }
    const moved = await service(prod());
    strictEqual(moved.spec?.type, "ExternalName");
    strictEqual(moved.spec.externalName, `web.${recovery()}.svc.cluster.local`);
    const kept = JSON.parse(moved.metadata.annotations?.[originalServiceAnnotation] ?? "{}") as Service["spec"];
    deepStrictEqual(kept?.selector, { app: "web" });
    deepStrictEqual((await service(recovery())).spec?.selector, { app: "web", [recoveredMachineLabel]: "web" });

    // After reprotect the machine replicates from the recovery namespace back into production.
    const reversed = machine({
      replication: {
        direction: "Reverse",
        sourceNamespace: recovery(),
        sourceSite: "recovery",
        targetNamespace: prod(),
        targetSite: "primary",
        epoch: 1,
      },
    });
    for (const attempt of [1, 2]) {
      const outcome = await execute(run("failback", "Planned"), reversed);
      strictEqual(outcome.state, "Succeeded", `attempt ${attempt}: ${outcome.message ?? ""}`);
      strictEqual(outcome.message, `Service ${prod()}/web selects the recovered web`);
    }
    const back = await service(prod());
    strictEqual(back.spec?.type, "ClusterIP");
    strictEqual(back.spec.externalName, undefined);
    deepStrictEqual(back.spec.selector, { app: "web", [recoveredMachineLabel]: "web" });
    deepStrictEqual(back.spec.ports, original.spec?.ports);
    strictEqual(back.metadata.annotations?.[originalServiceAnnotation], undefined);
  });
});
