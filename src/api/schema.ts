// A small typed schema language for our CRDs. Each node knows how to become an
// OpenAPI v3 schema (the CRD), a TypeScript type (src/api/types.ts) and a row
// of docs/api.md, so the three cannot disagree: they are all printed from here.
/** A CEL rule (x-kubernetes-validations). Messages must name what is allowed. */
export interface Rule {
  readonly rule: string;
  readonly message: string;
  /** Relative JSONPath of the field the error is reported on, for rules on a parent. */
  readonly fieldPath?: string;
  // Not FieldValueDuplicate: the API server prints that reason without the message.
  readonly reason?: "FieldValueInvalid" | "FieldValueForbidden" | "FieldValueRequired";
}

interface NodeBase {
  readonly description: string;
  /** Required in the parent object. */
  readonly required?: boolean;
  readonly rules?: readonly Rule[];
}

export interface StringNode extends NodeBase {
  readonly kind: "string";
  /** Name of a generated TypeScript union type for an enum. */
  readonly typeName?: string;
  readonly enum?: readonly string[];
  readonly default?: string;
  readonly format?: "date-time";
  readonly minLength?: number;
  readonly maxLength?: number;
}

export interface IntegerNode extends NodeBase {
  readonly kind: "integer";
  readonly format: "int32" | "int64";
  readonly minimum?: number;
  readonly maximum?: number;
  readonly default?: number;
}

export interface BooleanNode extends NodeBase {
  readonly kind: "boolean";
  readonly default?: boolean;
}

/** An integer or a string (Kubernetes resource quantities, ports by name). */
export interface IntOrStringNode extends NodeBase {
  readonly kind: "int-or-string";
  /** Bounds the string form, so CEL rules on it stay within the cost budget. */
  readonly maxLength: number;
}

export interface ObjectNode extends NodeBase {
  readonly kind: "object";
  /** Name of the generated TypeScript interface; inline type literal when absent. */
  readonly typeName?: string;
  readonly properties: Readonly<Record<string, SchemaNode>>;
  readonly default?: Readonly<Record<string, unknown>>;
}

export interface ArrayNode extends NodeBase {
  readonly kind: "array";
  readonly items: SchemaNode;
  readonly maxItems: number;
  readonly minItems?: number;
  readonly listType: "atomic" | "set" | "map";
  readonly listMapKeys?: readonly string[];
  readonly default?: readonly unknown[];
}

/** A string-keyed map (labels, annotations, node selectors). */
export interface MapNode extends NodeBase {
  readonly kind: "map";
  readonly values: SchemaNode;
  readonly maxProperties: number;
}

/** An object whose content the API server keeps as is (e.g. a Job template, checked by the controller). */
export interface OpaqueObjectNode extends NodeBase {
  readonly kind: "opaque-object";
}

export type SchemaNode =
  StringNode | IntegerNode | BooleanNode | IntOrStringNode | ObjectNode | ArrayNode | MapNode | OpaqueObjectNode;

type Options<N extends SchemaNode> = Omit<N, "kind">;

export const string = (options: Options<StringNode>): StringNode => ({ kind: "string", ...options });
export const integer = (options: Options<IntegerNode>): IntegerNode => ({ kind: "integer", ...options });
export const boolean = (options: Options<BooleanNode>): BooleanNode => ({ kind: "boolean", ...options });
export const intOrString = (options: Options<IntOrStringNode>): IntOrStringNode => ({
  kind: "int-or-string",
  ...options,
});
export const object = (options: Options<ObjectNode>): ObjectNode => ({ kind: "object", ...options });
export const array = (options: Options<ArrayNode>): ArrayNode => ({ kind: "array", ...options });
export const map = (options: Options<MapNode>): MapNode => ({ kind: "map", ...options });
export const opaqueObject = (options: Options<OpaqueObjectNode>): OpaqueObjectNode => ({
  kind: "opaque-object",
  ...options,
});

/** The same node, marked required in its parent. */
export function required<N extends SchemaNode>(node: N): N {
  return { ...node, required: true };
}

/** The same node with a different description (shared shapes read differently in each place). */
export function describe<N extends SchemaNode>(node: N, description: string): N {
  return { ...node, description };
}

export function hasDefault(node: SchemaNode): boolean {
  return "default" in node && node.default !== undefined;
}

/** A schema in the JSON form the API server reads (wire names such as x-kubernetes-validations). */
export type OpenApiSchema = Readonly<Record<string, unknown>>;

function ruleToWire(rule: Rule): OpenApiSchema {
  return dropUndefined({ rule: rule.rule, message: rule.message, fieldPath: rule.fieldPath, reason: rule.reason });
}

function dropUndefined(record: Record<string, unknown>): OpenApiSchema {
  return Object.fromEntries(Object.entries(record).filter(([, value]) => value !== undefined));
}

function typedPart(node: SchemaNode): Record<string, unknown> {
  switch (node.kind) {
    case "string":
      return {
        type: "string",
        format: node.format,
        enum: node.enum,
        minLength: node.minLength,
        maxLength: node.maxLength,
        default: node.default,
      };
    case "integer":
      return {
        type: "integer",
        format: node.format,
        minimum: node.minimum,
        maximum: node.maximum,
        default: node.default,
      };
    case "boolean":
      return { type: "boolean", default: node.default };
    case "int-or-string":
      return { "x-kubernetes-int-or-string": true, maxLength: node.maxLength };
    case "object": {
      const requiredKeys = Object.entries(node.properties)
        .filter(([, child]) => child.required === true)
        .map(([key]) => key);
      return {
        type: "object",
        properties:
          Object.keys(node.properties).length === 0
            ? undefined
            : Object.fromEntries(Object.entries(node.properties).map(([key, child]) => [key, toOpenApi(child)])),
        required: requiredKeys.length === 0 ? undefined : requiredKeys,
        default: node.default,
      };
    }
    case "array":
      return {
        type: "array",
        items: toOpenApi(node.items),
        minItems: node.minItems,
        maxItems: node.maxItems,
        "x-kubernetes-list-type": node.listType,
        "x-kubernetes-list-map-keys": node.listMapKeys,
        default: node.default,
      };
    case "map":
      return { type: "object", additionalProperties: toOpenApi(node.values), maxProperties: node.maxProperties };
    case "opaque-object":
      return { type: "object", "x-kubernetes-preserve-unknown-fields": true };
  }
}

/** The OpenAPI v3 schema of a node, as the CRD carries it. */
export function toOpenApi(node: SchemaNode): OpenApiSchema {
  return dropUndefined({
    description: node.description,
    ...typedPart(node),
    "x-kubernetes-validations":
      node.rules === undefined || node.rules.length === 0 ? undefined : node.rules.map(ruleToWire),
  });
}

/** A node and where it sits: `spec.groups[].name`, `[]` for list items, `.*` for map values. */
export interface SchemaPath {
  readonly path: string;
  readonly node: SchemaNode;
}

/** Every node under (and including) node, parents before children. */
export function* walkSchema(node: SchemaNode, path: string): Generator<SchemaPath> {
  yield { path, node };
  if (node.kind === "object")
    for (const [key, child] of Object.entries(node.properties)) yield* walkSchema(child, `${path}.${key}`);
  else if (node.kind === "array") yield* walkSchema(node.items, `${path}[]`);
  else if (node.kind === "map") yield* walkSchema(node.values, `${path}.*`);
}
