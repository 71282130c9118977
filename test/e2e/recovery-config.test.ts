// The Secrets and ConfigMaps a workload refers to, carried by the runs that recreate it elsewhere,
// end to end on `ksr local`: the operator installed by `ksr install --wait`, a StatefulSet that
// reads a Secret and ConfigMaps through env, envFrom, a secret volume and a projected volume,
// protected, then drilled and failed over as planned with `kubectl dr`. The copies are recorded,
// labelled by the run, deleted by the drill's cleanup; a Secret already in the target is left as
// found; a missing one fails the step naming it; no Secret's content reaches status, Events or logs.
import { strict as assert } from "node:assert";
import { randomBytes } from "node:crypto";
import { failoverRuns, protectedMachines, replicationPolicies, type ProtectedMachine } from "../../src/api/types.js";
import { copiedFromAnnotation } from "../../src/controllers/failoverrun/steps/config.js";
import { readContainerLog } from "../../src/local/node/logs.js";
import {
  configMaps,
  eventsV1,
  KubeClient,
  namespaces,
  pods,
  secrets,
  serviceAccounts,
  statefulSets,
} from "../../src/runtime/index.js";
import { eventually } from "../fixture/eventually.js";
import { kubectlDr } from "../fixture/kubectl-dr.js";
import { useOperator } from "../fixture/operator.js";
import { fastPolicy, primaryStatefulSet } from "../fixture/writer.js";

const b64 = (text: string) => Buffer.from(text).toString("base64");

