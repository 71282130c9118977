// Generated from the schemas in src/api/ by `npm run gen:api`; do not edit.
import type { Condition, ConditionStatus } from "../runtime/conditions.js";
import { resourceType, type ObjectMeta } from "../runtime/objects.js";

export type { Condition, ConditionStatus };

/** ReplicationPolicy sets recovery point frequency and retention, capture mode, compression, encryption at rest, bandwidth and resync behaviour for the ProtectedMachines that reference it (ASR: replication policy). */
export interface ReplicationPolicy {
  apiVersion: "dr.ksr.io/v1alpha1";
  kind: "ReplicationPolicy";
  metadata: ObjectMeta;
  spec: ReplicationPolicySpec;
  status?: ReplicationPolicyStatus;
}

/** ProtectedMachine replicates a workload's volumes to a recovery site under a ReplicationPolicy and says how to recover it there (ASR: protected item). */
export interface ProtectedMachine {
  apiVersion: "dr.ksr.io/v1alpha1";
  kind: "ProtectedMachine";
  metadata: ObjectMeta;
  spec: ProtectedMachineSpec;
  status?: ProtectedMachineStatus;
}

/** RecoveryPlan recovers several ProtectedMachines in ordered groups with actions between them: scripts, manual approvals, waits, traffic switches and webhooks (ASR: recovery plan). */
export interface RecoveryPlan {
  apiVersion: "dr.ksr.io/v1alpha1";
  kind: "RecoveryPlan";
  metadata: ObjectMeta;
  spec: RecoveryPlanSpec;
  status?: RecoveryPlanStatus;
}

/** FailoverRun performs one DR operation on a RecoveryPlan or a single ProtectedMachine: a drill (Test), a Planned or Unplanned failover, or Reprotect; then commit or cleanup. Like a Job, one object per operation (ASR: test failover, failover, commit, reprotect, failback). */
export interface FailoverRun {
  apiVersion: "dr.ksr.io/v1alpha1";
  kind: "FailoverRun";
  metadata: ObjectMeta;
  spec: FailoverRunSpec;
  status?: FailoverRunStatus;
}

/** Where ReplicationPolicy objects live in the API, for the runtime's client and caches. */
export const replicationPolicies = resourceType<ReplicationPolicy>({
  group: "dr.ksr.io",
  version: "v1alpha1",
  kind: "ReplicationPolicy",
  plural: "replicationpolicies",
  namespaced: true,
});

/** Where ProtectedMachine objects live in the API, for the runtime's client and caches. */
export const protectedMachines = resourceType<ProtectedMachine>({
  group: "dr.ksr.io",
  version: "v1alpha1",
  kind: "ProtectedMachine",
  plural: "protectedmachines",
  namespaced: true,
});

/** Where RecoveryPlan objects live in the API, for the runtime's client and caches. */
export const recoveryPlans = resourceType<RecoveryPlan>({
  group: "dr.ksr.io",
  version: "v1alpha1",
  kind: "RecoveryPlan",
  plural: "recoveryplans",
  namespaced: true,
});

/** Where FailoverRun objects live in the API, for the runtime's client and caches. */
export const failoverRuns = resourceType<FailoverRun>({
  group: "dr.ksr.io",
  version: "v1alpha1",
  kind: "FailoverRun",
  plural: "failoverruns",
  namespaced: true,
});

/** Continuous: changes stream as they happen. Interval: changes are collected and shipped every syncInterval (like Hyper-V Replica), which costs RPO but saves bandwidth on busy volumes. */
export type Capture = "Continuous" | "Interval";

/** Compression of changes between the agent, the process server and the master target. */
export type Compression = "zstd" | "lz4" | "none";

/** A Secret in the policy's namespace holding the 32-byte key. */
export interface SecretKeyReference {
  /** Name of the Secret. */
  name: string;
  /** Key within the Secret's data holding exactly 32 bytes. */
  key: string;
}

/** Encryption at rest of cached and journalled data with AES-256-GCM under the customer's key. Absent: data at rest is not encrypted (it is always encrypted in transit by mutual TLS). Immutable: data already written is encrypted with this key. */
export interface EncryptionSpec {
  /** A Secret in the policy's namespace holding the 32-byte key. */
  keySecretRef: SecretKeyReference;
}

