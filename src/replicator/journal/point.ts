// Recovery points: the markers of the stream, as the journal keeps and lists them.
import { Consistency } from "../../gen/ksr/replication/v1/replication.js";
import type { MarkerOp } from "./change.js";

export type PointConsistency = "app" | "crash" | "best-effort";

/** The replica after every change with a lower seq than `seq` and none from `seq` on. */
export interface RecoveryPoint {
  id: string;
  seq: number;
  timeUnixMs: number;
  consistency: PointConsistency;
  /** The consistency group whose barrier cut this point, "" for a machine's own point. */
  group: string;
}

const consistencyByWire: Record<number, PointConsistency> = { 1: "crash", 2: "app", 3: "best-effort" };
const wireByConsistency: Record<PointConsistency, Consistency> = {
  crash: Consistency.CONSISTENCY_CRASH,
  app: Consistency.CONSISTENCY_APP,
  "best-effort": Consistency.CONSISTENCY_BEST_EFFORT,
};

/** Markers without a consistency are stream events (e.g. a resync starting), never points. */
export const consistencyUnspecified = 0;

/** A consistency this journal does not know is recorded as best-effort: a point is never overstated. */
export function consistencyFromWire(value: number): PointConsistency {
  return consistencyByWire[value] ?? "best-effort";
}

export function consistencyToWire(consistency: PointConsistency): Consistency {
  return wireByConsistency[consistency];
}

const strength: Record<PointConsistency, number> = { "best-effort": 0, crash: 1, app: 2 };

/** The weakest of several consistencies (a group point is only as good as its weakest member). */
export function weakestConsistency(values: readonly PointConsistency[]): PointConsistency {
  return values.reduce<PointConsistency>(
    (weakest, value) => (strength[value] < strength[weakest] ? value : weakest),
    "app",
  );
}

export const maxPointIdLength = 256;

export function pointFromMarker(seq: number, marker: MarkerOp): RecoveryPoint {
  return {
    id: marker.id,
    seq,
    timeUnixMs: marker.timeUnixMs,
    consistency: consistencyFromWire(marker.consistency),
    group: marker.consistencyGroup,
  };
}

/** Returns a reason the marker cannot become a point, or undefined when it can. */
export function invalidMarker(marker: MarkerOp): string | undefined {
  if (marker.id === "" || marker.id.length > maxPointIdLength)
    return `point id must be 1-${maxPointIdLength} characters`;
  if (!Number.isSafeInteger(marker.timeUnixMs) || marker.timeUnixMs < 0)
    return "point time must be a non-negative integer";
  if (marker.consistencyGroup.length > maxPointIdLength) return "consistency group name is too long";
  return undefined;
}
