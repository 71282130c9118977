// When the operator cuts points itself (quiesce.ts says how): a machine with exec hooks on the
// policy's app cadence, a consistency group on the app cadence (every member has hooks) or the
// crash cadence. A group's points are cut by one member's reconcile, its leader (the first name
// of the members), across every member's streams; each member's status then lists the point from
// its master target like any other.
import type { ProtectedMachine } from "../../api/types.js";
import type { EventRecord, ReconcileContext } from "../../runtime/index.js";
import { barrierBasePort } from "./names.js";
import type { Plan } from "./plan.js";
import { replicatedView } from "./direction.js";
import { planInDirection, type ProtectDeps } from "./protect.js";
import {
  cutCadence,
  cutPoint,
  describeFailures,
  isAppPoint,
  isProblem,
  newestPointTime,
  quiesceMode,
  type CutMember,
  type CutOutcome,
} from "./quiesce.js";
import type { VolumeObservation } from "./status.js";
import type { Problem } from "./workload.js";

/** A failed cut is tried again after this long (or the cadence, if shorter). */
export const cutRetryMs = 60_000;
/** Each barrier phase (hold: the agent's capture round; mark: the master target applying) may take this long. */
const phaseTimeoutMs = 60_000;

interface Attempt {
  nextAt: number;
  /** Why the last attempt gave no app-consistent point, until one succeeds. */
  problem?: Problem;
}

/** What the operator remembers between reconciles; lost on restart, which costs one early attempt. */
export class OperatorPoints {
  private readonly attempts = new Map<string, Attempt>();

  problemOf(key: string): Problem | undefined {
    return this.attempts.get(key)?.problem;
  }

  nextAt(key: string): number {
    return this.attempts.get(key)?.nextAt ?? -Infinity;
  }

  record(key: string, attempt: Attempt): void {
    this.attempts.set(key, attempt);
  }

  forget(key: string): void {
    this.attempts.delete(key);
  }
}

/** The key a machine's (or its group's) cuts are remembered by. */
export function cutKey(machine: ProtectedMachine): string {
  const namespace = machine.metadata.namespace ?? "";
  const group = machine.spec.consistencyGroup;
  return group === undefined ? `${namespace}/${machine.metadata.name}` : `${namespace}/group:${group}`;
}

/** The members of a machine's group (itself alone without one), by name. */
export function groupMembers(deps: ProtectDeps, machine: ProtectedMachine): ProtectedMachine[] {
  const group = machine.spec.consistencyGroup;
  if (group === undefined) return [machine];
  return deps.caches.machines
    .list(machine.metadata.namespace ?? "")
    .filter(
      (other) =>
        other.metadata.deletionTimestamp === undefined &&
        other.spec.consistencyGroup === group &&
        other.spec.policyRef.name === machine.spec.policyRef.name,
    )
    .sort((a, b) => a.metadata.name.localeCompare(b.metadata.name));
}

/** A member's hooks, pods and streams, from the cache; undefined while it is not ready to be cut. */
function cutMember(deps: ProtectDeps, machine: ProtectedMachine, plan?: Plan): CutMember | Problem | undefined {
  if (machine.spec.paused || machine.status?.phase !== "Protected") return undefined;
  const mode = quiesceMode(machine.spec.source.quiesce);
  if (isProblem(mode)) return mode;
  const planned =
    plan ??
    (() => {
      const { result } = planInDirection(deps.caches, machine);
      return result.ok ? result.plan : undefined;
    })();
  if (planned === undefined || planned.waiting !== undefined) return undefined;
  const namespace = replicatedView(machine).metadata.namespace ?? "";
  const streams = [];
  for (const agent of planned.agents) {
    const pod = deps.caches.pods.get(agent.name, namespace);
    const ip = pod?.status?.podIP;
    if (pod?.status?.phase !== "Running" || ip === undefined) return undefined;
    for (const [index, volume] of agent.volumes.entries())
      streams.push({ machineId: volume.machineId, address: `${ip}:${barrierBasePort + index}` });
  }
  // The hooks run where the pods are: in the machine's namespace as replication sees it (direction.ts).
  return { machine: replicatedView(machine), mode, pods: planned.agents.map((agent) => agent.podName), streams };
}

