// The FailoverRun state machine, pure: from the run (its spec and the steps its
// status records) and what the controller observed, the one thing to do next.
// The controller loops: record what this returns, execute the step it names,
// feed the outcome back, until it says Wait or Finished. Because every step is
// written into status.steps before it is executed, and a step recorded as
// finished is never chosen again, an operator restarted at any moment resumes
// the run where its status says it is: a Running step is executed again (every
// executor is idempotent), a finished one never.
import type {
  FailoverRun,
  FailoverRunPhase,
  FailoverRunStatus,
  FailoverRunType,
  PlanAction,
  PlanGroup,
  ProtectedMachine,
  RecoveryPlan,
  RecoveryPointSelector,
  StepAction,
  StepPhase,
  StepStatus,
  UsedRecoveryPoint,
} from "../../api/types.js";
import { rfc3339, setCondition, type Condition } from "../../runtime/conditions.js";
import { apiDurationMs, formatDuration } from "../../util/duration.js";
import { directionOf } from "../protectedmachine/direction.js";
import { trafficProblems } from "../recoveryplan/status.js";

/** Another run that shares this run's plan or one of its machines. */
export interface OtherRun {
  readonly name: string;
  readonly type: FailoverRunType;
  readonly phase?: FailoverRunPhase;
  readonly started: boolean;
  readonly creationTimestamp: string;
  readonly commit: boolean;
  readonly cleanup: boolean;
}

/** What executing a Running step found. Executors are idempotent: executing again continues, never repeats. */
export interface StepOutcome {
  readonly state: "InProgress" | "Succeeded" | "Failed";
  readonly message?: string;
  /** A Recover step chose its point; it is recorded before the step hydrates or rolls back to it. */
  readonly point?: UsedRecoveryPoint;
  /** A Recover step's data loss: the source's last replicated change minus the point's time. */
  readonly dataLossMs?: number;
  /** While InProgress: when to look again. */
  readonly recheckAfterMs?: number;
}

export interface Observed {
  readonly now: number;
  /** The run's plan; undefined for a machine run or when the plan does not exist. */
  readonly plan: RecoveryPlan | undefined;
  /** The machines the run names, by name (missing ones are absent). */
  readonly machines: ReadonlyMap<string, ProtectedMachine>;
  readonly otherRuns: readonly OtherRun[];
  /** The outcome of executing a Running step during this reconcile. */
  readonly outcome?: { readonly step: string; readonly outcome: StepOutcome };
}

export interface RunEvent {
  readonly type: "Normal" | "Warning";
  readonly reason: string;
  readonly note: string;
}

/** Figures for the metrics, reported when the status recording them is written. */
export interface Measurements {
  readonly stepEnded?: { readonly action: StepAction; readonly seconds: number };
  readonly runEnded?: { readonly result: FailoverRunPhase };
  readonly rtoSeconds?: number;
}

/** What an Execute decision asks the controller to run. */
export interface StepWork {
  readonly step: StepStatus;
  /** Script, Manual, Wait, Traffic and Webhook steps: the plan's action. */
  readonly action?: PlanAction;
  /** Recover steps: the point to select, and the one already recorded for the machine (to be reused). */
  readonly select?: RecoveryPointSelector;
  readonly recordedPoint?: UsedRecoveryPoint;
  /** Recover steps of a recovery point change: its number, from 1. */
  readonly change?: number;
}

export type Decision =
  | {
      readonly kind: "Record";
      readonly status: FailoverRunStatus;
      readonly events: readonly RunEvent[];
      readonly measurements: Measurements;
    }
  | { readonly kind: "Execute"; readonly work: StepWork }
  | { readonly kind: "Wait"; readonly requeueAfterMs?: number }
  | { readonly kind: "Finished" };

const recheckMs = 5_000;
const otherRunRecheckMs = 15_000;
/** Clocks of the sites may differ a little; a point time this far ahead is still accepted. */
const clockSkewMs = 60_000;
const defaultSelect: RecoveryPointSelector = { select: "LatestProcessed" };

