// The direction replication runs in (status.replication) and the view placement takes of a
// machine in it: table tests of the pure functions, and the phases computeStatus derives from it.
import { strict as assert } from "node:assert";
import type { ProtectedMachine, ReplicationDirectionStatus } from "../../src/api/types.js";
import {
  epochStreamId,
  inDirection,
  replicatedView,
  directionOf,
  endedReplication,
  reversedReplication,
} from "../../src/controllers/protectedmachine/direction.js";
import { processServerName, streamId } from "../../src/controllers/protectedmachine/names.js";
import type { Plan } from "../../src/controllers/protectedmachine/plan.js";
import { computeStatus, type StatusInput } from "../../src/controllers/protectedmachine/status.js";
import { checkMachineId } from "../../src/replicator/machine-id.js";
import type { ControlStatus } from "../../src/gen/ksr/replication/v1/replication.js";

const now = Date.parse("2026-12-01T10:00:00Z");

function machine(status?: ProtectedMachine["status"]): ProtectedMachine {
  return {
    apiVersion: "dr.ksr.io/v1alpha1",
    kind: "ProtectedMachine",
    metadata: { name: "db", namespace: "shop", uid: "u1" },
    spec: {
      policyRef: { name: "fast" },
      source: { workloadRef: { kind: "StatefulSet", name: "db" } },
      target: { site: "recovery", namespace: "shop-dr", storageClassName: "recovery-ssd" },
      paused: false,
    },
    ...(status === undefined ? {} : { status }),
  };
}

const failedOver: ReplicationDirectionStatus = {
  direction: "Forward",
  sourceNamespace: "shop",
  sourceSite: "primary",
  targetNamespace: "shop-dr",
  targetSite: "recovery",
  epoch: 0,
  failedOverBy: "db-planned",
};

describe("replication direction (status.replication)", () => {
  it("is Forward from the machine's namespace and site to spec.target when none is recorded", () => {
    assert.deepEqual(directionOf(machine({ activeSite: "primary" })), {
      direction: "Forward",
      sourceNamespace: "shop",
      sourceSite: "primary",
      targetNamespace: "shop-dr",
      targetSite: "recovery",
      epoch: 0,
    });
  });

  it("reverses the ends, starts a new epoch and forgets the failover; twice gives the original ends back", () => {
    const reverse = reversedReplication(failedOver, "db-reprotect", "2026-12-01T10:00:00Z", []);
    assert.deepEqual(reverse, {
      direction: "Reverse",
      sourceNamespace: "shop-dr",
      sourceSite: "recovery",
      targetNamespace: "shop",
      targetSite: "primary",
      epoch: 1,
      reprotectedBy: "db-reprotect",
      lastTransitionTime: "2026-12-01T10:00:00Z",
    });
    const back = reversedReplication({ ...reverse, failedOverBy: "db-failback" }, "again", "t", ["data-0"]);
    assert.deepEqual(
      [back.direction, back.sourceNamespace, back.sourceSite, back.targetNamespace, back.targetSite, back.epoch],
      ["Forward", "shop", "primary", "shop-dr", "recovery", 2],
    );
    assert.equal(back.failedOverBy, undefined);
    assert.deepEqual(back.fullCopyVolumes, ["data-0"]);
  });

  it("names the direction a reprotect ended: the old master target's place and epoch", () => {
    assert.equal(endedReplication(failedOver), undefined);
    const reverse = reversedReplication(failedOver, "db-reprotect", "t", []);
    const ended = endedReplication(reverse);
    assert.deepEqual(
      [ended?.direction, ended?.sourceNamespace, ended?.targetNamespace, ended?.targetSite, ended?.epoch],
      ["Forward", "shop", "shop-dr", "recovery", 0],
    );
    const forward = reversedReplication({ ...reverse, failedOverBy: "back" }, "again", "t", []);
    assert.deepEqual(
      [
        endedReplication(forward)?.direction,
        endedReplication(forward)?.targetNamespace,
        endedReplication(forward)?.epoch,
      ],
      ["Reverse", "shop", 1],
    );
  });

  it("cannot reverse without the site the workload came from", () => {
    const { sourceSite: _site, ...unknown } = failedOver;
    assert.throws(() => reversedReplication(unknown, "r", "t", []), /site the workload ran in before the failover/);
  });

  it("views a reversed machine from the recovery namespace towards the original one, without the recovery site's storage class", () => {
    const forward = machine({ replication: failedOver });
    assert.equal(replicatedView(forward), forward);
    const view = replicatedView(machine({ replication: reversedReplication(failedOver, "r", "t", []) }));
    assert.equal(view.metadata.namespace, "shop-dr");
    assert.equal(view.metadata.uid, "u1");
    assert.deepEqual(view.spec.target, { namespace: "shop", site: "primary" });
  });

  it("names a new change stream per epoch, within the certificate's limit", () => {
    const cases: readonly [string, number][] = [
      ["data-db-0", 0],
      ["data-db-0", 1],
      ["data-db-0", 12],
      ["a".repeat(60), 3],
    ];
    const ids = cases.map(([claim, epoch]) => epochStreamId(claim, epoch));
    assert.equal(ids[0], streamId("data-db-0"));
    assert.equal(ids[1], "data-db-0.e1");
    assert.equal(new Set(ids).size, ids.length);
    for (const id of ids) {
      assert.ok(id.length <= 54, id);
      checkMachineId(id);
    }
  });

  const plan = (sourceSite?: string): Plan => ({
    policy: { metadata: { name: "fast" } } as Plan["policy"],
    volumes: [
      {
        statusName: "data-0",
        volumeName: "data",
        claimName: "data-db-0",
        replicaClaimName: "data-db-0",
        machineId: "x",
      },
    ],
    ...(sourceSite === undefined ? {} : { sourceSite }),
    processServer: processServerName("fast", sourceSite ?? "", "shop"),
    masterTarget: { name: "mt", namespace: "shop" },
    agents: [],
  });

  it("plans in the direction: the epoch's streams, the home namespace, and a stopped workload's site", () => {
    const reversed = machine({ replication: reversedReplication(failedOver, "r", "t", []) });
    const running = inDirection(plan("recovery"), reversed, false);
    assert.deepEqual(running.reverse, { homeNamespace: "shop" });
    assert.equal(running.volumes[0]?.machineId, "data-db-0.e1");
    assert.equal(running.keepAgents, undefined);
    // Scaled to 0 by the failback: no pod tells the site, the record does; the agents stay.
    const stopped = inDirection(plan(), reversed, true);
    assert.equal(stopped.sourceSite, "recovery");
    assert.equal(stopped.processServer, processServerName("fast", "recovery", "shop"));
    assert.equal(stopped.keepAgents, true);
    // Not stopped by a failover and no pod: nothing is placed yet.
    assert.equal(inDirection(plan(), reversed, false).sourceSite, undefined);
  });
});