export interface PointsResult {
  /** Why app-consistent points are not being taken, if they are not. */
  appConsistencyUnavailable?: Problem;
}

/**
 * Cuts a point when one is due for this machine (or, as its group's leader, for its group).
 * Runs inside the reconcile: the hooks and the barrier take seconds, bounded by their timeouts.
 * `machine` is the object itself, not its reversed view: its group and its Events are where it is.
 */
export async function cutDuePoints(
  deps: ProtectDeps,
  machine: ProtectedMachine,
  plan: Plan,
  volumes: readonly VolumeObservation[],
  context: ReconcileContext,
): Promise<PointsResult> {
  const key = cutKey(machine);
  const members = groupMembers(deps, machine);
  const own = cutMember(deps, machine, plan);
  if (own !== undefined && "reason" in own) return { appConsistencyUnavailable: own };
  const problem = deps.points.problemOf(key);
  const unavailable = problem === undefined ? {} : { appConsistencyUnavailable: problem };
  if (members[0]?.metadata.uid !== machine.metadata.uid) return unavailable; // the leader cuts the group's points
  const ready = members.map((member) => (member.metadata.uid === machine.metadata.uid ? own : cutMember(deps, member)));
  const cutMembers = ready.filter((member): member is CutMember => member !== undefined && !("reason" in member));
  if (cutMembers.length !== members.length) return unavailable;
  const cadence = cutCadence(plan.policy, cutMembers);
  if (cadence === undefined) return unavailable;
  const now = context.clock.now();
  const group = machine.spec.consistencyGroup;
  const last = newestPointTime(
    volumes,
    (point) =>
      (group === undefined || point.consistencyGroup === group) && (cadence.requested !== "app" || isAppPoint(point)),
  );
  if (now < Math.max(deps.points.nextAt(key), (last ?? -Infinity) + cadence.everyMs)) return unavailable;
  if (context.signal.aborted) return unavailable;

  const outcome = await cutPoint(
    { client: deps.client, replicators: deps.replicators, log: context.log },
    cutMembers,
    cadence.requested,
    { group: group ?? "", idPrefix: group ?? machine.metadata.name, phaseTimeoutMs },
  );
  const after = context.clock.now();
  const failedHooks = describeFailures(outcome.hooks);
  const hookProblem: Problem | undefined =
    failedHooks === ""
      ? undefined
      : { reason: "QuiesceHookFailed", message: `the last app-consistent point was not taken: ${failedHooks}` };
  deps.points.record(key, {
    nextAt: after + (outcome.kind === "point" ? cadence.everyMs : Math.min(cadence.everyMs, cutRetryMs)),
    ...(hookProblem === undefined ? {} : { problem: hookProblem }),
  });
  // On the machines themselves: a member's machine is its view, which names the recovery namespace once reversed.
  for (const member of members)
    for (const event of outcomeEvents(outcome, cutMembers.length)) void deps.events.record(member, event);
  context.log.info(
    { kind: outcome.kind, ...(outcome.kind === "point" ? { point: outcome.point.id } : { reason: outcome.reason }) },
    "operator recovery point",
  );
  return hookProblem === undefined ? {} : { appConsistencyUnavailable: hookProblem };
}

function outcomeEvents(outcome: CutOutcome, members: number): EventRecord[] {
  const events: EventRecord[] = [];
  const failed = describeFailures(outcome.hooks);
  if (failed !== "")
    events.push({ type: "Warning", reason: "QuiesceHookFailed", action: "Quiesce", note: failed.slice(0, 1000) });
  if (outcome.kind === "point") {
    const { point } = outcome;
    const what = members > 1 || point.group !== "" ? `group point of ${point.group}` : "recovery point";
    events.push({
      type: "Normal",
      reason: point.group === "" ? "RecoveryPointTaken" : "GroupPointTaken",
      action: "Cut",
      note: `${what} ${point.id}: ${point.consistency} across ${Object.keys(point.members).length} streams`,
    });
  } else
    events.push({
      type: "Warning",
      reason: outcome.kind === "skipped" ? "RecoveryPointSkipped" : "RecoveryPointFailed",
      action: "Cut",
      note: outcome.reason.slice(0, 1000),
    });
  return events;
}
