// Which point of each volume a recover step uses, for every selector, and the data-loss window.
import { strict as assert } from "node:assert";
import type { RecoveryPointSelector, UsedRecoveryPoint } from "../../src/api/types.js";
import {
  dataLossMs,
  selectPoints,
  type VolumeChanges,
  type VolumePoints,
} from "../../src/controllers/failoverrun/steps/points.js";
import { Consistency, type PointInfo } from "../../src/gen/ksr/replication/v1/replication.js";

const t0 = Date.parse("2026-12-01T10:00:00Z");
const point = (id: string, seconds: number, consistency = Consistency.CONSISTENCY_CRASH, ms = 0): PointInfo => ({
  id,
  seq: seconds * 10,
  timeUnixMs: t0 + seconds * 1000 + ms,
  consistency,
  consistencyGroup: "",
});
const app = Consistency.CONSISTENCY_APP;
const best = Consistency.CONSISTENCY_BEST_EFFORT;

// Two volumes cut on their own: "a" at 0, 30 (app), 60, 90.7; "b" at 5, 30 (app), 65 (best effort).
const a: VolumePoints = {
  machineId: "a",
  points: [
    point("a0", 0),
    point("a30", 30, app),
    point("a60", 60),
    point("a90", 90, Consistency.CONSISTENCY_CRASH, 700),
  ],
};
const b: VolumePoints = { machineId: "b", points: [point("b5", 5), point("b30", 30, app), point("b65", 65, best)] };