/** When automatic resynchronisation may run (ASR runs it outside office hours). Absent: at any time. A window whose end is before its start spans midnight. It never holds the initial replication or a reprotect's comparison. */
export interface ResyncWindow {
  /** Start of the window, HH:MM in timeZone. */
  start: string;
  /** End of the window, HH:MM in timeZone. */
  end: string;
  /** IANA time zone of start and end, e.g. Europe/Berlin. */
  timeZone: string;
  /** Days of the week the window opens on. Absent: every day. */
  days?: ("Monday" | "Tuesday" | "Wednesday" | "Thursday" | "Friday" | "Saturday" | "Sunday")[];
}

/** Resynchronisation after a gap (lost cache, forced shutdown, resize): both ends compare block hashes and send only the differences. */
export interface ResyncSpec {
  /** Automatic: resync starts on its own (inside window, if set). Manual: the machine waits in Resynchronizing until `kubectl dr resync` is run. */
  mode: "Automatic" | "Manual";
  /** When automatic resynchronisation may run (ASR runs it outside office hours). Absent: at any time. A window whose end is before its start spans midnight. It never holds the initial replication or a reprotect's comparison. */
  window?: ResyncWindow;
}

/** How machines that use this policy are replicated and how long their recovery points are kept. */
export interface ReplicationPolicySpec {
  /** RPO above which a machine's health turns Warning (Critical at twice the threshold) and an RpoThresholdExceeded event is emitted. Alerting only: replication is never throttled or stopped because of it. A duration from 30s to 24h. */
  rpoThreshold: string;
  /** How far back recovery points are kept. Older points and their journal records are pruned together. A duration from 1h to 720h (30 days). */
  recoveryPointRetention: string;
  /** How often a crash-consistent recovery point (a marker in the change stream) is taken. A duration from 30s to 1h. */
  crashConsistentFrequency: string;
  /** How often an app-consistent recovery point is taken by running the machine's quiesce hooks (spec.source.quiesce of each ProtectedMachine). Absent: off, only crash-consistent points are taken. The controller reports machines without hooks (condition AppConsistencyUnavailable) because the hooks live on the machine, not here. A duration from 5m to 12h. */
  appConsistentFrequency?: string;
  /** Continuous: changes stream as they happen. Interval: changes are collected and shipped every syncInterval (like Hyper-V Replica), which costs RPO but saves bandwidth on busy volumes. */
  capture: Capture;
  /** How often changes are shipped when capture is Interval. Required then, forbidden otherwise. */
  syncInterval?: "30s" | "5m" | "15m";
  /** Compression of changes between the agent, the process server and the master target. */
  compression: Compression;
  /** Encryption at rest of cached and journalled data with AES-256-GCM under the customer's key. Absent: data at rest is not encrypted (it is always encrypted in transit by mutual TLS). Immutable: data already written is encrypted with this key. */
  encryption?: EncryptionSpec;
  /** Upper bound on replication traffic per machine, in bytes per second, as a Kubernetes quantity (e.g. 50Mi). Absent: unlimited. */
  bandwidthLimit?: string;
  /** Resynchronisation after a gap (lost cache, forced shutdown, resize): both ends compare block hashes and send only the differences. */
  resync: ResyncSpec;
}

/** Observed state of the policy. */
export interface ReplicationPolicyStatus {
  /** The metadata.generation most recently acted on by the controller. */
  observedGeneration?: number;
  /** Number of ProtectedMachines that use this policy. */
  protectedMachines?: number;
  /** Standard conditions: the latest observations of the object's state. Ready summarises the others; each carries the generation it was computed from. */
  conditions?: Condition[];
}

/** The ReplicationPolicy to apply. */
export interface PolicyReference {
  /** Name of the ReplicationPolicy in the same namespace. */
  name: string;
}

/** Kind of the workload (group apps for StatefulSet and Deployment, core for Pod). */
export type WorkloadKind = "StatefulSet" | "Deployment" | "Pod";

/** The workload in the machine's namespace whose volumes are replicated. Immutable: protect another workload with another ProtectedMachine. */
export interface WorkloadReference {
  /** Kind of the workload (group apps for StatefulSet and Deployment, core for Pod). */
  kind: WorkloadKind;
  /** Name of the workload. */
  name: string;
}

/** Runs a command in a container of every pod of the workload, like kubectl exec. */
export interface ExecHook {
  /** Container to run the command in. */
  container: string;
  /** Command and arguments, not run in a shell unless you call one (e.g. [sh, -c, '...']). */
  command: string[];
}

