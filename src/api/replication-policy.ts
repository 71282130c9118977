// ReplicationPolicy: how often and how long recovery points are kept, and how
// changes travel (ASR's replication policy plus Hyper-V Replica's sync intervals).
import { conditions, duration, immutableOptional, isDuration, objectName, observedGeneration } from "./common.js";
import { ageColumn, type KindDefinition } from "./kind.js";
import { array, integer, object, required, string, type Rule } from "./schema.js";

const durationGuard = (fields: readonly string[]) => fields.map(isDuration).join(" && ");

/**
 * `shorter <= longer` between two duration fields, reported on the field the
 * message is about; skipped while either is absent or malformed (its own rule reports that).
 */
function notLongerThan(shorter: string, longer: string, reportOn: string, message: string): Rule {
  return {
    rule: `!has(self.${shorter}) || !has(self.${longer}) || !(${durationGuard([shorter, longer])}) || duration(self.${shorter}) <= duration(self.${longer})`,
    message,
    fieldPath: `.${reportOn}`,
  };
}

const timeOfDay = (description: string) =>
  required(
    string({
      description,
      maxLength: 5,
      rules: [
        {
          rule: "self.matches('^([01][0-9]|2[0-3]):[0-5][0-9]$')",
          message: "must be a time of day as HH:MM on a 24-hour clock, such as 22:30",
        },
      ],
    }),
  );

const weekdays = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"] as const;

const resyncWindow = object({
  typeName: "ResyncWindow",
  description:
    "When automatic resynchronisation may run (ASR runs it outside office hours). Absent: at any time. A window whose end is before its start spans midnight. It never holds the initial replication or a reprotect's comparison.",
  properties: {
    start: timeOfDay("Start of the window, HH:MM in timeZone."),
    end: timeOfDay("End of the window, HH:MM in timeZone."),
    timeZone: string({
      description: "IANA time zone of start and end, e.g. Europe/Berlin.",
      default: "UTC",
      maxLength: 64,
      rules: [
        {
          rule: "self.matches('^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+)*$')",
          message: "must be an IANA time zone name such as UTC or Europe/Berlin",
        },
      ],
    }),
    days: array({
      description: "Days of the week the window opens on. Absent: every day.",
      minItems: 1,
      maxItems: 7,
      listType: "set",
      items: string({ description: "A day of the week.", enum: weekdays }),
    }),
  },
  rules: [{ rule: "self.start != self.end", message: "start and end must differ", fieldPath: ".end" }],
});

