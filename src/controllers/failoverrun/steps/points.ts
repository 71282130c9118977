// Which retained point of each volume a machine is recovered to. Pure, so every selector is a
// table test. A machine's volumes are separate streams with points of their own; the machine's
// point is one instant T, and each volume takes its newest point at or before T, so no volume
// holds a change from after another volume's point.
import { Consistency, type PointInfo } from "../../../gen/ksr/replication/v1/replication.js";
import type { PointConsistency, RecoveryPointSelector, UsedRecoveryPoint } from "../../../api/types.js";
import { rfc3339 } from "../../../runtime/conditions.js";

export interface VolumePoints {
  /** The volume's stream id at the master target. */
  readonly machineId: string;
  /** Oldest first, as ListPoints answers. */
  readonly points: readonly PointInfo[];
}

export interface ChosenPoint {
  readonly machineId: string;
  readonly point: PointInfo;
}

export type Selection =
  | { readonly ok: true; readonly volumes: readonly ChosenPoint[]; readonly used: UsedRecoveryPoint }
  | { readonly ok: false; readonly message: string };

const rank: Record<PointConsistency, number> = { BestEffort: 0, CrashConsistent: 1, AppConsistent: 2 };

function consistencyOf(point: PointInfo): PointConsistency {
  if (point.consistency === Consistency.CONSISTENCY_APP) return "AppConsistent";
  if (point.consistency === Consistency.CONSISTENCY_CRASH) return "CrashConsistent";
  return "BestEffort";
}

const newestAtOrBefore = (points: readonly PointInfo[], instant: number, filter = (_: PointInfo) => true) =>
  points.filter((point) => point.timeUnixMs <= instant && filter(point)).at(-1);

const isApp = (point: PointInfo) => point.consistency === Consistency.CONSISTENCY_APP;

/** The instant to recover to, and the point a volume must use exactly (an id asked for, or recorded). */
function anchorOf(
  volumes: readonly VolumePoints[],
  selector: RecoveryPointSelector,
): { instant: number; exact?: ChosenPoint; appOnly?: boolean } | string {
  switch (selector.select) {
    case "Time": {
      const instant = Date.parse(selector.time ?? "");
      return Number.isNaN(instant) ? `recoveryPoint.time ${selector.time ?? ""} is not an RFC 3339 time` : { instant };
    }
    case "ID": {
      for (const volume of volumes) {
        const point = volume.points.filter((candidate) => candidate.id === selector.id).at(-1);
        if (point !== undefined) return { instant: point.timeUnixMs, exact: { machineId: volume.machineId, point } };
      }
      return `no volume retains recovery point ${selector.id ?? ""}`;
    }
    case "LatestAppConsistent": {
      const newest = volumes.map((volume) => volume.points.filter(isApp).at(-1)?.timeUnixMs);
      if (newest.some((time) => time === undefined)) return "a volume has no app-consistent recovery point";
      return { instant: Math.min(...(newest as number[])), appOnly: true };
    }
    default: {
      // Latest and LatestProcessed: nothing more can be applied once the run decided (the source may be gone).
      const newest = volumes.map((volume) => volume.points.at(-1)?.timeUnixMs);
      if (newest.some((time) => time === undefined)) return "a volume has no recovery point yet";
      return { instant: Math.min(...(newest as number[])) };
    }
  }
}

/**
 * Each volume's point for `selector`, or for the point already recorded for the machine (reused
 * so that a step executed again recovers to the same point while new points keep arriving).
 */
export function selectPoints(
  machine: string,
  volumes: readonly VolumePoints[],
  selector: RecoveryPointSelector,
  recorded?: UsedRecoveryPoint,
): Selection {
  if (volumes.length === 0) return { ok: false, message: `ProtectedMachine ${machine} reports no replicated volumes` };
  // A recorded time is whole seconds; the recorded id pins the volume it came from.
  const anchor =
    recorded === undefined
      ? anchorOf(volumes, selector)
      : (() => {
          const exact = anchorOf(volumes, { select: "ID", id: recorded.id });
          const instant = Date.parse(recorded.time) + 999;
          return typeof exact === "string" ? { instant } : { ...exact, instant: Math.max(instant, exact.instant) };
        })();
  if (typeof anchor === "string") return { ok: false, message: `ProtectedMachine ${machine}: ${anchor}` };
  const chosen: ChosenPoint[] = [];
  for (const volume of volumes) {
    const point =
      anchor.exact?.machineId === volume.machineId
        ? anchor.exact.point
        : newestAtOrBefore(volume.points, anchor.instant, anchor.appOnly === true ? isApp : undefined);
    if (point === undefined) {
      const what = recorded === undefined ? describe(selector) : `the recorded point ${recorded.id} (${recorded.time})`;
      return {
        ok: false,
        message: `volume stream ${volume.machineId} of ProtectedMachine ${machine} retains no point for ${what}; its oldest is ${
          volume.points[0] === undefined ? "none" : `${volume.points[0].id} (${rfc3339(volume.points[0].timeUnixMs)})`
        }`,
      };
    }
    chosen.push({ machineId: volume.machineId, point });
  }
  const first = anchor.exact?.point ?? chosen[0]?.point;
  const weakest = chosen
    .map(({ point }) => consistencyOf(point))
    .reduce<PointConsistency>((a, b) => (rank[a] <= rank[b] ? a : b), "AppConsistent");
  return {
    ok: true,
    volumes: chosen,
    used: {
      machine,
      id: first?.id ?? "",
      time: rfc3339(Math.min(...chosen.map(({ point }) => point.timeUnixMs))),
      consistency: weakest,
    },
  };
}

export function describe(selector: RecoveryPointSelector): string {
  if (selector.select === "Time") return `the newest point at or before ${selector.time ?? ""}`;
  if (selector.select === "ID") return `point ${selector.id ?? ""}`;
  return selector.select;
}

/** What the machine's status says of a volume's newest change (VolumeStatus has these fields). */
export interface VolumeChanges {
  readonly lastAppliedSequence?: number;
  readonly lastChangeSequence?: number;
  readonly lastChangeTime?: string;
}

/**
 * The data-loss window: the time of the latest change the recovery site has minus the point's
 * time, the worst volume; 0 for a volume whose point holds its latest change (a quiet volume loses
 * nothing however long it was quiet). Where that change is unknown (no report since the agent
 * started) or not applied yet (the site was lost with changes in flight), the source time up to
 * which the recovery site held every change (lastSyncTime) bounds it instead.
 */
export function dataLossMs(
  volumes: readonly ChosenPoint[],
  changes: (machineId: string) => VolumeChanges | undefined,
  lastSyncTime: string | undefined,
): number {
  const synced = lastSyncTime === undefined ? NaN : Date.parse(lastSyncTime);
  const losses = volumes.map(({ machineId, point }) => {
    const known = changes(machineId);
    const changedAt = known?.lastChangeTime === undefined ? NaN : Date.parse(known.lastChangeTime);
    const changeSeq = known?.lastChangeSequence;
    if (changeSeq !== undefined && !Number.isNaN(changedAt)) {
      // A point is the replica after every change below its marker's seq.
      if (changeSeq < point.seq) return 0;
      if ((known?.lastAppliedSequence ?? 0) >= changeSeq) return changedAt - point.timeUnixMs;
    }
    return Number.isNaN(synced) ? 0 : synced - point.timeUnixMs;
  });
  return Math.max(0, ...losses);
}
