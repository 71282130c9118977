// When a machine's resyncs run (ReplicationPolicy.spec.resync): the process server holds a
// required resync while the operator says so (Control.HoldResync), so the agent keeps tracking
// changes and starts the block-hash comparison only once let go: at once (Automatic), inside the
// policy's window (Automatic with a window), or on `kubectl dr resync` (Manual; the request also
// overrides a closed window). The request is the annotation dr.ksr.io/resync-requested-at; the
// value served is kept in status.resync.requestedAt, so each request runs once.
import type { ProtectedMachine, ResyncStatus } from "../../api/types.js";
import { rfc3339, type EventRecord, type ReconcileContext } from "../../runtime/index.js";
import { directionOf } from "./direction.js";
import { resyncRequestAnnotation } from "./names.js";
import type { Plan } from "./plan.js";
import type { ReplicatorClients } from "./replicator-clients.js";
import { servicePeer } from "./replicators.js";
import { checkTimeZone, describeWindow, inWindow, nextOpening } from "./resync-window.js";
import type { VolumeObservation } from "./status.js";
import type { Problem } from "./workload.js";

export interface ResyncObservation {
  status?: ResyncStatus;
  /** A needed resync is held: the Ready condition says why and when it runs. */
  waiting?: Problem;
  events: EventRecord[];
}

/** What driving a resync calls: the process server's resync controls. */
export interface ResyncDeps {
  replicators: Pick<ReplicatorClients, "requestResync" | "holdResync">;
}

