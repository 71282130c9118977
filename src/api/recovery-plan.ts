// RecoveryPlan: brings a whole application up in order, group by group, with
// actions between groups (ASR: recovery plan with script, manual and runbook actions).
import {
  conditions,
  dnsLabel,
  duration,
  durationPattern,
  isDuration,
  exactlyOneOf,
  localReference,
  nameList,
  objectName,
  observedGeneration,
  runPhases,
  runTypes,
  timestamp,
} from "./common.js";
import { ageColumn, type KindDefinition } from "./kind.js";
import { array, integer, object, opaqueObject, required, string, type Rule } from "./schema.js";

const failoverTypes = runTypes.filter((type) => type !== "Reprotect");

const scriptAction = object({
  typeName: "ScriptAction",
  description:
    "Runs a Job in the recovery site, in the namespace the group's machines are recovered to (a drill's own namespace for Test runs). The action fails when the Job fails.",
  properties: {
    jobTemplate: required(
      object({
        typeName: "JobTemplate",
        description:
          "A batch/v1 JobTemplateSpec. The controller dry-runs the Job when it validates the plan and reports errors in the plan's Valid condition.",
        properties: {
          metadata: opaqueObject({ description: "Labels and annotations of the Job." }),
          spec: required(opaqueObject({ description: "A batch/v1 JobSpec." })),
        },
      }),
    ),
  },
});

const manualAction = object({
  typeName: "ManualAction",
  description:
    "Pauses the run until someone approves this step (`kubectl dr approve RUN GROUP/ACTION`, which appends to the FailoverRun's spec.approvals).",
  properties: {
    instructions: required(
      string({
        description: "What the approver must check or do before approving.",
        minLength: 1,
        maxLength: 4096,
        rules: [{ rule: "self.matches('\\\\S')", message: "must tell the approver what to check, not be blank" }],
      }),
    ),
  },
});

const waitAction = object({
  typeName: "WaitAction",
  description: "Waits a fixed time, e.g. for caches to warm or DNS to expire.",
  properties: {
    duration: required(duration({ description: "How long to wait.", min: "1s", max: "1h" })),
  },
});

const trafficAction = object({
  typeName: "TrafficAction",
  description:
    "Switches a Service to the recovered pods of a machine (ASR: Traffic Manager failover). In Test runs the Service is copied into the drill namespace and production traffic is never touched.",
  properties: {
    service: required(objectName("Name of the Service that clients use.")),
    serviceNamespace: dnsLabel("Namespace of the Service. Absent: the plan's namespace."),
    machine: required(
      objectName(
        "ProtectedMachine of this plan whose recovered pods the Service must select afterwards: one recovered by an earlier group, or by this action's group when it is a postAction.",
      ),
    ),
  },
});

const webhookAction = object({
  typeName: "WebhookAction",
  description:
    "Calls an HTTP endpoint with a JSON description of the run and step; any 2xx answer is success (ASR: runbook action).",
  properties: {
    url: required(
      string({
        description: "Absolute http or https URL.",
        maxLength: 2048,
        rules: [
          {
            rule: "isURL(self) && url(self).getScheme() in ['http', 'https'] && url(self).getHostname() != ''",
            message: "must be an absolute http:// or https:// URL with a host",
          },
          {
            rule: "!self.matches('^[A-Za-z][-+.A-Za-z0-9]*://[^/?#]*@')",
            message: "must not carry credentials (user:password@): put them in a header of headersSecretRef",
          },
        ],
      }),
    ),
    method: string({ description: "Request method.", enum: ["POST", "PUT"] as const, default: "POST" }),
    headersSecretRef: localReference(
      "SecretReference",
      "A Secret whose data entries are sent as request headers (e.g. Authorization); never logged.",
      "Secret",
    ),
  },
});

const actionKinds = ["script", "manual", "wait", "traffic", "webhook"];

const action = object({
  typeName: "PlanAction",
  description: `A step run before or after a group's machines are recovered. Set exactly one of ${actionKinds.join(", ")}.`,
  properties: {
    name: required(
      dnsLabel("Name of the action, unique within its group; approvals and step names refer to GROUP/NAME."),
    ),
    runOn: array({
      description: "Run types the action runs in. Absent: Test, Planned and Unplanned.",
      minItems: 1,
      maxItems: failoverTypes.length,
      listType: "set",
      default: failoverTypes,
      items: string({ description: "A FailoverRun type.", enum: failoverTypes }),
    }),
    onFailure: string({
      description: "Abort: the run fails. Continue: the failure is recorded and the run goes on.",
      enum: ["Abort", "Continue"] as const,
      default: "Abort",
    }),
    timeout: duration({
      description: "Longest the action may take before it counts as failed. Absent: no limit (useful for manual).",
      min: "1s",
      max: "24h",
    }),
    script: scriptAction,
    manual: manualAction,
    wait: waitAction,
    traffic: trafficAction,
    webhook: webhookAction,
  },
  rules: [
    exactlyOneOf(actionKinds, "an action"),
    {
      rule: `!has(self.wait) || !has(self.timeout) || !${isDuration("timeout")} || !self.wait.duration.matches('${durationPattern}') || duration(self.timeout) > duration(self.wait.duration)`,
      message: "timeout must be longer than wait.duration: the wait would always time out",
      fieldPath: ".timeout",
    },
  ],
});

const uniqueNames = (message: string): Rule => ({
  rule: "self.all(a, self.exists_one(b, b.name == a.name))",
  message,
});

