// The dr.ksr.io API on a real kube-apiserver: the CRDs establish, the examples
// are accepted, bad input is rejected at admission with a message that names
// the field and what is allowed, defaults appear, and kubectl teaches the API.
import { deepStrictEqual, fail, match, ok, strictEqual } from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { ApiException, ApiextensionsV1Api, CustomObjectsApi } from "@kubernetes/client-node";
import { group, version } from "../../src/api/common.js";
import { crdName, kinds } from "../../src/api/crds.js";
import { installCrds } from "../../src/api/install.js";
import type { FailoverRun, ProtectedMachine, RecoveryPlan, ReplicationPolicy } from "../../src/api/types.js";
import { packageRoot } from "../../src/util/package-root.js";
import { useCluster } from "../fixture/cluster.js";
import { eventually } from "../fixture/eventually.js";

const run = promisify(execFile);

type Manifest = {
  apiVersion: string;
  kind: string;
  metadata: { name: string };
  spec: Record<string, unknown>;
} & Record<string, unknown>;

const pluralOf = (kind: string): string => {
  const definition = kinds.find((candidate) => candidate.kind === kind);
  if (definition === undefined) throw new Error(`unknown kind ${kind}`);
  return definition.plural;
};

// Minimal valid objects; each invalid case breaks exactly one thing in a copy.
const policy = (): Manifest => ({
  apiVersion: `${group}/${version}`,
  kind: "ReplicationPolicy",
  metadata: { name: "policy" },
  spec: {},
});

const machine = (): Manifest => ({
  apiVersion: `${group}/${version}`,
  kind: "ProtectedMachine",
  metadata: { name: "db" },
  spec: {
    policyRef: { name: "policy" },
    source: {
      workloadRef: { kind: "StatefulSet", name: "db" },
      quiesce: { pre: { http: { port: 8080 } } },
    },
    target: { site: "recovery", namespace: "db-recovery" },
  },
});

const plan = (): Manifest => ({
  apiVersion: `${group}/${version}`,
  kind: "RecoveryPlan",
  metadata: { name: "plan" },
  spec: {
    groups: [
      { name: "database", machines: ["db"], preActions: [{ name: "confirm", manual: { instructions: "Check." } }] },
      {
        name: "web",
        machines: ["web"],
        postActions: [{ name: "notify", webhook: { url: "https://hooks.example/x" } }],
      },
    ],
  },
});

const failoverRun = (type = "Test"): Manifest => ({
  apiVersion: `${group}/${version}`,
  kind: "FailoverRun",
  metadata: { name: `run-${type.toLowerCase()}` },
  spec: { planRef: { name: "plan" }, type },
});

/** Sets (or with undefined, removes) the value at a dotted path such as groups.1.machines. */
function setPath(target: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split(".");
  const last = keys.pop() ?? "";
  let parent: Record<string, unknown> = target;
  for (const key of keys) parent = parent[key] as Record<string, unknown>;
  if (value === undefined)
    delete parent[last]; // eslint-disable-line @typescript-eslint/no-dynamic-delete
  else parent[last] = value;
}

/** A spec edit: values by dotted path (numbers index lists); undefined removes. */
type SpecEdit = Readonly<Record<string, unknown>>;

function applyEdit(manifest: Manifest, edit: SpecEdit): Manifest {
  for (const [path, value] of Object.entries(edit)) setPath(manifest.spec, path, value);
  return manifest;
}

/** A base with an edit applied, as a new base. */
const edited =
  (base: () => Manifest, edit: SpecEdit): (() => Manifest) =>
  () =>
    applyEdit(base(), edit);

interface InvalidCase {
  readonly name: string;
  readonly base: () => Manifest;
  /** Applied to a copy of base's spec. */
  readonly edit: SpecEdit;
  /** The field the message must name, e.g. spec.recoveryPointRetention. */
  readonly field: string;
  /** Words of the message that say what is allowed. */
  readonly allowed: string;
}