const spec = object({
  typeName: "ReplicationPolicySpec",
  description: "How machines that use this policy are replicated and how long their recovery points are kept.",
  properties: {
    rpoThreshold: duration({
      description:
        "RPO above which a machine's health turns Warning (Critical at twice the threshold) and an RpoThresholdExceeded event is emitted. Alerting only: replication is never throttled or stopped because of it.",
      min: "30s",
      max: "24h",
      default: "15m",
    }),
    recoveryPointRetention: duration({
      description: "How far back recovery points are kept. Older points and their journal records are pruned together.",
      min: "1h",
      max: "720h",
      maxInWords: "30 days",
      default: "24h",
    }),
    crashConsistentFrequency: duration({
      description: "How often a crash-consistent recovery point (a marker in the change stream) is taken.",
      min: "30s",
      max: "1h",
      default: "5m",
    }),
    appConsistentFrequency: duration({
      description:
        "How often an app-consistent recovery point is taken by running the machine's quiesce hooks (spec.source.quiesce of each ProtectedMachine). Absent: off, only crash-consistent points are taken. The controller reports machines without hooks (condition AppConsistencyUnavailable) because the hooks live on the machine, not here.",
      min: "5m",
      max: "12h",
    }),
    capture: string({
      description:
        "Continuous: changes stream as they happen. Interval: changes are collected and shipped every syncInterval (like Hyper-V Replica), which costs RPO but saves bandwidth on busy volumes.",
      typeName: "Capture",
      enum: ["Continuous", "Interval"] as const,
      default: "Continuous",
    }),
    syncInterval: string({
      description: "How often changes are shipped when capture is Interval. Required then, forbidden otherwise.",
      enum: ["30s", "5m", "15m"] as const,
    }),
    compression: string({
      description: "Compression of changes between the agent, the process server and the master target.",
      typeName: "Compression",
      enum: ["zstd", "lz4", "none"] as const,
      default: "zstd",
    }),
    encryption: object({
      typeName: "EncryptionSpec",
      description:
        "Encryption at rest of cached and journalled data with AES-256-GCM under the customer's key. Absent: data at rest is not encrypted (it is always encrypted in transit by mutual TLS). Immutable: data already written is encrypted with this key.",
      properties: {
        keySecretRef: required(
          object({
            typeName: "SecretKeyReference",
            description: "A Secret in the policy's namespace holding the 32-byte key.",
            properties: {
              name: required(objectName("Name of the Secret.")),
              key: string({
                description: "Key within the Secret's data holding exactly 32 bytes.",
                default: "key",
                minLength: 1,
                maxLength: 253,
                rules: [
                  {
                    rule: "self.matches('^[-._a-zA-Z0-9]+$')",
                    message: "must be a Secret data key: letters, digits, '-', '_' and '.'",
                  },
                ],
              }),
            },
          }),
        ),
      },
    }),
    bandwidthLimit: string({
      description:
        "Upper bound on replication traffic per machine, in bytes per second, as a Kubernetes quantity (e.g. 50Mi). Absent: unlimited.",
      maxLength: 32,
      rules: [
        {
          rule: "isQuantity(self) && quantity(self).compareTo(quantity('64Ki')) >= 0",
          message:
            "must be a quantity of bytes per second of at least 64Ki (one block a second), such as 500Ki, 50Mi or 1G",
        },
      ],
    }),
    resync: object({
      typeName: "ResyncSpec",
      description:
        "Resynchronisation after a gap (lost cache, forced shutdown, resize): both ends compare block hashes and send only the differences.",
      default: { mode: "Automatic" },
      properties: {
        mode: string({
          description:
            "Automatic: resync starts on its own (inside window, if set). Manual: the machine waits in Resynchronizing until `kubectl dr resync` is run.",
          enum: ["Automatic", "Manual"] as const,
          default: "Automatic",
        }),
        window: resyncWindow,
      },
    }),
  },
  rules: [
    notLongerThan(
      "crashConsistentFrequency",
      "recoveryPointRetention",
      "crashConsistentFrequency",
      "crashConsistentFrequency must not be longer than recoveryPointRetention",
    ),
    notLongerThan(
      "crashConsistentFrequency",
      "appConsistentFrequency",
      "appConsistentFrequency",
      "appConsistentFrequency must not be shorter than crashConsistentFrequency",
    ),
    notLongerThan(
      "appConsistentFrequency",
      "recoveryPointRetention",
      "appConsistentFrequency",
      "appConsistentFrequency must not be longer than recoveryPointRetention",
    ),
    {
      rule: "self.capture != 'Interval' || has(self.syncInterval)",
      message: "syncInterval is required when capture is Interval: one of 30s, 5m, 15m",
      fieldPath: ".syncInterval",
      reason: "FieldValueRequired",
    },
    {
      rule: "self.capture != 'Continuous' || !has(self.syncInterval)",
      message: "syncInterval applies only when capture is Interval; remove it or set capture: Interval",
      fieldPath: ".syncInterval",
      reason: "FieldValueForbidden",
    },
    {
      rule: `!has(self.syncInterval) || !(${durationGuard(["crashConsistentFrequency"])}) || duration(self.crashConsistentFrequency) >= duration(self.syncInterval)`,
      message:
        "crashConsistentFrequency must not be shorter than syncInterval: with Interval capture, recovery points fall on sync boundaries",
      fieldPath: ".crashConsistentFrequency",
    },
    immutableOptional("encryption", "encryption"),
  ],
});

const status = object({
  typeName: "ReplicationPolicyStatus",
  description: "Observed state of the policy.",
  properties: {
    observedGeneration,
    protectedMachines: integer({
      description: "Number of ProtectedMachines that use this policy.",
      format: "int32",
      minimum: 0,
    }),
    conditions,
  },
});

export const replicationPolicy: KindDefinition = {
  kind: "ReplicationPolicy",
  plural: "replicationpolicies",
  singular: "replicationpolicy",
  shortNames: ["rpol"],
  description:
    "ReplicationPolicy sets recovery point frequency and retention, capture mode, compression, encryption at rest, bandwidth and resync behaviour for the ProtectedMachines that reference it (ASR: replication policy).",
  spec,
  status,
  printerColumns: [
    { name: "Capture", type: "string", jsonPath: ".spec.capture", description: "Continuous or Interval capture." },
    {
      name: "Retention",
      type: "string",
      jsonPath: ".spec.recoveryPointRetention",
      description: "How far back recovery points are kept.",
    },
    {
      name: "Crash",
      type: "string",
      jsonPath: ".spec.crashConsistentFrequency",
      description: "Crash-consistent point frequency.",
    },
    {
      name: "App",
      type: "string",
      jsonPath: ".spec.appConsistentFrequency",
      description: "App-consistent point frequency (empty: off).",
    },
    {
      name: "RPO-Threshold",
      type: "string",
      jsonPath: ".spec.rpoThreshold",
      description: "RPO alert threshold.",
      priority: 1,
    },
    {
      name: "Machines",
      type: "integer",
      jsonPath: ".status.protectedMachines",
      description: "ProtectedMachines using the policy.",
    },
    ageColumn,
  ],
  selectableFields: [".spec.capture"],
};