/** Sends an HTTP request to every pod of the workload; any 2xx answer is success. */
export interface HttpHook {
  /** Port on the pod's IP. */
  port: number;
  /** Request path. */
  path: string;
  /** HTTP or HTTPS. */
  scheme: "HTTP" | "HTTPS";
  /** Request method. */
  method: "POST" | "PUT" | "GET";
}

/** Runs before the point: flush and pause writes. Set exactly one of exec or http. */
export interface QuiesceHook {
  /** Runs a command in a container of every pod of the workload, like kubectl exec. */
  exec?: ExecHook;
  /** Sends an HTTP request to every pod of the workload; any 2xx answer is success. */
  http?: HttpHook;
}

/** Hooks that make the application's data consistent on disk for an app-consistent recovery point (e.g. CHECKPOINT and fsfreeze for a database). The point is taken between pre and post. Absent: only crash-consistent points, whatever the policy asks. */
export interface QuiesceSpec {
  /** Runs before the point: flush and pause writes. Set exactly one of exec or http. */
  pre: QuiesceHook;
  /** Runs after the point, also when pre or the point failed: resume writes. Set exactly one of exec or http. */
  post?: QuiesceHook;
  /** Longest time each hook may take; a hook that takes longer counts as failed. A duration from 1s to 10m. */
  timeout: string;
  /** What to do when a hook fails. TakeCrashConsistent: take the point anyway, recorded as crash-consistent (never overstated). SkipPoint: take no point this time. */
  onFailure: "TakeCrashConsistent" | "SkipPoint";
}

/** The workload to protect and how to quiesce it. */
export interface SourceSpec {
  /** The workload in the machine's namespace whose volumes are replicated. Immutable: protect another workload with another ProtectedMachine. */
  workloadRef: WorkloadReference;
  /** Names of the workload's pod volumes to replicate (for a StatefulSet: volumeClaimTemplate names). Absent: every PersistentVolumeClaim the workload mounts. */
  volumes?: string[];
  /** Hooks that make the application's data consistent on disk for an app-consistent recovery point (e.g. CHECKPOINT and fsfreeze for a database). The point is taken between pre and post. Absent: only crash-consistent points, whatever the policy asks. */
  quiesce?: QuiesceSpec;
}

/** One environment variable. */
export interface EnvOverride {
  /** Variable name. */
  name: string;
  /** Variable value. */
  value?: string;
}

/** Compute resources (the recovery site may be smaller or larger). */
export interface ResourceOverride {
  /** Requested resources by name (cpu, memory, ...). */
  requests?: Record<string, number | string>;
  /** Resource limits by name; none below the request of the same resource given here. */
  limits?: Record<string, number | string>;
}

/** Changes to one container of the recovered workload. */
export interface ContainerOverride {
  /** Name of the container in the workload's pod template. */
  name: string;
  /** Image to run instead of the original's. */
  image?: string;
  /** Environment variables to set or replace. */
  env?: EnvOverride[];
  /** Compute resources (the recovery site may be smaller or larger). */
  resources?: ResourceOverride;
}

/** Changes applied to the recovered workload (ASR: compute and network settings of the target VM). Absent fields keep the original's values. */
export interface RecoveryOverrides {
  /** Replica count of the recovered StatefulSet or Deployment. */
  replicas?: number;
  /** Labels to add to the recovered workload's pods. */
  labels?: Record<string, string>;
  /** Annotations to add to the recovered workload's pods. */
  annotations?: Record<string, string>;
  /** Node selector for the recovered pods, added to the recovery-site selector. */
  nodeSelector?: Record<string, string>;
  /** Service account of the recovered pods. */
  serviceAccountName?: string;
  /** Per-container changes. */
  containers?: ContainerOverride[];
}

/** Where the machine is replicated to and how the recovered workload differs from the original. */
export interface TargetSpec {
  /** Recovery site: the value of the topology.dr.ksr.io/site node label where replicas live and the workload is recovered. Immutable. */
  site: string;
  /** Namespace in which the recovered workload and its volumes are created on failover. Immutable. */
  namespace: string;
  /** StorageClass of the replica volumes in the recovery site. Absent: the cluster default. Immutable. */
  storageClassName?: string;
  /** Changes applied to the recovered workload (ASR: compute and network settings of the target VM). Absent fields keep the original's values. */
  overrides?: RecoveryOverrides;
}