const invalidCases: readonly InvalidCase[] = [
  // ReplicationPolicy
  {
    name: "retention that is not a duration",
    base: policy,
    edit: { recoveryPointRetention: "30 days" },
    field: "spec.recoveryPointRetention",
    allowed: "must be a duration such as 30s, 5m, 1h30m or 24h",
  },
  {
    name: "retention over 30 days",
    base: policy,
    edit: { recoveryPointRetention: "721h" },
    field: "spec.recoveryPointRetention",
    allowed: "must be between 1h and 720h (30 days)",
  },
  {
    name: "day units, which Go durations lack",
    base: policy,
    edit: { rpoThreshold: "1d" },
    field: "spec.rpoThreshold",
    allowed: "units: ms, s, m, h",
  },
  {
    name: "crash-consistent points more often than every 30s",
    base: policy,
    edit: { crashConsistentFrequency: "10s" },
    field: "spec.crashConsistentFrequency",
    allowed: "must be between 30s and 1h",
  },
  {
    name: "app-consistent frequency shorter than crash-consistent",
    base: policy,
    edit: { crashConsistentFrequency: "15m", appConsistentFrequency: "10m" },
    field: "spec.appConsistentFrequency",
    allowed: "must not be shorter than crashConsistentFrequency",
  },
  {
    name: "app-consistent frequency longer than retention",
    base: policy,
    edit: { appConsistentFrequency: "12h", recoveryPointRetention: "2h" },
    field: "spec.appConsistentFrequency",
    allowed: "must not be longer than recoveryPointRetention",
  },
  {
    name: "unknown capture mode",
    base: policy,
    edit: { capture: "Sometimes" },
    field: "spec.capture",
    allowed: 'supported values: "Continuous", "Interval"',
  },
  {
    name: "sync interval Hyper-V does not offer",
    base: policy,
    edit: { capture: "Interval", syncInterval: "1m" },
    field: "spec.syncInterval",
    allowed: 'supported values: "30s", "5m", "15m"',
  },
  {
    name: "Interval capture without a sync interval",
    base: policy,
    edit: { capture: "Interval" },
    field: "spec.syncInterval",
    allowed: "required when capture is Interval: one of 30s, 5m, 15m",
  },
  {
    name: "sync interval with Continuous capture",
    base: policy,
    edit: { syncInterval: "5m" },
    field: "spec.syncInterval",
    allowed: "applies only when capture is Interval",
  },
  {
    name: "crash-consistent points between syncs",
    base: policy,
    edit: { capture: "Interval", syncInterval: "15m", crashConsistentFrequency: "5m" },
    field: "spec.crashConsistentFrequency",
    allowed: "must not be shorter than syncInterval",
  },
  {
    name: "unknown compression",
    base: policy,
    edit: { compression: "gzip" },
    field: "spec.compression",
    allowed: 'supported values: "zstd", "lz4", "none"',
  },
  {
    name: "bandwidth limit that is not a quantity",
    base: policy,
    edit: { bandwidthLimit: "fast" },
    field: "spec.bandwidthLimit",
    allowed: "must be a quantity of bytes per second",
  },
  {
    name: "zero bandwidth",
    base: policy,
    edit: { bandwidthLimit: "0" },
    field: "spec.bandwidthLimit",
    allowed: "of at least 64Ki",
  },
  {
    name: "resync window at 25 o'clock",
    base: policy,
    edit: { resync: { window: { start: "25:00", end: "06:00" } } },
    field: "spec.resync.window.start",
    allowed: "HH:MM on a 24-hour clock",
  },
  {
    name: "empty resync window",
    base: policy,
    edit: { resync: { window: { start: "06:00", end: "06:00" } } },
    field: "spec.resync.window.end",
    allowed: "start and end must differ",
  },
  {
    name: "encryption key without a Secret name",
    base: policy,
    edit: { encryption: { keySecretRef: { key: "key" } } },
    field: "spec.encryption.keySecretRef.name",
    allowed: "Required value",
  },
  // ProtectedMachine
  {
    name: "workload of an unsupported kind",
    base: machine,
    edit: { "source.workloadRef.kind": "DaemonSet" },
    field: "spec.source.workloadRef.kind",
    allowed: 'supported values: "StatefulSet", "Deployment", "Pod"',
  },
  {
    name: "workload name that is not an object name",
    base: machine,
    edit: { "source.workloadRef.name": "Data_Base" },
    field: "spec.source.workloadRef.name",
    allowed: "must be a Kubernetes object name (DNS-1123 subdomain)",
  },
  {
    name: "hook with both exec and http",
    base: machine,
    edit: { "source.quiesce.pre.exec": { container: "db", command: ["sync"] } },
    field: "spec.source.quiesce.pre",
    allowed: "set exactly one of exec, http",
  },
  {
    name: "hook with neither exec nor http",
    base: machine,
    edit: { "source.quiesce.pre": {} },
    field: "spec.source.quiesce.pre",
    allowed: "set exactly one of exec, http",
  },
  {
    name: "hook port out of range",
    base: machine,
    edit: { "source.quiesce.pre.http.port": 70000 },
    field: "spec.source.quiesce.pre.http.port",
    allowed: "less than or equal to 65535",
  },
  {
    name: "hook path that is not absolute",
    base: machine,
    edit: { "source.quiesce.pre.http.path": "quiesce" },
    field: "spec.source.quiesce.pre.http.path",
    allowed: "must be an absolute path starting with '/'",
  },
  {
    name: "quiesce timeout over 10 minutes",
    base: machine,
    edit: { "source.quiesce.timeout": "20m" },
    field: "spec.source.quiesce.timeout",
    allowed: "must be between 1s and 10m",
  },
  {
    name: "a volume listed twice",
    base: machine,
    edit: { "source.volumes": ["data", "data"] },
    field: "spec.source.volumes[1]",
    allowed: "Duplicate value",
  },
  {
    name: "site name with spaces and capitals",
    base: machine,
    edit: { "target.site": "Recovery Site" },
    field: "spec.target.site",
    allowed: "must be a DNS-1123 label",
  },
  {
    name: "no target",
    base: machine,
    edit: { target: undefined },
    field: "spec.target",
    allowed: "Required value",
  },
  {
    name: "consistency group name over 63 characters",
    base: machine,
    edit: { consistencyGroup: "g".repeat(64) },
    field: "spec.consistencyGroup",
    allowed: "may not be more than 63",
  },
  {
    name: "resource override that is not a quantity",
    base: machine,
    edit: { "target.overrides": { containers: [{ name: "db", resources: { requests: { cpu: "lots" } } }] } },
    field: "spec.target.overrides.containers[0].resources.requests[cpu]",
    allowed: "must be a Kubernetes quantity",
  },
  {
    name: "environment variable name starting with a digit",
    base: machine,
    edit: { "target.overrides": { containers: [{ name: "db", env: [{ name: "1ST", value: "x" }] }] } },
    field: "spec.target.overrides.containers[0].env[0].name",
    allowed: "must be an environment variable name",
  },
  // RecoveryPlan
  {
    name: "no groups",
    base: plan,
    edit: { groups: [] },
    field: "spec.groups",
    allowed: "should have at least 1 items",
  },
  {
    name: "two groups with one name",
    base: plan,
    edit: { "groups.1.name": "database" },
    field: "spec.groups",
    allowed: "group names must be unique within a plan",
  },
  {
    name: "a machine in two groups",
    base: plan,
    edit: { "groups.1.machines": ["web", "db"] },
    field: "spec.groups",
    allowed: "a machine may be in only one group of a plan",
  },
  {
    name: "a group with neither machines nor actions",
    base: plan,
    edit: { "groups.2": { name: "empty" } },
    field: "spec.groups[2].machines",
    allowed: "a group needs at least one machine or action",
  },
  {
    name: "an action of two kinds",
    base: plan,
    edit: { "groups.0.preActions.0.wait": { duration: "10s" } },
    field: "spec.groups[0].preActions[0]",
    allowed: "set exactly one of script, manual, wait, traffic, webhook",
  },
  {
    name: "an action of no kind",
    base: plan,
    edit: { "groups.0.preActions.0": { name: "nothing" } },
    field: "spec.groups[0].preActions[0]",
    allowed: "set exactly one of script, manual, wait, traffic, webhook",
  },
  {
    name: "an action name used before and after",
    base: plan,
    edit: { "groups.0.postActions": [{ name: "confirm", wait: { duration: "5s" } }] },
    field: "spec.groups[0].postActions",
    allowed: "action names must be unique within a group",
  },
  {
    name: "a webhook that is not http(s)",
    base: plan,
    edit: { "groups.1.postActions.0.webhook.url": "ftp://hooks.example/x" },
    field: "spec.groups[1].postActions[0].webhook.url",
    allowed: "must be an absolute http:// or https:// URL",
  },
  {
    name: "a wait longer than an hour",
    base: plan,
    edit: { "groups.1.postActions.0": { name: "pause", wait: { duration: "2h" } } },
    field: "spec.groups[1].postActions[0].wait.duration",
    allowed: "must be between 1s and 1h",
  },
  {
    name: "an action that runs on Reprotect",
    base: plan,
    edit: { "groups.0.preActions.0.runOn": ["Reprotect"] },
    field: "spec.groups[0].preActions[0].runOn[0]",
    allowed: 'supported values: "Test", "Planned", "Unplanned"',
  },
  // FailoverRun
  {
    name: "a run on a plan and a machine at once",
    base: failoverRun,
    edit: { machineRef: { name: "db" } },
    field: "spec",
    allowed: "set exactly one of planRef, machineRef",
  },
  {
    name: "a run of an unknown type",
    base: failoverRun,
    edit: { type: "Failback" },
    field: "spec.type",
    allowed: 'supported values: "Test", "Planned", "Unplanned", "Reprotect"',
  },
  {
    name: "cleanup of a Planned run",
    base: () => failoverRun("Planned"),
    edit: { cleanup: true },
    field: "spec.cleanup",
    allowed: "cleanup applies only to Test runs",
  },
  {
    name: "commit of a drill",
    base: failoverRun,
    edit: { commit: true },
    field: "spec.commit",
    allowed: "commit applies only to Planned and Unplanned runs",
  },
  {
    name: "a recovery point for a Planned run",
    base: () => failoverRun("Planned"),
    edit: { recoveryPoint: { select: "Latest" } },
    field: "spec.recoveryPoint",
    allowed: "recoveryPoint applies only to Test and Unplanned runs",
  },
  {
    name: "select Time without a time",
    base: failoverRun,
    edit: { recoveryPoint: { select: "Time" } },
    field: "spec.recoveryPoint.time",
    allowed: "time is required when select is Time",
  },
  {
    name: "a recovery point id for a whole plan",
    base: () => failoverRun("Unplanned"),
    edit: { recoveryPoint: { select: "ID", id: "rp-42" } },
    field: "spec.recoveryPoint.select",
    allowed: "select ID needs machineRef",
  },
  {
    name: "drill options on an Unplanned run",
    base: () => failoverRun("Unplanned"),
    edit: { drill: { isolation: "None" } },
    field: "spec.drill",
    allowed: "drill applies only to Test runs",
  },
  {
    name: "an approval that does not name GROUP/ACTION",
    base: failoverRun,
    edit: { approvals: [{ step: "confirm", approvedBy: "alice" }] },
    field: "spec.approvals[0].step",
    allowed: "must be GROUP/ACTION",
  },
  // Audit: values that are well-formed but mean nothing.
  {
    name: "a resync window open on no day",
    base: policy,
    edit: { resync: { mode: "Automatic", window: { start: "22:00", end: "06:00", days: [] } } },
    field: "spec.resync.window.days",
    allowed: "should have at least 1 items",
  },
  {
    name: "a bandwidth limit too small to ship a block a second",
    base: policy,
    edit: { bandwidthLimit: "1" },
    field: "spec.bandwidthLimit",
    allowed: "at least 64Ki (one block a second)",
  },
  {
    name: "an empty list of volumes (replicates nothing)",
    base: machine,
    edit: { "source.volumes": [] },
    field: "spec.source.volumes",
    allowed: "should have at least 1 items",
  },
  {
    name: "a recovered workload of zero replicas",
    base: machine,
    edit: { "target.overrides": { replicas: 0 } },
    field: "spec.target.overrides.replicas",
    allowed: "should be greater than or equal to 1",
  },
  {
    name: "a group of empty lists (no machine, no action)",
    base: plan,
    edit: { "groups.0.machines": [], "groups.0.preActions": [] },
    field: "spec.groups[0].machines",
    allowed: "should have at least 1 items",
  },
  {
    name: "an empty list of actions",
    base: plan,
    edit: { "groups.1.postActions": [] },
    field: "spec.groups[1].postActions",
    allowed: "should have at least 1 items",
  },
  {
    name: "an action that runs on no run type",
    base: plan,
    edit: { "groups.0.preActions.0.runOn": [] },
    field: "spec.groups[0].preActions[0].runOn",
    allowed: "should have at least 1 items",
  },
  {
    name: "a webhook URL without a host",
    base: plan,
    edit: { "groups.1.postActions.0.webhook.url": "https://" },
    field: "spec.groups[1].postActions[0].webhook.url",
    allowed: "URL with a host",
  },
  {
    name: "a webhook URL carrying credentials",
    base: plan,
    edit: { "groups.1.postActions.0.webhook.url": "https://ops:hunter2@hooks.example/x" },
    field: "spec.groups[1].postActions[0].webhook.url",
    allowed: "must not carry credentials",
  },
  {
    name: "a wait whose timeout is shorter than the wait",
    base: plan,
    edit: { "groups.1.postActions.0": { name: "pause", timeout: "10s", wait: { duration: "30s" } } },
    field: "spec.groups[1].postActions[0].timeout",
    allowed: "timeout must be longer than wait.duration",
  },
  {
    name: "traffic switched before its machine is recovered",
    base: plan,
    edit: { "groups.1.preActions": [{ name: "switch", traffic: { service: "web", machine: "web" } }] },
    field: "spec.groups[1].preActions",
    allowed: "cannot switch traffic to a machine of its own group",
  },
  {
    name: "a blank approver",
    base: failoverRun,
    edit: { approvals: [{ step: "database/confirm", approvedBy: "   " }] },
    field: "spec.approvals[0].approvedBy",
    allowed: "must name who approved",
  },
  {
    name: "a recovery point change on a drill",
    base: failoverRun,
    edit: { recoveryPointChanges: [{ select: "LatestAppConsistent" }] },
    field: "spec.recoveryPointChanges",
    allowed: "recoveryPointChanges applies only to Planned and Unplanned runs",
  },
  {
    name: "a recovery point change to an id on a plan",
    base: () => failoverRun("Unplanned"),
    edit: { recoveryPointChanges: [{ select: "ID", id: "rp-1" }] },
    field: "spec.recoveryPointChanges",
    allowed: "select ID needs machineRef",
  },
  // Second audit: well-formed values that the recovery, or the run, could never use.
  {
    name: "a negative resource override (the recovered pod would be refused)",
    base: machine,
    edit: { "target.overrides": { containers: [{ name: "db", resources: { limits: { memory: "-1Gi" } } }] } },
    field: "spec.target.overrides.containers[0].resources.limits[memory]",
    allowed: "must not be negative",
  },
  {
    name: "a request above the limit of the same resource",
    base: machine,
    edit: {
      "target.overrides": {
        containers: [{ name: "db", resources: { requests: { cpu: 2 }, limits: { cpu: "500m" } } }],
      },
    },
    field: "spec.target.overrides.containers[0].resources.requests",
    allowed: "a request must not exceed the limit of the same resource",
  },
  {
    name: "traffic switched to a machine the plan does not recover",
    base: plan,
    edit: { "groups.1.postActions.0": { name: "switch", traffic: { service: "web", machine: "cache" } } },
    field: "spec.groups",
    allowed: "traffic.machine must be a machine of the plan",
  },
  {
    name: "blank instructions for a manual action",
    base: plan,
    edit: { "groups.0.preActions.0.manual.instructions": " \n\t" },
    field: "spec.groups[0].preActions[0].manual.instructions",
    allowed: "must tell the approver what to check",
  },
  {
    name: "approvals on a single-machine run (it has no manual actions)",
    base: failoverRun,
    edit: {
      planRef: undefined,
      machineRef: { name: "db" },
      approvals: [{ step: "database/confirm", approvedBy: "a" }],
    },
    field: "spec.approvals",
    allowed: "approvals apply only to Test, Planned and Unplanned runs of a plan",
  },
  {
    name: "approvals on a Reprotect run (the plan's actions do not run)",
    base: () => failoverRun("Reprotect"),
    edit: { approvals: [{ step: "database/confirm", approvedBy: "a" }] },
    field: "spec.approvals",
    allowed: "approvals apply only to Test, Planned and Unplanned runs of a plan",
  },
];