const finishedPhases: readonly StepPhase[] = ["Succeeded", "Failed", "Skipped"];
const isFinished = (step: StepStatus): boolean => finishedPhases.includes(step.phase);
const isActive = (step: StepStatus): boolean => step.phase === "Running" || step.phase === "WaitingForApproval";

const changePrefix = (change: number): string => `change-${change}/`;
const changeOf = (step: StepStatus): number | undefined => {
  const match = /^change-([0-9]+)\//.exec(step.name);
  return match === null ? undefined : Number(match[1]);
};

// ------------------------------------------------------------------------------- the steps

interface GroupMachine {
  readonly group: string | undefined;
  readonly machine: string;
}

/** The run's groups: the plan's, or one unnamed group holding the run's single machine. */
function groupsOf(run: FailoverRun, plan: RecoveryPlan | undefined): readonly PlanGroup[] {
  if (run.spec.machineRef !== undefined) return [{ name: "", machines: [run.spec.machineRef.name] }];
  return plan?.spec.groups ?? [];
}

function machinesInOrder(groups: readonly PlanGroup[]): GroupMachine[] {
  return groups.flatMap((group) =>
    (group.machines ?? []).map((machine) => ({ group: group.name === "" ? undefined : group.name, machine })),
  );
}

/** Every machine the run recovers, in plan order. */
export function runMachines(run: FailoverRun, plan: RecoveryPlan | undefined): string[] {
  return machinesInOrder(groupsOf(run, plan)).map(({ machine }) => machine);
}

const prefixed = (group: string | undefined, rest: string): string => (group === undefined ? rest : `${group}/${rest}`);

const pending = (name: string, action: StepAction, at: Partial<GroupMachine>): StepStatus => ({
  name,
  action,
  ...(at.group === undefined ? {} : { group: at.group }),
  ...(at.machine === undefined ? {} : { machine: at.machine }),
  phase: "Pending",
});

const actionKinds: readonly (readonly [keyof PlanAction, StepAction])[] = [
  ["script", "Script"],
  ["manual", "Manual"],
  ["wait", "Wait"],
  ["traffic", "Traffic"],
  ["webhook", "Webhook"],
];

const planActionKinds: readonly StepAction[] = actionKinds.map(([, kind]) => kind);

export function actionKindOf(action: PlanAction): StepAction {
  const found = actionKinds.find(([field]) => action[field] !== undefined);
  if (found === undefined) throw new Error(`action ${action.name} sets none of script, manual, wait, traffic, webhook`);
  return found[1];
}

function actionSteps(
  type: FailoverRunType,
  group: string,
  stage: "pre" | "post",
  actions: readonly PlanAction[],
): StepStatus[] {
  return actions.map((action) => {
    const step = pending(`${group}/${stage}/${action.name}`, actionKindOf(action), { group });
    const runOn: readonly string[] = action.runOn;
    return runOn.includes(type)
      ? step
      : { ...step, phase: "Skipped", message: `not run in ${type} runs (runOn: ${action.runOn.join(", ")})` };
  });
}

/** The steps a run will take, in order, as it records them when it starts (before any of them acts). */
export function plannedSteps(run: FailoverRun, plan: RecoveryPlan | undefined): StepStatus[] {
  const type = run.spec.type;
  const groups = groupsOf(run, plan);
  const machines = machinesInOrder(groups);
  const steps: StepStatus[] = [];
  // Reprotect turns each machine's replication around, in plan order; the plan's actions do not run.
  if (type === "Reprotect")
    return machines.map((at) => pending(prefixed(at.group, `reverse/${at.machine}`), "Reverse", at));
  // The source stops last tier first (web before database), as ASR shuts a plan down.
  const stopSource = type === "Planned" || (type === "Unplanned" && run.spec.unplanned?.shutDownSource !== false);
  if (stopSource)
    for (const at of [...machines].reverse()) steps.push(pending(`shutdown/${at.machine}`, "ShutDownSource", at));
  if (type === "Planned") for (const at of machines) steps.push(pending(`final-sync/${at.machine}`, "FinalSync", at));
  for (const group of groups) {
    const name = group.name === "" ? undefined : group.name;
    if (name !== undefined) steps.push(...actionSteps(type, name, "pre", group.preActions ?? []));
    for (const machine of group.machines ?? [])
      steps.push(pending(prefixed(name, `recover/${machine}`), "Recover", { group: name, machine }));
    if (name !== undefined) steps.push(...actionSteps(type, name, "post", group.postActions ?? []));
  }
  return steps;
}

