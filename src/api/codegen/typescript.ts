// Prints the TypeScript types of the kinds from their schemas (src/api/types.ts).
// Fields with a default are not optional: every object read from the API
// server has them. Metadata and conditions are the runtime's own types, and
// every kind gets a ResourceType, so controllers use the kinds with src/runtime
// directly.
import { apiVersion, group, version } from "../common.js";
import type { KindDefinition } from "../kind.js";
import { hasDefault, type SchemaNode } from "../schema.js";

interface Declaration {
  readonly name: string;
  readonly description: string;
  readonly form: "type" | "interface";
  /** What follows the name: `= "a" | "b";` or `{ ... }`. */
  readonly body: string;
}

function docComment(text: string, indent: string): string {
  return `${indent}/** ${text.replaceAll("*/", "*\\/")} */\n`;
}

/** Schema types that src/runtime defines already: the generated file imports them instead of declaring copies. */
const runtimeTypes: Readonly<Record<string, string>> = {
  Condition: "../runtime/conditions.js",
  ConditionStatus: "../runtime/conditions.js",
};

class TypePrinter {
  readonly declarations = new Map<string, Declaration>();

  private declare(name: string, description: string, form: Declaration["form"], body: string): string {
    if (name in runtimeTypes) return name;
    const existing = this.declarations.get(name);
    if (existing !== undefined && existing.body !== body)
      throw new Error(`two different schemas are both named ${name}; give one of them another typeName`);
    if (existing === undefined) this.declarations.set(name, { name, description, form, body });
    return name;
  }

  typeOf(node: SchemaNode, indent: string): string {
    switch (node.kind) {
      case "string": {
        if (node.enum === undefined) return "string";
        const union = node.enum.map((value) => JSON.stringify(value)).join(" | ");
        return node.typeName === undefined
          ? union
          : this.declare(node.typeName, node.description, "type", `= ${union};`);
      }
      case "integer":
        return "number";
      case "boolean":
        return "boolean";
      case "int-or-string":
        return "number | string";
      case "opaque-object":
        return "Record<string, unknown>";
      case "map":
        return `Record<string, ${this.typeOf(node.values, indent)}>`;
      case "array": {
        const item = this.typeOf(node.items, indent);
        return item.includes("|") ? `(${item})[]` : `${item}[]`;
      }
      case "object": {
        if (node.typeName === undefined) return this.members(node.properties, `${indent}  `, indent);
        return this.declare(node.typeName, node.description, "interface", this.members(node.properties, "  ", ""));
      }
    }
  }

  members(properties: Readonly<Record<string, SchemaNode>>, indent: string, closingIndent: string): string {
    const lines = Object.entries(properties).map(([key, child]) => {
      const optional = child.required === true || hasDefault(child) ? "" : "?";
      return `${docComment(child.description, indent)}${indent}${key}${optional}: ${this.typeOf(child, indent)};\n`;
    });
    return `{\n${lines.join("")}${closingIndent}}`;
  }
}

function renderDeclaration(declaration: Declaration): string {
  return `${docComment(declaration.description, "")}export ${declaration.form} ${declaration.name} ${declaration.body}\n`;
}

function kindInterface(definition: KindDefinition): string {
  return `${docComment(definition.description, "")}export interface ${definition.kind} {
  apiVersion: ${JSON.stringify(apiVersion)};
  kind: ${JSON.stringify(definition.kind)};
  metadata: ObjectMeta;
  spec: ${definition.kind}Spec;
  status?: ${definition.kind}Status;
}
`;
}

/** protectedMachines for ProtectedMachine/protectedmachines: the kind's camel case carried into its plural. */
export function resourceTypeName(definition: KindDefinition): string {
  const lower = definition.kind.toLowerCase();
  let shared = 0;
  while (shared < lower.length && lower[shared] === definition.plural[shared]) shared++;
  const camel = definition.kind.slice(0, shared) + definition.plural.slice(shared);
  return camel.charAt(0).toLowerCase() + camel.slice(1);
}

function resourceTypeConstant(definition: KindDefinition): string {
  const spec = { group, version, kind: definition.kind, plural: definition.plural, namespaced: true };
  return `${docComment(`Where ${definition.kind} objects live in the API, for the runtime's client and caches.`, "")}export const ${resourceTypeName(definition)} = resourceType<${definition.kind}>(${JSON.stringify(spec)});
`;
}

function runtimeImports(): string[] {
  const byModule = new Map<string, string[]>();
  for (const [name, module] of Object.entries(runtimeTypes))
    byModule.set(module, [...(byModule.get(module) ?? []), name]);
  return [...byModule].map(([module, names]) => `import type { ${names.join(", ")} } from "${module}";`);
}

/** The whole src/api/types.ts, before formatting. */
export function renderTypes(kinds: readonly KindDefinition[]): string {
  const printer = new TypePrinter();
  for (const definition of kinds) {
    for (const part of [definition.spec, definition.status]) {
      if (part.typeName === undefined) throw new Error(`${definition.kind}: spec and status need a typeName`);
      printer.typeOf(part, "");
    }
  }
  const parts = [
    "// Generated from the schemas in src/api/ by `npm run gen:api`; do not edit.",
    ...runtimeImports(),
    'import { resourceType, type ObjectMeta } from "../runtime/objects.js";',
    "",
    `export type { ${Object.keys(runtimeTypes).join(", ")} };`,
    "",
    ...kinds.map(kindInterface),
    ...kinds.map(resourceTypeConstant),
    ...[...printer.declarations.values()].map(renderDeclaration),
  ];
  return parts.join("\n");
}
