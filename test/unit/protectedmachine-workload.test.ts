import { strict as assert } from "node:assert";
import type { ProtectedMachineSpec } from "../../src/api/types.js";
import {
  claimProblems,
  resolveWorkload,
  type ProtectedVolume,
  type WorkloadObject,
} from "../../src/controllers/protectedmachine/workload.js";
import type { PersistentVolumeClaim, Pod, StorageClass } from "../../src/runtime/index.js";
import { replicasAnnotation } from "../../src/controllers/failoverrun/steps/workload.js";

const spec = (kind: "StatefulSet" | "Deployment" | "Pod", name: string, volumes?: string[]): ProtectedMachineSpec => ({
  policyRef: { name: "p" },
  source: { workloadRef: { kind, name }, ...(volumes === undefined ? {} : { volumes }) },
  target: { site: "recovery", namespace: "dr" },
  paused: false,
});

const pod = (name: string, labels: Record<string, string>, claims: string[], nodeName?: string): Pod => ({
  metadata: { name, namespace: "app", labels },
  spec: {
    ...(nodeName === undefined ? {} : { nodeName }),
    containers: [{ name: "c" }],
    volumes: claims.map((claimName, i) => ({ name: `v${i}`, persistentVolumeClaim: { claimName } })),
  },
});

const statefulSet: WorkloadObject = {
  metadata: { name: "db", namespace: "app" },
  spec: {
    replicas: 2,
    selector: { matchLabels: { app: "db" } },
    template: {
      spec: {
        containers: [{ name: "c" }],
        volumes: [{ name: "shared", persistentVolumeClaim: { claimName: "config" } }],
      },
    },
    volumeClaimTemplates: [{ metadata: { name: "data" } }, { metadata: { name: "wal" } }],
  },
};

const deployment: WorkloadObject = {
  metadata: { name: "api", namespace: "app" },
  spec: {
    selector: { matchLabels: { app: "api" } },
    template: {
      spec: {
        containers: [{ name: "c" }],
        volumes: [
          { name: "spool", persistentVolumeClaim: { claimName: "api-spool" } },
          { name: "tmp", emptyDir: {} },
        ],
      },
    },
  },
};

const pods = [
  pod("db-0", { app: "db" }, ["data-db-0", "wal-db-0", "config"], "ksr-primary"),
  pod("db-1", { app: "db" }, ["data-db-1", "wal-db-1", "config"]),
  pod("api-7c9-abcde", { app: "api" }, ["api-spool"], "ksr-primary"),
  pod("other", { app: "other" }, ["x"], "ksr-primary"),
];

function volumes(result: ReturnType<typeof resolveWorkload>): Partial<ProtectedVolume>[] {
  assert.ok(result.ok, JSON.stringify(result));
  return result.workload.volumes.map(({ statusName, claimName, replicaClaimName, podName }) => ({
    statusName,
    claimName,
    replicaClaimName,
    ...(podName === undefined ? {} : { podName }),
  }));
}

