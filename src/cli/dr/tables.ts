// `kubectl dr status` and `points`: kubectl-style tables (upper-case headers,
// columns three spaces apart, <none> for what is not known yet).
import type { FailoverRun, ProtectedMachine, RecoveryPlan, RecoveryPointReference } from "../../api/types.js";
import { formatDuration } from "../../util/duration.js";

export function table(headers: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = headers.map((header, column) =>
    Math.max(header.length, ...rows.map((row) => (row[column] ?? "").length)),
  );
  const line = (cells: readonly string[]) =>
    cells
      .map((cell, column) => (column === cells.length - 1 ? cell : cell.padEnd(widths[column] ?? 0)))
      .join("   ")
      .trimEnd();
  return [line(headers), ...rows.map(line)].join("\n") + "\n";
}

const none = "<none>";
const or = (value: string | number | undefined): string => (value === undefined || value === "" ? none : String(value));

export function age(since: string | undefined, now: number): string {
  return since === undefined ? none : formatDuration(Math.max(0, now - Date.parse(since)));
}

const consistencyWords: Record<string, string> = {
  AppConsistent: "app",
  CrashConsistent: "crash",
  BestEffort: "best-effort",
};

export const describePoint = (point: RecoveryPointReference | undefined): string =>
  point === undefined ? none : `${point.time} (${consistencyWords[point.consistency] ?? point.consistency})`;

export function machineTable(machines: readonly ProtectedMachine[], wide: boolean): string {
  const headers = ["MACHINE", "PHASE", "HEALTH", "RPO", "LATEST POINT"];
  if (wide) headers.push("POINTS", "LATEST APP-CONSISTENT", "ACTIVE SITE", "TARGET", "GROUP");
  const rows = machines.map((machine) => {
    const status = machine.status;
    const row = [
      machine.metadata.name,
      or(status?.phase),
      or(status?.health),
      or(status?.rpo),
      describePoint(status?.recoveryPoints?.latest),
    ];
    if (wide)
      row.push(
        or(status?.recoveryPoints?.count),
        describePoint(status?.recoveryPoints?.latestAppConsistent),
        or(status?.activeSite),
        `${machine.spec.target.site}/${machine.spec.target.namespace}`,
        or(machine.spec.consistencyGroup),
      );
    return row;
  });
  return table(headers, rows);
}

export function planTable(plans: readonly RecoveryPlan[], wide: boolean): string {
  const headers = ["PLAN", "GROUPS", "MACHINES", "VALID", "LAST RUN"];
  if (wide) headers.push("LAST PHASE", "UNREADY");
  const rows = plans.map((plan) => {
    const status = plan.status;
    const valid = status?.conditions?.find((condition) => condition.type === "Valid");
    const row = [
      plan.metadata.name,
      String(status?.groupCount ?? plan.spec.groups.length),
      String(status?.machineCount ?? plan.spec.groups.reduce((sum, group) => sum + (group.machines?.length ?? 0), 0)),
      or(valid?.status),
      or(status?.lastRun?.name),
    ];
    if (wide)
      row.push(
        or(status?.lastRun?.phase),
        or(status?.unreadyMachines?.map((machine) => `${machine.name} (${machine.reason})`).join(", ")),
      );
    return row;
  });
  return table(headers, rows);
}

export function runTable(runs: readonly FailoverRun[], wide: boolean, now: number): string {
  const headers = ["RUN", "PLAN/MACHINE", "TYPE", "PHASE", "STEP", "RTO"];
  if (wide) headers.push("DATA LOSS", "POINTS", "STARTED");
  headers.push("AGE");
  const rows = runs.map((run) => {
    const status = run.status;
    const target = run.spec.planRef?.name ?? `machine/${run.spec.machineRef?.name ?? ""}`;
    const row = [run.metadata.name, target, run.spec.type, or(status?.phase), or(status?.currentStep), or(status?.rto)];
    if (wide)
      row.push(
        or(status?.dataLossWindow),
        or(status?.recoveryPoints?.map((point) => `${point.machine}@${point.time}`).join(", ")),
        or(status?.startTime),
      );
    row.push(age(run.metadata.creationTimestamp, now));
    return row;
  });
  return table(headers, rows);
}
