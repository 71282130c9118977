// FailoverRun: one DR operation (drill, planned or unplanned failover,
// reprotect), run to completion like a Job; its progress lives in status so an
// operator restart resumes it without repeating a step.
import {
  pointConsistency,
  conditions,
  dnsLabel,
  exactlyOneOf,
  immutable,
  immutableOptional,
  localReference,
  observedGeneration,
  runPhases,
  runTypes,
  timestamp,
} from "./common.js";
import { ageColumn, type KindDefinition } from "./kind.js";
import { array, boolean, describe, integer, object, required, string, type ArrayNode, type Rule } from "./schema.js";

const recoveryPoint = object({
  typeName: "RecoveryPointSelector",
  description:
    "Which recovery point to recover each machine to. Only for Test and Unplanned runs: a Planned run first replicates every pending change (no data loss) and Reprotect recovers nothing. Absent: LatestProcessed.",
  properties: {
    select: string({
      description:
        "Latest: apply every pending change first, then recover (lowest data loss, longer RTO). LatestProcessed: the newest point already applied at the recovery site (lowest RTO). LatestAppConsistent: the newest app-consistent point. Time: the newest point at or before time. ID: the point with that id (single-machine runs only).",
      typeName: "RecoveryPointSelection",
      enum: ["Latest", "LatestProcessed", "LatestAppConsistent", "Time", "ID"] as const,
      default: "LatestProcessed",
    }),
    time: timestamp("With select: Time, recover to the newest point at or before this instant (RFC 3339)."),
    id: string({
      description: "With select: ID, the recovery point id (see the ProtectedMachine's status.recoveryPoints).",
      minLength: 1,
      maxLength: 128,
    }),
  },
  rules: [
    {
      rule: "(self.select == 'Time') == has(self.time)",
      message: "time is required when select is Time and not allowed otherwise",
      fieldPath: ".time",
    },
    {
      rule: "(self.select == 'ID') == has(self.id)",
      message: "id is required when select is ID and not allowed otherwise",
      fieldPath: ".id",
    },
  ],
});

const approval = object({
  typeName: "Approval",
  description: "Approval of one manual action of the plan.",
  properties: {
    step: required(
      string({
        description: "The manual action approved, as GROUP/ACTION.",
        maxLength: 127,
        rules: [
          {
            rule: "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?/[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
            message: "must be GROUP/ACTION naming a manual action of the plan, e.g. database/confirm-dns",
          },
        ],
      }),
    ),
    approvedBy: required(
      string({
        description: "Who approved.",
        minLength: 1,
        maxLength: 256,
        rules: [{ rule: "self.matches('[^ \\t]')", message: "must name who approved, not be blank" }],
      }),
    ),
    time: timestamp("When it was approved."),
    comment: string({ description: "Free text kept with the run.", maxLength: 1024 }),
  },
});

/** A flag that may be set after creation but never cleared. */
const oneWay = (field: string, what: string): Rule => ({
  rule: `!oldSelf.${field} || self.${field}`,
  message: `${field} cannot be set back to false once ${what}`,
  fieldPath: `.${field}`,
});

const sizeOf = (object: string, field: string): string => `(has(${object}.${field}) ? size(${object}.${field}) : 0)`;

/**
 * A list whose entries, once written, stay: removing the list counts as removing them. A map list's
 * entries (unique keys, order without meaning) must all still be there; a list whose entries are
 * acted on by position must keep each at its place, so it only grows at its end. CEL has no slices
 * (and two-variable comprehensions need Kubernetes 1.32; the chart supports 1.29), so places are compared one by one up to maxItems.
 */
