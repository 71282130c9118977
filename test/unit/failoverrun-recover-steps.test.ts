// The recover and stop steps before they act: a point is recorded before anything uses it, and a
// change of recovery point to a point the rollback discarded is refused before the recovered
// workload is stopped. The master target is our own RecoveryPointAccess interface, faked; the
// Kubernetes client must not be called at all.
import { strict as assert } from "node:assert";
import type { FailoverRun, ProtectedMachine } from "../../src/api/types.js";
import type { StepWork } from "../../src/controllers/failoverrun/machine.js";
import { commitStep, recoverStep, stopStep } from "../../src/controllers/failoverrun/steps/builtin.js";
import type { RecoveryPointAccess, VolumePointsReply } from "../../src/controllers/failoverrun/steps/replicas.js";
import type { StepContext } from "../../src/controllers/failoverrun/steps/types.js";
import { Consistency } from "../../src/gen/ksr/replication/v1/replication.js";
import { systemClock, type KubeClient, type Logger } from "../../src/runtime/index.js";
import { machine, newRun, shopReversed, t0 } from "../fixture/failoverrun-world.js";

const point = (id: string, seconds: number) => ({
  id,
  seq: seconds,
  timeUnixMs: t0 + seconds * 1000,
  consistency: Consistency.CONSISTENCY_CRASH,
  consistencyGroup: "",
});

const db = machine("db", "Protected", {
  volumes: [{ name: "data", claimName: "data-db-0", replicaClaimName: "data-db-0", lastAppliedSequence: 90 }],
  lastSyncTime: new Date(t0 + 100_000).toISOString(),
});

/** After a rollback to p60, the master target retains p0..p60 only. */
const afterRollback: VolumePointsReply[] = [
  { machineId: "data-db-0", points: [point("p0", 0), point("p30", 30), point("p60", 60)], pendingRollback: "" },
];

const untouchable = new Proxy({} as KubeClient, {
  get: (_, name) => () => Promise.reject(new Error(`the client was called (${String(name)})`)),
});

function contextFor(
  run: FailoverRun,
  work: StepWork,
  volumes: VolumePointsReply[],
  world: { machine?: ProtectedMachine; client?: KubeClient } = {},
): StepContext {
  const replicas: RecoveryPointAccess = {
    points: () => Promise.resolve(volumes),
    rollback: () => Promise.reject(new Error("no rollback expected")),
    masterTargetAddress: () => "mt.shop-recovery.svc:7443",
    hydratorCertificate: () => Promise.reject(new Error("no certificate expected")),
    revokeAgent: () => Promise.reject(new Error("no revocation expected")),
    releaseEpoch: () => Promise.reject(new Error("no release expected")),
  };
  return {
    run,
    work,
    plan: undefined,
    machines: new Map([["db", world.machine ?? db]]),
    client: world.client ?? untouchable,
    clock: systemClock,
    signal: new AbortController().signal,
    log: {} as Logger,
    replicas,
    replicatorImage: "registry.example/kube-site-recovery:1.2.3",
  };
}

const unplanned = (changes: FailoverRun["spec"]["recoveryPointChanges"]): FailoverRun => ({
  ...newRun({ type: "Unplanned", machineRef: { name: "db" }, recoveryPointChanges: changes }),
  status: {
    phase: "Succeeded",
    recoveryPoints: [
      { machine: "db", id: "p60", time: new Date(t0 + 60_000).toISOString(), consistency: "CrashConsistent" },
    ],
  },
});

describe("recover and stop steps before they act", () => {
  it("a recover step records its point first, touching nothing", async () => {
    const run = newRun({ type: "Unplanned", machineRef: { name: "db" } });
    const work: StepWork = { step: { name: "recover/db", action: "Recover", machine: "db", phase: "Running" } };
    const outcome = await recoverStep.execute(contextFor(run, work, afterRollback));
    assert.equal(outcome.state, "InProgress");
    assert.deepEqual(outcome.point, {
      machine: "db",
      id: "p60",
      time: "2026-12-01T10:01:00Z",
      consistency: "CrashConsistent",
    });
  });

  it("a change to a point newer than the one rolled back to fails before the recovered workload is stopped", async () => {
    const run = unplanned([{ select: "ID", id: "p90" }]);
    const work: StepWork = { step: { name: "change-1/stop/db", action: "Stop", machine: "db", phase: "Running" } };
    const outcome = await stopStep.execute(contextFor(run, work, afterRollback));
    assert.equal(outcome.state, "Failed");
    assert.match(outcome.message ?? "", /no volume retains recovery point p90/);
    assert.match(outcome.message ?? "", /rollback to p60 .* can only move to that point or an older retained one/);
  });

  it("a change to a time after the current point resolves to the current point, not a discarded one", async () => {
    const run = unplanned([{ select: "Time", time: new Date(t0 + 95_000).toISOString() }]);
    const work: StepWork = {
      step: { name: "change-1/recover/db", action: "Recover", machine: "db", phase: "Running" },
      change: 1,
      recordedPoint: { machine: "db", id: "p0", time: new Date(t0).toISOString(), consistency: "CrashConsistent" },
    };
    const outcome = await recoverStep.execute(contextFor(run, work, afterRollback));
    assert.equal(outcome.state, "InProgress");
    assert.equal(outcome.point?.id, "p60");
  });

  it("a change on a failback stops the workload where the reversed direction recovered it", async () => {
    const reversed: ProtectedMachine = {
      ...db,
      status: {
        ...db.status,
        replication: shopReversed,
      },
    };
    const asked: string[] = [];
    const client = {
      get: (_type: unknown, name: string, namespace: string) => {
        asked.push(`${namespace}/${name}`);
        return Promise.resolve(undefined);
      },
    } as unknown as KubeClient;
    const run = unplanned([{ select: "ID", id: "p30" }]);
    const work: StepWork = { step: { name: "change-1/stop/db", action: "Stop", machine: "db", phase: "Running" } };
    const outcome = await stopStep.execute(contextFor(run, work, afterRollback, { machine: reversed, client }));
    assert.equal(outcome.state, "Succeeded");
    assert.deepEqual(asked, [`shop/${db.spec.source.workloadRef.name}`]);
  });
});

describe("the commit step", () => {
  const commitWork: StepWork = { step: { name: "commit", action: "Commit", phase: "Running" } };
  const run = newRun({ type: "Planned", machineRef: { name: "db" }, commit: true });
  const withRelease = (releaseEpoch: RecoveryPointAccess["releaseEpoch"]): StepContext => {
    const base = contextFor(run, commitWork, afterRollback);
    return { ...base, replicas: { ...base.replicas, releaseEpoch } };
  };

  it("releases the recovered machine's points of its current epoch, with their journal", async () => {
    const asked: number[] = [];
    const outcome = await commitStep.execute(
      withRelease((_, replication) => {
        asked.push(replication.epoch);
        return Promise.resolve([{ machineId: "data-db-0", points: 3, journalBytes: 0 }]);
      }),
    );
    assert.equal(outcome.state, "Succeeded");
    assert.deepEqual(asked, [0]);
    assert.match(outcome.message ?? "", /^failover committed; 3 recovery points released with their journal; /);
  });

  it("commits when the master target cannot be reached, saying the next reprotect releases the points", async () => {
    const outcome = await commitStep.execute(withRelease(() => Promise.reject(new Error("connect ECONNREFUSED"))));
    assert.equal(outcome.state, "Succeeded");
    assert.match(
      outcome.message ?? "",
      /0 recovery points released with their journal \(the points of db \(.*: connect ECONNREFUSED\) stay until kubectl dr reprotect releases them\)/,
    );
  });
});