/** A change of recovery point: stop every recovered workload (last tier first), then roll back and start in order. */
function changeSteps(run: FailoverRun, plan: RecoveryPlan | undefined, change: number): StepStatus[] {
  const machines = machinesInOrder(groupsOf(run, plan));
  const prefix = changePrefix(change);
  return [
    ...[...machines].reverse().map((at) => pending(`${prefix}stop/${at.machine}`, "Stop", at)),
    ...machines.map((at) => pending(`${prefix}recover/${at.machine}`, "Recover", at)),
  ];
}

/** The plan action a Script, Manual, Wait, Traffic or Webhook step runs, looked up by its name. */
export function planActionOf(step: StepStatus, plan: RecoveryPlan | undefined): PlanAction | undefined {
  const [group, stage, name] = step.name.split("/");
  const found = plan?.spec.groups.find((candidate) => candidate.name === group);
  const actions = stage === "pre" ? found?.preActions : stage === "post" ? found?.postActions : undefined;
  return actions?.find((action) => action.name === name);
}

/** GROUP/ACTION, as approvals name a manual step. */
export const approvalKey = (step: StepStatus): string => `${step.group ?? ""}/${step.name.split("/").pop() ?? ""}`;

// ------------------------------------------------------------------------------- validation

function pointProblem(run: FailoverRun, name: string, machine: ProtectedMachine): string | undefined {
  const points = machine.status?.recoveryPoints;
  if ((points?.count ?? 0) === 0 && points?.latest === undefined)
    return `ProtectedMachine ${name} has no recovery point yet`;
  const selector = run.spec.recoveryPoint ?? defaultSelect;
  if (selector.select === "LatestAppConsistent" && points?.latestAppConsistent === undefined)
    return `ProtectedMachine ${name} has no app-consistent recovery point (recoveryPoint.select: LatestAppConsistent)`;
  if (selector.select === "Time" && selector.time !== undefined) {
    const oldest = points?.oldest?.time;
    if (oldest !== undefined && Date.parse(selector.time) < Date.parse(oldest))
      return `recoveryPoint.time ${selector.time} is before the oldest point ${machine.metadata.name} keeps (${oldest})`;
  }
  return undefined;
}

function machineProblem(run: FailoverRun, name: string, observed: Observed): string | undefined {
  const machine = observed.machines.get(name);
  if (machine === undefined)
    return `ProtectedMachine ${name} does not exist in namespace ${run.metadata.namespace ?? ""}`;
  const phase = machine.status?.phase ?? "Enabling";
  if (run.spec.type === "Reprotect")
    return machine.status?.replication?.failedOverBy === undefined
      ? `ProtectedMachine ${name} is ${phase}: Reprotect needs a failover of it that was committed (kubectl dr commit RUN)`
      : undefined;
  if (phase === "FailedOver") return `ProtectedMachine ${name} is already failed over; reprotect it first`;
  if (run.spec.type === "Planned" && phase !== "Protected")
    return `ProtectedMachine ${name} is ${phase}, not Protected: a planned failover needs replication to be running`;
  if (run.spec.type === "Test" && run.spec.drill?.namespace !== undefined) {
    const drill = run.spec.drill.namespace;
    if (drill === machine.spec.target.namespace || drill === machine.metadata.namespace)
      return `drill.namespace ${drill} is where ${name} runs or fails over to; a drill needs a namespace of its own`;
  }
  return run.spec.type === "Planned" ? undefined : pointProblem(run, name, machine);
}

