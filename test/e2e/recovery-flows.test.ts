// Recovery end to end on `ksr local`, as a user drives it: the operator installed by `ksr install`,
// a small shop of the examples' shape (a StatefulSet writing numbered lines, a Deployment with its
// own claim) applied with the client as kubectl would, protected, and recovered through
// `kubectl dr`. Each test has namespaces of its own; the cluster and operator are shared.
import { strict as assert } from "node:assert";
import { readFile, writeFile, mkdir } from "node:fs/promises";
import { join } from "node:path";
import {
  failoverRuns,
  protectedMachines,
  recoveryPlans,
  replicationPolicies,
  type FailoverRun,
  type RecoveryPlan,
  type StepAction,
  type StepStatus,
} from "../../src/api/types.js";
import { leaseName } from "../../src/install/manifests.js";
import {
  deployments,
  jobs,
  KubeClient,
  leases,
  namespaces,
  persistentVolumeClaims,
  pods,
  services,
  statefulSets,
} from "../../src/runtime/index.js";
import { replicasAnnotation } from "../../src/controllers/failoverrun/steps/workload.js";
import { eventually } from "../fixture/eventually.js";
import { followDr, kubectlDr } from "../fixture/kubectl-dr.js";
import { protectedMachine, useRecoverySuite } from "../fixture/recovery-suite.js";
import { appendSequence, fastPolicy, writeFinal, writerStatefulSet } from "../fixture/writer.js";
import { activeStep, killLeaderAt } from "../fixture/leader-killer.js";
import { startWebhookSink, type WebhookSink } from "../fixture/webhook-sink.js";
import { httpText } from "./local-node-helpers.js";

type Group = RecoveryPlan["spec"]["groups"][number];
type Action = NonNullable<Group["preActions"]>[number];

/** A script action: a busybox Job running `script`, without retries. */
const scriptAction = (name: string, script: string, changes: Partial<Action> = {}): Action => ({
  name,
  runOn: ["Test", "Planned", "Unplanned"],
  onFailure: "Abort",
  script: {
    jobTemplate: {
      spec: {
        backoffLimit: 0,
        template: {
          spec: {
            restartPolicy: "Never",
            containers: [{ name: "script", image: "busybox:1.36", command: ["sh", "-c", script] }],
          },
        },
      },
    },
  },
  ...changes,
});

interface Shop {
  readonly ns: string;
  readonly target: string;
}