/** A change to a stored object: refused with a message naming the field, or (refused absent) accepted. */
interface TransitionCase {
  readonly name: string;
  readonly created: () => Manifest;
  /** Applied to the spec the API server stored (defaults filled in). */
  readonly edit: SpecEdit;
  readonly refused?: { readonly field: string; readonly allowed: string };
}

const optionalImmutable = "cannot be added, removed or changed after creation";

/** An optional field that may not be changed, removed or added after creation: a case each, on base (which lacks it). */
function optionalImmutableCases(
  what: string,
  base: () => Manifest,
  path: string,
  value: unknown,
  other: unknown,
): TransitionCase[] {
  const refused = { field: `spec.${path}`, allowed: optionalImmutable };
  const withValue = edited(base, { [path]: value });
  return [
    { name: `${what} changed`, created: withValue, edit: { [path]: other }, refused },
    { name: `${what} removed`, created: withValue, edit: { [path]: undefined }, refused },
    { name: `${what} added after creation`, created: base, edit: { [path]: value }, refused },
  ];
}

const machineRun = edited(failoverRun, { planRef: undefined, machineRef: { name: "db" } });
const withChanges = (...selects: readonly string[]) =>
  edited(() => failoverRun("Unplanned"), { recoveryPointChanges: selects.map((select) => ({ select })) });