/** Why the run cannot start, or an empty list. */
export function validationProblems(run: FailoverRun, observed: Observed): string[] {
  if (run.spec.planRef !== undefined && observed.plan === undefined)
    return [`RecoveryPlan ${run.spec.planRef.name} does not exist in namespace ${run.metadata.namespace ?? ""}`];
  const machines = runMachines(run, observed.plan);
  if (machines.length === 0) return [`RecoveryPlan ${run.spec.planRef?.name ?? ""} has no machines`];
  const problems = machines.flatMap((name) => machineProblem(run, name, observed) ?? []);
  const time = run.spec.recoveryPoint?.time;
  if (time !== undefined && Date.parse(time) > observed.now + clockSkewMs)
    problems.unshift(`recoveryPoint.time ${time} is in the future; give the instant to recover to`);
  return [...problems, ...(observed.plan === undefined ? [] : trafficProblems(observed.plan))];
}

// ------------------------------------------------------------------------------- other runs

const byAge = (a: { creationTimestamp: string; name: string }, b: { creationTimestamp: string; name: string }) =>
  Date.parse(a.creationTimestamp) - Date.parse(b.creationTimestamp) || a.name.localeCompare(b.name);

/** Whether `other` holds the plan or machines, so this run must not start yet. */
function blocks(other: OtherRun, run: FailoverRun): boolean {
  const phase = other.phase;
  if (phase === "Failed" || phase === "Committed" || phase === "CleanedUp") return false;
  if (!other.started)
    // Runs start in the order they were created; the first one waiting goes first.
    return byAge(other, { creationTimestamp: run.metadata.creationTimestamp ?? "", name: run.metadata.name }) < 0;
  if (phase !== "Succeeded") return true;
  if (other.type === "Reprotect") return false;
  // A finished failover waits for its commit; a finished drill holds only other drills until its cleanup.
  if (other.type === "Test") return run.spec.type === "Test" && !other.cleanup;
  return !other.commit;
}

// ------------------------------------------------------------------------------- the machine

interface Context {
  readonly run: FailoverRun;
  readonly observed: Observed;
  readonly status: FailoverRunStatus;
  readonly steps: readonly StepStatus[];
  readonly now: string;
}

const readyCondition = (context: Context, status: "True" | "False", reason: string, message: string): Condition[] =>
  setCondition(
    context.status.conditions,
    { type: "Ready", status, reason, message },
    { observedGeneration: context.run.metadata.generation, now: context.observed.now },
  );

function record(
  context: Context,
  status: FailoverRunStatus,
  events: readonly RunEvent[] = [],
  measurements: Measurements = {},
): Decision {
  const full: FailoverRunStatus = { ...status, observedGeneration: context.run.metadata.generation };
  // Nothing new to write: waiting is all there is to do (an event alone would be recorded on every pass).
  if (isSame(full, context.status)) return { kind: "Wait" };
  return { kind: "Record", status: full, events, measurements };
}

function isSame(a: FailoverRunStatus, b: FailoverRunStatus): boolean {
  return JSON.stringify(sortKeys(a)) === JSON.stringify(sortKeys(b));
}

function sortKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortKeys);
  if (value === null || typeof value !== "object") return value;
  return Object.fromEntries(
    Object.entries(value)
      .filter(([, child]) => child !== undefined)
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([key, child]) => [key, sortKeys(child)]),
  );
}

const replaceStep = (steps: readonly StepStatus[], step: StepStatus): StepStatus[] =>
  steps.map((candidate) => (candidate.name === step.name ? step : candidate));

function stepTimeoutMs(step: StepStatus, plan: RecoveryPlan | undefined): number | undefined {
  const timeout = planActionOf(step, plan)?.timeout;
  return timeout === undefined ? undefined : apiDurationMs(timeout);
}

/** Built-in steps abort the run when they fail, except stopping an unreachable source before an unplanned failover. */
function continuesAfterFailure(context: Context, step: StepStatus): boolean {
  if (step.action === "ShutDownSource" && context.run.spec.type === "Unplanned") return true;
  return planActionOf(step, context.observed.plan)?.onFailure === "Continue";
}

