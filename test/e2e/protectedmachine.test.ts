// A ProtectedMachine end to end on `ksr local`, as a user drives it: the operator installed by
// `ksr install --wait`, a StatefulSet writing files, `kubectl apply` of a policy and a machine,
// and the real agent, process server and master target as pods. One protected workload is
// shared by the cases that build on each other (Protected, RPO, points, pause, agent restart,
// deletion); bad input has its own machines.
import { strict as assert } from "node:assert";
import { mkdtemp, rm, stat, writeFile, unlink } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { protectedMachines, replicationPolicies, type ProtectedMachine } from "../../src/api/types.js";
import {
  KubeClient,
  namespaces,
  persistentVolumeClaims,
  pods,
  resourceType,
  secrets,
  statefulSets,
  deployments,
  type KubeObject,
  type StatefulSet,
} from "../../src/runtime/index.js";
import { revocationListName } from "../../src/controllers/certificates/secret-issuer.js";
import { policyDurationMs } from "../../src/controllers/replicationpolicy/flags.js";
import { killLeader } from "../fixture/leader-killer.js";
import { eventually } from "../fixture/eventually.js";
import { ksr } from "../fixture/ksr-cli.js";
import { volumeDir as claimVolumeDir } from "../fixture/machine-suite.js";
import { useOperator } from "../fixture/operator.js";
import { treesDiffer } from "../fixture/tree-compare.js";
import { appendSmall, fastPolicy, writerStatefulSet } from "../fixture/writer.js";

const events = resourceType<KubeObject & { reason?: string; type?: string; regarding?: { name?: string } }>({
  group: "events.k8s.io",
  version: "v1",
  kind: "Event",
  plural: "events",
  namespaced: true,
});

