import { strict as assert } from "node:assert";
import type { V1PodSpec } from "@kubernetes/client-node";
import { agentHooksFile } from "../../src/controllers/protectedmachine/replicators.js";
import { parseHooks } from "../../src/replicator/agent/hooks-file.js";
import {
  agentPod,
  masterTargetObjects,
  processServerObjects,
  replicaClaim,
} from "../../src/controllers/protectedmachine/placement.js";
import {
  machineLabel,
  masterTargetName,
  processServerName,
  streamId,
} from "../../src/controllers/protectedmachine/names.js";

const labels = { [machineLabel]: "db" };
const image = "registry.example/kube-site-recovery:1.2.3";
const owner = [{ apiVersion: "dr.ksr.io/v1alpha1", kind: "ProtectedMachine", name: "db", uid: "u1", controller: true }];

const processServer = processServerObjects({
  image,
  name: "ksr-ps-x",
  namespace: "app",
  labels: { "dr.ksr.io/replicator": "ksr-ps-x" },
  site: "primary",
  masterTarget: "ksr-mt-x.app-dr.svc:7443",
  tls: { secretName: "ps-tls" },
  encryptionKey: { secretName: "key", key: "key" },
  flags: ["--compression", "lz4"],
  cacheSize: "10Gi",
});
const masterTarget = masterTargetObjects({
  image,
  name: "ksr-mt-x",
  namespace: "app-dr",
  labels: { "dr.ksr.io/replicator": "ksr-mt-x" },
  site: "recovery",
  replicas: [
    { machineId: "data-db-0", claimName: "data-db-0" },
    { machineId: "data-db-1", claimName: "data-db-1" },
  ],
  tls: { secretName: "mt-tls" },
  encryptionKey: { secretName: "key", key: "key" },
  flags: ["--retention", "24h"],
  journalSize: "10Gi",
  storageClassName: "standard",
});
const agent = agentPod({
  image,
  name: "ksr-agent-db-0",
  namespace: "app",
  labels,
  ownerReferences: owner,
  nodeName: "ksr-primary",
  streams: [
    { machineId: "data-db-0", claimName: "data-db-0", tls: { secretName: "a0" }, mode: "tree" },
    { machineId: "wal-db-0", claimName: "wal-db-0", tls: { secretName: "a1" }, mode: "tree" },
  ],
  processServer: "ksr-ps-x.app.svc:7443",
  stateClaimName: "ksr-agent-state-db-0",
  flags: ["--crash-point-interval", "30s"],
});

const podSpecs: [string, V1PodSpec | undefined][] = [
  ["process server", processServer.deployment.spec?.template.spec],
  ["master target", masterTarget.deployment.spec?.template.spec],
  ["agent", agent.spec],
];

