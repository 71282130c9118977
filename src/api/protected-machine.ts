// ProtectedMachine: one workload and its volumes under replication (ASR: a
// protected VM or server), with where and how it comes up when failed over.
import {
  pointConsistency,
  conditions,
  dnsLabel,
  duration,
  exactlyOneOf,
  immutable,
  immutableOptional,
  localReference,
  objectName,
  observedGeneration,
  siteName,
  timestamp,
} from "./common.js";
import { ageColumn, type KindDefinition } from "./kind.js";
import { array, boolean, integer, intOrString, map, object, required, string, type MapNode } from "./schema.js";

const execHook = object({
  typeName: "ExecHook",
  description: "Runs a command in a container of every pod of the workload, like kubectl exec.",
  properties: {
    container: required(dnsLabel("Container to run the command in.")),
    command: required(
      array({
        description: "Command and arguments, not run in a shell unless you call one (e.g. [sh, -c, '...']).",
        minItems: 1,
        maxItems: 32,
        listType: "atomic",
        items: string({ description: "One argument.", maxLength: 4096 }),
      }),
    ),
  },
});

const httpHook = object({
  typeName: "HttpHook",
  description: "Sends an HTTP request to every pod of the workload; any 2xx answer is success.",
  properties: {
    port: required(integer({ description: "Port on the pod's IP.", format: "int32", minimum: 1, maximum: 65535 })),
    path: string({
      description: "Request path.",
      default: "/",
      maxLength: 1024,
      rules: [{ rule: "self.startsWith('/')", message: "must be an absolute path starting with '/'" }],
    }),
    scheme: string({ description: "HTTP or HTTPS.", enum: ["HTTP", "HTTPS"] as const, default: "HTTP" }),
    method: string({ description: "Request method.", enum: ["POST", "PUT", "GET"] as const, default: "POST" }),
  },
});

const hook = (description: string) =>
  object({
    typeName: "QuiesceHook",
    description: `${description} Set exactly one of exec or http.`,
    properties: { exec: execHook, http: httpHook },
    rules: [exactlyOneOf(["exec", "http"], "a quiesce hook")],
  });

const quiesce = object({
  typeName: "QuiesceSpec",
  description:
    "Hooks that make the application's data consistent on disk for an app-consistent recovery point (e.g. CHECKPOINT and fsfreeze for a database). The point is taken between pre and post. Absent: only crash-consistent points, whatever the policy asks.",
  properties: {
    pre: required(hook("Runs before the point: flush and pause writes.")),
    post: hook("Runs after the point, also when pre or the point failed: resume writes."),
    timeout: duration({
      description: "Longest time each hook may take; a hook that takes longer counts as failed.",
      min: "1s",
      max: "10m",
      default: "30s",
    }),
    onFailure: string({
      description:
        "What to do when a hook fails. TakeCrashConsistent: take the point anyway, recorded as crash-consistent (never overstated). SkipPoint: take no point this time.",
      enum: ["TakeCrashConsistent", "SkipPoint"] as const,
      default: "TakeCrashConsistent",
    }),
  },
});

const source = object({
  typeName: "SourceSpec",
  description: "The workload to protect and how to quiesce it.",
  properties: {
    workloadRef: required(
      object({
        typeName: "WorkloadReference",
        description:
          "The workload in the machine's namespace whose volumes are replicated. Immutable: protect another workload with another ProtectedMachine.",
        properties: {
          kind: required(
            string({
              description: "Kind of the workload (group apps for StatefulSet and Deployment, core for Pod).",
              typeName: "WorkloadKind",
              enum: ["StatefulSet", "Deployment", "Pod"] as const,
            }),
          ),
          name: required(objectName("Name of the workload.")),
        },
        rules: [immutable("spec.source.workloadRef")],
      }),
    ),
    volumes: array({
      description:
        "Names of the workload's pod volumes to replicate (for a StatefulSet: volumeClaimTemplate names). Absent: every PersistentVolumeClaim the workload mounts.",
      minItems: 1,
      maxItems: 32,
      listType: "set",
      items: dnsLabel("A volume name from the workload's pod template."),
    }),
    quiesce,
  },
});

const stringMap = (description: string, maxProperties: number, maxValueLength: number): MapNode =>
  map({
    description,
    maxProperties,
    values: string({ description: "A value.", maxLength: maxValueLength }),
  });

const quantityMap = (description: string) =>
  map({
    description,
    maxProperties: 8,
    values: intOrString({
      description: "A resource quantity, e.g. 500m or 2Gi.",
      maxLength: 32,
      rules: [
        {
          rule: "isQuantity(string(self))",
          message: "must be a Kubernetes quantity such as 500m, 2 or 2Gi",
        },
        {
          // A negative quantity is well-formed, and the API server refuses the recovered pod for it: at failover.
          rule: "!isQuantity(string(self)) || quantity(string(self)).compareTo(quantity('0')) >= 0",
          message: "must not be negative: the recovered pods would be refused",
        },
      ],
    }),
  });