/** What to protect, under which policy, and where to recover it. */
export interface ProtectedMachineSpec {
  /** The ReplicationPolicy to apply. */
  policyRef: PolicyReference;
  /** The workload to protect and how to quiesce it. */
  source: SourceSpec;
  /** Where the machine is replicated to and how the recovered workload differs from the original. */
  target: TargetSpec;
  /** Machines of the same namespace and policy with the same consistencyGroup share recovery points: one barrier across their streams, so a multi-tier application recovers to one instant (ASR: replication group, up to 16 machines; the controller reports larger groups). */
  consistencyGroup?: string;
  /** Stops shipping changes while true; changes are still tracked (or a resync follows) and recovery points already kept stay usable. */
  paused: boolean;
}

/** Lifecycle phase of protection. */
export type ProtectedMachinePhase =
  | "Enabling"
  | "InitialReplication"
  | "Protected"
  | "Resynchronizing"
  | "Paused"
  | "FailedOver"
  | "Reprotecting"
  | "Error";

/** Healthy; Warning (e.g. RPO above the threshold); Critical (e.g. RPO above twice the threshold). */
export type MachineHealth = "Healthy" | "Warning" | "Critical";

/** Forward: from the machine's namespace and site to spec.target. Reverse: from spec.target.namespace in the recovery site back to the machine's namespace and its original site. */
export type ReplicationDirection = "Forward" | "Reverse";

/** Which way replication runs. Written by FailoverRuns: a failover's commit records failedOverBy, a Reprotect run reverses the direction (ASR: reprotect; failback is then a Planned run). Absent: Forward, from the machine's namespace to spec.target, never failed over. */
export interface ReplicationDirectionStatus {
  /** Forward: from the machine's namespace and site to spec.target. Reverse: from spec.target.namespace in the recovery site back to the machine's namespace and its original site. */
  direction: ReplicationDirection;
  /** Namespace of the workload whose volumes are captured (the agents run there). */
  sourceNamespace: string;
  /** Site the captured workload runs in (the process server runs there). */
  sourceSite?: string;
  /** Namespace whose claims the master target writes into. */
  targetNamespace: string;
  /** Site of the master target; recovery points are taken there. */
  targetSite: string;
  /** Reprotects so far. It names the change streams, so each direction starts streams of its own after a block-hash comparison. */
  epoch: number;
  /** The FailoverRun whose commit left the workload running at the target; a Reprotect run is possible while it is set. */
  failedOverBy?: string;
  /** The Reprotect run that set this direction. */
  reprotectedBy?: string;
  /** Volumes (status.volumes names) whose claim at the target was gone when the direction was set: they are copied in full instead of compared. */
  fullCopyVolumes?: string[];
  /** When the direction or failedOverBy last changed. */
  lastTransitionTime?: string;
}

/** Progress of the first full copy (or block-hash comparison) in the current direction. */
export interface InitialReplicationStatus {
  /** Percent copied. */
  progressPercent?: number;
  /** Bytes to copy. */
  bytesTotal?: number;
  /** Bytes copied so far. */
  bytesReplicated?: number;
  /** When the copy started. */
  startTime?: string;
  /** When the copy finished. */
  completionTime?: string;
  /** status.replication.epoch this copy belongs to: after a reprotect the comparison in the new direction is tracked afresh. */
  epoch?: number;
}

/** Waiting: a resync is needed but held until the policy's window opens (Automatic) or `kubectl dr resync` (Manual); changes are tracked and the RPO grows meanwhile. Running: comparing and sending. Completed: the last one finished. */
export type ResyncState = "Waiting" | "Running" | "Completed";

/** The pending, running or last resynchronisation: both ends compare block hashes and only differing blocks are sent. When it may run is the policy's spec.resync. */
export interface ResyncStatus {
  /** Waiting: a resync is needed but held until the policy's window opens (Automatic) or `kubectl dr resync` (Manual); changes are tracked and the RPO grows meanwhile. Running: comparing and sending. Completed: the last one finished. */
  state?: ResyncState;
  /** Why it waits, or what started it. */
  reason?: string;
  /** When a waiting resync starts: the next opening of the policy's window. */
  nextStartTime?: string;
  /** The dr.ksr.io/resync-requested-at value (set by `kubectl dr resync`) this resync served. */
  requestedAt?: string;
  /** When the running or last resync started. */
  startTime?: string;
  /** When the last resync finished. */
  completionTime?: string;
  /** Bytes of the source volumes to compare. */
  bytesTotal?: number;
  /** Bytes compared with the replica so far. */
  bytesCompared?: number;
  /** Bytes the process server accepted during the resync (only what differed, compressed). */
  bytesSent?: number;
}

