import { strict as assert } from "node:assert";
import type { ProtectedMachineStatus } from "../../src/api/types.js";
import { rfc3339 } from "../../src/runtime/conditions.js";
import {
  computeStatus,
  formatDuration,
  summarizePoints,
  type StatusInput,
  type VolumeObservation,
} from "../../src/controllers/protectedmachine/status.js";
import { Consistency, type ControlStatus, type PointInfo } from "../../src/gen/ksr/replication/v1/replication.js";
import { controlStatus } from "../fixture/control-status.js";

const now = Date.parse("2026-12-01T10:00:00Z");
const minute = 60_000;

const control = (fields: Partial<ControlStatus>): ControlStatus =>
  controlStatus({ lastReportUnixMs: now - 1000, ...fields });

const volume = (name: string, fields?: Partial<ControlStatus>, points?: PointInfo[]): VolumeObservation => ({
  statusName: name,
  claimName: `${name}-claim`,
  replicaClaimName: `${name}-claim`,
  ...(fields === undefined ? {} : { control: control(fields) }),
  ...(points === undefined ? {} : { points }),
});

const input = (fields: Partial<StatusInput>): StatusInput => ({
  previous: undefined,
  paused: false,
  rpoThresholdMs: 5 * minute,
  volumes: [],
  now,
  ...fields,
});

const protectedBefore: ProtectedMachineStatus = {
  phase: "Protected",
  health: "Healthy",
  initialReplication: { completionTime: "2026-12-01T09:00:00Z", progressPercent: 100 },
  conditions: [],
};

const point = (id: string, ageMs: number, consistency: Consistency): PointInfo => ({
  id,
  seq: 1,
  timeUnixMs: now - ageMs,
  consistency,
  consistencyGroup: "",
});