function begin(context: Context, step: StepStatus): Decision {
  const phase: StepPhase = step.action === "Manual" ? "WaitingForApproval" : "Running";
  const started: StepStatus = { ...step, phase, startTime: context.now, attempts: (step.attempts ?? 0) + 1 };
  // A recovery point change chooses its point afresh: the one recorded belonged to the previous recovery.
  const recoveryPoints =
    step.action === "Recover" && changeOf(step) !== undefined
      ? (context.status.recoveryPoints ?? []).filter((point) => point.machine !== step.machine)
      : context.status.recoveryPoints;
  const runPhase: FailoverRunPhase = phase === "WaitingForApproval" ? "WaitingForApproval" : "Running";
  const note =
    phase === "WaitingForApproval"
      ? `${step.name} waits for approval: kubectl dr approve ${context.run.metadata.name} ${approvalKey(step)}`
      : `${step.name} started`;
  return record(
    context,
    {
      ...context.status,
      phase: runPhase,
      currentStep: step.name,
      steps: replaceStep(context.steps, started),
      recoveryPoints,
      conditions: readyCondition(context, "False", runPhase, note),
    },
    [{ type: "Normal", reason: phase === "WaitingForApproval" ? "WaitingForApproval" : "StepStarted", note }],
  );
}

const secondsBetween = (from: string | undefined, to: string): number =>
  from === undefined ? 0 : Math.max(0, (Date.parse(to) - Date.parse(from)) / 1000);

function dataLossAfter(context: Context, step: StepStatus, outcome: StepOutcome | undefined): string | undefined {
  const current = context.status.dataLossWindow;
  if (context.run.spec.type === "Planned" && changeOf(step) === undefined) return current;
  if (outcome?.dataLossMs === undefined) return current;
  const change = changeOf(step);
  // The first machine of a recovery point change starts the window afresh: the old point no longer counts.
  const firstOfChange =
    change !== undefined &&
    !context.steps.some(
      (other) =>
        other.action === "Recover" && other.phase === "Succeeded" && other.name.startsWith(changePrefix(change)),
    );
  const previous = firstOfChange || current === undefined ? 0 : (apiDurationMs(current) ?? 0);
  return formatDuration(Math.max(previous, outcome.dataLossMs));
}

function finish(
  context: Context,
  step: StepStatus,
  phase: "Succeeded" | "Failed",
  message: string,
  outcome?: StepOutcome,
): Decision {
  const ended: StepStatus = { ...step, phase, endTime: context.now, message };
  let steps = replaceStep(context.steps, ended);
  const measurements: Measurements = {
    stepEnded: { action: step.action, seconds: secondsBetween(step.startTime, context.now) },
  };
  const status: FailoverRunStatus = {
    ...context.status,
    currentStep: undefined,
    dataLossWindow: phase === "Succeeded" ? dataLossAfter(context, step, outcome) : context.status.dataLossWindow,
  };
  if (phase === "Succeeded" || continuesAfterFailure(context, step)) {
    const event: RunEvent =
      phase === "Succeeded"
        ? { type: "Normal", reason: "StepSucceeded", note: `${step.name}: ${message}` }
        : { type: "Warning", reason: "StepFailed", note: `${step.name} failed (onFailure: Continue): ${message}` };
    return record(context, { ...status, phase: "Running", steps }, [event], measurements);
  }
  steps = steps.map((other) =>
    other.phase === "Pending" ? { ...other, phase: "Skipped", message: `not run: ${step.name} failed` } : other,
  );
  const note = `${step.name} failed: ${message}`;
  return record(
    context,
    {
      ...status,
      phase: "Failed",
      steps,
      completionTime: context.now,
      conditions: readyCondition(context, "False", "StepFailed", note),
    },
    [{ type: "Warning", reason: "RunFailed", note }],
    { ...measurements, runEnded: { result: "Failed" } },
  );
}

function approvalOf(context: Context, step: StepStatus) {
  return context.run.spec.approvals?.find((approval) => approval.step === approvalKey(step));
}

function deadlineOf(context: Context, step: StepStatus): number | undefined {
  const timeoutMs = stepTimeoutMs(step, context.observed.plan);
  return timeoutMs === undefined || step.startTime === undefined ? undefined : Date.parse(step.startTime) + timeoutMs;
}