describe("Recovery plans and runs end to end (e2e)", function () {
  this.timeout(15 * 60_000);
  const cluster = useRecoverySuite("rf");
  let client: KubeClient;
  let control: string;
  let shops = 0;

  before(() => {
    ({ client, control } = cluster);
  });
  afterEach(() => cluster.closeNamespaces());

  const dr = (shop: Shop, ...args: string[]) => kubectlDr(cluster.state.kubeconfig, ["-n", shop.ns, ...args]);
  /** `kubectl dr failover shop --planned --wait`, bounded so a stuck run fails the test rather than hangs it. */
  const followPlanned = (shop: Shop, name: string) =>
    followDr(cluster.state.kubeconfig, [
      "-n",
      shop.ns,
      "failover",
      "shop",
      "--planned",
      "--name",
      name,
      "--wait",
      "--timeout",
      "8m",
    ]);
  const getRun = async (shop: Shop, name: string): Promise<FailoverRun> => {
    const found = await client.get(failoverRuns, name, shop.ns);
    assert.ok(found !== undefined, `FailoverRun ${name}`);
    return found;
  };
  const runPhase = (shop: Shop, name: string, phase: string, timeoutMs = 5 * 60_000) =>
    eventually(
      `FailoverRun ${name} ${phase}`,
      async () => {
        const run = await getRun(shop, name);
        return run.status?.phase === phase ? run : undefined;
      },
      timeoutMs,
      { describe: async () => JSON.stringify((await getRun(shop, name)).status ?? {}), intervalMs: 500 },
    );
  const volumeFile = async (namespace: string, claimName: string, node: string, file: string) =>
    readFile(join(await cluster.volumeDir(namespace, claimName, node), file), "utf8");
  const lines = (text: string) => text.split("\n").filter((line) => line !== "");

  /**
   * A shop in namespaces of its own: the `db` tier (a StatefulSet appending numbered lines while
   * its switch is on, writing /data/final when stopped) and, with `api`, a Deployment whose own
   * claim holds an order; each protected to the recovery site, and the plan `shop` of `groups`.
   */
  async function openShop(
    groups: Group[],
    { api = false, before }: { api?: boolean; before?: (ns: string) => Promise<void> } = {},
  ): Promise<Shop> {
    const ns = `${cluster.namespace}-${++shops}`;
    const shop = { ns, target: `${ns}-dr` };
    await cluster.openNamespaces(shop.ns, shop.target);
    await before?.(ns);
    await mkdir(join(control, ns, "db"), { recursive: true });
    await writeFile(join(control, ns, "db", "write"), "");
    await client.create(replicationPolicies, fastPolicy(ns));
    await client.create(
      statefulSets,
      writerStatefulSet({
        name: "db",
        namespace: ns,
        mib: 1,
        control: join(control, ns),
        whileWriting: appendSequence,
        onStop: writeFinal,
      }),
    );
    const tiers = ["db"];
    if (api) {
      tiers.push("api");
      await client.create(persistentVolumeClaims, {
        apiVersion: "v1",
        kind: "PersistentVolumeClaim",
        metadata: { name: "api-spool", namespace: ns },
        spec: {
          accessModes: ["ReadWriteOnce"],
          storageClassName: "standard",
          resources: { requests: { storage: "1Gi" } },
        },
      });
      await client.create(deployments, {
        apiVersion: "apps/v1",
        kind: "Deployment",
        metadata: { name: "api", namespace: ns },
        spec: {
          replicas: 1,
          selector: { matchLabels: { app: "api" } },
          template: {
            metadata: { labels: { app: "api" } },
            spec: {
              terminationGracePeriodSeconds: 1,
              nodeSelector: { "topology.dr.ksr.io/site": "primary" },
              containers: [
                {
                  name: "api",
                  image: "busybox:1.36",
                  command: [
                    "sh",
                    "-c",
                    "trap 'exit 0' TERM; [ -e /spool/orders ] || echo order-1 > /spool/orders; while true; do sleep 0.2; done",
                  ],
                  volumeMounts: [{ name: "spool", mountPath: "/spool" }],
                },
              ],
              volumes: [{ name: "spool", persistentVolumeClaim: { claimName: "api-spool" } }],
            },
          },
        },
      });
    }
    for (const tier of tiers)
      await client.create(
        protectedMachines,
        protectedMachine({
          name: tier,
          namespace: ns,
          target: shop.target,
          kind: tier === "db" ? "StatefulSet" : "Deployment",
        }),
      );
    await client.create(recoveryPlans, {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "RecoveryPlan",
      metadata: { name: "shop", namespace: ns },
      spec: { groups },
    });
    await eventually(
      "the plan Valid: every machine Protected, every script's Job accepted by a server dry run",
      async () => {
        const plan = await client.get(recoveryPlans, "shop", ns);
        const valid = plan?.status?.conditions?.find((condition) => condition.type === "Valid");
        return valid?.status === "True" && valid.observedGeneration === plan?.metadata.generation ? true : undefined;
      },
      5 * 60_000,
      {
        describe: async () => JSON.stringify((await client.get(recoveryPlans, "shop", ns))?.status ?? {}),
        intervalMs: 1000,
      },
    );
    // A few numbered lines written (and being replicated) before anything fails over.
    await eventually(
      "the db writing numbered lines",
      async () => {
        const text = await volumeFile(ns, "data-db-0", "ksr-primary", "seq.log").catch(() => "");
        return lines(text).length >= 10 ? true : undefined;
      },
      60_000,
    );
    return shop;
  }

  /** The source's numbered lines end in its final file, and the recovered claim holds each of them, in order. */
  async function assertNothingLost(shop: Shop): Promise<number> {
    const source = lines(await volumeFile(shop.ns, "data-db-0", "ksr-primary", "seq.log"));
    const last = Number((await volumeFile(shop.ns, "data-db-0", "ksr-primary", "final")).trim());
    assert.ok(last >= 10, `the source's final file names line ${last}`);
    assert.deepEqual(
      source,
      Array.from({ length: last }, (_, i) => String(i + 1)),
      "the source wrote 1..final",
    );
    const machine = await client.get(protectedMachines, "db", shop.ns);
    const replicaClaim = machine?.status?.volumes?.[0]?.replicaClaimName ?? "";
    const recovered = lines(await volumeFile(shop.target, replicaClaim, "ksr-recovery", "seq.log"));
    assert.equal((await volumeFile(shop.target, replicaClaim, "ksr-recovery", "final")).trim(), String(last));
    assert.deepEqual(recovered.slice(0, last), source, "every line the source wrote is in the recovered volume");
    // The recovered writer goes on from the next number: nothing missing, nothing doubled.
    if (recovered.length > last) assert.equal(recovered[last], String(last + 1));
    return last;
  }

  const stepsOf = (run: FailoverRun): StepStatus[] => run.status?.steps ?? [];
  const leaderPodIp = async () => {
    const holder = (await client.get(leases, leaseName, cluster.operatorNamespace))?.spec?.holderIdentity ?? "";
    const pod = await client.get(pods, holder.slice(0, holder.lastIndexOf("_")), cluster.operatorNamespace);
    return pod?.status?.podIP ?? "";
  };

  it("fails a two-tier shop over as planned: groups in order, a manual step approved by kubectl dr approve, the final file there, no line lost", async () => {
    const shop = await openShop(
      [
        {
          name: "database",
          machines: ["db"],
          preActions: [
            { name: "confirm", runOn: ["Planned", "Unplanned"], onFailure: "Abort", manual: { instructions: "Go?" } },
          ],
        },
        { name: "api", machines: ["api"], postActions: [scriptAction("smoke", "true")] },
      ],
      { api: true },
    );
    const followed = followPlanned(shop, "move");
    await eventually(
      "kubectl dr --wait to name the approval it waits for",
      () => Promise.resolve(followed.output().includes("kubectl dr approve move database/confirm") ? true : undefined),
      5 * 60_000,
      { describe: () => Promise.resolve(followed.output() + followed.errors()), intervalMs: 500 },
    );
    const waiting = await getRun(shop, "move");
    assert.equal(waiting.status?.phase, "WaitingForApproval");
    const phases = new Map(stepsOf(waiting).map((step) => [step.name, step.phase]));
    for (const name of ["shutdown/api", "shutdown/db", "final-sync/db", "final-sync/api"])
      assert.equal(phases.get(name), "Succeeded", name);
    assert.equal(phases.get("database/recover/db"), "Pending", "nothing recovers before the approval");
    assert.equal(await client.get(statefulSets, "db", shop.target), undefined);
    const source = await client.get(statefulSets, "db", shop.ns);
    assert.equal(source?.spec?.replicas, 0);
    assert.equal(source.metadata.annotations?.[replicasAnnotation], "1");
    assert.equal(
      stepsOf(waiting).find((step) => step.name === "shutdown/db")?.message,
      "StatefulSet db scaled to 0 (was 1)",
      "the stop names the replicas the database ran, also when it was confirmed on a later pass",
    );

    const approved = await dr(shop, "approve", "move", "database/confirm");
    assert.equal(approved.code, 0, approved.stderr);
    assert.equal(await followed.exited, 0, followed.output() + followed.errors());
    const done = await getRun(shop, "move");
    process.stdout.write(
      `      kubectl dr failover shop --planned --wait:\n${followed.output().replace(/^/gm, "        ")}`,
    );
    assert.equal(done.status?.phase, "Succeeded");
    assert.match(followed.output(), /RTO \S+, data loss 0s/);
    assert.equal(done.status.dataLossWindow, "0s");
    assert.ok(done.status.rto !== undefined);

    // In plan order, each step starting after the one before it ended.
    const steps = stepsOf(done);
    assert.deepEqual(
      steps.map((step) => step.name),
      [
        "validate",
        "shutdown/api",
        "shutdown/db",
        "final-sync/db",
        "final-sync/api",
        "database/pre/confirm",
        "database/recover/db",
        "api/recover/api",
        "api/post/smoke",
      ],
    );
    for (const [before, after] of steps.slice(1).map((step, i) => [steps[i], step] as const))
      assert.ok(
        Date.parse(after.startTime ?? "") >= Date.parse(before?.endTime ?? ""),
        `${after.name} started before ${before?.name ?? ""} ended`,
      );
    assert.ok(steps.every((step) => step.phase === "Succeeded" && step.attempts === 1));
    assert.match(steps.find((step) => step.name === "database/pre/confirm")?.message ?? "", /approved by /);
    assert.deepEqual(
      done.status.recoveryPoints?.map((point) => point.machine).sort(),
      ["api", "db"],
      "the point used per machine",
    );

    // The recovered tiers run in the recovery site on the replica claims themselves.
    for (const name of ["db-0"]) {
      const pod = await client.get(pods, name, shop.target);
      assert.equal(pod?.spec?.nodeName, "ksr-recovery");
    }
    const lastLine = await assertNothingLost(shop);
    const api = await client.get(protectedMachines, "api", shop.ns);
    const spool = api?.status?.volumes?.[0]?.replicaClaimName ?? "";
    assert.equal((await volumeFile(shop.target, spool, "ksr-recovery", "orders")).trim(), "order-1");
    process.stdout.write(`      RTO ${done.status.rto}; the source's last line ${lastLine} recovered\n`);

    const committed = await dr(shop, "commit", "move");
    assert.equal(committed.code, 0, committed.stderr);
    await runPhase(shop, "move", "Committed");
    const metrics = await httpText(`http://${await leaderPodIp()}:8080/metrics`);
    assert.match(metrics, /ksr_failover_runs_total\{type="Planned",result="Committed"\} [1-9]/);
    assert.match(metrics, /ksr_failover_rto_seconds_count\{type="Planned"\} [1-9]/);
    assert.match(metrics, /ksr_failover_step_duration_seconds_count\{action="Recover"\} [1-9]/);
  });

  it("goes on after a failing script with onFailure Continue and stops at one with Abort, recovering nothing", async () => {
    const shop = await openShop([
      {
        name: "database",
        machines: ["db"],
        preActions: [
          scriptAction("soft", "echo soft; exit 3", { onFailure: "Continue" }),
          scriptAction("hard", "echo hard; exit 4"),
        ],
        postActions: [scriptAction("after", "true")],
      },
    ]);
    const followed = followPlanned(shop, "broken");
    assert.equal(await followed.exited, 1, followed.output() + followed.errors());
    assert.match(followed.errors(), /failoverrun broken failed/);
    const run = await getRun(shop, "broken");
    assert.equal(run.status?.phase, "Failed");
    const steps = new Map(stepsOf(run).map((step) => [step.name, step]));
    assert.equal(steps.get("database/pre/soft")?.phase, "Failed");
    assert.match(steps.get("database/pre/soft")?.message ?? "", /failed/);
    assert.equal(steps.get("database/pre/hard")?.phase, "Failed", "the step after a Continue failure ran");
    for (const name of ["database/recover/db", "database/post/after"])
      assert.equal(steps.get(name)?.phase, "Skipped", name);
    const ready = run.status.conditions?.find((condition) => condition.type === "Ready");
    assert.equal(ready?.reason, "StepFailed");
    assert.match(ready.message, /database\/pre\/hard failed/);
    assert.equal(await client.get(statefulSets, "db", shop.target), undefined, "nothing recovered after Abort");
    const made = await client.list(jobs, { namespace: shop.target, labelSelector: "dr.ksr.io/failover-run=broken" });
    assert.deepEqual(made.items.map((job) => job.metadata.annotations?.["dr.ksr.io/step"]).sort(), [
      "database/hard",
      "database/soft",
    ]);
  });

  it("completes a planned run whose leading operator is killed with SIGKILL at each step kind, no step recorded twice", async () => {
    // Every action kind of a plan around the machine's recovery: the traffic switch moves the
    // shop's Service, the webhook reaches a receiver in the cluster.
    const sinkNamespace = `${cluster.namespace}-${shops + 1}`;
    let sink: WebhookSink | undefined;
    const planned = { runOn: ["Planned" as const], onFailure: "Abort" as const };
    const shop = await openShop(
      [
        {
          name: "database",
          machines: ["db"],
          preActions: [
            scriptAction("pause", "sleep 5"),
            { ...planned, name: "settle", wait: { duration: "8s" } },
            { ...planned, name: "confirm", manual: { instructions: "Go?" } },
          ],
          postActions: [
            { ...planned, name: "switch", traffic: { service: "db", machine: "db" } },
            {
              ...planned,
              name: "tell",
              timeout: "1m",
              webhook: { url: `http://sink.${sinkNamespace}.svc.cluster.local:8080/run`, method: "POST" },
            },
          ],
        },
      ],
      {
        before: async (ns) => {
          sink = await startWebhookSink(client, { name: "sink", namespace: ns, clusterDir: cluster.state.dir });
          await client.create(services, {
            metadata: { name: "db", namespace: ns },
            spec: { selector: { app: "db" }, ports: [{ port: 8080, targetPort: 8080 }] },
          });
        },
      },
    );
    assert.equal(shop.ns, sinkNamespace);
    // Kill the leader as soon as the run records a step of each kind Running (the commit included).
    const killAt: StepAction[] = [
      "ShutDownSource",
      "FinalSync",
      "Script",
      "Wait",
      "Manual",
      "Recover",
      "Traffic",
      "Webhook",
      "Commit",
    ];
    const killer = await killLeaderAt(client, {
      operatorNamespace: cluster.operatorNamespace,
      namespace: shop.ns,
      name: "restarts",
      moments: killAt,
      momentOf: (run, next) => {
        const active = activeStep(run);
        return active?.action === next ? active.name : undefined;
      },
    });
    const { kills } = killer;
    try {
      const created = await dr(shop, "failover", "shop", "--planned", "--name", "restarts");
      assert.equal(created.code, 0, created.stderr);
      // Approved once the leader that was waiting for it has been killed.
      await eventually(
        "the leader killed while the run waits for approval",
        async () =>
          (await getRun(shop, "restarts")).status?.phase === "WaitingForApproval" &&
          kills.some((k) => k.step === "database/pre/confirm")
            ? true
            : undefined,
        5 * 60_000,
        { intervalMs: 500 },
      );
      const approved = await dr(shop, "approve", "restarts", "database/confirm");
      assert.equal(approved.code, 0, approved.stderr);
      await runPhase(shop, "restarts", "Succeeded", 8 * 60_000);
      const committed = await dr(shop, "commit", "restarts");
      assert.equal(committed.code, 0, committed.stderr);
      await runPhase(shop, "restarts", "Committed", 5 * 60_000);
    } finally {
      killer.stop();
    }
    process.stdout.write(`      killed the leader at: ${kills.map((k) => `${k.step} (${k.holder})`).join(", ")}\n`);
    // Killed once in each step after validate (too short to catch), and each step recorded once.
    const killedSteps = [
      "shutdown/db",
      "final-sync/db",
      "database/pre/pause",
      "database/pre/settle",
      "database/pre/confirm",
      "database/recover/db",
      "database/post/switch",
      "database/post/tell",
      "commit",
    ];
    assert.deepEqual(
      kills.map((k) => k.step),
      killedSteps,
    );
    const run = await getRun(shop, "restarts");
    const steps = stepsOf(run);
    assert.deepEqual(
      steps.map((step) => step.name),
      ["validate", ...killedSteps],
      "each step recorded once",
    );
    for (const step of steps) {
      assert.equal(step.phase, "Succeeded", step.name);
      assert.equal(step.attempts, 1, `${step.name} started once`);
    }
    // What the steps did, done once: one Job, the original replicas recorded, one recovered set.
    const made = await client.list(jobs, { namespace: shop.target, labelSelector: "dr.ksr.io/failover-run=restarts" });
    assert.equal(made.items.length, 1);
    const source = await client.get(statefulSets, "db", shop.ns);
    assert.equal(source?.metadata.annotations?.[replicasAnnotation], "1");
    assert.equal(
      (await client.get(statefulSets, "db", shop.target))?.metadata.labels?.["dr.ksr.io/failover-run"],
      "restarts",
    );
    assert.equal(run.status?.dataLossWindow, "0s");
    // The traffic switch happened: the shop's Service now names the recovered copy.
    const moved = await client.get(services, "db", shop.ns);
    assert.equal(moved?.spec?.externalName, `db.${shop.target}.svc.cluster.local`);
    // A webhook called again after a kill carries the same idempotency key: the receiver can tell.
    const posts = (await sink?.posts())?.filter((post) => post.path === "/run") ?? [];
    assert.ok(posts.length >= 1, "the webhook never reached the receiver");
    const keys = new Set(posts.map((post) => (JSON.parse(post.body) as { idempotencyKey: string }).idempotencyKey));
    assert.deepEqual([...keys], [`${run.metadata.uid ?? ""}/database/post/tell/1`]);
    await assertNothingLost(shop);
  });

  it("completes a drill whose leading operator is killed with SIGKILL at hydrate, recreate and cleanup, each step once, cleaned up exactly", async () => {
    const shop = await openShop([{ name: "database", machines: ["db"] }]);
    await eventually(
      "a recovery point of db",
      async () => {
        const machine = await client.get(protectedMachines, "db", shop.ns);
        return (machine?.status?.recoveryPoints?.count ?? 0) >= 1 ? true : undefined;
      },
      3 * 60_000,
    );
    const name = "drill-restarts";
    const drillNs = `ksr-drill-${name}`;
    // Kill the leader as soon as the run records each stage: hydrating, recreating the workload, cleaning up.
    const stages = ["hydrate", "recreate", "cleanup"] as const;
    const stageOf = (run: FailoverRun): (typeof stages)[number] | undefined => {
      const running = activeStep(run);
      if (running?.action === "Cleanup") return "cleanup";
      if (running?.action !== "Recover") return undefined;
      if (running.message?.startsWith("hydrating") === true) return "hydrate";
      return running.message?.includes(" ready") === true ? "recreate" : undefined;
    };
    const killer = await killLeaderAt(client, {
      operatorNamespace: cluster.operatorNamespace,
      namespace: shop.ns,
      name,
      moments: stages,
      momentOf: (run, next) => (stageOf(run) === next ? next : undefined),
    });
    const { kills } = killer;
    let job;
    let drilled;
    try {
      const created = await dr(shop, "test", "shop", "--name", name);
      assert.equal(created.code, 0, created.stderr);
      await runPhase(shop, name, "Succeeded", 8 * 60_000);
      // What the drill made, made once: one hydrator Job (created before the first kill), one workload.
      const madeJobs = await client.list(jobs, { namespace: drillNs, labelSelector: `dr.ksr.io/failover-run=${name}` });
      assert.deepEqual(
        madeJobs.items.map((made) => made.metadata.name),
        ["ksr-hydrate-db"],
      );
      job = madeJobs.items[0];
      drilled = await client.list(statefulSets, { namespace: drillNs });
      assert.deepEqual(
        drilled.items.map((set) => set.metadata.name),
        ["db"],
      );
      const drilledPods = await client.list(pods, { namespace: drillNs, labelSelector: "app=db" });
      assert.equal(drilledPods.items.length, 1, "one drilled pod");
      const cleanup = await dr(shop, "cleanup", name);
      assert.equal(cleanup.code, 0, cleanup.stderr);
      await runPhase(shop, name, "CleanedUp", 5 * 60_000);
    } finally {
      killer.stop();
    }
    process.stdout.write(`      killed the leader at: ${kills.map((k) => `${k.step} (${k.holder})`).join(", ")}\n`);
    assert.deepEqual(
      kills.map((k) => k.step),
      [...stages],
    );
    const hydrateKill = kills[0]?.at ?? 0;
    assert.ok(
      Date.parse(job?.metadata.creationTimestamp ?? "") < hydrateKill + 1000,
      "the hydrator Job is the one created before the first kill",
    );
    const run = await getRun(shop, name);
    const steps = stepsOf(run);
    assert.deepEqual(
      steps.map((step) => step.name),
      ["validate", "database/recover/db", "cleanup"],
      "each step recorded once",
    );
    for (const step of steps) {
      assert.equal(step.phase, "Succeeded", step.name);
      assert.equal(step.attempts, 1, `${step.name} started once`);
    }
    // Cleanup exact: the drill namespace is gone, nothing of the run is left, production untouched.
    await eventually("the drill namespace deleted", async () =>
      (await client.get(namespaces, drillNs)) === undefined ? true : undefined,
    );
    for (const namespace of [shop.ns, shop.target]) {
      const selector = `dr.ksr.io/failover-run=${name}`;
      assert.equal((await client.list(pods, { namespace, labelSelector: selector })).items.length, 0, namespace);
      assert.equal((await client.list(jobs, { namespace, labelSelector: selector })).items.length, 0, namespace);
    }
    assert.equal((await client.get(statefulSets, "db", shop.ns))?.spec?.replicas, 1);
    assert.equal((await client.get(protectedMachines, "db", shop.ns))?.spec.paused, false);
  });
});