describe("Secrets and ConfigMaps carried into drill and recovery namespaces (e2e)", function () {
  this.timeout(15 * 60_000);
  const cluster = useOperator("rc");
  let client: KubeClient;
  const dr = (args: string[]) => kubectlDr(cluster.state.kubeconfig, args);
  // The values no status, Event or log line may show.
  const password = `pw-${randomBytes(12).toString("hex")}`;
  const foreignCert = `foreign-${randomBytes(12).toString("hex")}`;

  before(() => {
    client = new KubeClient(cluster.kubeConfig);
  });
  after(() => {
    client.close();
  });

  const reader = (namespace: string) =>
    primaryStatefulSet({
      name: "db",
      namespace,
      container: {
        name: "db",
        image: "busybox:1.36",
        command: [
          "sh",
          "-c",
          'trap "exit 0" TERM; while true; do echo "${#PASSWORD} $MODE $(cat /tls/cert | wc -c)" >> /data/log; sleep 0.5; done',
        ],
        env: [
          { name: "PASSWORD", valueFrom: { secretKeyRef: { name: "db-password", key: "password" } } },
          {
            name: "SPARE",
            valueFrom: { secretKeyRef: { name: "not-there", key: "x", optional: true } },
          },
        ],
        envFrom: [{ configMapRef: { name: "db-config" } }],
        volumeMounts: [
          { name: "data", mountPath: "/data" },
          { name: "tls", mountPath: "/tls" },
          { name: "extra", mountPath: "/extra" },
        ],
      },
      volumes: [
        { name: "tls", secret: { secretName: "db-tls" } },
        { name: "extra", projected: { sources: [{ configMap: { name: "db-extra" } }] } },
      ],
      storage: "1Gi",
    });

  const dbConfig = (namespace: string) => ({
    metadata: { name: "db-config", namespace, labels: { app: "db" } },
    data: { MODE: "replicated" },
  });

  async function protectReader(ns: string): Promise<ProtectedMachine> {
    for (const name of [ns, `${ns}-dr`, `${ns}-drill`]) await client.create(namespaces, { metadata: { name } });
    await eventually("the default service account", async () => client.get(serviceAccounts, "default", ns));
    await client.create(secrets, {
      metadata: { name: "db-password", namespace: ns },
      type: "Opaque",
      data: { password: b64(password) },
    });
    await client.create(secrets, { metadata: { name: "db-tls", namespace: ns }, data: { cert: b64("source-cert") } });
    await client.create(configMaps, dbConfig(ns));
    await client.create(configMaps, { metadata: { name: "db-extra", namespace: ns }, data: { "extra.conf": "on" } });
    // The drill namespace already holds a db-tls of its own: the run must leave it as found.
    await client.create(secrets, {
      metadata: { name: "db-tls", namespace: `${ns}-drill` },
      data: { cert: b64(foreignCert) },
    });
    await client.create(replicationPolicies, fastPolicy(ns));
    await client.create(statefulSets, reader(ns));
    await client.create(protectedMachines, {
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "ProtectedMachine",
      metadata: { name: "db", namespace: ns },
      spec: {
        policyRef: { name: "fast" },
        source: { workloadRef: { kind: "StatefulSet", name: "db" } },
        target: { site: "recovery", namespace: `${ns}-dr`, storageClassName: "standard" },
        paused: false,
      },
    } satisfies ProtectedMachine);
    return eventually(
      `ProtectedMachine ${ns}/db Protected with a recovery point`,
      async () => {
        const found = await client.get(protectedMachines, "db", ns);
        return found?.status?.phase === "Protected" && (found.status.recoveryPoints?.count ?? 0) >= 1
          ? found
          : undefined;
      },
      5 * 60_000,
      {
        describe: async () => JSON.stringify((await client.get(protectedMachines, "db", ns))?.status ?? {}),
        intervalMs: 2000,
      },
    );
  }

  const recoverStep = async (ns: string, run: string) =>
    (await client.get(failoverRuns, run, ns))?.status?.steps?.find((step) => step.action === "Recover");

  /** The copies a run made in `namespace`: kind/name → the run label, the origin, the content. */
  async function copiesIn(namespace: string, run: string) {
    const selector = `dr.ksr.io/failover-run=${run}`;
    const found = [
      ...(await client.list(secrets, { namespace, labelSelector: selector })).items,
      ...(await client.list(configMaps, { namespace, labelSelector: selector })).items,
    ];
    return found
      .map((object) => ({
        name: `${object.kind ?? ""}/${object.metadata.name}`,
        from: object.metadata.annotations?.[copiedFromAnnotation],
        data: object.data,
      }))
      .sort((a, b) => a.name.localeCompare(b.name));
  }

  /** Nothing the operator wrote about the runs shows a Secret's content. */
  async function assertNoSecretShown(ns: string) {
    const runs = JSON.stringify((await client.list(failoverRuns, { namespace: ns })).items);
    const events = JSON.stringify((await client.list(eventsV1, { namespace: ns })).items);
    const operatorPods = (await client.list(pods, { namespace: cluster.operatorNamespace })).items;
    const logs = operatorPods
      .flatMap((pod) =>
        (pod.spec?.containers ?? []).map((container) => {
          try {
            return readContainerLog({
              dir: cluster.state.dir,
              namespace: cluster.operatorNamespace,
              pod: pod.metadata.name,
              container: container.name,
            });
          } catch {
            return "";
          }
        }),
      )
      .join("\n");
    assert.ok(logs.length > 0, "the operator's logs were read");
    for (const [what, text] of [
      ["run status", runs],
      ["Events", events],
      ["operator logs", logs],
    ] as const)
      for (const value of [password, b64(password), foreignCert, b64(foreignCert)])
        assert.ok(!text.includes(value), `a Secret's content is in the ${what}`);
  }

  it("copies what the pod template refers to into the drill and recovery namespaces, leaves a foreign one, fails on a missing one, cleans up its copies", async () => {
    const ns = `${cluster.namespace}-cfg`;
    const drillNs = `${ns}-drill`;
    try {
      await protectReader(ns);
      const expected = [
        { name: "ConfigMap/db-config", from: `${ns}/db-config`, data: { MODE: "replicated" } },
        { name: "ConfigMap/db-extra", from: `${ns}/db-extra`, data: { "extra.conf": "on" } },
        { name: "Secret/db-password", from: `${ns}/db-password`, data: { password: b64(password) } },
      ];

      // A drill into a namespace that already holds a db-tls of its own.
      const drill = await dr([
        "test",
        "--machine",
        "db",
        "-n",
        ns,
        "--drill-namespace",
        drillNs,
        "--name",
        "cfg-drill",
        "--wait",
      ]);
      assert.equal(drill.code, 0, `kubectl dr test failed:\n${drill.stdout}\n${drill.stderr}`);
      assert.deepEqual(await copiesIn(drillNs, "cfg-drill"), expected);
      const foreign = await client.get(secrets, "db-tls", drillNs);
      assert.equal(foreign?.data?.cert, b64(foreignCert), "the Secret the run did not make is as it was");
      assert.equal(foreign.metadata.labels?.["dr.ksr.io/failover-run"], undefined);
      assert.equal(await client.get(secrets, "not-there", drillNs), undefined, "an optional missing Secret is no copy");
      const drilled = await recoverStep(ns, "cfg-drill");
      assert.match(drilled?.message ?? "", /copied ConfigMap db-config, ConfigMap db-extra, Secret db-password/);
      assert.match(drilled?.message ?? "", new RegExp(`left Secret db-tls in ${drillNs} as found`));
      process.stdout.write(`      drill recover step: ${drilled?.message ?? ""}\n`);

      // The cleanup deletes exactly the copies: the foreign Secret and the namespace (not the run's) stay.
      const cleanup = await dr(["cleanup", "cfg-drill", "-n", ns, "--wait"]);
      assert.equal(cleanup.code, 0, `kubectl dr cleanup failed:\n${cleanup.stdout}\n${cleanup.stderr}`);
      await eventually("the drill's copies deleted", async () =>
        (await copiesIn(drillNs, "cfg-drill")).length === 0 ? true : undefined,
      );
      assert.equal((await client.get(secrets, "db-tls", drillNs))?.data?.cert, b64(foreignCert));
      assert.ok((await client.get(namespaces, drillNs)) !== undefined, "the drill namespace was the user's");
      for (const name of ["db-password", "db-tls"]) assert.ok((await client.get(secrets, name, ns)) !== undefined);

      // A referenced ConfigMap gone from the source fails the step, naming it; nothing is copied.
      await client.delete(configMaps, { name: "db-config", namespace: ns });
      const missing = await dr(["test", "--machine", "db", "-n", ns, "--name", "cfg-missing", "--wait"]);
      assert.notEqual(missing.code, 0, `the drill succeeded without its ConfigMap:\n${missing.stdout}`);
      const failed = await recoverStep(ns, "cfg-missing");
      assert.equal(failed?.phase, "Failed");
      assert.match(failed.message ?? "", new RegExp(`ConfigMap ${ns}/db-config, which does not exist`));
      assert.equal(await client.get(statefulSets, "db", "ksr-drill-cfg-missing"), undefined);
      // Without --wait: the follower would stop at the Failed phase the run still shows before its cleanup starts.
      const ended = await dr(["cleanup", "cfg-missing", "-n", ns]);
      assert.equal(ended.code, 0, `kubectl dr cleanup failed:\n${ended.stdout}\n${ended.stderr}`);
      await eventually("the failed drill cleaned up", async () =>
        (await client.get(failoverRuns, "cfg-missing", ns))?.status?.phase === "CleanedUp" ? true : undefined,
      );

      // A planned failover carries them into the recovery namespace, where they stay.
      await client.create(configMaps, dbConfig(ns));
      const planned = await dr([
        "failover",
        "--machine",
        "db",
        "-n",
        ns,
        "--planned",
        "--name",
        "cfg-planned",
        "--wait",
      ]);
      assert.equal(planned.code, 0, `kubectl dr failover --planned failed:\n${planned.stdout}\n${planned.stderr}`);
      const carried = await copiesIn(`${ns}-dr`, "cfg-planned");
      assert.deepEqual(
        carried.map((copy) => copy.name),
        ["ConfigMap/db-config", "ConfigMap/db-extra", "Secret/db-password", "Secret/db-tls"],
      );
      assert.equal(
        (await client.get(secrets, "db-tls", `${ns}-dr`))?.data?.cert,
        b64("source-cert"),
        "the recovery namespace gets the source's db-tls",
      );
      const recovered = await eventually("the recovered reader running", async () => {
        const pod = await client.get(pods, "db-0", `${ns}-dr`);
        return pod?.status?.phase === "Running" ? pod : undefined;
      });
      assert.equal(recovered.spec?.nodeName, "ksr-recovery");
      await assertNoSecretShown(ns);
    } finally {
      for (const name of [ns, `${ns}-dr`, drillNs, "ksr-drill-cfg-missing"])
        await client.delete(namespaces, { name }).catch(() => undefined);
    }
  });
});