describe("protectedmachine: status from observations", () => {
  const cases: {
    name: string;
    input: StatusInput;
    phase: string;
    health: string;
    ready: string;
    rpo?: string;
    events: string[];
    percent?: number;
  }[] = [
    {
      name: "nothing reported yet: Enabling",
      input: input({ volumes: [volume("data")] }),
      phase: "Enabling",
      health: "Healthy",
      ready: "Enabling",
      events: [],
    },
    {
      name: "copying: InitialReplication with percent and bytes",
      input: input({ volumes: [volume("data", { syncing: true, syncBytesTotal: 400, syncBytesDone: 100 })] }),
      phase: "InitialReplication",
      health: "Healthy",
      ready: "InitialReplication",
      percent: 25,
      events: ["InitialReplicationStarted"],
    },
    {
      name: "copied but not yet confirmed by the recovery site stays below 100%",
      input: input({ volumes: [volume("data", { syncing: false, syncBytesTotal: 400, syncBytesDone: 400 })] }),
      phase: "InitialReplication",
      health: "Healthy",
      ready: "InitialReplication",
      percent: 99,
      events: ["InitialReplicationStarted"],
    },
    {
      name: "every volume synced and applied: Protected",
      input: input({
        previous: { phase: "InitialReplication", conditions: [] },
        volumes: [
          volume("a", { syncBytesTotal: 10, syncBytesDone: 10, recoveryTimeUnixMs: now - 4000 }),
          volume("b", { syncBytesTotal: 10, syncBytesDone: 10, recoveryTimeUnixMs: now - 9000 }),
        ],
      }),
      phase: "Protected",
      health: "Healthy",
      ready: "Protected",
      rpo: "9s",
      percent: 100,
      events: ["Protected"],
    },
    {
      name: "RPO above the threshold: Warning, condition and Warning event",
      input: input({ previous: protectedBefore, volumes: [volume("a", { recoveryTimeUnixMs: now - 6 * minute })] }),
      phase: "Protected",
      health: "Warning",
      ready: "Protected",
      rpo: "6m",
      events: ["RpoThresholdExceeded", "HealthChanged"],
    },
    {
      name: "RPO above twice the threshold: Critical",
      input: input({
        previous: { ...protectedBefore, health: "Warning" },
        volumes: [volume("a", { recoveryTimeUnixMs: now - 11 * minute })],
      }),
      phase: "Protected",
      health: "Critical",
      ready: "Protected",
      rpo: "11m",
      events: ["RpoThresholdExceeded", "HealthChanged"],
    },
    {
      name: "RPO back within the threshold",
      input: input({
        previous: { ...protectedBefore, health: "Warning" },
        volumes: [volume("a", { recoveryTimeUnixMs: now - 2000 })],
      }),
      phase: "Protected",
      health: "Healthy",
      ready: "Protected",
      rpo: "2s",
      events: ["RpoWithinThreshold", "HealthChanged"],
    },
    {
      name: "a resync after protection: Resynchronizing",
      input: input({
        previous: protectedBefore,
        volumes: [volume("a", { syncing: true, recoveryTimeUnixMs: now - 1000 })],
      }),
      phase: "Resynchronizing",
      health: "Healthy",
      ready: "Resynchronizing",
      rpo: "1s",
      events: ["ResynchronizationStarted"],
    },
    {
      name: "paused",
      input: input({ paused: true, previous: protectedBefore, volumes: [volume("a")] }),
      phase: "Paused",
      health: "Warning",
      ready: "Paused",
      events: ["ReplicationPaused", "HealthChanged"],
    },
    {
      name: "resumed",
      input: input({
        previous: { ...protectedBefore, phase: "Paused" },
        volumes: [volume("a", { recoveryTimeUnixMs: now - 1000 })],
      }),
      phase: "Protected",
      health: "Healthy",
      ready: "Protected",
      rpo: "1s",
      events: ["Protected", "ReplicationResumed"],
    },
    {
      name: "a problem: Error, the problem's reason and a Warning event",
      input: input({ problem: { reason: "WorkloadNotFound", message: "StatefulSet a/b does not exist" } }),
      phase: "Error",
      health: "Critical",
      ready: "WorkloadNotFound",
      events: ["WorkloadNotFound"],
    },
    {
      name: "the same problem again: no second event",
      input: input({
        previous: {
          phase: "Error",
          conditions: [
            {
              type: "Ready",
              status: "False",
              reason: "WorkloadNotFound",
              message: "",
              lastTransitionTime: "2026-12-01T09:00:00Z",
            },
          ],
        },
        problem: { reason: "WorkloadNotFound", message: "StatefulSet a/b does not exist" },
      }),
      phase: "Error",
      health: "Critical",
      ready: "WorkloadNotFound",
      events: [],
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const { status, conditions, events, rpoSeconds, rpoThresholdSeconds } = computeStatus(c.input);
      assert.equal(status.phase, c.phase);
      // The alerts compare these two: both or neither, and only while the RPO is tracked.
      const tracked = c.phase === "Protected" || c.phase === "Resynchronizing";
      assert.equal(rpoThresholdSeconds, rpoSeconds === undefined ? undefined : 300);
      if (!tracked) assert.equal(rpoSeconds, undefined, "an RPO exported outside Protected and Resynchronizing");
      assert.equal(status.health, c.health);
      const ready = conditions.find((condition) => condition.type === "Ready");
      assert.equal(ready?.reason, c.ready);
      assert.equal(status.rpo, c.rpo);
      if (c.percent !== undefined) assert.equal(status.initialReplication?.progressPercent, c.percent);
      assert.deepEqual(
        events.map((event) => event.reason),
        c.events,
      );
      if (c.health !== "Healthy" && c.rpo !== undefined) {
        const rpoCondition = conditions.find((condition) => condition.type === "RpoWithinThreshold");
        assert.equal(rpoCondition?.status, "False");
        assert.equal(rpoCondition.reason, "RpoThresholdExceeded");
        assert.ok(events.every((event) => event.reason !== "RpoThresholdExceeded" || event.type === "Warning"));
      }
    });
  }

  it("keeps the last sync known while the process server cannot be asked, and moves it once it answers", () => {
    const before = { ...protectedBefore, lastSyncTime: "2026-12-01T09:59:00Z" };
    const lost = computeStatus(input({ previous: before, volumes: [volume("a")] })).status;
    assert.equal(lost.lastSyncTime, "2026-12-01T09:59:00Z");
    const back = computeStatus(
      input({ previous: before, volumes: [volume("a", { recoveryTimeUnixMs: now - 2000 })] }),
    ).status;
    assert.equal(back.lastSyncTime, rfc3339(now - 2000));
  });

  it("reports a policy asking for app-consistent points of a machine without hooks", () => {
    const { conditions } = computeStatus(
      input({
        appConsistencyUnavailable: { reason: "NoQuiesceHooks", message: "no spec.source.quiesce hooks" },
        volumes: [volume("a")],
      }),
    );
    const condition = conditions.find((c) => c.type === "AppConsistencyUnavailable");
    assert.equal(condition?.status, "True");
    assert.match(condition.message ?? "", /spec.source.quiesce/);
  });

  it("gives per-volume figures", () => {
    const { status } = computeStatus(
      input({
        volumes: [
          { ...volume("a", { cachedBytes: 512, appliedSeq: 42 }), capacityBytes: 1024, throughputBytesPerSecond: 99.6 },
        ],
      }),
    );
    assert.deepEqual(status.volumes, [
      {
        name: "a",
        claimName: "a-claim",
        replicaClaimName: "a-claim",
        captureMode: "tree",
        capacityBytes: 1024,
        pendingBytes: 512,
        lastAppliedSequence: 42,
        throughputBytesPerSecond: 100,
      },
    ]);
  });
  const modeCases: { strategy: string | undefined; captureMode: string | undefined }[] = [
    { strategy: "write-ranges", captureMode: "tree" },
    { strategy: "tree-scan", captureMode: "tree" },
    { strategy: "block-scan", captureMode: "block" },
    { strategy: "a-newer-strategy", captureMode: undefined },
    { strategy: undefined, captureMode: undefined },
  ];
  for (const { strategy, captureMode } of modeCases)
    it(`shows a volume's capture mode as ${captureMode ?? "absent"} for the agent's strategy ${strategy ?? "(none reported)"}`, () => {
      const capture = strategy === undefined ? undefined : { strategy, reason: "" };
      const { status } = computeStatus(input({ volumes: [volume("a", { capture })] }));
      assert.equal(status.volumes?.[0]?.captureMode, captureMode);
    });
});