const waitUntil = (context: Context, deadline: number | undefined, afterMs: number): Decision => ({
  kind: "Wait",
  requeueAfterMs: Math.max(
    1000,
    Math.min(afterMs, deadline === undefined ? afterMs : deadline - context.observed.now + 1000),
  ),
});

function continueStep(context: Context, step: StepStatus): Decision {
  const { observed } = context;
  const deadline = deadlineOf(context, step);
  const timedOut = deadline !== undefined && observed.now >= deadline;
  const timeout = planActionOf(step, observed.plan)?.timeout ?? "";
  if (step.phase === "WaitingForApproval") {
    const approval = approvalOf(context, step);
    if (approval !== undefined)
      return finish(
        context,
        step,
        "Succeeded",
        `approved by ${approval.approvedBy}${approval.comment === undefined ? "" : `: ${approval.comment}`}`,
      );
    if (timedOut) return finish(context, step, "Failed", `not approved within ${timeout}`);
    return waitUntil(context, deadline, 10 * 60_000);
  }
  if (timedOut) return finish(context, step, "Failed", `timed out after ${timeout}`);
  if (planActionKinds.includes(step.action) && planActionOf(step, observed.plan) === undefined)
    return finish(context, step, "Failed", `the plan no longer has action ${step.name}; it was changed during the run`);
  const result = observed.outcome?.step === step.name ? observed.outcome.outcome : undefined;
  if (result === undefined) return { kind: "Execute", work: workOf(context, step) };
  if (result.point !== undefined && !samePoint(recordedPoint(context, step), result.point))
    return record(context, { ...context.status, recoveryPoints: withPoint(context, result.point) });
  if (result.state === "Succeeded") return finish(context, step, "Succeeded", result.message ?? "done", result);
  if (result.state === "Failed") return finish(context, step, "Failed", result.message ?? "failed", result);
  if (result.message !== undefined && result.message !== step.message)
    return record(context, {
      ...context.status,
      steps: replaceStep(context.steps, { ...step, message: result.message }),
    });
  return waitUntil(context, deadline, result.recheckAfterMs ?? recheckMs);
}

function recordedPoint(context: Context, step: StepStatus): UsedRecoveryPoint | undefined {
  return context.status.recoveryPoints?.find((point) => point.machine === step.machine);
}

const samePoint = (a: UsedRecoveryPoint | undefined, b: UsedRecoveryPoint): boolean =>
  a !== undefined && a.id === b.id && a.time === b.time && a.consistency === b.consistency;

function withPoint(context: Context, point: UsedRecoveryPoint): UsedRecoveryPoint[] {
  const others = (context.status.recoveryPoints ?? []).filter((candidate) => candidate.machine !== point.machine);
  return [...others, point];
}

function workOf(context: Context, step: StepStatus): StepWork {
  const action = planActionOf(step, context.observed.plan);
  if (step.action !== "Recover") return { step, ...(action === undefined ? {} : { action }) };
  const change = changeOf(step);
  const select =
    change === undefined
      ? (context.run.spec.recoveryPoint ?? defaultSelect)
      : (context.run.spec.recoveryPointChanges?.[change - 1] ?? defaultSelect);
  const recorded = recordedPoint(context, step);
  return {
    step,
    select,
    ...(recorded === undefined ? {} : { recordedPoint: recorded }),
    ...(change === undefined ? {} : { change }),
  };
}

