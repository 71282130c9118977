// The four CustomResourceDefinitions, built from the kind definitions.
import { apiVersion, group, version } from "./common.js";
import { failoverRun } from "./failover-run.js";
import type { KindDefinition } from "./kind.js";
import { protectedMachine } from "./protected-machine.js";
import { recoveryPlan } from "./recovery-plan.js";
import { replicationPolicy } from "./replication-policy.js";
import { object, required, string, toOpenApi, type ObjectNode, type OpenApiSchema } from "./schema.js";

export const kinds: readonly KindDefinition[] = [replicationPolicy, protectedMachine, recoveryPlan, failoverRun];

/** `kubectl get dr` lists every kind. */
export const category = "dr";

/** The root schema of a kind: the standard envelope around its spec and status. */
export function rootSchema(definition: KindDefinition): ObjectNode {
  return object({
    description: definition.description,
    properties: {
      apiVersion: string({ description: `API version of the object: ${apiVersion}.` }),
      kind: string({ description: `Kind of the object: ${definition.kind}.` }),
      spec: required(definition.spec),
      status: definition.status,
    },
  });
}

/** The API server allows nothing but `type: object` (not even a description) on a CRD's metadata. */
function withMetadata(schema: OpenApiSchema): OpenApiSchema {
  const properties = schema.properties as Record<string, OpenApiSchema>;
  return {
    ...schema,
    properties: {
      apiVersion: properties.apiVersion,
      kind: properties.kind,
      metadata: { type: "object" },
      ...properties,
    },
  };
}

export const crdName = (definition: KindDefinition): string => `${definition.plural}.${group}`;

/** A CustomResourceDefinition as plain JSON, the way the API server and kubectl read it. */
export function customResourceDefinition(definition: KindDefinition): Record<string, unknown> {
  return {
    apiVersion: "apiextensions.k8s.io/v1",
    kind: "CustomResourceDefinition",
    metadata: { name: crdName(definition), labels: { "app.kubernetes.io/part-of": "kube-site-recovery" } },
    spec: {
      group,
      scope: "Namespaced",
      names: {
        kind: definition.kind,
        listKind: `${definition.kind}List`,
        plural: definition.plural,
        singular: definition.singular,
        shortNames: definition.shortNames,
        categories: [category],
      },
      versions: [
        {
          name: version,
          served: true,
          storage: true,
          schema: { openAPIV3Schema: withMetadata(toOpenApi(rootSchema(definition))) },
          subresources: { status: {} },
          additionalPrinterColumns: definition.printerColumns.map((column) => ({ ...column })),
          ...(definition.selectableFields.length === 0
            ? {}
            : { selectableFields: definition.selectableFields.map((jsonPath) => ({ jsonPath })) }),
        },
      ],
    },
  };
}