/** The consistency the point really has: AppConsistent (quiesce hooks succeeded around a quiet cut), CrashConsistent (no write was in flight at the cut), BestEffort (writes were still arriving; each file is one it really had, but files may come from slightly different moments). */
export type PointConsistency = "CrashConsistent" | "AppConsistent" | "BestEffort";

/** The newest point. */
export interface RecoveryPointReference {
  /** Identifier, usable in a FailoverRun's recoveryPoint.id. */
  id: string;
  /** When the point was taken (source clock). */
  time: string;
  /** The consistency the point really has: AppConsistent (quiesce hooks succeeded around a quiet cut), CrashConsistent (no write was in flight at the cut), BestEffort (writes were still arriving; each file is one it really had, but files may come from slightly different moments). */
  consistency: PointConsistency;
}

/** The recovery points kept in the journal. */
export interface RecoveryPointSummary {
  /** The newest point. */
  latest?: RecoveryPointReference;
  /** The newest app-consistent point. */
  latestAppConsistent?: RecoveryPointReference;
  /** The oldest point still kept. */
  oldest?: RecoveryPointReference;
  /** Number of points kept. */
  count?: number;
  /** The points a failover can select by id, newest first, at most 100: those between oldest and latest (of the volume with the most of them), so every volume has a point at or before each (`kubectl dr points`). */
  items?: RecoveryPointReference[];
}

/** tree: Filesystem volume tracked by file events; block: periodic block hash scan. */
export type VolumeCaptureMode = "tree" | "block";

/** Replication figures of one volume. */
export interface VolumeStatus {
  /** Volume name in the workload's pod template. */
  name: string;
  /** Source PersistentVolumeClaim. */
  claimName?: string;
  /** Replica PersistentVolumeClaim in the recovery site. */
  replicaClaimName?: string;
  /** tree: Filesystem volume tracked by file events; block: periodic block hash scan. */
  captureMode?: VolumeCaptureMode;
  /** Size of the source volume. */
  capacityBytes?: number;
  /** Changes captured but not yet applied at the recovery site. */
  pendingBytes?: number;
  /** Sequence number of the last change applied at the recovery site. */
  lastAppliedSequence?: number;
  /** From the agent's latest report: every change it observed before capturedTime has a sequence number at or below this one. lastAppliedSequence at or above it: the recovery site holds all of them. */
  capturedSequence?: number;
  /** The agent's clock when it last reported capturedSequence (millisecond precision). */
  capturedTime?: string;
  /** Sequence number of the newest change of the volume's data the agent captured (recovery point markers excluded). */
  lastChangeSequence?: number;
  /** When the agent captured that change (its clock, millisecond precision): a quiet volume keeps the time of its last write. Kept while the process server cannot be asked. */
  lastChangeTime?: string;
  /** Recent replication throughput. */
  throughputBytesPerSecond?: number;
}

/** Observed replication state. */
export interface ProtectedMachineStatus {
  /** The metadata.generation most recently acted on by the controller. */
  observedGeneration?: number;
  /** Lifecycle phase of protection. */
  phase?: ProtectedMachinePhase;
  /** Healthy; Warning (e.g. RPO above the threshold); Critical (e.g. RPO above twice the threshold). */
  health?: MachineHealth;
  /** Current recovery point objective: age of the newest change applied at the recovery site, e.g. 42s. */
  rpo?: string;
  /** Site where the workload currently runs; replication goes from it to the other site. */
  activeSite?: string;
  /** Which way replication runs. Written by FailoverRuns: a failover's commit records failedOverBy, a Reprotect run reverses the direction (ASR: reprotect; failback is then a Planned run). Absent: Forward, from the machine's namespace to spec.target, never failed over. */
  replication?: ReplicationDirectionStatus;
  /** When the recovery site last acknowledged changes. */
  lastSyncTime?: string;
  /** Progress of the first full copy (or block-hash comparison) in the current direction. */
  initialReplication?: InitialReplicationStatus;
  /** The pending, running or last resynchronisation: both ends compare block hashes and only differing blocks are sent. When it may run is the policy's spec.resync. */
  resync?: ResyncStatus;
  /** The recovery points kept in the journal. */
  recoveryPoints?: RecoveryPointSummary;
  /** Per-volume figures. */
  volumes?: VolumeStatus[];
  /** Standard conditions: the latest observations of the object's state. Ready summarises the others; each carries the generation it was computed from. */
  conditions?: Condition[];
}

