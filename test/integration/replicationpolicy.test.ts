// The ReplicationPolicy controller on a real API server: what CEL cannot check
// (the encryption key Secret, exactly 32 bytes) becomes a condition naming the
// Secret and key to fix, with an Event on every transition; machines that name
// the policy are counted as they come, go and move.
import { strict as assert } from "node:assert";
import { installCrds } from "../../src/api/install.js";
import {
  protectedMachines,
  replicationPolicies,
  type ProtectedMachine,
  type ReplicationPolicy,
} from "../../src/api/types.js";
import { addReplicationPolicyController } from "../../src/controllers/replicationpolicy/controller.js";
import { replicatorFlags } from "../../src/controllers/replicationpolicy/flags.js";
import { eventsV1, findCondition, KubeClient, secrets, type Manager } from "../../src/runtime/index.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";
import { testManager, testOperatorDeps } from "../fixture/runtime.js";

describe("ReplicationPolicy controller on a real API server", function () {
  this.timeout(60_000);
  const cluster = useCluster("rpol");
  let client: KubeClient;
  let manager: Manager;

  before(async () => {
    await installCrds(cluster.kubeConfig);
    client = new KubeClient(cluster.kubeConfig);
    manager = testManager(cluster.kubeConfig, { name: "ksr-operator" });
    addReplicationPolicyController(manager, testOperatorDeps(manager, cluster.namespace), {
      recheckKeyMs: 300,
      revalidateKeyMs: 300,
    });
    await manager.start();
  });
  after(async () => {
    await manager.stop();
    client.close();
  });

  const policy = (name: string, spec: Partial<ReplicationPolicy["spec"]> = {}): ReplicationPolicy => ({
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ReplicationPolicy",
    metadata: { name, namespace: cluster.namespace },
    spec: spec as ReplicationPolicy["spec"], // the API server fills in the defaults
  });
  const encrypted = (name: string, secret: string, key: string) =>
    policy(name, { encryption: { keySecretRef: { name: secret, key } } });
  const keySecret = (name: string, data: Record<string, Buffer>) => ({
    apiVersion: "v1",
    kind: "Secret",
    metadata: { name, namespace: cluster.namespace },
    data: Object.fromEntries(Object.entries(data).map(([key, value]) => [key, value.toString("base64")])),
  });
  const machine = (name: string, policyName: string): ProtectedMachine =>
    ({
      apiVersion: "dr.ksr.io/v1alpha1",
      kind: "ProtectedMachine",
      metadata: { name, namespace: cluster.namespace },
      spec: {
        policyRef: { name: policyName },
        source: { workloadRef: { kind: "StatefulSet", name } },
        target: { site: "recovery", namespace: `${name}-recovery` },
      },
    }) as ProtectedMachine;

  /** Waits until Ready (of the current generation) has the reason, and returns the policy. */
  const readyReason = (name: string, reason: string) =>
    eventually(
      `${name} Ready with reason ${reason}`,
      async () => {
        const current = await client.get(replicationPolicies, name, cluster.namespace);
        const ready = findCondition(current?.status?.conditions, "Ready");
        return ready?.reason === reason && current?.status?.observedGeneration === current?.metadata.generation
          ? current
          : undefined;
      },
      20_000,
      {
        describe: async () => JSON.stringify((await client.get(replicationPolicies, name, cluster.namespace))?.status),
      },
    );
  const eventsAbout = async (name: string) =>
    (await client.list(eventsV1, { namespace: cluster.namespace })).items.filter((e) => e.regarding.name === name);

  const cases: {
    name: string;
    secret?: Record<string, Buffer>;
    reason: string;
    ready: "True" | "False";
    message: RegExp;
  }[] = [
    { name: "plain", reason: "PolicyValid", ready: "True", message: /used by 0 machine/ },
    {
      name: "no-secret",
      reason: "KeySecretNotFound",
      ready: "False",
      message: /Secret rpol-.*\/no-secret-key does not exist: create it with a 32-byte key under "aes"/,
    },
    {
      name: "no-key",
      secret: { other: Buffer.alloc(32) },
      reason: "KeyNotFound",
      ready: "False",
      message: /has no key "aes"/,
    },
    {
      name: "short-key",
      secret: { aes: Buffer.alloc(31, 1) },
      reason: "KeyWrongLength",
      ready: "False",
      message: /key "aes" holds 31 bytes; AES-256 needs exactly 32/,
    },
    {
      name: "good-key",
      secret: { aes: Buffer.alloc(32, 7) },
      reason: "PolicyValid",
      ready: "True",
      message: /used by/,
    },
  ];
  for (const example of cases) {
    it(`${example.name}: Ready ${example.ready} (${example.reason}), an Event, and nothing of the key in status`, async () => {
      if (example.secret !== undefined) await client.create(secrets, keySecret(`${example.name}-key`, example.secret));
      const created =
        example.name === "plain" ? policy(example.name) : encrypted(example.name, `${example.name}-key`, "aes");
      await client.create(replicationPolicies, created);
      const current = await readyReason(example.name, example.reason);
      const ready = findCondition(current.status?.conditions, "Ready");
      assert.equal(ready?.status, example.ready);
      assert.match(ready.message, example.message);
      assert.equal(ready.observedGeneration, current.metadata.generation);
      const events = await eventually("an Event", async () => {
        const found = await eventsAbout(example.name);
        return found.length > 0 ? found : undefined;
      });
      assert.equal(events[0]?.reason, example.reason);
      assert.equal(events[0].type, example.ready === "True" ? "Normal" : "Warning");
      if (example.secret !== undefined) {
        const text = JSON.stringify({ status: current.status, events });
        for (const value of Object.values(example.secret)) assert.ok(!text.includes(value.toString("base64")));
      }
    });
  }

  it("turns Ready once the key is fixed, with one Event per transition", async () => {
    await client.create(replicationPolicies, encrypted("fixed", "fixed-key", "aes"));
    await readyReason("fixed", "KeySecretNotFound");
    await client.create(secrets, keySecret("fixed-key", { aes: Buffer.alloc(32, 3) }));
    await readyReason("fixed", "PolicyValid");
    const reasons = (await eventsAbout("fixed")).map((e) => e.reason).sort();
    assert.deepEqual(reasons, ["KeySecretNotFound", "PolicyValid"]);
  });

  it("counts the machines that name it, as they are added, moved and deleted", async () => {
    await client.create(replicationPolicies, policy("shared"));
    await client.create(replicationPolicies, policy("other"));
    const count = (name: string, expected: number) =>
      eventually(`${name} used by ${expected}`, async () => {
        const current = await client.get(replicationPolicies, name, cluster.namespace);
        return current?.status?.protectedMachines === expected ? true : undefined;
      });
    await client.create(protectedMachines, machine("db", "shared"));
    await client.create(protectedMachines, machine("web", "shared"));
    await count("shared", 2);
    const web = await client.get(protectedMachines, "web", cluster.namespace);
    await client.replace(protectedMachines, { ...web!, spec: { ...web!.spec, policyRef: { name: "other" } } });
    await count("shared", 1);
    await count("other", 1);
    await client.delete(protectedMachines, { name: "db", namespace: cluster.namespace });
    await count("shared", 0);
  });

  it("turns a policy into replicator flags, and a change of any of them into a new hash", async () => {
    const current = await readyReason("plain", "PolicyValid");
    const flags = replicatorFlags(current.spec);
    assert.deepEqual(flags.agent, ["--crash-point-interval", "300s"]);
    assert.deepEqual(flags.processServer, ["--compression", "zstd"]);
    assert.deepEqual(flags.masterTarget, ["--retention", "86400s"]);
    const changes: Partial<ReplicationPolicy["spec"]>[] = [
      { crashConsistentFrequency: "1m30s" },
      { recoveryPointRetention: "48h" },
      { compression: "lz4" },
      { bandwidthLimit: "50Mi" },
      { appConsistentFrequency: "1h" },
    ];
    const hashes = new Set([
      flags.hash,
      ...changes.map((change) => replicatorFlags({ ...current.spec, ...change }).hash),
    ]);
    assert.equal(hashes.size, changes.length + 1);
    assert.deepEqual(replicatorFlags({ ...current.spec, bandwidthLimit: "50Mi" }).processServer, [
      "--compression",
      "zstd",
      "--bandwidth-limit",
      String(50 * 1024 * 1024),
    ]);
  });
});