function appendOnly(field: string, list: ArrayNode, message: string): Rule {
  const [now, before] = [`self.${field}`, `oldSelf.${field}`];
  const kept =
    list.listType === "map"
      ? `${before}.all(entry, entry in ${now})`
      : Array.from(
          { length: list.maxItems },
          (_, i) => `(size(${before}) <= ${i} || ${now}[${i}] == ${before}[${i}])`,
        ).join(" && ");
  return {
    rule: `!has(${before}) || (has(${now}) && size(${now}) >= size(${before}) && ${kept})`,
    message,
    fieldPath: `.${field}`,
  };
}

const onlyFor = (field: string, types: readonly string[], why: string): Rule => ({
  rule: `!has(self.${field}) || self.type in [${types.map((type) => `'${type}'`).join(", ")}]`,
  message: `${field} applies only to ${types.join(" and ")} runs: ${why}`,
  fieldPath: `.${field}`,
  reason: "FieldValueForbidden",
});

const recoveryPointChanges = array({
  description:
    "Planned and Unplanned runs, before commit: move the recovered machines to another retained recovery point (ASR: change recovery point), appended by `kubectl dr change-point`. Each entry stops the recovered workloads, rolls their replicas to that point and starts them again, in the plan's order. Entries are applied in list order: they cannot be changed, removed or reordered, new ones go at the end, and none can be added once the run is committed.",
  maxItems: 16,
  listType: "atomic",
  items: describe(recoveryPoint, "A recovery point to move the recovered machines to."),
});

const approvals = array({
  description:
    "Approvals of the plan's manual actions, appended by `kubectl dr approve`. Only for Test, Planned and Unplanned runs of a plan (a machine run and a Reprotect run have no manual actions). Entries cannot be changed or removed.",
  maxItems: 64,
  listType: "map",
  listMapKeys: ["step"],
  items: approval,
});