const actions = (description: string) =>
  array({
    description,
    minItems: 1,
    maxItems: 10,
    listType: "atomic",
    items: action,
    rules: [uniqueNames("action names must be unique within a group")],
  });

const planGroup = object({
  typeName: "PlanGroup",
  description:
    "One step of the plan: its machines are recovered together (in parallel), after every earlier group has finished.",
  properties: {
    name: required(dnsLabel("Name of the group, unique within the plan.")),
    machines: nameList(
      "ProtectedMachines in the plan's namespace recovered by this group.",
      50,
      "A ProtectedMachine name.",
      1,
    ),
    preActions: actions("Actions run in order before the group's machines are recovered."),
    postActions: actions("Actions run in order after the group's machines are up."),
  },
  rules: [
    {
      rule: "(has(self.machines) && size(self.machines) > 0) || has(self.preActions) || has(self.postActions)",
      message: "a group needs at least one machine or action",
      fieldPath: ".machines",
      reason: "FieldValueRequired",
    },
    {
      rule: "!has(self.preActions) || !has(self.postActions) || self.preActions.all(a, !self.postActions.exists(b, b.name == a.name))",
      message: "action names must be unique within a group, across preActions and postActions",
      fieldPath: ".postActions",
    },
    {
      rule: "!has(self.preActions) || !has(self.machines) || self.preActions.all(a, !has(a.traffic) || !(a.traffic.machine in self.machines))",
      message:
        "a preAction cannot switch traffic to a machine of its own group: the machine is not recovered yet; make it a postAction",
      fieldPath: ".preActions",
    },
  ],
});

/** CEL on spec.groups: every traffic action of every group `g`, before or after its machines, satisfies `check` (on `a`). */
const everyTrafficAction = (check: string): string =>
  `self.all(g, ${["preActions", "postActions"].map((list) => `(!has(g.${list}) || g.${list}.all(a, !has(a.traffic) || ${check}))`).join(" && ")})`;

const spec = object({
  typeName: "RecoveryPlanSpec",
  description: "The ordered groups of the application.",
  properties: {
    groups: required(
      array({
        description: "Groups in recovery order. Failback runs the same order.",
        minItems: 1,
        maxItems: 20,
        listType: "atomic",
        items: planGroup,
        rules: [
          uniqueNames("group names must be unique within a plan"),
          {
            rule: "self.all(g, !has(g.machines) || g.machines.all(m, self.exists_one(h, has(h.machines) && m in h.machines)))",
            message: "a machine may be in only one group of a plan",
          },
          {
            // Traffic to a machine of a later group is reported by the controller (the Valid condition): CEL
            // has no index before Kubernetes 1.32, and indexOf over the groups' names is priced beyond the budget.
            rule: everyTrafficAction("self.exists(h, has(h.machines) && a.traffic.machine in h.machines)"),
            message:
              "traffic.machine must be a machine of the plan: the Service would select pods that the plan never recovers",
          },
        ],
      }),
    ),
  },
});

const status = object({
  typeName: "RecoveryPlanStatus",
  description: "Whether the plan can run, and its last run.",
  properties: {
    observedGeneration,
    groupCount: integer({ description: "Number of groups.", format: "int32", minimum: 0 }),
    machineCount: integer({ description: "Number of machines across groups.", format: "int32", minimum: 0 }),
    unreadyMachines: array({
      description:
        "Machines that are missing or not protected (not in phase Protected); the Valid condition is False while any are listed.",
      maxItems: 1000,
      listType: "map",
      listMapKeys: ["name"],
      items: object({
        typeName: "UnreadyMachine",
        description: "A machine the plan cannot fail over yet.",
        properties: {
          name: required(string({ description: "Machine name.", maxLength: 253 })),
          reason: required(string({ description: "Why, e.g. NotFound or InitialReplication.", maxLength: 256 })),
        },
      }),
    }),
    lastRun: object({
      typeName: "LastRunSummary",
      description: "The most recent FailoverRun of this plan.",
      properties: {
        name: required(string({ description: "FailoverRun name.", maxLength: 253 })),
        type: string({ typeName: "FailoverRunType", description: "Its type.", enum: runTypes }),
        phase: string({ typeName: "FailoverRunPhase", description: "Its phase.", enum: runPhases }),
        completionTime: timestamp("When it finished."),
      },
    }),
    conditions,
  },
});

export const recoveryPlan: KindDefinition = {
  kind: "RecoveryPlan",
  plural: "recoveryplans",
  singular: "recoveryplan",
  shortNames: ["rp"],
  description:
    "RecoveryPlan recovers several ProtectedMachines in ordered groups with actions between them: scripts, manual approvals, waits, traffic switches and webhooks (ASR: recovery plan).",
  spec,
  status,
  printerColumns: [
    { name: "Groups", type: "integer", jsonPath: ".status.groupCount", description: "Number of groups." },
    { name: "Machines", type: "integer", jsonPath: ".status.machineCount", description: "Number of machines." },
    {
      name: "Valid",
      type: "string",
      jsonPath: '.status.conditions[?(@.type=="Valid")].status',
      description: "Every machine exists and is protected.",
    },
    { name: "Last-Run", type: "string", jsonPath: ".status.lastRun.name", description: "Most recent FailoverRun." },
    {
      name: "Last-Phase",
      type: "string",
      jsonPath: ".status.lastRun.phase",
      description: "Phase of the most recent FailoverRun.",
      priority: 1,
    },
    ageColumn,
  ],
  selectableFields: [],
};