describe("protectedmachine: workload resolution", () => {
  it("a StatefulSet replicates every claim of every ordinal, replicas named as the recovered set claims them", () => {
    assert.deepEqual(volumes(resolveWorkload(spec("StatefulSet", "db"), "app", statefulSet, pods)), [
      { statusName: "data-0", claimName: "data-db-0", replicaClaimName: "data-db-0", podName: "db-0" },
      { statusName: "data-1", claimName: "data-db-1", replicaClaimName: "data-db-1" },
      { statusName: "wal-0", claimName: "wal-db-0", replicaClaimName: "wal-db-0", podName: "db-0" },
      { statusName: "wal-1", claimName: "wal-db-1", replicaClaimName: "wal-db-1" },
      { statusName: "shared", claimName: "config", replicaClaimName: "config", podName: "db-0" },
    ]);
  });

  it("a StatefulSet stopped for a failover keeps its claims: the replicas recorded before it was scaled to 0 count", () => {
    const stopped: WorkloadObject = {
      ...statefulSet,
      metadata: { ...statefulSet.metadata, annotations: { [replicasAnnotation]: "2" } },
      spec: { ...statefulSet.spec, replicas: 0 },
    };
    assert.deepEqual(
      volumes(resolveWorkload(spec("StatefulSet", "db", ["data"]), "app", stopped, [])).map((v) => v.claimName),
      ["data-db-0", "data-db-1"],
    );
  });

  it("spec.source.volumes narrows the claims", () => {
    assert.deepEqual(
      volumes(resolveWorkload(spec("StatefulSet", "db", ["wal"]), "app", statefulSet, pods)).map((v) => v.claimName),
      ["wal-db-0", "wal-db-1"],
    );
  });

  it("a Deployment replicates its PersistentVolumeClaims, not its emptyDirs, captured beside its pod", () => {
    assert.deepEqual(volumes(resolveWorkload(spec("Deployment", "api"), "app", deployment, pods)), [
      { statusName: "spool", claimName: "api-spool", replicaClaimName: "api-spool", podName: "api-7c9-abcde" },
    ]);
  });

  it("a Pod replicates its own claims", () => {
    const workload = pods[3] as WorkloadObject;
    assert.deepEqual(volumes(resolveWorkload(spec("Pod", "other"), "app", workload, pods)), [
      { statusName: "v0", claimName: "x", replicaClaimName: "x", podName: "other" },
    ]);
  });

  const problems: { name: string; run: () => ReturnType<typeof resolveWorkload>; reason: string; mentions: string }[] =
    [
      {
        name: "a missing workload",
        run: () => resolveWorkload(spec("StatefulSet", "nope"), "app", undefined, pods),
        reason: "WorkloadNotFound",
        mentions: "StatefulSet app/nope does not exist",
      },
      {
        name: "a volume the workload does not mount",
        run: () => resolveWorkload(spec("StatefulSet", "db", ["logs"]), "app", statefulSet, pods),
        reason: "VolumeNotFound",
        mentions: "logs",
      },
      {
        name: "a workload without claims",
        run: () =>
          resolveWorkload(
            spec("Deployment", "web"),
            "app",
            { metadata: { name: "web" }, spec: { template: { spec: { containers: [] } } } },
            pods,
          ),
        reason: "NoPersistentVolumes",
        mentions: "mounts no PersistentVolumeClaim",
      },
    ];
  for (const { name, run, reason, mentions } of problems) {
    it(`reports ${name} with a reason and a message naming the fix`, () => {
      const result = run();
      assert.ok(!result.ok);
      assert.equal(result.problem.reason, reason);
      assert.match(result.problem.message, new RegExp(mentions));
    });
  }
});

describe("protectedmachine: claim problems", () => {
  const volume = (claimName: string, podName?: string): ProtectedVolume => ({
    statusName: claimName,
    volumeName: claimName,
    claimName,
    replicaClaimName: claimName,
    machineId: claimName,
    ...(podName === undefined ? {} : { podName }),
  });
  const claim = (
    name: string,
    phase: string,
    accessModes = ["ReadWriteOnce"],
    storageClassName = "standard",
  ): PersistentVolumeClaim => ({
    metadata: { name },
    spec: { accessModes, storageClassName },
    status: { phase },
  });
  const classes = new Map<string, StorageClass>([
    ["standard", { metadata: { name: "standard" }, provisioner: "x", volumeBindingMode: "WaitForFirstConsumer" }],
    ["fast", { metadata: { name: "fast" }, provisioner: "x", volumeBindingMode: "Immediate" }],
  ]);
  const cases: { name: string; volumes: ProtectedVolume[]; claims: PersistentVolumeClaim[]; reason?: string }[] = [
    { name: "bound claims are fine", volumes: [volume("a", "p")], claims: [claim("a", "Bound")], reason: undefined },
    { name: "a claim not created yet is waited for", volumes: [volume("a")], claims: [], reason: undefined },
    {
      name: "a WaitForFirstConsumer claim before its pod is scheduled is waited for",
      volumes: [volume("a")],
      claims: [claim("a", "Pending")],
      reason: undefined,
    },
    {
      name: "a claim Pending under an Immediate class is not Bound",
      volumes: [volume("a")],
      claims: [claim("a", "Pending", ["ReadWriteOnce"], "fast")],
      reason: "ClaimNotBound",
    },
    {
      name: "a claim of a StorageClass that does not exist is not Bound",
      volumes: [volume("a")],
      claims: [claim("a", "Pending", ["ReadWriteOnce"], "missing")],
      reason: "ClaimNotBound",
    },
    {
      name: "a ReadWriteOncePod claim cannot be shared with the agent",
      volumes: [volume("a", "p")],
      claims: [claim("a", "Bound", ["ReadWriteOncePod"])],
      reason: "ClaimIsReadWriteOncePod",
    },
  ];
  for (const { name, volumes: protectedVolumes, claims, reason } of cases) {
    it(name, () => {
      const found = claimProblems(protectedVolumes, new Map(claims.map((c) => [c.metadata.name, c])), classes);
      assert.equal(found?.reason, reason, JSON.stringify(found));
      if (found !== undefined) assert.match(found.message, /PersistentVolumeClaim a /);
    });
  }
});