describe("protectedmachine: recovery point summary", () => {
  it("one volume: latest, latest app-consistent, oldest and count, consistency never overstated", () => {
    const summary = summarizePoints([
      [
        point("p1", 30 * minute, Consistency.CONSISTENCY_APP),
        point("p2", 20 * minute, Consistency.CONSISTENCY_CRASH),
        point("p3", 10 * minute, Consistency.CONSISTENCY_BEST_EFFORT),
      ],
    ]);
    assert.equal(summary?.count, 3);
    assert.equal(summary.latest?.id, "p3");
    assert.equal(summary.latest.consistency, "BestEffort");
    assert.equal(summary.latestAppConsistent?.id, "p1");
    assert.equal(summary.oldest?.id, "p1");
    assert.deepEqual(
      summary.items?.map((listed) => `${listed.id} ${listed.consistency}`),
      ["p3 BestEffort", "p2 CrashConsistent", "p1 AppConsistent"],
      "every point, newest first",
    );
  });

  it("lists at most the newest 100 points", () => {
    const many = Array.from({ length: 130 }, (_, i) =>
      point(`p${i}`, (130 - i) * minute, Consistency.CONSISTENCY_CRASH),
    );
    const summary = summarizePoints([many]);
    assert.equal(summary?.count, 130);
    assert.equal(summary.items?.length, 100);
    assert.equal(summary.items[0]?.id, "p129");
    assert.equal(summary.items.at(-1)?.id, "p30");
  });

  it("several volumes: only as far as every volume has points", () => {
    const summary = summarizePoints([
      [point("a1", 30 * minute, Consistency.CONSISTENCY_CRASH), point("a2", 5 * minute, Consistency.CONSISTENCY_CRASH)],
      [
        point("b1", 20 * minute, Consistency.CONSISTENCY_CRASH),
        point("b2", 10 * minute, Consistency.CONSISTENCY_CRASH),
      ],
    ]);
    assert.equal(summary?.latest?.id, "b2");
    assert.equal(summary.oldest?.id, "b1");
    assert.equal(summary.count, 2);
    assert.equal(summary.latestAppConsistent, undefined);
    // a1 is older than b's oldest and a2 newer than b's latest: no instant of theirs holds for both.
    assert.deepEqual(
      summary.items?.map((listed) => listed.id),
      ["b2", "b1"],
    );
  });
});

describe("protectedmachine: durations", () => {
  for (const [ms, text] of [
    [0, "0s"],
    [42_000, "42s"],
    [192_000, "3m12s"],
    [7_500_000, "2h5m"],
    [3_600_000, "1h"],
  ] as const)
    it(`${ms} ms is ${text}`, () => {
      assert.equal(formatDuration(ms), text);
    });
});