function start(context: Context): Decision {
  const { run, observed } = context;
  const blocker = observed.otherRuns.filter((other) => blocks(other, run)).sort(byAge)[0];
  if (blocker !== undefined) {
    const message = `waiting for FailoverRun ${blocker.name} (${blocker.type}, ${blocker.phase ?? "Pending"}) on the same plan or machines to finish`;
    const decision = record(context, {
      ...context.status,
      phase: "Pending",
      conditions: readyCondition(context, "False", "AnotherRunInProgress", message),
    });
    return decision.kind === "Record"
      ? { ...decision, events: [{ type: "Normal", reason: "Waiting", note: message }] }
      : { kind: "Wait", requeueAfterMs: otherRunRecheckMs };
  }
  const validate: StepStatus = { name: "validate", action: "Validate", phase: "Succeeded", startTime: context.now };
  const problems = validationProblems(run, observed);
  if (problems.length > 0)
    return failedStart(
      context,
      { ...validate, phase: "Failed", endTime: context.now, message: problems.join("; ") },
      "Invalid",
    );
  const steps = [
    { ...validate, endTime: context.now, attempts: 1, message: "plan, machines and recovery points checked" },
    ...plannedSteps(run, observed.plan),
  ];
  const sites = sitesOf(run, observed);
  return record(
    context,
    {
      ...context.status,
      phase: "Running",
      startTime: context.now,
      steps,
      ...sites,
      ...(run.spec.type === "Test" ? { drillNamespace: drillNamespaceOf(run) } : {}),
      conditions: readyCondition(context, "False", "Running", `${steps.length} steps`),
    },
    [{ type: "Normal", reason: "RunStarted", note: `${run.spec.type} run started with ${steps.length} steps` }],
  );
}

function sitesOf(run: FailoverRun, observed: Observed): Pick<FailoverRunStatus, "sourceSite" | "targetSite"> {
  const first = observed.machines.get(runMachines(run, observed.plan)[0] ?? "");
  if (first === undefined) return {};
  // Where the workload runs now and where it goes; a Reprotect replicates from the second to the first.
  const replication = directionOf(first);
  const [source, target] =
    run.spec.type === "Reprotect"
      ? [replication.targetSite, replication.sourceSite]
      : [first.status?.activeSite ?? replication.sourceSite, replication.targetSite];
  return {
    ...(source === undefined ? {} : { sourceSite: source }),
    ...(target === undefined ? {} : { targetSite: target }),
  };
}

/** Where a Test run recovers to: spec.drill.namespace, or ksr-drill-RUN. */
export function drillNamespaceOf(run: FailoverRun): string {
  return run.spec.drill?.namespace ?? `ksr-drill-${run.metadata.name}`.slice(0, 63).replace(/-+$/, "");
}

function failedStart(context: Context, validate: StepStatus, reason: string): Decision {
  const note = validate.message ?? "";
  return record(
    context,
    {
      ...context.status,
      phase: "Failed",
      startTime: context.now,
      completionTime: context.now,
      steps: [{ ...validate, attempts: 1 }],
      conditions: readyCondition(context, "False", reason, note),
    },
    [{ type: "Warning", reason: "ValidationFailed", note }],
    { runEnded: { result: "Failed" } },
  );
}

/** Every step has finished: the run reached its goal, or a commit, cleanup or point change is asked for. */
function afterSteps(context: Context): Decision {
  const { run, status, steps } = context;
  const type = run.spec.type;
  if (status.phase === "Running") return succeeded(context);
  if (status.phase === "Committed" || status.phase === "CleanedUp") return { kind: "Finished" };
  const changesDone = new Set(steps.flatMap((step) => changeOf(step) ?? [])).size;
  const changesAsked = run.spec.recoveryPointChanges?.length ?? 0;
  if (type !== "Test" && changesAsked > changesDone && status.phase !== "Failed") {
    const change = changesDone + 1;
    const note = `recovery point change ${change} asked for: ${describeSelector(run.spec.recoveryPointChanges?.[change - 1])}`;
    return record(
      context,
      { ...status, phase: "Running", steps: [...steps, ...changeSteps(run, context.observed.plan, change)] },
      [{ type: "Normal", reason: "ChangingRecoveryPoint", note }],
    );
  }
  if (type !== "Test" && type !== "Reprotect" && run.spec.commit && status.phase === "Succeeded")
    return record(context, { ...status, steps: [...steps, pending("commit", "Commit", {})] });
  return { kind: "Finished" };
}

function describeSelector(selector: RecoveryPointSelector | undefined): string {
  if (selector === undefined) return "LatestProcessed";
  if (selector.select === "Time") return `the newest point at or before ${selector.time ?? ""}`;
  if (selector.select === "ID") return `point ${selector.id ?? ""}`;
  return selector.select;
}