/** A batch/v1 JobTemplateSpec. The controller dry-runs the Job when it validates the plan and reports errors in the plan's Valid condition. */
export interface JobTemplate {
  /** Labels and annotations of the Job. */
  metadata?: Record<string, unknown>;
  /** A batch/v1 JobSpec. */
  spec: Record<string, unknown>;
}

/** Runs a Job in the recovery site, in the namespace the group's machines are recovered to (a drill's own namespace for Test runs). The action fails when the Job fails. */
export interface ScriptAction {
  /** A batch/v1 JobTemplateSpec. The controller dry-runs the Job when it validates the plan and reports errors in the plan's Valid condition. */
  jobTemplate: JobTemplate;
}

/** Pauses the run until someone approves this step (`kubectl dr approve RUN GROUP/ACTION`, which appends to the FailoverRun's spec.approvals). */
export interface ManualAction {
  /** What the approver must check or do before approving. */
  instructions: string;
}

/** Waits a fixed time, e.g. for caches to warm or DNS to expire. */
export interface WaitAction {
  /** How long to wait. A duration from 1s to 1h. */
  duration: string;
}

/** Switches a Service to the recovered pods of a machine (ASR: Traffic Manager failover). In Test runs the Service is copied into the drill namespace and production traffic is never touched. */
export interface TrafficAction {
  /** Name of the Service that clients use. */
  service: string;
  /** Namespace of the Service. Absent: the plan's namespace. */
  serviceNamespace?: string;
  /** ProtectedMachine of this plan whose recovered pods the Service must select afterwards: one recovered by an earlier group, or by this action's group when it is a postAction. */
  machine: string;
}

/** A Secret whose data entries are sent as request headers (e.g. Authorization); never logged. */
export interface SecretReference {
  /** Name of the Secret in the same namespace. */
  name: string;
}

/** Calls an HTTP endpoint with a JSON description of the run and step; any 2xx answer is success (ASR: runbook action). */
export interface WebhookAction {
  /** Absolute http or https URL. */
  url: string;
  /** Request method. */
  method: "POST" | "PUT";
  /** A Secret whose data entries are sent as request headers (e.g. Authorization); never logged. */
  headersSecretRef?: SecretReference;
}

/** A step run before or after a group's machines are recovered. Set exactly one of script, manual, wait, traffic, webhook. */
export interface PlanAction {
  /** Name of the action, unique within its group; approvals and step names refer to GROUP/NAME. */
  name: string;
  /** Run types the action runs in. Absent: Test, Planned and Unplanned. */
  runOn: ("Test" | "Planned" | "Unplanned")[];
  /** Abort: the run fails. Continue: the failure is recorded and the run goes on. */
  onFailure: "Abort" | "Continue";
  /** Longest the action may take before it counts as failed. Absent: no limit (useful for manual). A duration from 1s to 24h. */
  timeout?: string;
  /** Runs a Job in the recovery site, in the namespace the group's machines are recovered to (a drill's own namespace for Test runs). The action fails when the Job fails. */
  script?: ScriptAction;
  /** Pauses the run until someone approves this step (`kubectl dr approve RUN GROUP/ACTION`, which appends to the FailoverRun's spec.approvals). */
  manual?: ManualAction;
  /** Waits a fixed time, e.g. for caches to warm or DNS to expire. */
  wait?: WaitAction;
  /** Switches a Service to the recovered pods of a machine (ASR: Traffic Manager failover). In Test runs the Service is copied into the drill namespace and production traffic is never touched. */
  traffic?: TrafficAction;
  /** Calls an HTTP endpoint with a JSON description of the run and step; any 2xx answer is success (ASR: runbook action). */
  webhook?: WebhookAction;
}

/** One step of the plan: its machines are recovered together (in parallel), after every earlier group has finished. */
export interface PlanGroup {
  /** Name of the group, unique within the plan. */
  name: string;
  /** ProtectedMachines in the plan's namespace recovered by this group. */
  machines?: string[];
  /** Actions run in order before the group's machines are recovered. */
  preActions?: PlanAction[];
  /** Actions run in order after the group's machines are up. */
  postActions?: PlanAction[];
}

/** The ordered groups of the application. */
export interface RecoveryPlanSpec {
  /** Groups in recovery order. Failback runs the same order. */
  groups: PlanGroup[];
}