describe("machine phases after a failover (computeStatus)", () => {
  const synced: ControlStatus = {
    machineId: "data-db-0",
    durableSeq: 10,
    appliedSeq: 10,
    cachedBytes: 0,
    resyncRequired: false,
    resyncHeld: false,
    masterTargetReachable: true,
    recoveryTimeUnixMs: now - 2000,
    syncing: false,
    syncBytesTotal: 100,
    syncBytesDone: 100,
    capture: undefined,
    lastReportUnixMs: now - 1000,
    receivedBytes: 100,
  };
  const syncing = { ...synced, syncing: true, syncBytesDone: 40 };
  const volume = (control: ControlStatus) => ({
    statusName: "data-0",
    claimName: "data-db-0",
    replicaClaimName: "data-db-0",
    control,
  });
  const protectedEarlier = {
    phase: "Protected" as const,
    initialReplication: { completionTime: "2026-12-01T09:00:00Z", progressPercent: 100 },
  };
  const input = (fields: Partial<StatusInput>): StatusInput => ({
    previous: protectedEarlier,
    paused: false,
    rpoThresholdMs: 300_000,
    volumes: [],
    now,
    ...fields,
  });
  const cases: readonly { name: string; input: Partial<StatusInput>; phase: string; ready: string }[] = [
    {
      name: "paused by a committed failover",
      input: { paused: true, failedOver: true },
      phase: "FailedOver",
      ready: "FailedOver",
    },
    { name: "paused otherwise", input: { paused: true }, phase: "Paused", ready: "Paused" },
    {
      name: "a new epoch still comparing",
      input: { epoch: 1, volumes: [volume(syncing)] },
      phase: "Reprotecting",
      ready: "Reprotecting",
    },
    { name: "a new epoch not reported yet", input: { epoch: 1 }, phase: "Reprotecting", ready: "Reprotecting" },
    {
      name: "a new epoch compared",
      input: { epoch: 1, volumes: [volume(synced)] },
      phase: "Protected",
      ready: "Protected",
    },
    {
      name: "the same epoch resyncing",
      input: { volumes: [volume(syncing)] },
      phase: "Resynchronizing",
      ready: "Resynchronizing",
    },
  ];
  for (const c of cases)
    it(c.name, () => {
      const result = computeStatus(input(c.input));
      assert.equal(result.status.phase, c.phase);
      assert.equal(result.conditions.find((condition) => condition.type === "Ready")?.reason, c.ready);
    });

  it("tracks the new epoch's comparison afresh and says when volumes are copied in full", () => {
    const result = computeStatus(input({ epoch: 2, volumes: [volume(syncing)], fullCopyVolumes: ["data-0"] }));
    assert.deepEqual(
      [result.status.initialReplication?.epoch, result.status.initialReplication?.progressPercent],
      [2, 40],
    );
    assert.equal(result.status.initialReplication?.completionTime, undefined);
    const fullCopy = result.conditions.find((condition) => condition.type === "FullCopy");
    assert.deepEqual([fullCopy?.status, fullCopy?.reason], ["True", "OriginalVolumesGone"]);
    assert.ok(result.events.some((event) => event.reason === "OriginalVolumesGone" && event.type === "Warning"));
    const compared = computeStatus(input({ epoch: 2, volumes: [volume(syncing)] }));
    assert.equal(compared.conditions.find((condition) => condition.type === "FullCopy")?.status, "False");
    assert.equal(
      computeStatus(input({})).conditions.find((condition) => condition.type === "FullCopy"),
      undefined,
    );
  });
});