function succeeded(context: Context): Decision {
  const { run, status, steps } = context;
  const committed = steps.some((step) => step.action === "Commit" && step.phase === "Succeeded");
  const cleaned = steps.some((step) => step.action === "Cleanup" && step.phase === "Succeeded");
  const phase: FailoverRunPhase = cleaned ? "CleanedUp" : committed ? "Committed" : "Succeeded";
  const firstRecovery = status.rto === undefined && !committed && !cleaned;
  const rto = firstRecovery ? rtoOf(context) : undefined;
  // A planned failover loses nothing (its final sync checked the sequence numbers) until a point change moves it back.
  const changed = steps.some((step) => changeOf(step) !== undefined);
  const dataLoss = run.spec.type === "Planned" && !changed ? "0s" : status.dataLossWindow;
  const note =
    phase === "Succeeded"
      ? `${run.spec.type} run succeeded${rto === undefined ? "" : ` (RTO ${formatDuration(rto * 1000)})`}${
          run.spec.type === "Test"
            ? `; end the drill with kubectl dr cleanup ${run.metadata.name}`
            : run.spec.type === "Reprotect"
              ? "; replication runs the other way now (failback is a Planned run)"
              : `; make it final with kubectl dr commit ${run.metadata.name}`
        }`
      : `run ${phase}`;
  return record(
    context,
    {
      ...status,
      phase,
      currentStep: undefined,
      completionTime: context.now,
      ...(rto === undefined ? {} : { rto: formatDuration(rto * 1000) }),
      ...(dataLoss === undefined ? {} : { dataLossWindow: dataLoss }),
      conditions: readyCondition(context, "True", phase, note),
    },
    [{ type: "Normal", reason: phase === "Succeeded" ? "RunSucceeded" : `Run${phase}`, note }],
    { runEnded: { result: phase }, ...(rto === undefined ? {} : { rtoSeconds: rto }) },
  );
}

function rtoOf(context: Context): number | undefined {
  const ends = context.steps
    .filter((step) => step.action === "Recover" && changeOf(step) === undefined && step.endTime !== undefined)
    .map((step) => Date.parse(step.endTime ?? ""));
  if (ends.length === 0 || context.status.startTime === undefined) return undefined;
  return Math.max(0, (Math.max(...ends) - Date.parse(context.status.startTime)) / 1000);
}

/** A drill being cleaned up: whatever it was doing stops, and its cleanup step runs. */
function cleanUp(context: Context): Decision | undefined {
  const { run, steps } = context;
  if (run.spec.type !== "Test" || !run.spec.cleanup || context.status.phase === "CleanedUp") return undefined;
  if (steps.some((step) => step.action === "Cleanup")) return undefined;
  const stopped = steps.map((step): StepStatus => {
    if (isActive(step))
      return { ...step, phase: "Failed", endTime: context.now, message: "stopped: the drill is being cleaned up" };
    if (step.phase === "Pending") return { ...step, phase: "Skipped", message: "not run: the drill was cleaned up" };
    return step;
  });
  return record(
    context,
    {
      ...context.status,
      phase: "Running",
      currentStep: undefined,
      steps: [...stopped, pending("cleanup", "Cleanup", {})],
    },
    [{ type: "Normal", reason: "CleanupRequested", note: "deleting what the drill created" }],
  );
}

/** The next thing to do for `run`, given what the controller observed. */
export function nextStep(run: FailoverRun, observed: Observed): Decision {
  const status = run.status ?? {};
  const context: Context = { run, observed, status, steps: status.steps ?? [], now: rfc3339(observed.now) };
  if (status.phase === "Committed" || status.phase === "CleanedUp") return { kind: "Finished" };
  if (status.startTime === undefined) return start(context);
  const cleanup = cleanUp(context);
  if (cleanup !== undefined) return cleanup;
  if (status.phase === "Failed" && !context.steps.some((step) => step.action === "Cleanup" && !isFinished(step)))
    return { kind: "Finished" };
  const active = context.steps.find(isActive);
  if (active !== undefined) return continueStep(context, active);
  const next = context.steps.find((step) => step.phase === "Pending");
  if (next !== undefined) return begin(context, next);
  return afterSteps(context);
}