export async function driveResync(
  deps: ResyncDeps,
  machine: ProtectedMachine,
  plan: Plan,
  volumes: readonly VolumeObservation[],
  newBytes: number,
  context: ReconcileContext,
): Promise<ResyncObservation> {
  const previous = machine.status?.resync;
  const kept: ResyncObservation = { ...(previous === undefined ? {} : { status: previous }), events: [] };
  const namespace = machine.metadata.namespace ?? "";
  const processServer = servicePeer(plan.processServer, namespace);
  const streams = volumes.map((volume) => ({ machineId: streamOf(plan, volume), control: volume.control }));
  // The initial replication of an epoch (a reprotect's comparison included) is no resync: nothing
  // is held before the machine was protected once in its current direction. A hold placed before
  // the epoch's first status was written (when the completed record was the ended epoch's) is let go.
  if (!protectedInEpoch(machine)) {
    for (const stream of streams)
      if (stream.control?.resyncHeld === true)
        await deps.replicators.holdResync(processServer, stream.machineId, false);
    if (previous?.state !== "Waiting") return kept;
    // A resync that waited in the ended epoch waits no more: the new epoch compares every volume anyway.
    const { requestedAt, completionTime } = previous;
    return {
      status: {
        ...(requestedAt === undefined ? {} : { requestedAt }),
        ...(completionTime === undefined ? {} : { completionTime }),
      },
      events: [],
    };
  }
  const controls = volumes.map((volume) => volume.control);
  if (volumes.length === 0 || controls.some((control) => control === undefined)) return kept;
  const now = context.clock.now();
  const { mode, window } = plan.policy.spec.resync;
  const requested = machine.metadata.annotations?.[resyncRequestAnnotation];
  const name = machine.metadata.name;

  const events: EventRecord[] = [];
  let served = previous;
  let ordered = false;
  if (requested !== undefined && requested !== previous?.requestedAt) {
    // The request makes a resync needed, as a lost cache would; the policy says when it runs
    // (ordered below, once the hold is in place).
    served = {
      ...(previous?.completionTime === undefined ? {} : { completionTime: previous.completionTime }),
      requestedAt: requested,
    };
    ordered = true;
    events.push({
      type: "Normal",
      reason: "ResyncRequested",
      action: "Resync",
      note: `kubectl dr resync: every volume is compared with its replica (spec.resync.mode ${mode}${window === undefined ? "" : `, window ${describeWindow(window)}`})`,
    });
  }

  if (window !== undefined) {
    try {
      checkTimeZone(window.timeZone);
    } catch (error) {
      const waiting = { reason: "InvalidResyncWindow", message: (error as Error).message };
      return { ...(served === undefined ? {} : { status: served }), waiting, events };
    }
  }
  // A request is served until its resync completed: Manual lets it run, and only it.
  const serving = served?.requestedAt !== undefined && served.requestedAt === requested && served.state !== "Completed";
  const held = mode === "Manual" ? !serving : window !== undefined && !inWindow(window, now);
  // Hold before ordering: an agent that heard of the resync before its hold would start it at once.
  for (const stream of streams)
    if (stream.control?.resyncHeld !== held) await deps.replicators.holdResync(processServer, stream.machineId, held);
  if (ordered) for (const stream of streams) await deps.replicators.requestResync(processServer, stream.machineId);

  const needed = ordered || controls.some((control) => control?.resyncRequired === true);
  const running = controls.some((control) => control?.syncing === true);
  const carried = {
    ...(served?.requestedAt === undefined ? {} : { requestedAt: served.requestedAt }),
    ...(served?.completionTime === undefined ? {} : { completionTime: served.completionTime }),
  };
  if (needed && held) {
    const next = window === undefined || mode === "Manual" ? undefined : nextOpening(window, now);
    const waiting: Problem =
      mode === "Manual"
        ? {
            reason: "ResyncWaitingForRequest",
            message: `a resync is needed (the process server lost or dropped changes) and spec.resync.mode is Manual: run kubectl dr resync ${name}; changes are tracked meanwhile and the RPO grows until it ran`,
          }
        : {
            reason: "ResyncWaitingForWindow",
            message: `a resync is needed; it starts when the policy's resync window (${describeWindow(window ?? { start: "", end: "", timeZone: "" })}) opens${next === undefined ? "" : ` at ${rfc3339(next)}`}; changes are tracked meanwhile and the RPO grows until it ran`,
          };
    return {
      status: {
        ...carried,
        state: "Waiting",
        reason: waiting.message,
        ...(next === undefined ? {} : { nextStartTime: rfc3339(next) }),
      },
      waiting,
      events: [
        ...events,
        ...(previous?.state === "Waiting" && !ordered
          ? []
          : [{ type: "Warning" as const, reason: waiting.reason, action: "Resync", note: waiting.message }]),
      ],
    };
  }
  if (running || needed) {
    const total = controls.reduce((sum, control) => sum + (control?.syncBytesTotal ?? 0), 0);
    const compared = controls.reduce(
      (sum, control) => sum + Math.min(control?.syncBytesDone ?? 0, control?.syncBytesTotal ?? 0),
      0,
    );
    const ongoing = served?.state === "Running" ? served : undefined;
    return {
      status: {
        ...carried,
        state: "Running",
        reason: "every volume is being compared with its replica; only differing blocks are sent",
        startTime: ongoing?.startTime ?? rfc3339(now),
        bytesTotal: total,
        bytesCompared: compared,
        bytesSent: (ongoing?.bytesSent ?? 0) + newBytes,
      },
      events,
    };
  }
  if (served?.state === "Running") {
    const status: ResyncStatus = {
      ...served,
      state: "Completed",
      reason: "the replica matches the source again",
      completionTime: rfc3339(now),
      bytesCompared: served.bytesTotal ?? 0,
      bytesSent: (served.bytesSent ?? 0) + newBytes,
    };
    return {
      status,
      events: [
        {
          type: "Normal",
          reason: "ResyncCompleted",
          action: "Resync",
          note: `compared ${status.bytesCompared ?? 0} bytes with the replica and sent ${status.bytesSent ?? 0}`,
        },
      ],
    };
  }
  if (served?.state === "Waiting")
    // Whatever made it needed is gone without a resync this operator saw run: nothing waits any more.
    return {
      status: carried,
      events: [
        ...events,
        {
          type: "Normal",
          reason: "ResyncNoLongerNeeded",
          action: "Resync",
          note: "the process server requires no resync any more: replication goes on",
        },
      ],
    };
  return { ...(served === undefined ? {} : { status: served }), events };
}

/** The initial replication completed in the epoch replication runs in now. */
function protectedInEpoch(machine: ProtectedMachine): boolean {
  const initial = machine.status?.initialReplication;
  return initial?.completionTime !== undefined && (initial.epoch ?? 0) === directionOf(machine).epoch;
}

function streamOf(plan: Plan, volume: VolumeObservation): string {
  return plan.volumes.find((candidate) => candidate.claimName === volume.claimName)?.machineId ?? volume.claimName;
}