const spec = object({
  typeName: "FailoverRunSpec",
  description:
    "The operation to run. Everything but approvals, commit, cleanup and notes is fixed at creation; create a new run to do something else.",
  properties: {
    planRef: localReference("PlanReference", "The RecoveryPlan to run. Set this or machineRef.", "RecoveryPlan"),
    machineRef: localReference(
      "MachineReference",
      "A single ProtectedMachine to run on, without a plan. Set this or planRef.",
      "ProtectedMachine",
    ),
    type: required(
      string({
        description:
          "Test: a drill into an isolated namespace while replication continues; end it with cleanup. Planned: stop the source, replicate everything, recover without data loss. Unplanned: recover from the recovery site's journal when the source is lost. Reprotect: after a failover, replicate back from the recovery site to the original one (failback is then a Planned run).",
        typeName: "FailoverRunType",
        enum: runTypes,
        rules: [immutable("spec.type")],
      }),
    ),
    recoveryPoint,
    drill: object({
      typeName: "DrillSpec",
      description: "Options of a Test run.",
      properties: {
        namespace: dnsLabel(
          "Namespace the drill recovers into. Absent: ksr-drill-RUN, created and deleted by the run.",
        ),
        isolation: string({
          description:
            "Isolated: a NetworkPolicy lets no traffic in or out of the drill namespace except to itself and DNS. None: no fencing.",
          enum: ["Isolated", "None"] as const,
          default: "Isolated",
        }),
      },
    }),
    unplanned: object({
      typeName: "UnplannedSpec",
      description: "Options of an Unplanned run.",
      properties: {
        shutDownSource: boolean({
          description:
            "Try to stop the source workload before recovering, so it does not keep writing (ignored when the source site is unreachable).",
          default: true,
        }),
      },
    }),
    recoveryPointChanges,
    approvals,
    commit: boolean({
      description:
        "Planned and Unplanned runs: make the failover final. The recovery points kept for the recovered machines are released and the run ends in phase Committed. Can be set at creation or later; never unset.",
      default: false,
    }),
    cleanup: boolean({
      description:
        "Test runs: end the drill by deleting what it created (recovered workloads, volumes, drill namespace). Can be set at creation or later; never unset.",
      default: false,
    }),
    notes: string({
      description: "Observations recorded with the run, e.g. what the drill showed.",
      maxLength: 4096,
    }),
  },
  rules: [
    exactlyOneOf(["planRef", "machineRef"], "the run's target"),
    immutableOptional("planRef", "planRef"),
    immutableOptional("machineRef", "machineRef"),
    immutableOptional("recoveryPoint", "recoveryPoint"),
    immutableOptional("drill", "drill"),
    immutableOptional("unplanned", "unplanned"),
    {
      rule: "!self.cleanup || self.type == 'Test'",
      message: "cleanup applies only to Test runs: it ends a drill; a real failover ends with commit",
      fieldPath: ".cleanup",
      reason: "FieldValueForbidden",
    },
    {
      rule: "!self.commit || self.type in ['Planned', 'Unplanned']",
      message: "commit applies only to Planned and Unplanned runs: a Test run ends with cleanup",
      fieldPath: ".commit",
      reason: "FieldValueForbidden",
    },
    oneWay("commit", "the failover is committed"),
    oneWay("cleanup", "the drill is cleaned up"),
    onlyFor(
      "recoveryPoint",
      ["Test", "Unplanned"],
      "a Planned run replicates every change first and Reprotect recovers nothing",
    ),
    onlyFor("drill", ["Test"], "it configures a drill"),
    onlyFor("unplanned", ["Unplanned"], "Planned runs always stop the source"),
    onlyFor("recoveryPointChanges", ["Planned", "Unplanned"], "a drill is ended with cleanup and a new drill"),
    // On the parent, not the list: a rule on the list itself is skipped when the whole list is removed.
    {
      rule: "!has(self.approvals) || (has(self.planRef) && self.type != 'Reprotect')",
      message:
        "approvals apply only to Test, Planned and Unplanned runs of a plan: a machine run and a Reprotect run have no manual actions",
      fieldPath: ".approvals",
      reason: "FieldValueForbidden",
    },
    appendOnly("approvals", approvals, "approvals can only be added: existing entries cannot be changed or removed"),
    appendOnly(
      "recoveryPointChanges",
      recoveryPointChanges,
      "recoveryPointChanges can only be added at the end: existing entries cannot be changed, removed or reordered",
    ),
    {
      rule: `!oldSelf.commit || ${sizeOf("self", "recoveryPointChanges")} == ${sizeOf("oldSelf", "recoveryPointChanges")}`,
      message: "the recovery point cannot be changed once the failover is committed",
      fieldPath: ".recoveryPointChanges",
      reason: "FieldValueForbidden",
    },
    {
      rule: "!has(self.recoveryPointChanges) || has(self.machineRef) || self.recoveryPointChanges.all(c, c.select != 'ID')",
      message:
        "recoveryPointChanges[].select ID needs machineRef: a recovery point id belongs to one machine; use Time for a plan",
      fieldPath: ".recoveryPointChanges",
    },
    {
      rule: "!has(self.recoveryPoint) || self.recoveryPoint.select != 'ID' || has(self.machineRef)",
      message:
        "recoveryPoint.select ID needs machineRef: a recovery point id belongs to one machine; use Time for a plan",
      fieldPath: ".recoveryPoint.select",
    },
  ],
});

const stepStatus = object({
  typeName: "StepStatus",
  description: "One step of the run. A step recorded as Succeeded is never run again.",
  properties: {
    name: required(
      string({
        description: "Unique step name, e.g. database/pre/confirm-dns or database/recover/postgres.",
        maxLength: 512,
      }),
    ),
    action: required(
      string({
        typeName: "StepAction",
        description: "What the step does.",
        enum: [
          "Validate",
          "ShutDownSource",
          "FinalSync",
          "Recover",
          "Script",
          "Manual",
          "Stop",
          "Wait",
          "Traffic",
          "Webhook",
          "Commit",
          "Cleanup",
          "Reverse",
        ] as const,
      }),
    ),
    group: string({ description: "Plan group the step belongs to.", maxLength: 63 }),
    machine: string({ description: "Machine the step acts on.", maxLength: 253 }),
    phase: required(
      string({
        description: "Progress of the step.",
        typeName: "StepPhase",
        enum: ["Pending", "Running", "WaitingForApproval", "Succeeded", "Failed", "Skipped"] as const,
      }),
    ),
    startTime: timestamp("When the step started."),
    endTime: timestamp("When the step ended."),
    attempts: integer({ description: "How many times the step was started.", format: "int32", minimum: 0 }),
    message: string({ description: "What happened, for people.", maxLength: 4096 }),
  },
});