describe("protectedmachine: placement", () => {
  for (const [name, spec] of podSpecs) {
    it(`the ${name} holds no API credentials and requests resources`, () => {
      assert.equal(spec?.automountServiceAccountToken, false);
      for (const container of spec.containers) {
        assert.ok(
          container.resources?.requests?.cpu !== undefined && container.resources.requests.memory !== undefined,
        );
        assert.equal(container.securityContext?.privileged, undefined);
        assert.deepEqual(container.securityContext?.capabilities?.drop, ["ALL"]);
        assert.equal(container.image, image, "every replicator runs the image the operator was given");
      }
    });
  }

  it("only the agent may read every file and use fanotify; it mounts its volumes read-only", () => {
    for (const container of agent.spec?.containers ?? []) {
      assert.deepEqual(container.securityContext?.capabilities?.add, ["DAC_READ_SEARCH", "SYS_ADMIN"]);
      const sources = (container.volumeMounts ?? []).filter((mount) => mount.name.startsWith("source-"));
      assert.equal(sources.length, 1);
      assert.ok(sources.every((mount) => mount.readOnly === true));
    }
    assert.ok((agent.spec?.volumes ?? []).filter((v) => v.persistentVolumeClaim?.readOnly === true).length === 2);
    assert.equal(
      processServer.deployment.spec?.template.spec?.containers[0]?.securityContext?.capabilities?.add,
      undefined,
    );
    assert.ok(
      !(masterTarget.deployment.spec?.template.spec?.containers[0]?.securityContext?.capabilities?.add ?? []).includes(
        "SYS_ADMIN",
      ),
    );
  });

  it("the agent sits on the workload pod's node, one container per claim with its own identity and Barrier port", () => {
    const terms = agent.spec?.affinity?.nodeAffinity?.requiredDuringSchedulingIgnoredDuringExecution?.nodeSelectorTerms;
    assert.deepEqual(terms, [{ matchFields: [{ key: "metadata.name", operator: "In", values: ["ksr-primary"] }] }]);
    assert.deepEqual(
      agent.spec?.containers.map((c) => [c.args?.[1], c.ports?.[0]?.containerPort]),
      [
        ["data-db-0", 7500],
        ["wal-db-0", 7501],
      ],
    );
    assert.deepEqual(agent.metadata.ownerReferences, owner);
    assert.equal(agent.metadata.labels?.[machineLabel], "db");
    assert.equal(agent.metadata.labels["app.kubernetes.io/component"], "agent");
  });

  it("servers run in their site, one process at a time, behind a Service on the gRPC port", () => {
    assert.deepEqual(processServer.deployment.spec?.template.spec?.nodeSelector, {
      "topology.dr.ksr.io/site": "primary",
    });
    assert.deepEqual(masterTarget.deployment.spec?.template.spec?.nodeSelector, {
      "topology.dr.ksr.io/site": "recovery",
    });
    for (const objects of [processServer, masterTarget]) {
      assert.equal(objects.deployment.spec?.strategy?.type, "Recreate");
      assert.deepEqual(objects.service.spec?.selector, objects.deployment.spec.template.metadata?.labels);
      assert.equal(objects.service.spec?.ports?.[0]?.port, 7443);
    }
    assert.ok(processServer.deployment.spec.template.spec.containers[0]?.args?.includes("ksr-mt-x.app-dr.svc:7443"));
  });

  it("the master target applies each stream into its replica claim and keeps its journal on its own claim", () => {
    const container = masterTarget.deployment.spec?.template.spec?.containers[0];
    const replicas = (container?.args ?? []).filter((_, i, args) => args[i - 1] === "--replica");
    assert.deepEqual(replicas, [
      "data-db-0=/var/lib/ksr/replicas/data-db-0",
      "data-db-1=/var/lib/ksr/replicas/data-db-1",
    ]);
    const claims = masterTarget.deployment.spec?.template.spec?.volumes?.map((v) => v.persistentVolumeClaim?.claimName);
    assert.deepEqual(
      claims?.filter((c) => c !== undefined),
      ["ksr-mt-x-journal", "data-db-0", "data-db-1"],
    );
    assert.equal(masterTarget.journalClaim.spec?.storageClassName, "standard");
  });

  it("a replica claim is named as the recovered workload claims it", () => {
    const claim = replicaClaim({
      name: "data-db-0",
      namespace: "app-dr",
      labels,
      size: "1Gi",
      storageClassName: "standard",
    });
    assert.equal(claim.metadata.name, "data-db-0");
    assert.equal(claim.metadata.namespace, "app-dr");
    assert.equal(claim.spec?.resources?.requests?.storage, "1Gi");
  });

  const names: [string, string, number][] = [
    ["stream of a short claim", streamId("data-db-0"), 54],
    ["stream of a long claim", streamId("d".repeat(200)), 54],
    ["process server", processServerName("p".repeat(80), "primary", "dr"), 63],
    ["master target", masterTargetName("p".repeat(80), "app", "recovery"), 63],
  ];
  for (const [what, name, max] of names)
    it(`names the ${what} within ${max} characters`, () => {
      assert.ok(name.length <= max, name);
      assert.match(name, /^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$/);
    });
  it("keeps distinct long names distinct", () => {
    assert.notEqual(streamId(`${"d".repeat(100)}-0`), streamId(`${"d".repeat(100)}-1`));
    assert.notEqual(processServerName("p", "primary", "a"), processServerName("p", "primary", "b"));
  });
});

describe("protectedmachine: the agent's hooks file from HTTP quiesce hooks", () => {
  it("is a file the agent accepts, calling the workload pod's own address", () => {
    const file = agentHooksFile(
      {
        pre: { http: { port: 8080, path: "/admin/quiesce", scheme: "HTTP", method: "POST" } },
        post: { http: { port: 8080, path: "/admin/resume", scheme: "HTTP", method: "PUT" } },
        timeout: "1m30s",
        onFailure: "TakeCrashConsistent",
      },
      "198.18.0.7",
    );
    const hooks = parseHooks(JSON.stringify(file), "hooks.json");
    assert.deepEqual(hooks, [
      {
        name: "workload",
        timeoutMs: 90_000,
        pre: { kind: "http", url: "http://198.18.0.7:8080/admin/quiesce", method: "POST" },
        post: { kind: "http", url: "http://198.18.0.7:8080/admin/resume", method: "PUT" },
      },
    ]);
  });
});