const changedOnce = "can only be added at the end";

// Every transition rule: changing, removing and (for optional fields) adding the value after
// creation. The sequences in the tests after the table cover the rest: type and planRef changed,
// approvals emptied or dropped, commit and cleanup unset, changes after commit, workload name,
// site and namespace changed.
const transitionCases: readonly TransitionCase[] = [
  // FailoverRun
  {
    name: "a run's type removed",
    created: () => failoverRun("Planned"),
    edit: { type: undefined },
    refused: { field: "spec.type", allowed: "Required value" },
  },
  {
    name: "a run's planRef removed",
    created: failoverRun,
    edit: { planRef: undefined },
    refused: { field: "spec.planRef", allowed: optionalImmutable },
  },
  {
    name: "a run's planRef swapped for a machineRef",
    created: failoverRun,
    edit: { planRef: undefined, machineRef: { name: "db" } },
    refused: { field: "spec.machineRef", allowed: optionalImmutable },
  },
  {
    name: "a run's machineRef changed",
    created: machineRun,
    edit: { "machineRef.name": "other" },
    refused: { field: "spec.machineRef", allowed: optionalImmutable },
  },
  {
    name: "a run's machineRef removed",
    created: machineRun,
    edit: { machineRef: undefined },
    refused: { field: "spec.machineRef", allowed: optionalImmutable },
  },
  ...optionalImmutableCases(
    "a run's recoveryPoint",
    failoverRun,
    "recoveryPoint",
    { select: "Latest" },
    { select: "LatestAppConsistent" },
  ),
  ...optionalImmutableCases(
    "a drill's options",
    failoverRun,
    "drill",
    { namespace: "drill-a" },
    { namespace: "drill-b" },
  ),
  ...optionalImmutableCases(
    "an Unplanned run's options",
    () => failoverRun("Unplanned"),
    "unplanned",
    { shutDownSource: false },
    { shutDownSource: true },
  ),
  {
    name: "commit removed once set (it defaults to false)",
    created: edited(() => failoverRun("Planned"), { commit: true }),
    edit: { commit: undefined },
    refused: { field: "spec.commit", allowed: "cannot be set back to false" },
  },
  {
    name: "cleanup removed once set (it defaults to false)",
    created: edited(failoverRun, { cleanup: true }),
    edit: { cleanup: undefined },
    refused: { field: "spec.cleanup", allowed: "cannot be set back to false" },
  },
  {
    name: "an approval rewritten in place",
    created: edited(() => failoverRun("Planned"), { approvals: [{ step: "database/confirm", approvedBy: "alice" }] }),
    edit: { "approvals.0.approvedBy": "mallory" },
    refused: { field: "spec.approvals", allowed: "can only be added" },
  },
  {
    name: "a recovery point change inserted before the ones already asked for",
    created: withChanges("LatestAppConsistent"),
    edit: { recoveryPointChanges: [{ select: "Latest" }, { select: "LatestAppConsistent" }] },
    refused: { field: "spec.recoveryPointChanges", allowed: changedOnce },
  },
  {
    name: "recovery point changes reordered",
    created: withChanges("Latest", "LatestAppConsistent"),
    edit: { recoveryPointChanges: [{ select: "LatestAppConsistent" }, { select: "Latest" }] },
    refused: { field: "spec.recoveryPointChanges", allowed: changedOnce },
  },
  {
    name: "a repeated recovery point change rewritten (the other copy stays)",
    created: withChanges("Latest", "Latest"),
    edit: { "recoveryPointChanges.1": { select: "LatestAppConsistent" } },
    refused: { field: "spec.recoveryPointChanges", allowed: changedOnce },
  },
  {
    name: "a recovery point change appended (accepted)",
    created: withChanges("Latest", "Latest"),
    edit: { "recoveryPointChanges.2": { select: "LatestAppConsistent" } },
  },
  // ProtectedMachine
  {
    name: "a machine's workload kind changed",
    created: machine,
    edit: { "source.workloadRef.kind": "Deployment" },
    refused: { field: "spec.source.workloadRef", allowed: "immutable" },
  },
  {
    name: "a machine's workload removed",
    created: machine,
    edit: { "source.workloadRef": undefined },
    refused: { field: "spec.source.workloadRef", allowed: "Required value" },
  },
  {
    name: "a machine's target site removed",
    created: machine,
    edit: { "target.site": undefined },
    refused: { field: "spec.target.site", allowed: "Required value" },
  },
  {
    name: "a machine's target namespace removed",
    created: machine,
    edit: { "target.namespace": undefined },
    refused: { field: "spec.target.namespace", allowed: "Required value" },
  },
  ...optionalImmutableCases("a machine's storage class", machine, "target.storageClassName", "fast", "slow"),
  {
    name: "overrides changed on a machine with a storage class (accepted)",
    created: edited(machine, { "target.storageClassName": "fast" }),
    edit: { "target.overrides": { replicas: 2 } },
  },
  // ReplicationPolicy
  ...optionalImmutableCases(
    "a policy's encryption",
    policy,
    "encryption",
    { keySecretRef: { name: "dr-key" } },
    { keySecretRef: { name: "new-key" } },
  ),
];