const containerOverride = object({
  typeName: "ContainerOverride",
  description: "Changes to one container of the recovered workload.",
  properties: {
    name: required(dnsLabel("Name of the container in the workload's pod template.")),
    image: string({ description: "Image to run instead of the original's.", minLength: 1, maxLength: 1024 }),
    env: array({
      description: "Environment variables to set or replace.",
      maxItems: 64,
      listType: "map",
      listMapKeys: ["name"],
      items: object({
        typeName: "EnvOverride",
        description: "One environment variable.",
        properties: {
          name: required(
            string({
              description: "Variable name.",
              minLength: 1,
              maxLength: 256,
              rules: [
                {
                  rule: "self.matches('^[-._a-zA-Z][-._a-zA-Z0-9]*$')",
                  message:
                    "must be an environment variable name: letters, digits, '_', '-' and '.', not starting with a digit",
                },
              ],
            }),
          ),
          value: string({ description: "Variable value.", maxLength: 32768 }),
        },
      }),
    }),
    resources: object({
      typeName: "ResourceOverride",
      description: "Compute resources (the recovery site may be smaller or larger).",
      properties: {
        requests: quantityMap("Requested resources by name (cpu, memory, ...)."),
        limits: quantityMap("Resource limits by name; none below the request of the same resource given here."),
      },
      rules: [
        {
          // Values are int-or-string, so each is read through its string form.
          rule: "!has(self.requests) || !has(self.limits) || self.requests.all(name, !(name in self.limits) || !isQuantity(string(self.requests[name])) || !isQuantity(string(self.limits[name])) || quantity(string(self.requests[name])).compareTo(quantity(string(self.limits[name]))) <= 0)",
          message: "a request must not exceed the limit of the same resource: the recovered pods would be refused",
          fieldPath: ".requests",
        },
      ],
    }),
  },
});

const target = object({
  typeName: "TargetSpec",
  description: "Where the machine is replicated to and how the recovered workload differs from the original.",
  properties: {
    site: required(
      siteName(
        "Recovery site: the value of the topology.dr.ksr.io/site node label where replicas live and the workload is recovered. Immutable.",
      ),
    ),
    namespace: required(
      dnsLabel("Namespace in which the recovered workload and its volumes are created on failover. Immutable."),
    ),
    storageClassName: objectName(
      "StorageClass of the replica volumes in the recovery site. Absent: the cluster default. Immutable.",
    ),
    overrides: object({
      typeName: "RecoveryOverrides",
      description:
        "Changes applied to the recovered workload (ASR: compute and network settings of the target VM). Absent fields keep the original's values.",
      properties: {
        replicas: integer({
          description: "Replica count of the recovered StatefulSet or Deployment.",
          format: "int32",
          // 0 would "recover" a workload that never runs.
          minimum: 1,
          maximum: 1000,
        }),
        labels: stringMap("Labels to add to the recovered workload's pods.", 32, 63),
        annotations: stringMap("Annotations to add to the recovered workload's pods.", 32, 4096),
        nodeSelector: stringMap("Node selector for the recovered pods, added to the recovery-site selector.", 16, 63),
        serviceAccountName: objectName("Service account of the recovered pods."),
        containers: array({
          description: "Per-container changes.",
          maxItems: 16,
          listType: "map",
          listMapKeys: ["name"],
          items: containerOverride,
        }),
      },
    }),
  },
  rules: [
    { ...immutable("spec.target.site"), rule: "self.site == oldSelf.site", fieldPath: ".site" },
    {
      ...immutable("spec.target.namespace"),
      rule: "self.__namespace__ == oldSelf.__namespace__",
      fieldPath: ".namespace",
    },
    immutableOptional("storageClassName", "spec.target.storageClassName"),
  ],
});

const spec = object({
  typeName: "ProtectedMachineSpec",
  description: "What to protect, under which policy, and where to recover it.",
  properties: {
    policyRef: required(localReference("PolicyReference", "The ReplicationPolicy to apply.", "ReplicationPolicy")),
    source: required(source),
    target: required(target),
    consistencyGroup: dnsLabel(
      "Machines of the same namespace and policy with the same consistencyGroup share recovery points: one barrier across their streams, so a multi-tier application recovers to one instant (ASR: replication group, up to 16 machines; the controller reports larger groups).",
    ),
    paused: boolean({
      description:
        "Stops shipping changes while true; changes are still tracked (or a resync follows) and recovery points already kept stay usable.",
      default: false,
    }),
  },
});

