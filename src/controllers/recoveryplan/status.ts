// A RecoveryPlan's status, computed from what the controller observed: its
// machines, its runs and the server dry-run of its script actions. Pure.
import type {
  FailoverRun,
  PlanAction,
  ProtectedMachine,
  RecoveryPlan,
  RecoveryPlanStatus,
  UnreadyMachine,
} from "../../api/types.js";
import type { ConditionUpdate } from "../../runtime/index.js";

export interface PlanObservation {
  readonly machines: ReadonlyMap<string, ProtectedMachine>;
  /** Runs of this plan (spec.planRef names it). */
  readonly runs: readonly FailoverRun[];
  /** Why a script action's Job would be refused, by GROUP/ACTION. */
  readonly scriptErrors: ReadonlyMap<string, string>;
}

export interface PlanStatus {
  readonly fields: Omit<RecoveryPlanStatus, "conditions" | "observedGeneration">;
  readonly valid: ConditionUpdate;
}

export function planActions(plan: RecoveryPlan): { key: string; group: string; action: PlanAction }[] {
  return plan.spec.groups.flatMap((group) =>
    [...(group.preActions ?? []), ...(group.postActions ?? [])].map((action) => ({
      key: `${group.name}/${action.name}`,
      group: group.name,
      action,
    })),
  );
}

/**
 * Traffic actions that cannot do what they say: switch to a machine the plan never recovers, or
 * before that machine is up (a preAction of its group, or any action of an earlier group). The CRD
 * refuses the first and a preAction of the machine's own group; an earlier group it cannot see in
 * CEL within the cost budget of the Kubernetes versions the chart supports, so it is checked here.
 */
export function trafficProblems(plan: RecoveryPlan): string[] {
  const groups = plan.spec.groups;
  const recoveredBy = new Map(groups.flatMap((group, index) => (group.machines ?? []).map((m) => [m, index] as const)));
  return groups.flatMap((group, index) =>
    (["preActions", "postActions"] as const).flatMap((stage) =>
      (group[stage] ?? []).flatMap((action) => {
        const machine = action.traffic?.machine;
        if (machine === undefined) return [];
        const switches = `${group.name}/${action.name} switches traffic to ${machine}`;
        const recovery = recoveredBy.get(machine);
        if (recovery === undefined) return [`${switches}, which is not a machine of the plan`];
        const up = stage === "preActions" ? recovery < index : recovery <= index;
        return up
          ? []
          : [
              `${switches} before it is recovered (by group ${groups[recovery]?.name ?? ""}): make it a postAction of that group`,
            ];
      }),
    ),
  );
}

function unready(name: string, machine: ProtectedMachine | undefined): UnreadyMachine | undefined {
  if (machine === undefined) return { name, reason: "NotFound" };
  const phase = machine.status?.phase;
  if (phase === "Protected") return undefined;
  return { name, reason: phase ?? "NotReconciled" };
}

export function planStatus(plan: RecoveryPlan, observed: PlanObservation): PlanStatus {
  const machineNames = plan.spec.groups.flatMap((group) => group.machines ?? []);
  const unreadyMachines = machineNames.flatMap((name) => unready(name, observed.machines.get(name)) ?? []);
  const problems = [
    ...unreadyMachines.map((machine) =>
      machine.reason === "NotFound"
        ? `ProtectedMachine ${machine.name} does not exist`
        : `ProtectedMachine ${machine.name} is ${machine.reason}, not Protected`,
    ),
    ...trafficProblems(plan),
    ...[...observed.scriptErrors].map(([key, error]) => `${key}: its Job is refused: ${error}`),
  ];
  const last = [...observed.runs].sort(
    (a, b) =>
      Date.parse(b.metadata.creationTimestamp ?? "") - Date.parse(a.metadata.creationTimestamp ?? "") ||
      b.metadata.name.localeCompare(a.metadata.name),
  )[0];
  const reason = unreadyMachines.length > 0 ? "MachinesNotReady" : problems.length > 0 ? "InvalidActions" : "Valid";
  return {
    fields: {
      groupCount: plan.spec.groups.length,
      machineCount: machineNames.length,
      unreadyMachines,
      lastRun:
        last === undefined
          ? undefined
          : {
              name: last.metadata.name,
              type: last.spec.type,
              ...(last.status?.phase === undefined ? {} : { phase: last.status.phase }),
              ...(last.status?.completionTime === undefined ? {} : { completionTime: last.status.completionTime }),
            },
    },
    valid:
      problems.length === 0
        ? { type: "Valid", status: "True", reason, message: "every machine is Protected and every action is valid" }
        : { type: "Valid", status: "False", reason, message: problems.join("; ") },
  };
}
