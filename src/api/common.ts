// Shapes and rules shared by the four kinds: names, durations, references, conditions.
import {
  array,
  integer,
  object,
  required,
  string,
  type ArrayNode,
  type ObjectNode,
  type Rule,
  type StringNode,
} from "./schema.js";

export const group = "dr.ksr.io";
export const version = "v1alpha1";
export const apiVersion = `${group}/${version}`;

/** FailoverRun types; RecoveryPlan actions choose among them. */
export const runTypes = ["Test", "Planned", "Unplanned", "Reprotect"] as const;
export const runPhases = [
  "Pending",
  "Running",
  "WaitingForApproval",
  "Succeeded",
  "Failed",
  "Committed",
  "CleanedUp",
] as const;

// Go-style durations restricted to the units that make sense for DR timing.
export const durationPattern = "^([0-9]+(ms|s|m|h))+$";

/** CEL that is true when the string field `self.<field>` parses as a duration (guards duration() calls). */
export const isDuration = (field: string): string => `self.${field}.matches('${durationPattern}')`;
const durationShape: Rule = {
  rule: `self.matches('${durationPattern}')`,
  message: "must be a duration such as 30s, 5m, 1h30m or 24h (units: ms, s, m, h)",
};

interface DurationOptions {
  readonly description: string;
  readonly min: string;
  readonly max: string;
  /** Plain-language form of max, e.g. "30 days", added to the message. */
  readonly maxInWords?: string;
  readonly default?: string;
}

/** A duration string, parsed and bounded by CEL so a rejection says what is allowed. */
export function duration(options: DurationOptions): StringNode {
  const maxText = options.maxInWords === undefined ? options.max : `${options.max} (${options.maxInWords})`;
  return string({
    description: `${options.description} A duration from ${options.min} to ${maxText}.`,
    maxLength: 32,
    default: options.default,
    rules: [
      durationShape,
      {
        rule: `!self.matches('${durationPattern}') || (duration(self) >= duration('${options.min}') && duration(self) <= duration('${options.max}'))`,
        message: `must be between ${options.min} and ${maxText}`,
      },
    ],
  });
}

const dnsLabelPattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
const dnsSubdomainPattern = "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/** A DNS-1123 label: namespaces, group and action names, consistency groups. */
export function dnsLabel(description: string): StringNode {
  return string({
    description,
    minLength: 1,
    maxLength: 63,
    rules: [
      {
        rule: `self.matches('${dnsLabelPattern}')`,
        message:
          "must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit",
      },
    ],
  });
}

/** A DNS-1123 subdomain: names of Kubernetes objects. */
export function objectName(description: string): StringNode {
  return string({
    description,
    minLength: 1,
    maxLength: 253,
    rules: [
      {
        rule: `self.matches('${dnsSubdomainPattern}')`,
        message:
          "must be a Kubernetes object name (DNS-1123 subdomain): lowercase letters, digits, '-' and '.', starting and ending with a letter or digit",
      },
    ],
  });
}

/** A reference to another object of a known kind in the same namespace. */
export function localReference(typeName: string, description: string, kind: string): ObjectNode {
  return object({
    description,
    typeName,
    properties: { name: required(objectName(`Name of the ${kind} in the same namespace.`)) },
  });
}

/** A list of object names, unique. */
export function nameList(description: string, maxItems: number, itemDescription: string, minItems?: number): ArrayNode {
  return array({ description, minItems, maxItems, listType: "set", items: objectName(itemDescription) });
}

/** A value that may not change once set (transition rule on the field itself). */
export const immutable = (what: string): Rule => ({
  rule: "self == oldSelf",
  message: `${what} is immutable: delete and recreate the object to change it`,
});

/** An optional field that may not be added, removed or changed after creation (rule on the parent). */
export function immutableOptional(field: string, what: string): Rule {
  return {
    rule: `has(self.${field}) == has(oldSelf.${field}) && (!has(self.${field}) || self.${field} == oldSelf.${field})`,
    message: `${what} is immutable: it cannot be added, removed or changed after creation`,
    fieldPath: `.${field}`,
  };
}

/** "exactly one of a, b, c" on an object. */
export function exactlyOneOf(fields: readonly string[], what: string): Rule {
  const terms = fields.map((field) => `(has(self.${field}) ? 1 : 0)`).join(" + ");
  return { rule: `${terms} == 1`, message: `${what}: set exactly one of ${fields.join(", ")}` };
}

export const timestamp = (description: string): StringNode => string({ description, format: "date-time" });

export const siteName = (description: string): StringNode => dnsLabel(description);

/** metav1.Condition, as every Kubernetes API writes it. */
export const conditions: ArrayNode = array({
  description:
    "Standard conditions: the latest observations of the object's state. Ready summarises the others; each carries the generation it was computed from.",
  maxItems: 16,
  listType: "map",
  listMapKeys: ["type"],
  items: object({
    typeName: "Condition",
    description: "One aspect of the object's current state.",
    properties: {
      type: required(
        string({ description: "Type of condition in CamelCase, e.g. Ready, Valid, Degraded.", maxLength: 316 }),
      ),
      status: required(
        string({
          typeName: "ConditionStatus",
          description: "Status of the condition.",
          enum: ["True", "False", "Unknown"] as const,
        }),
      ),
      reason: required(
        string({
          description: "Programmatic identifier for the last transition, in CamelCase.",
          minLength: 1,
          maxLength: 1024,
        }),
      ),
      message: required(
        string({ description: "Human-readable details about the last transition; may be empty.", maxLength: 32768 }),
      ),
      lastTransitionTime: required(timestamp("When the condition last changed status.")),
      observedGeneration: integer({
        description: "metadata.generation the condition was computed from.",
        format: "int64",
        minimum: 0,
      }),
    },
  }),
});

export const observedGeneration = integer({
  description: "The metadata.generation most recently acted on by the controller.",
  format: "int64",
  minimum: 0,
});

/** A recovery point's consistency, as the journal recorded it (never overstated). */
export const pointConsistency = string({
  typeName: "PointConsistency",
  description:
    "The consistency the point really has: AppConsistent (quiesce hooks succeeded around a quiet cut), CrashConsistent (no write was in flight at the cut), BestEffort (writes were still arriving; each file is one it really had, but files may come from slightly different moments).",
  enum: ["CrashConsistent", "AppConsistent", "BestEffort"] as const,
});