/** How many points status.recoveryPoints.items lists: enough for a day of 15-minute points. */
export const listedPointsLimit = 100;

const recoveryPointRef = (description: string) =>
  object({
    typeName: "RecoveryPointReference",
    description,
    properties: {
      id: required(string({ description: "Identifier, usable in a FailoverRun's recoveryPoint.id.", maxLength: 128 })),
      time: required(timestamp("When the point was taken (source clock).")),
      consistency: required(pointConsistency),
    },
  });

const bytes = (description: string) => integer({ description, format: "int64", minimum: 0 });

const volumeStatus = object({
  typeName: "VolumeStatus",
  description: "Replication figures of one volume.",
  properties: {
    name: required(string({ description: "Volume name in the workload's pod template.", maxLength: 63 })),
    claimName: string({ description: "Source PersistentVolumeClaim.", maxLength: 253 }),
    replicaClaimName: string({ description: "Replica PersistentVolumeClaim in the recovery site.", maxLength: 253 }),
    captureMode: string({
      description: "tree: Filesystem volume tracked by file events; block: periodic block hash scan.",
      typeName: "VolumeCaptureMode",
      enum: ["tree", "block"] as const,
    }),
    capacityBytes: bytes("Size of the source volume."),
    pendingBytes: bytes("Changes captured but not yet applied at the recovery site."),
    lastAppliedSequence: bytes("Sequence number of the last change applied at the recovery site."),
    capturedSequence: bytes(
      "From the agent's latest report: every change it observed before capturedTime has a sequence number at or below this one. lastAppliedSequence at or above it: the recovery site holds all of them.",
    ),
    capturedTime: timestamp("The agent's clock when it last reported capturedSequence (millisecond precision)."),
    lastChangeSequence: bytes(
      "Sequence number of the newest change of the volume's data the agent captured (recovery point markers excluded).",
    ),
    lastChangeTime: timestamp(
      "When the agent captured that change (its clock, millisecond precision): a quiet volume keeps the time of its last write. Kept while the process server cannot be asked.",
    ),
    throughputBytesPerSecond: bytes("Recent replication throughput."),
  },
});

const replication = object({
  typeName: "ReplicationDirectionStatus",
  description:
    "Which way replication runs. Written by FailoverRuns: a failover's commit records failedOverBy, a Reprotect run reverses the direction (ASR: reprotect; failback is then a Planned run). Absent: Forward, from the machine's namespace to spec.target, never failed over.",
  properties: {
    direction: required(
      string({
        typeName: "ReplicationDirection",
        description:
          "Forward: from the machine's namespace and site to spec.target. Reverse: from spec.target.namespace in the recovery site back to the machine's namespace and its original site.",
        enum: ["Forward", "Reverse"] as const,
      }),
    ),
    sourceNamespace: required(dnsLabel("Namespace of the workload whose volumes are captured (the agents run there).")),
    sourceSite: siteName("Site the captured workload runs in (the process server runs there)."),
    targetNamespace: required(dnsLabel("Namespace whose claims the master target writes into.")),
    targetSite: required(siteName("Site of the master target; recovery points are taken there.")),
    epoch: required(
      integer({
        description:
          "Reprotects so far. It names the change streams, so each direction starts streams of its own after a block-hash comparison.",
        format: "int32",
        minimum: 0,
      }),
    ),
    failedOverBy: objectName(
      "The FailoverRun whose commit left the workload running at the target; a Reprotect run is possible while it is set.",
    ),
    reprotectedBy: objectName("The Reprotect run that set this direction."),
    fullCopyVolumes: array({
      description:
        "Volumes (status.volumes names) whose claim at the target was gone when the direction was set: they are copied in full instead of compared.",
      maxItems: 32,
      listType: "set",
      items: string({ description: "A volume name.", maxLength: 63 }),
    }),
    lastTransitionTime: timestamp("When the direction or failedOverBy last changed."),
  },
});