const usedPoint = object({
  typeName: "UsedRecoveryPoint",
  description: "The recovery point a machine was recovered to.",
  properties: {
    machine: required(string({ description: "Machine name.", maxLength: 253 })),
    id: required(string({ description: "Recovery point id.", maxLength: 128 })),
    time: required(timestamp("When the point was taken.")),
    consistency: required(pointConsistency),
  },
});

const measuredDuration = (description: string) => string({ description, maxLength: 32 });

const status = object({
  typeName: "FailoverRunStatus",
  description: "Progress and results of the run.",
  properties: {
    observedGeneration,
    phase: string({
      description: "Overall phase.",
      typeName: "FailoverRunPhase",
      enum: runPhases,
    }),
    currentStep: string({ description: "Name of the step in progress.", maxLength: 512 }),
    sourceSite: string({ description: "Site recovered from.", maxLength: 63 }),
    targetSite: string({ description: "Site recovered to.", maxLength: 63 }),
    drillNamespace: string({ description: "Namespace a Test run recovered into.", maxLength: 63 }),
    startTime: timestamp("When the run started."),
    completionTime: timestamp("When the run reached Succeeded, Failed, Committed or CleanedUp."),
    steps: array({
      description: "Every step, in execution order.",
      maxItems: 1024,
      listType: "map",
      listMapKeys: ["name"],
      items: stepStatus,
    }),
    recoveryPoints: array({
      description: "The recovery point used per machine.",
      maxItems: 1000,
      listType: "map",
      listMapKeys: ["machine"],
      items: usedPoint,
    }),
    rto: measuredDuration(
      "Measured recovery time: from the start of the run until the last machine was up, e.g. 1m12s.",
    ),
    dataLossWindow: measuredDuration(
      "Measured data-loss window: the time of the latest change the recovery site holds minus the time of the recovery point used, the worst volume of the worst machine (0s when the point holds every change the site has, however long the workload was quiet since), e.g. 40s; 0s for Planned runs.",
    ),
    conditions,
  },
});

export const failoverRun: KindDefinition = {
  kind: "FailoverRun",
  plural: "failoverruns",
  singular: "failoverrun",
  shortNames: ["fr"],
  description:
    "FailoverRun performs one DR operation on a RecoveryPlan or a single ProtectedMachine: a drill (Test), a Planned or Unplanned failover, or Reprotect; then commit or cleanup. Like a Job, one object per operation (ASR: test failover, failover, commit, reprotect, failback).",
  spec,
  status,
  printerColumns: [
    { name: "Plan", type: "string", jsonPath: ".spec.planRef.name", description: "RecoveryPlan run." },
    {
      name: "Machine",
      type: "string",
      jsonPath: ".spec.machineRef.name",
      description: "Single machine run.",
      priority: 1,
    },
    { name: "Type", type: "string", jsonPath: ".spec.type", description: "Test, Planned, Unplanned or Reprotect." },
    { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Overall phase." },
    { name: "Step", type: "string", jsonPath: ".status.currentStep", description: "Step in progress." },
    { name: "RTO", type: "string", jsonPath: ".status.rto", description: "Measured recovery time." },
    ageColumn,
  ],
  selectableFields: [".spec.type", ".spec.planRef.name", ".spec.machineRef.name"],
};