describe("the recovery point of each volume", () => {
  const cases: {
    name: string;
    volumes: VolumePoints[];
    selector: RecoveryPointSelector;
    recorded?: UsedRecoveryPoint;
    /** Chosen ids per volume, or a message the refusal matches. */
    want: string[] | RegExp;
    used?: Partial<UsedRecoveryPoint>;
  }[] = [
    {
      name: "LatestProcessed on one volume is its newest point",
      volumes: [a],
      selector: { select: "LatestProcessed" },
      want: ["a90"],
      used: { id: "a90", time: "2026-12-01T10:01:30Z", consistency: "CrashConsistent" },
    },
    {
      name: "Latest is the newest point already applied (nothing more can arrive once the run decided)",
      volumes: [a],
      selector: { select: "Latest" },
      want: ["a90"],
    },
    {
      name: "LatestProcessed on two volumes stops at the volume whose newest point is oldest",
      volumes: [a, b],
      selector: { select: "LatestProcessed" },
      want: ["a60", "b65"],
      used: { id: "a60", time: "2026-12-01T10:01:00Z", consistency: "BestEffort" },
    },
    {
      name: "LatestAppConsistent takes app points only",
      volumes: [a, b],
      selector: { select: "LatestAppConsistent" },
      want: ["a30", "b30"],
      used: { consistency: "AppConsistent" },
    },
    {
      name: "LatestAppConsistent without an app point is refused",
      volumes: [{ machineId: "c", points: [point("c1", 1)] }],
      selector: { select: "LatestAppConsistent" },
      want: /no app-consistent recovery point/,
    },
    {
      name: "LatestAppConsistent is refused when a volume's app points are all after another's newest",
      volumes: [a, { machineId: "b", points: [point("b45", 45, app)] }],
      selector: { select: "LatestAppConsistent" },
      want: /stream b .*retains no point for LatestAppConsistent/,
    },
    {
      name: "Time takes the newest point at or before it",
      volumes: [a, b],
      selector: { select: "Time", time: "2026-12-01T10:00:40Z" },
      want: ["a30", "b30"],
    },
    {
      name: "Time before every point of a volume is refused, naming its oldest",
      volumes: [a, b],
      selector: { select: "Time", time: "2026-12-01T10:00:02Z" },
      want: /stream b .*retains no point for the newest point at or before .*oldest is b5/,
    },
    {
      name: "ID pins its volume; the others take their newest point at or before it",
      volumes: [a, b],
      selector: { select: "ID", id: "b65" },
      want: ["a60", "b65"],
      used: { id: "b65", consistency: "BestEffort" },
    },
    {
      name: "an ID no volume retains (pruned, or discarded by a rollback) is refused",
      volumes: [a],
      selector: { select: "ID", id: "gone" },
      want: /no volume retains recovery point gone/,
    },
    {
      name: "a recorded point is reused although newer points arrived (its id, despite whole-second times)",
      volumes: [{ machineId: "a", points: [...a.points, point("a120", 120)] }],
      selector: { select: "LatestProcessed" },
      recorded: { machine: "db", id: "a90", time: "2026-12-01T10:01:30Z", consistency: "CrashConsistent" },
      want: ["a90"],
    },
    {
      name: "a recorded point no longer retained is refused",
      volumes: [{ machineId: "a", points: [point("a120", 120)] }],
      selector: { select: "LatestProcessed" },
      recorded: { machine: "db", id: "a90", time: "2026-12-01T10:01:30Z", consistency: "CrashConsistent" },
      want: /the recorded point a90/,
    },
    {
      name: "a machine without volumes is refused",
      volumes: [],
      selector: { select: "LatestProcessed" },
      want: /reports no replicated volumes/,
    },
  ];
  for (const { name, volumes, selector, recorded, want, used } of cases)
    it(name, () => {
      const selection = selectPoints("db", volumes, selector, recorded);
      if (want instanceof RegExp) {
        assert.ok(!selection.ok, "refused");
        assert.match(selection.message, want);
        return;
      }
      assert.ok(selection.ok, selection.ok ? "" : selection.message);
      assert.deepEqual(
        selection.volumes.map((chosen) => chosen.point.id),
        want,
      );
      for (const [key, value] of Object.entries(used ?? {}))
        assert.equal(selection.used[key as keyof UsedRecoveryPoint], value, key);
      assert.equal(selection.used.machine, "db");
    });

  // The point a60 has seq 600 at 10:01:00; the volume's newest change and what the recovery site applied vary.
  const lossCases: readonly {
    name: string;
    changes: VolumeChanges | undefined;
    lastSync: string | undefined;
    want: number;
  }[] = [
    {
      name: "a change after the point, applied: its time minus the point's",
      changes: { lastAppliedSequence: 700, lastChangeSequence: 650, lastChangeTime: "2026-12-01T10:01:12.500Z" },
      lastSync: "2026-12-01T10:05:00Z",
      want: 12_500,
    },
    {
      name: "quiet since before the point: nothing lost, however late the last sync",
      changes: { lastAppliedSequence: 640, lastChangeSequence: 599, lastChangeTime: "2026-12-01T10:00:58Z" },
      lastSync: "2026-12-01T10:09:00Z",
      want: 0,
    },
    {
      name: "the newest change not applied yet (site lost mid-stream): bounded by the last sync",
      changes: { lastAppliedSequence: 620, lastChangeSequence: 650, lastChangeTime: "2026-12-01T10:01:50Z" },
      lastSync: "2026-12-01T10:01:45Z",
      want: 45_000,
    },
    {
      name: "no report of a change: the last sync",
      changes: undefined,
      lastSync: "2026-12-01T10:01:45Z",
      want: 45_000,
    },
    { name: "never below zero", changes: undefined, lastSync: "2026-12-01T10:00:59Z", want: 0 },
    { name: "nothing known: zero", changes: undefined, lastSync: undefined, want: 0 },
  ];
  for (const { name, changes, lastSync, want } of lossCases)
    it(`data-loss window: ${name}`, () => {
      const chosen = [{ machineId: "a", point: point("a60", 60) }];
      assert.equal(
        dataLossMs(chosen, (stream) => (stream === "a" ? changes : undefined), lastSync),
        want,
      );
    });

  it("data-loss window: the worst volume of the machine", () => {
    const chosen = [
      { machineId: "a", point: point("a60", 60) },
      { machineId: "b", point: point("b65", 65) },
    ];
    const changes: Record<string, VolumeChanges> = {
      a: { lastAppliedSequence: 610, lastChangeSequence: 590, lastChangeTime: "2026-12-01T10:00:55Z" },
      b: { lastAppliedSequence: 700, lastChangeSequence: 690, lastChangeTime: "2026-12-01T10:01:08Z" },
    };
    assert.equal(
      dataLossMs(chosen, (stream) => changes[stream], "2026-12-01T10:02:00Z"),
      3_000,
    );
  });
});