/** A machine the plan cannot fail over yet. */
export interface UnreadyMachine {
  /** Machine name. */
  name: string;
  /** Why, e.g. NotFound or InitialReplication. */
  reason: string;
}

/** Its type. */
export type FailoverRunType = "Test" | "Planned" | "Unplanned" | "Reprotect";

/** Its phase. */
export type FailoverRunPhase =
  "Pending" | "Running" | "WaitingForApproval" | "Succeeded" | "Failed" | "Committed" | "CleanedUp";

/** The most recent FailoverRun of this plan. */
export interface LastRunSummary {
  /** FailoverRun name. */
  name: string;
  /** Its type. */
  type?: FailoverRunType;
  /** Its phase. */
  phase?: FailoverRunPhase;
  /** When it finished. */
  completionTime?: string;
}

/** Whether the plan can run, and its last run. */
export interface RecoveryPlanStatus {
  /** The metadata.generation most recently acted on by the controller. */
  observedGeneration?: number;
  /** Number of groups. */
  groupCount?: number;
  /** Number of machines across groups. */
  machineCount?: number;
  /** Machines that are missing or not protected (not in phase Protected); the Valid condition is False while any are listed. */
  unreadyMachines?: UnreadyMachine[];
  /** The most recent FailoverRun of this plan. */
  lastRun?: LastRunSummary;
  /** Standard conditions: the latest observations of the object's state. Ready summarises the others; each carries the generation it was computed from. */
  conditions?: Condition[];
}

/** The RecoveryPlan to run. Set this or machineRef. */
export interface PlanReference {
  /** Name of the RecoveryPlan in the same namespace. */
  name: string;
}

/** A single ProtectedMachine to run on, without a plan. Set this or planRef. */
export interface MachineReference {
  /** Name of the ProtectedMachine in the same namespace. */
  name: string;
}

/** Latest: apply every pending change first, then recover (lowest data loss, longer RTO). LatestProcessed: the newest point already applied at the recovery site (lowest RTO). LatestAppConsistent: the newest app-consistent point. Time: the newest point at or before time. ID: the point with that id (single-machine runs only). */
export type RecoveryPointSelection = "Latest" | "LatestProcessed" | "LatestAppConsistent" | "Time" | "ID";

/** Which recovery point to recover each machine to. Only for Test and Unplanned runs: a Planned run first replicates every pending change (no data loss) and Reprotect recovers nothing. Absent: LatestProcessed. */
export interface RecoveryPointSelector {
  /** Latest: apply every pending change first, then recover (lowest data loss, longer RTO). LatestProcessed: the newest point already applied at the recovery site (lowest RTO). LatestAppConsistent: the newest app-consistent point. Time: the newest point at or before time. ID: the point with that id (single-machine runs only). */
  select: RecoveryPointSelection;
  /** With select: Time, recover to the newest point at or before this instant (RFC 3339). */
  time?: string;
  /** With select: ID, the recovery point id (see the ProtectedMachine's status.recoveryPoints). */
  id?: string;
}

/** Options of a Test run. */
export interface DrillSpec {
  /** Namespace the drill recovers into. Absent: ksr-drill-RUN, created and deleted by the run. */
  namespace?: string;
  /** Isolated: a NetworkPolicy lets no traffic in or out of the drill namespace except to itself and DNS. None: no fencing. */
  isolation: "Isolated" | "None";
}

/** Options of an Unplanned run. */
export interface UnplannedSpec {
  /** Try to stop the source workload before recovering, so it does not keep writing (ignored when the source site is unreachable). */
  shutDownSource: boolean;
}

/** Approval of one manual action of the plan. */
export interface Approval {
  /** The manual action approved, as GROUP/ACTION. */
  step: string;
  /** Who approved. */
  approvedBy: string;
  /** When it was approved. */
  time?: string;
  /** Free text kept with the run. */
  comment?: string;
}