function statusMessage(error: unknown): string {
  if (!(error instanceof ApiException)) throw error;
  const body: unknown = error.body;
  const parsed = (typeof body === "string" ? JSON.parse(body) : body) as { message?: string };
  return `${error.code}: ${parsed.message ?? JSON.stringify(body)}`;
}

describe("API: dr.ksr.io CRDs on a real API server", function () {
  this.timeout(60_000);
  const cluster = useCluster("api");
  let kubectlCache: string;
  let objects: CustomObjectsApi;

  const kubectl = async (...args: string[]): Promise<string> => {
    const { stdout } = await run(
      join(cluster.state.binDir, "kubectl"),
      ["--kubeconfig", cluster.state.kubeconfig, "--cache-dir", kubectlCache, ...args],
      { maxBuffer: 16 * 1024 * 1024 },
    );
    return stdout;
  };

  const request = (manifest: Manifest) => ({
    group,
    version,
    namespace: cluster.namespace,
    plural: pluralOf(manifest.kind),
  });

  const dryRunCreate = (manifest: Manifest) =>
    objects.createNamespacedCustomObject({ ...request(manifest), body: manifest, dryRun: "All" });

  const create = async <T>(manifest: Manifest): Promise<T> =>
    (await objects.createNamespacedCustomObject({ ...request(manifest), body: manifest })) as T;

  const replace = (manifest: Manifest) =>
    objects.replaceNamespacedCustomObject({ ...request(manifest), name: manifest.metadata.name, body: manifest });

  before(async () => {
    kubectlCache = mkdtempSync(join(tmpdir(), "ksr-api-kubectl-"));
    await installCrds(cluster.kubeConfig);
    objects = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
  });
  after(() => {
    rmSync(kubectlCache, { recursive: true, force: true });
  });

  it("establishes the four CRDs, and installing again changes nothing", async () => {
    await installCrds(cluster.kubeConfig);
    const api = cluster.kubeConfig.makeApiClient(ApiextensionsV1Api);
    for (const definition of kinds) {
      const crd = await api.readCustomResourceDefinition({ name: crdName(definition) });
      ok(
        crd.status?.conditions?.some((c) => c.type === "Established" && c.status === "True"),
        definition.kind,
      );
      deepStrictEqual(crd.spec.names.categories, ["dr"]);
    }
  });

  it("`kubectl apply -f crds/` establishes all four CRDs", async () => {
    const applied = await kubectl("apply", "-f", join(packageRoot, "crds"));
    strictEqual(applied.trim().split("\n").length, kinds.length, applied);
    const established = await kubectl(
      "wait",
      "--for=condition=Established",
      "--timeout=30s",
      ...kinds.map((definition) => `crd/${crdName(definition)}`),
    );
    strictEqual(established.match(/condition met/g)?.length, kinds.length, established);
  });

  it("accepts every example with --dry-run=server", async () => {
    const examples = join(packageRoot, "examples");
    const output = await kubectl(
      "apply",
      "--dry-run=server",
      "-n",
      cluster.namespace,
      "-f",
      examples,
      "-f",
      join(examples, "runs"),
    );
    const lines = output.trim().split("\n");
    for (const line of lines) match(line, /\(server dry run\)$/);
    for (const kind of ["replicationpolicy", "protectedmachine", "recoveryplan", "failoverrun"])
      ok(
        lines.some((line) => line.startsWith(`${kind}.${group}/`)),
        `${kind} in:\n${output}`,
      );
    strictEqual(
      lines.filter((line) => line.startsWith(`failoverrun.${group}/`)).length,
      readdirSync(join(examples, "runs")).length,
    );
  });

  describe("rejects invalid manifests with a message naming the field and what is allowed", () => {
    it("accepts the valid bases the cases start from", async () => {
      for (const base of [policy(), machine(), plan(), failoverRun(), failoverRun("Planned"), failoverRun("Unplanned")])
        await dryRunCreate(base);
    });
    for (const invalid of invalidCases) {
      it(invalid.name, async () => {
        const manifest = applyEdit(invalid.base(), invalid.edit);
        const message = await dryRunCreate(manifest).then(
          () => fail(`the API server accepted ${JSON.stringify(manifest.spec)}`),
          statusMessage,
        );
        ok(message.startsWith("422:"), message);
        ok(message.includes(`${invalid.field}:`), `expected the field ${invalid.field} in: ${message}`);
        ok(message.includes(invalid.allowed), `expected "${invalid.allowed}" in: ${message}`);
      });
    }
  });

  describe("immutability and one-way fields (transition rules)", () => {
    const rejectsUpdate = async (manifest: Manifest, field: string, allowed: string) => {
      const message = await replace(manifest).then(() => fail("the update was accepted"), statusMessage);
      ok(message.includes(`${field}:`) && message.includes(allowed), message);
    };
    const stored = async (manifest: Manifest): Promise<Manifest> =>
      (await objects.getNamespacedCustomObject({ ...request(manifest), name: manifest.metadata.name })) as Manifest;

    for (const [index, transition] of transitionCases.entries()) {
      it(transition.name, async () => {
        const created = await create<Manifest>({ ...transition.created(), metadata: { name: `transition-${index}` } });
        const changed = applyEdit(structuredClone(created), transition.edit);
        if (transition.refused === undefined) await replace(changed);
        else await rejectsUpdate(changed, transition.refused.field, transition.refused.allowed);
      });
    }

    it("a FailoverRun's type and target cannot change; approvals only grow; commit cannot be undone", async () => {
      const planned = await create<Manifest>({
        ...failoverRun("Planned"),
        spec: { ...failoverRun("Planned").spec, approvals: [{ step: "database/confirm", approvedBy: "alice" }] },
      });
      await rejectsUpdate({ ...planned, spec: { ...planned.spec, type: "Unplanned" } }, "spec.type", "immutable");
      await rejectsUpdate(
        { ...planned, spec: { ...planned.spec, planRef: { name: "other" } } },
        "spec.planRef",
        "immutable",
      );
      await rejectsUpdate(
        { ...planned, spec: { ...planned.spec, approvals: [] } },
        "spec.approvals",
        "can only be added",
      );
      // Allowed changes: a new approval, then commit.
      const approved = (await replace({
        ...planned,
        spec: {
          ...planned.spec,
          approvals: [...(planned.spec.approvals as unknown[]), { step: "web/announce", approvedBy: "bob" }],
        },
      })) as Manifest;
      const committed = (await replace({ ...approved, spec: { ...approved.spec, commit: true } })) as Manifest;
      await rejectsUpdate(
        { ...committed, spec: { ...committed.spec, commit: false } },
        "spec.commit",
        "cannot be set back",
      );
      strictEqual((await stored(planned)).spec.commit, true);
    });

    it("approvals and recovery point changes cannot be dropped by removing the whole list, nor changed after commit", async () => {
      const run = await create<Manifest>({
        ...failoverRun("Unplanned"),
        metadata: { name: "run-lists" },
        spec: {
          ...failoverRun("Unplanned").spec,
          approvals: [{ step: "database/confirm", approvedBy: "alice" }],
          recoveryPointChanges: [{ select: "LatestAppConsistent" }],
        },
      });
      const without = (field: string) => {
        const spec = { ...run.spec };
        delete spec[field]; // eslint-disable-line @typescript-eslint/no-dynamic-delete
        return { ...run, spec };
      };
      await rejectsUpdate(without("approvals"), "spec.approvals", "can only be added");
      await rejectsUpdate(without("recoveryPointChanges"), "spec.recoveryPointChanges", "can only be added");
      await rejectsUpdate(
        { ...run, spec: { ...run.spec, recoveryPointChanges: [{ select: "Latest" }] } },
        "spec.recoveryPointChanges",
        "can only be added",
      );
      const committed = (await replace({ ...run, spec: { ...run.spec, commit: true } })) as Manifest;
      await rejectsUpdate(
        {
          ...committed,
          spec: {
            ...committed.spec,
            recoveryPointChanges: [...(committed.spec.recoveryPointChanges as unknown[]), { select: "Latest" }],
          },
        },
        "spec.recoveryPointChanges",
        "cannot be changed once the failover is committed",
      );
    });

    it("a drill's cleanup cannot be undone", async () => {
      const drill = await create<Manifest>({ ...failoverRun("Test"), spec: { ...failoverRun().spec, cleanup: true } });
      await rejectsUpdate({ ...drill, spec: { ...drill.spec, cleanup: false } }, "spec.cleanup", "cannot be set back");
    });

    it("a ProtectedMachine's workload and target site, namespace and storage class cannot change", async () => {
      const stored = await create<Manifest>(machine());
      const spec = stored.spec as { source: Record<string, unknown>; target: Record<string, unknown> };
      const withSource = (source: Record<string, unknown>) => ({ ...stored, spec: { ...spec, source } });
      const withTarget = (target: Record<string, unknown>) => ({ ...stored, spec: { ...spec, target } });
      await rejectsUpdate(
        withSource({ ...spec.source, workloadRef: { kind: "StatefulSet", name: "other" } }),
        "spec.source.workloadRef",
        "immutable",
      );
      await rejectsUpdate(withTarget({ ...spec.target, site: "elsewhere" }), "spec.target.site", "immutable");
      await rejectsUpdate(withTarget({ ...spec.target, namespace: "other" }), "spec.target.namespace", "immutable");
      await rejectsUpdate(
        withTarget({ ...spec.target, storageClassName: "fast" }),
        "spec.target.storageClassName",
        "immutable",
      );
      // Overrides, pausing and the policy may change.
      await replace({ ...withTarget({ ...spec.target, overrides: { replicas: 1 } }), spec: { ...spec, paused: true } });
    });
  });

  it("fills in defaults on created objects", async () => {
    const createdPolicy = await create<ReplicationPolicy>({ ...policy(), metadata: { name: "defaults" } });
    deepStrictEqual(createdPolicy.spec, {
      rpoThreshold: "15m",
      recoveryPointRetention: "24h",
      crashConsistentFrequency: "5m",
      capture: "Continuous",
      compression: "zstd",
      resync: { mode: "Automatic" },
    });

    const createdMachine = await create<ProtectedMachine>({ ...machine(), metadata: { name: "defaults" } });
    strictEqual(createdMachine.spec.paused, false);
    const quiesce = createdMachine.spec.source.quiesce;
    deepStrictEqual(
      { timeout: quiesce?.timeout, onFailure: quiesce?.onFailure, http: quiesce?.pre.http },
      {
        timeout: "30s",
        onFailure: "TakeCrashConsistent",
        http: { port: 8080, path: "/", scheme: "HTTP", method: "POST" },
      },
    );

    const createdPlan = await create<RecoveryPlan>({ ...plan(), metadata: { name: "defaults" } });
    const confirm = createdPlan.spec.groups[0]?.preActions?.[0];
    deepStrictEqual([confirm?.runOn, confirm?.onFailure], [["Test", "Planned", "Unplanned"], "Abort"]);
    strictEqual(createdPlan.spec.groups[1]?.postActions?.[0]?.webhook?.method, "POST");

    const drill = await create<FailoverRun>({
      ...failoverRun("Test"),
      metadata: { name: "defaults-drill" },
      spec: { ...failoverRun("Test").spec, recoveryPoint: {}, drill: {} },
    });
    deepStrictEqual(
      [drill.spec.commit, drill.spec.cleanup, drill.spec.recoveryPoint?.select, drill.spec.drill?.isolation],
      [false, false, "LatestProcessed", "Isolated"],
    );
    const unplanned = await create<FailoverRun>({
      ...failoverRun("Unplanned"),
      metadata: { name: "defaults-unplanned" },
      spec: { ...failoverRun("Unplanned").spec, unplanned: {} },
    });
    strictEqual(unplanned.spec.unplanned?.shutDownSource, true);
  });

  it("keeps status in its subresource: create drops it, status writes leave spec and generation alone", async () => {
    const created = await create<ProtectedMachine>({
      ...machine(),
      metadata: { name: "status-split" },
      status: { phase: "Protected" },
    });
    strictEqual(created.status, undefined);
    const written = (await objects.replaceNamespacedCustomObjectStatus({
      ...request(machine()),
      name: "status-split",
      body: { ...created, spec: { ...created.spec, paused: true }, status: { phase: "Error", health: "Critical" } },
    })) as ProtectedMachine;
    deepStrictEqual(
      [written.status?.phase, written.spec.paused, written.metadata.generation],
      ["Error", false, created.metadata.generation],
    );
  });

  it("`kubectl explain protectedmachine.spec.source` prints the descriptions", async () => {
    // The aggregated OpenAPI document picks new CRDs up a moment after they are Established.
    const output = await eventually("kubectl explain to know ProtectedMachine", async () => {
      const printed = await kubectl("explain", "protectedmachine.spec.source").catch(() => "");
      return printed.includes("FIELD: source") ? printed : undefined;
    });
    match(output, /The workload to protect and how to quiesce it\./);
    match(output, /workloadRef\s+<Object> -required-/);
    match(output, /Hooks that make the application's data consistent on disk/);
    match(output, /volumeClaimTemplate names/);
  });

  it("`kubectl get dr` lists every kind, and get shows the status columns an operator asks for", async () => {
    for (const base of [policy(), machine(), plan(), failoverRun()])
      await create({ ...base, metadata: { name: "listed" } });
    const listed = await kubectl("get", "dr", "-n", cluster.namespace, "-o", "name");
    for (const definition of kinds)
      ok(listed.includes(`${definition.singular}.${group}/listed\n`), `${definition.kind} in:\n${listed}`);

    const pm = await create<Manifest>({ ...machine(), metadata: { name: "columns" } });
    await objects.replaceNamespacedCustomObjectStatus({
      ...request(pm),
      name: "columns",
      body: {
        ...pm,
        status: {
          phase: "Protected",
          health: "Warning",
          rpo: "42s",
          recoveryPoints: {
            latest: { id: "rp-7", time: new Date().toISOString(), consistency: "AppConsistent" },
            count: 7,
          },
        },
      },
    });
    const machines = await kubectl("get", "pm", "columns", "-n", cluster.namespace);
    match(machines, /^NAME\s+PHASE\s+HEALTH\s+RPO\s+LATEST-POINT\s+AGE\n/);
    match(machines, /^columns\s+Protected\s+Warning\s+42s\s+\d+s\s+\d+s$/m);

    const fr = await create<Manifest>({ ...failoverRun("Planned"), metadata: { name: "columns" } });
    await objects.replaceNamespacedCustomObjectStatus({
      ...request(fr),
      name: "columns",
      body: { ...fr, status: { phase: "Running", currentStep: "database/recover/db", rto: "1m12s" } },
    });
    const runs = await kubectl("get", "fr", "columns", "-n", cluster.namespace);
    match(runs, /^NAME\s+PLAN\s+TYPE\s+PHASE\s+STEP\s+RTO\s+AGE\n/);
    match(runs, /^columns\s+plan\s+Planned\s+Running\s+database\/recover\/db\s+1m12s\s+\d+s$/m);
  });
});