const status = object({
  typeName: "ProtectedMachineStatus",
  description: "Observed replication state.",
  properties: {
    observedGeneration,
    phase: string({
      typeName: "ProtectedMachinePhase",
      description: "Lifecycle phase of protection.",
      enum: [
        "Enabling",
        "InitialReplication",
        "Protected",
        "Resynchronizing",
        "Paused",
        "FailedOver",
        "Reprotecting",
        "Error",
      ] as const,
    }),
    health: string({
      description: "Healthy; Warning (e.g. RPO above the threshold); Critical (e.g. RPO above twice the threshold).",
      typeName: "MachineHealth",
      enum: ["Healthy", "Warning", "Critical"] as const,
    }),
    rpo: string({
      description: "Current recovery point objective: age of the newest change applied at the recovery site, e.g. 42s.",
      maxLength: 32,
    }),
    activeSite: string({
      description: "Site where the workload currently runs; replication goes from it to the other site.",
      maxLength: 63,
    }),
    replication,
    lastSyncTime: timestamp("When the recovery site last acknowledged changes."),
    initialReplication: object({
      typeName: "InitialReplicationStatus",
      description: "Progress of the first full copy (or block-hash comparison) in the current direction.",
      properties: {
        progressPercent: integer({ description: "Percent copied.", format: "int32", minimum: 0, maximum: 100 }),
        bytesTotal: bytes("Bytes to copy."),
        bytesReplicated: bytes("Bytes copied so far."),
        startTime: timestamp("When the copy started."),
        completionTime: timestamp("When the copy finished."),
        epoch: integer({
          description:
            "status.replication.epoch this copy belongs to: after a reprotect the comparison in the new direction is tracked afresh.",
          format: "int32",
          minimum: 0,
        }),
      },
    }),
    resync: object({
      typeName: "ResyncStatus",
      description:
        "The pending, running or last resynchronisation: both ends compare block hashes and only differing blocks are sent. When it may run is the policy's spec.resync.",
      properties: {
        state: string({
          typeName: "ResyncState",
          description:
            "Waiting: a resync is needed but held until the policy's window opens (Automatic) or `kubectl dr resync` (Manual); changes are tracked and the RPO grows meanwhile. Running: comparing and sending. Completed: the last one finished.",
          enum: ["Waiting", "Running", "Completed"] as const,
        }),
        reason: string({ description: "Why it waits, or what started it.", maxLength: 1024 }),
        nextStartTime: timestamp("When a waiting resync starts: the next opening of the policy's window."),
        requestedAt: string({
          description: "The dr.ksr.io/resync-requested-at value (set by `kubectl dr resync`) this resync served.",
          maxLength: 64,
        }),
        startTime: timestamp("When the running or last resync started."),
        completionTime: timestamp("When the last resync finished."),
        bytesTotal: bytes("Bytes of the source volumes to compare."),
        bytesCompared: bytes("Bytes compared with the replica so far."),
        bytesSent: bytes("Bytes the process server accepted during the resync (only what differed, compressed)."),
      },
    }),
    recoveryPoints: object({
      typeName: "RecoveryPointSummary",
      description: "The recovery points kept in the journal.",
      properties: {
        latest: recoveryPointRef("The newest point."),
        latestAppConsistent: recoveryPointRef("The newest app-consistent point."),
        oldest: recoveryPointRef("The oldest point still kept."),
        count: integer({ description: "Number of points kept.", format: "int32", minimum: 0 }),
        items: array({
          description: `The points a failover can select by id, newest first, at most ${listedPointsLimit}: those between oldest and latest (of the volume with the most of them), so every volume has a point at or before each (\`kubectl dr points\`).`,
          maxItems: listedPointsLimit,
          listType: "atomic",
          items: recoveryPointRef("A retained point."),
        }),
      },
    }),
    volumes: array({
      description: "Per-volume figures.",
      maxItems: 32,
      listType: "map",
      listMapKeys: ["name"],
      items: volumeStatus,
    }),
    conditions,
  },
});

export const protectedMachine: KindDefinition = {
  kind: "ProtectedMachine",
  plural: "protectedmachines",
  singular: "protectedmachine",
  shortNames: ["pm"],
  description:
    "ProtectedMachine replicates a workload's volumes to a recovery site under a ReplicationPolicy and says how to recover it there (ASR: protected item).",
  spec,
  status,
  printerColumns: [
    { name: "Phase", type: "string", jsonPath: ".status.phase", description: "Protection phase." },
    { name: "Health", type: "string", jsonPath: ".status.health", description: "Replication health." },
    { name: "RPO", type: "string", jsonPath: ".status.rpo", description: "Current RPO." },
    {
      name: "Latest-Point",
      type: "date",
      jsonPath: ".status.recoveryPoints.latest.time",
      description: "Age of the newest recovery point.",
    },
    {
      name: "Policy",
      type: "string",
      jsonPath: ".spec.policyRef.name",
      description: "ReplicationPolicy.",
      priority: 1,
    },
    {
      name: "Active-Site",
      type: "string",
      jsonPath: ".status.activeSite",
      description: "Site the workload runs in now.",
      priority: 1,
    },
    {
      name: "Direction",
      type: "string",
      jsonPath: ".status.replication.direction",
      description: "Forward, or Reverse after a reprotect.",
      priority: 1,
    },
    {
      name: "Group",
      type: "string",
      jsonPath: ".spec.consistencyGroup",
      description: "Consistency group.",
      priority: 1,
    },
    ageColumn,
  ],
  selectableFields: [".spec.policyRef.name", ".spec.consistencyGroup"],
};