/** The operation to run. Everything but approvals, commit, cleanup and notes is fixed at creation; create a new run to do something else. */
export interface FailoverRunSpec {
  /** The RecoveryPlan to run. Set this or machineRef. */
  planRef?: PlanReference;
  /** A single ProtectedMachine to run on, without a plan. Set this or planRef. */
  machineRef?: MachineReference;
  /** Test: a drill into an isolated namespace while replication continues; end it with cleanup. Planned: stop the source, replicate everything, recover without data loss. Unplanned: recover from the recovery site's journal when the source is lost. Reprotect: after a failover, replicate back from the recovery site to the original one (failback is then a Planned run). */
  type: FailoverRunType;
  /** Which recovery point to recover each machine to. Only for Test and Unplanned runs: a Planned run first replicates every pending change (no data loss) and Reprotect recovers nothing. Absent: LatestProcessed. */
  recoveryPoint?: RecoveryPointSelector;
  /** Options of a Test run. */
  drill?: DrillSpec;
  /** Options of an Unplanned run. */
  unplanned?: UnplannedSpec;
  /** Planned and Unplanned runs, before commit: move the recovered machines to another retained recovery point (ASR: change recovery point), appended by `kubectl dr change-point`. Each entry stops the recovered workloads, rolls their replicas to that point and starts them again, in the plan's order. Entries are applied in list order: they cannot be changed, removed or reordered, new ones go at the end, and none can be added once the run is committed. */
  recoveryPointChanges?: RecoveryPointSelector[];
  /** Approvals of the plan's manual actions, appended by `kubectl dr approve`. Only for Test, Planned and Unplanned runs of a plan (a machine run and a Reprotect run have no manual actions). Entries cannot be changed or removed. */
  approvals?: Approval[];
  /** Planned and Unplanned runs: make the failover final. The recovery points kept for the recovered machines are released and the run ends in phase Committed. Can be set at creation or later; never unset. */
  commit: boolean;
  /** Test runs: end the drill by deleting what it created (recovered workloads, volumes, drill namespace). Can be set at creation or later; never unset. */
  cleanup: boolean;
  /** Observations recorded with the run, e.g. what the drill showed. */
  notes?: string;
}

/** What the step does. */
export type StepAction =
  | "Validate"
  | "ShutDownSource"
  | "FinalSync"
  | "Recover"
  | "Script"
  | "Manual"
  | "Stop"
  | "Wait"
  | "Traffic"
  | "Webhook"
  | "Commit"
  | "Cleanup"
  | "Reverse";

/** Progress of the step. */
export type StepPhase = "Pending" | "Running" | "WaitingForApproval" | "Succeeded" | "Failed" | "Skipped";

/** One step of the run. A step recorded as Succeeded is never run again. */
export interface StepStatus {
  /** Unique step name, e.g. database/pre/confirm-dns or database/recover/postgres. */
  name: string;
  /** What the step does. */
  action: StepAction;
  /** Plan group the step belongs to. */
  group?: string;
  /** Machine the step acts on. */
  machine?: string;
  /** Progress of the step. */
  phase: StepPhase;
  /** When the step started. */
  startTime?: string;
  /** When the step ended. */
  endTime?: string;
  /** How many times the step was started. */
  attempts?: number;
  /** What happened, for people. */
  message?: string;
}

/** The recovery point a machine was recovered to. */
export interface UsedRecoveryPoint {
  /** Machine name. */
  machine: string;
  /** Recovery point id. */
  id: string;
  /** When the point was taken. */
  time: string;
  /** The consistency the point really has: AppConsistent (quiesce hooks succeeded around a quiet cut), CrashConsistent (no write was in flight at the cut), BestEffort (writes were still arriving; each file is one it really had, but files may come from slightly different moments). */
  consistency: PointConsistency;
}

/** Progress and results of the run. */
export interface FailoverRunStatus {
  /** The metadata.generation most recently acted on by the controller. */
  observedGeneration?: number;
  /** Overall phase. */
  phase?: FailoverRunPhase;
  /** Name of the step in progress. */
  currentStep?: string;
  /** Site recovered from. */
  sourceSite?: string;
  /** Site recovered to. */
  targetSite?: string;
  /** Namespace a Test run recovered into. */
  drillNamespace?: string;
  /** When the run started. */
  startTime?: string;
  /** When the run reached Succeeded, Failed, Committed or CleanedUp. */
  completionTime?: string;
  /** Every step, in execution order. */
  steps?: StepStatus[];
  /** The recovery point used per machine. */
  recoveryPoints?: UsedRecoveryPoint[];
  /** Measured recovery time: from the start of the run until the last machine was up, e.g. 1m12s. */
  rto?: string;
  /** Measured data-loss window: the time of the latest change the recovery site holds minus the time of the recovery point used, the worst volume of the worst machine (0s when the point holds every change the site has, however long the workload was quiet since), e.g. 40s; 0s for Planned runs. */
  dataLossWindow?: string;
  /** Standard conditions: the latest observations of the object's state. Ready summarises the others; each carries the generation it was computed from. */
  conditions?: Condition[];
}