describe("ProtectedMachine end to end (e2e)", function () {
  this.timeout(10 * 60_000);
  const cluster = useOperator("pm");
  let client: KubeClient;
  let control: string;
  let ns: string;
  let target: string;

  const machine = (
    name: string,
    workload: string,
    changes: Partial<ProtectedMachine["spec"]> = {},
  ): ProtectedMachine => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ProtectedMachine",
    metadata: { name, namespace: ns },
    spec: {
      policyRef: { name: "fast" },
      source: { workloadRef: { kind: "StatefulSet", name: workload } },
      target: { site: "recovery", namespace: target, storageClassName: "standard" },
      paused: false,
      ...changes,
    },
  });

  const writer = (name: string, mib: number, accessMode?: string, storageClassName?: string): StatefulSet =>
    writerStatefulSet({
      name,
      namespace: ns,
      mib,
      control,
      whileWriting: appendSmall,
      ...(accessMode === undefined ? {} : { accessMode }),
      ...(storageClassName === undefined ? {} : { storageClassName }),
    });

  const get = (name: string) => client.get(protectedMachines, name, ns);
  const describe = (name: string) => async () => JSON.stringify((await get(name))?.status ?? {});
  const waitPhase = (name: string, phase: string, timeoutMs = 4 * 60_000) =>
    eventually(
      `ProtectedMachine ${name} in phase ${phase}`,
      async () => {
        const found = await get(name);
        return found?.status?.phase === phase && found.status.observedGeneration === found.metadata.generation
          ? found
          : undefined;
      },
      timeoutMs,
      { describe: describe(name), intervalMs: 1000 },
    );
  const volumeDir = (namespace: string, claimName: string, node: string) =>
    claimVolumeDir(client, cluster.state.dir, namespace, claimName, node);
  const replicaMatches = async () => {
    const source = await volumeDir(ns, "data-app-0", "ksr-primary");
    const replica = await volumeDir(target, "data-app-0", "ksr-recovery");
    return eventually(
      "the replica to equal the source byte for byte",
      async () => ((await treesDiffer(source, replica)) === "" ? true : undefined),
      3 * 60_000,
      { describe: () => treesDiffer(source, replica), intervalMs: 2000 },
    );
  };
  const agentPods = async (machineName: string) =>
    (
      await client.list(pods, {
        namespace: ns,
        labelSelector: `dr.ksr.io/machine=${machineName},app.kubernetes.io/component=agent`,
      })
    ).items;
  const writing = async (on: boolean) => {
    const flag = join(control, "app", "write");
    if (on) await writeFile(flag, "");
    else await unlink(flag).catch(() => undefined);
  };
  /** The running agent found its manifest and the process server agreeing: no comparison with the replica. */
  const assertResumedFromManifest = async () => {
    const [agent] = await agentPods("app");
    assert.ok(agent !== undefined);
    const args = ["local", "logs", agent.metadata.name, "-n", ns, "-c", "agent-0", "--dir", cluster.state.dir];
    const logs = await ksr(args);
    assert.equal(logs.code, 0, logs.stderr);
    assert.doesNotMatch(logs.stdout, /resynchroniz|no manifest/i, logs.stdout);
  };
  const rpoMs = (text: string | undefined) => (text === undefined ? Infinity : policyDurationMs(text, "rpo"));

  before(async function () {
    client = new KubeClient(cluster.kubeConfig);
    ns = cluster.namespace;
    target = `${ns}-dr`;
    control = await mkdtemp(join(tmpdir(), "ksr-pm-ctl-"));
    await client.create(namespaces, { metadata: { name: target } });
    await eventually(
      "the default service account",
      async () =>
        (await client.get(
          resourceType({
            group: "",
            version: "v1",
            kind: "ServiceAccount",
            plural: "serviceaccounts",
            namespaced: true,
          }),
          "default",
          ns,
        )) ?? undefined,
    );
    await client.create(replicationPolicies, fastPolicy(ns));
    await client.create(statefulSets, writer("app", 20));
  });
  after(async () => {
    await client.delete(namespaces, { name: target });
    client.close();
    await rm(control, { recursive: true, force: true });
  });

  let protectedAt = "";

  it("protects a StatefulSet writing files: Protected, with a byte-identical replica named as the recovered set claims it", async () => {
    await eventually(
      "the writer's 20 MiB",
      async () => {
        const pod = await client.get(pods, "app-0", ns);
        return pod?.status?.phase === "Running" ? pod : undefined;
      },
      120_000,
    );
    const started = performance.now();
    await client.create(protectedMachines, machine("app", "app"));
    const found = await waitPhase("app", "Protected");
    process.stdout.write(`      apply → Protected: ${Math.round(performance.now() - started)} ms (20 MiB)\n`);
    protectedAt = found.status?.initialReplication?.completionTime ?? "";
    assert.equal(found.status?.initialReplication?.progressPercent, 100);
    assert.equal(found.status.health, "Healthy");
    assert.deepEqual(
      found.status.volumes?.map((v) => [v.name, v.claimName, v.replicaClaimName]),
      [["data-0", "data-app-0", "data-app-0"]],
    );
    const ready = found.status.conditions?.find((c) => c.type === "Ready");
    assert.equal(ready?.status, "True");
    assert.equal(ready.observedGeneration, found.metadata.generation);
    await replicaMatches();
    const list = await client.list(events, { namespace: ns });
    const reasons = list.items.filter((e) => e.regarding?.name === "app").map((e) => e.reason);
    assert.ok(reasons.includes("Protected"), `events: ${reasons.join(", ")}`);
    // Only the agent has capabilities beyond the defaults, and no replicator holds API credentials.
    const [agent] = await agentPods("app");
    assert.ok(agent !== undefined);
    assert.equal(agent.spec?.automountServiceAccountToken, false);
    assert.equal(agent.spec.nodeName, "ksr-primary");
  });

  it("keeps the RPO under the policy's threshold while the writer keeps going", async () => {
    await writing(true);
    const samples: number[] = [];
    const until = Date.now() + 45_000;
    while (Date.now() < until) {
      const found = await get("app");
      samples.push(rpoMs(found?.status?.rpo));
      await new Promise((resolve) => setTimeout(resolve, 3000));
    }
    await writing(false);
    const threshold = 2 * 60_000;
    assert.ok(
      samples.every((ms) => ms < threshold),
      `RPO samples (ms): ${samples.join(", ")}`,
    );
    const found = await get("app");
    assert.equal(found?.status?.health, "Healthy");
    process.stdout.write(`      RPO under the writer (s): ${samples.map((ms) => ms / 1000).join(", ")}\n`);
  });

  it("takes crash-consistent points on the 30 s cadence", async () => {
    const found = await eventually(
      "three recovery points",
      async () => {
        const current = await get("app");
        return (current?.status?.recoveryPoints?.count ?? 0) >= 3 ? current : undefined;
      },
      3 * 60_000,
      { describe: describe("app"), intervalMs: 2000 },
    );
    const points = found.status?.recoveryPoints;
    assert.ok(points?.latest !== undefined && points.oldest !== undefined);
    const spanMs = Date.parse(points.latest.time) - Date.parse(points.oldest.time);
    // The cadence never cuts faster than every 30 s (second-precision times: one second of slack).
    assert.ok(spanMs >= ((points.count ?? 0) - 1) * 29_000, `span ${spanMs} ms over ${points.count} points`);
    assert.ok(["CrashConsistent", "BestEffort"].includes(points.latest.consistency));
  });

  it("pauses (agents go, nothing ships) and resumes without a full copy", async () => {
    await client.patch(protectedMachines, { name: "app", namespace: ns }, { spec: { paused: true } }, "merge");
    await waitPhase("app", "Paused");
    await eventually(
      "no agent while paused",
      async () => ((await agentPods("app")).length === 0 ? true : undefined),
      60_000,
    );
    await writing(true);
    await new Promise((resolve) => setTimeout(resolve, 3000));
    await writing(false);
    await client.patch(protectedMachines, { name: "app", namespace: ns }, { spec: { paused: false } }, "merge");
    const resumed = await waitPhase("app", "Protected");
    assert.equal(resumed.status?.initialReplication?.completionTime, protectedAt, "no second initial replication");
    await replicaMatches();
    await assertResumedFromManifest();
  });

  it("gives a deleted agent pod back, resuming from its manifest without a resync", async () => {
    const [agent] = await agentPods("app");
    assert.ok(agent !== undefined);
    await client.delete(pods, { name: agent.metadata.name, namespace: ns });
    await eventually(
      "a new agent pod running",
      async () => {
        const [next] = await agentPods("app");
        return next !== undefined && next.metadata.uid !== agent.metadata.uid && next.status?.phase === "Running"
          ? next
          : undefined;
      },
      120_000,
    );
    await writing(true);
    await new Promise((resolve) => setTimeout(resolve, 2000));
    await writing(false);
    await replicaMatches();
    await assertResumedFromManifest();
  });

  const badInput: { name: string; spec: () => ProtectedMachine; reason: string; names: RegExp }[] = [
    {
      name: "a missing workload",
      spec: () => machine("bad-workload", "nope"),
      reason: "WorkloadNotFound",
      names: /StatefulSet .*nope/,
    },
    {
      name: "a missing policy",
      spec: () => machine("bad-policy", "app", { policyRef: { name: "nope" } }),
      reason: "PolicyNotFound",
      names: /ReplicationPolicy .*nope/,
    },
    {
      name: "a StorageClass missing in the recovery site",
      spec: () =>
        machine("bad-class", "app", { target: { site: "recovery", namespace: target, storageClassName: "gold" } }),
      reason: "StorageClassNotFound",
      names: /gold/,
    },
    {
      name: "a site label no node has",
      spec: () => machine("bad-site", "app", { target: { site: "moon", namespace: target } }),
      reason: "SiteNotFound",
      names: /moon/,
    },
  ];
  for (const { name, spec, reason, names } of badInput)
    it(`answers ${name} with ${reason}, an Event and nothing built`, async () => {
      const bad = spec();
      await client.create(protectedMachines, bad);
      const found = await eventually(
        `${bad.metadata.name} reporting ${reason}`,
        async () => {
          const current = await get(bad.metadata.name);
          const ready = current?.status?.conditions?.find((c) => c.type === "Ready");
          return ready?.reason === reason ? ready : undefined;
        },
        60_000,
        { describe: describe(bad.metadata.name) },
      );
      assert.match(found.message, names);
      await eventually(`a ${reason} Event`, async () => {
        const list = await client.list(events, { namespace: ns });
        return list.items.some(
          (e) => e.regarding?.name === bad.metadata.name && e.reason === reason && e.type === "Warning",
        )
          ? true
          : undefined;
      });
      assert.deepEqual(await agentPods(bad.metadata.name), []);
      const built = await client.list(persistentVolumeClaims, {
        namespace: target,
        labelSelector: `dr.ksr.io/machine=${bad.metadata.name}`,
      });
      assert.deepEqual(built.items, []);
      await client.delete(protectedMachines, { name: bad.metadata.name, namespace: ns });
    });

  it("answers claims that are not Bound and ReadWriteOncePod claims with a condition naming the claim", async () => {
    const cases = [
      {
        name: "unbound",
        reason: "ClaimNotBound",
        set: writer("unbound", 1, "ReadWriteOnce", "missing"),
      },
      { name: "rwop", reason: "ClaimIsReadWriteOncePod", set: writer("rwop", 1, "ReadWriteOncePod") },
    ];
    for (const { name, reason, set } of cases) {
      await client.create(statefulSets, set);
      await client.create(protectedMachines, machine(name, name));
      const ready = await eventually(
        `${name} reporting ${reason}`,
        async () => (await get(name))?.status?.conditions?.find((c) => c.type === "Ready" && c.reason === reason),
        120_000,
        { describe: describe(name) },
      );
      assert.match(ready.message, new RegExp(`data-${name}-0`));
      assert.deepEqual(await agentPods(name), []);
      await client.delete(protectedMachines, { name, namespace: ns });
      await client.delete(statefulSets, { name, namespace: ns });
    }
  });

  it("converges from the standby when the leading operator is killed with SIGKILL during initial replication", async () => {
    await client.create(statefulSets, writer("big", 100));
    await eventually(
      "the 100 MiB writer",
      async () => ((await client.get(pods, "big-0", ns))?.status?.phase === "Running" ? true : undefined),
      120_000,
    );
    const written = join(await volumeDir(ns, "data-big-0", "ksr-primary"), "ready");
    await eventually(
      "the writer's 100 MiB written (its /data/ready)",
      () =>
        stat(written).then(
          () => true,
          () => undefined,
        ),
      120_000,
    );
    const started = performance.now();
    await client.create(protectedMachines, machine("big", "big"));
    await waitPhase("big", "InitialReplication");
    await killLeader(client, cluster.operatorNamespace);
    const done = await waitPhase("big", "Protected", 6 * 60_000);
    process.stdout.write(
      `      apply → Protected, 100 MiB, leader killed on the way: ${Math.round(performance.now() - started)} ms\n`,
    );
    assert.equal(done.status?.initialReplication?.progressPercent, 100);
    const source = await volumeDir(ns, "data-big-0", "ksr-primary");
    const replica = await volumeDir(target, "data-big-0", "ksr-recovery");
    await eventually(
      "the big replica to match",
      async () => ((await treesDiffer(source, replica)) === "" ? true : undefined),
      120_000,
    );
    await client.delete(protectedMachines, { name: "big", namespace: ns });
    await client.delete(statefulSets, { name: "big", namespace: ns });
  });

  it("deleting the machine leaves no pod, claim or Secret of it, and no replicator nobody uses", async () => {
    await client.delete(protectedMachines, { name: "app", namespace: ns });
    await eventually("the machine gone", async () => ((await get("app")) === undefined ? true : undefined), 120_000);
    const leftovers = async () => {
      const found: string[] = [];
      for (const namespace of [ns, target]) {
        for (const type of [pods, persistentVolumeClaims, deployments, secrets] as const) {
          const list = await client.list(type as typeof pods, { namespace });
          for (const item of list.items) {
            const labels = item.metadata.labels ?? {};
            const ours =
              labels["dr.ksr.io/machine"] === "app" ||
              labels["app.kubernetes.io/managed-by"] === "kube-site-recovery" ||
              item.metadata.name.startsWith("ksr-");
            // The revocation list outlives machines: it denies revoked certificates until they expire.
            if (ours && item.metadata.name !== revocationListName && item.metadata.deletionTimestamp === undefined)
              found.push(`${namespace}/${item.metadata.name}`);
          }
        }
      }
      return found;
    };
    await eventually(
      "nothing of the machine left",
      async () => ((await leftovers()).length === 0 ? true : undefined),
      120_000,
      {
        describe: async () => (await leftovers()).join(", "),
      },
    );
  });
});
