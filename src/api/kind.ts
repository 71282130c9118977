// What a kind contributes to its CRD besides its schema.
import type { ObjectNode } from "./schema.js";

export interface PrinterColumn {
  readonly name: string;
  readonly type: "string" | "integer" | "number" | "boolean" | "date";
  readonly jsonPath: string;
  readonly description: string;
  /** 0 shows in `kubectl get`, 1 only with `-o wide`. */
  readonly priority?: 0 | 1;
}

export interface KindDefinition {
  readonly kind: string;
  readonly plural: string;
  readonly singular: string;
  readonly shortNames: readonly string[];
  /** What the kind is, for `kubectl explain KIND`. */
  readonly description: string;
  readonly spec: ObjectNode;
  readonly status: ObjectNode;
  readonly printerColumns: readonly PrinterColumn[];
  /** Fields usable with `kubectl get --field-selector`. */
  readonly selectableFields: readonly string[];
}

export const ageColumn: PrinterColumn = {
  name: "Age",
  type: "date",
  jsonPath: ".metadata.creationTimestamp",
  description: "Time since the object was created.",
};
