// Prints docs/api.md from the schemas: every field with its type, default,
// bounds and description, every admission rule, and a worked example per kind.
import { apiVersion, group } from "../common.js";
import { category, crdName } from "../crds.js";
import type { KindDefinition } from "../kind.js";
import { walkSchema, type Rule, type SchemaNode, type SchemaPath } from "../schema.js";

export interface KindExample {
  /** Path shown to the reader, relative to the repository root. */
  readonly path: string;
  readonly text: string;
  readonly narrative: string;
}

/** Rows for the reader: list items and map values are described by their list or map, unless they are objects. */
function fieldRows(node: SchemaNode, path: string): SchemaPath[] {
  return [...walkSchema(node, path)].filter(
    (row) => !(row.path.endsWith("[]") || row.path.endsWith(".*")) || row.node.kind === "object",
  );
}

function typeText(node: SchemaNode): string {
  switch (node.kind) {
    case "string":
      return node.enum === undefined
        ? (node.format ?? "string")
        : `one of ${node.enum.map((value) => `\`${value}\``).join(", ")}`;
    case "integer": {
      const bounds = [node.minimum, node.maximum].some((bound) => bound !== undefined)
        ? ` ${node.minimum ?? ""}..${node.maximum ?? ""}`
        : "";
      return `integer${bounds}`;
    }
    case "boolean":
      return "boolean";
    case "int-or-string":
      return "integer or string";
    case "object":
      return "object";
    case "opaque-object":
      return "object (free-form)";
    case "map":
      return `map of ${typeText(node.values)} (≤ ${node.maxProperties})`;
    case "array":
      return `list of ${typeText(node.items)} (≤ ${node.maxItems}${node.listType === "atomic" ? "" : `, ${node.listType}`})`;
  }
}

function presenceText(node: SchemaNode): string {
  if (node.required === true) return "required";
  if ("default" in node && node.default !== undefined) return `default \`${JSON.stringify(node.default)}\``;
  return "";
}

const cell = (text: string) => text.replaceAll("|", "\\|").replaceAll("\n", " ");

function fieldTable(rows: readonly SchemaPath[]): string {
  const lines = rows.map(
    ({ path, node }) => `| \`${path}\` | ${cell(typeText(node))} | ${presenceText(node)} | ${cell(node.description)} |`,
  );
  return ["| Field | Type | Presence | Description |", "|---|---|---|---|", ...lines].join("\n");
}

function ruleLines(rows: readonly SchemaPath[]): string[] {
  return rows.flatMap(({ path, node }) =>
    (node.rules ?? []).map((rule: Rule) => {
      const at = rule.fieldPath === undefined ? path : `${path}${rule.fieldPath}`;
      return `- \`${at}\`: ${rule.message}. <sub>CEL: \`${rule.rule}\`</sub>`;
    }),
  );
}

function kindSection(definition: KindDefinition, example: KindExample): string {
  const specRows = fieldRows(definition.spec, "spec");
  const statusRows = fieldRows(definition.status, "status");
  const columns = definition.printerColumns.map(
    (column) => `\`${column.name}\`${column.priority === 1 ? " (wide)" : ""}`,
  );
  return [
    `## ${definition.kind}`,
    "",
    definition.description,
    "",
    `- Resource: \`${crdName(definition)}\`, namespaced; short name${definition.shortNames.length > 1 ? "s" : ""} ${definition.shortNames.map((name) => `\`${name}\``).join(", ")}; category \`${category}\`.`,
    `- \`kubectl get ${definition.shortNames[0] ?? definition.plural}\` columns: ${columns.join(", ")}.`,
    definition.selectableFields.length === 0
      ? "- No field selectors."
      : `- Field selectors: ${definition.selectableFields.map((field) => `\`${field.slice(1)}\``).join(", ")}.`,
    "",
    "### Spec",
    "",
    fieldTable(specRows),
    "",
    "### Checked at admission",
    "",
    "Besides types, enums, required fields, lengths and list sizes above, the API server enforces:",
    "",
    ...ruleLines(specRows),
    "",
    "### Status",
    "",
    fieldTable(statusRows),
    "",
    `### Example: \`${example.path}\``,
    "",
    example.narrative,
    "",
    "```yaml",
    example.text.trimEnd(),
    "```",
    "",
  ].join("\n");
}

/** The whole docs/api.md. */
export function renderApiReference(
  kinds: readonly KindDefinition[],
  exampleFor: (definition: KindDefinition) => KindExample,
): string {
  return [
    "<!-- Generated from the schemas in src/api/ by `npm run gen:api`; do not edit. -->",
    "",
    `# API reference: ${apiVersion}`,
    "",
    `Four namespaced kinds in group \`${group}\`. Install them with \`kubectl apply -f crds/\`; \`kubectl get ${category} -A\` lists them all and \`kubectl explain KIND.FIELD\` prints the descriptions below.`,
    "",
    "Durations are Go-style strings (`30s`, `5m`, `1h30m`, `24h`; units ms, s, m, h) checked and bounded by the API server. Conditions follow the Kubernetes convention (`type`, `status`, `reason`, `message`, `lastTransitionTime`, `observedGeneration`).",
    "",
    "Some rules span objects and cannot be checked at admission; the controllers check them and report them in conditions:",
    "",
    "- a policy with `appConsistentFrequency` applied to a machine without `spec.source.quiesce` (machine condition `AppConsistencyUnavailable`);",
    "- every machine of a plan exists in the namespace and is protected (plan condition `Valid`, `status.unreadyMachines`);",
    "- a traffic action's machine belongs to the plan; a script action's Job template is a valid Job (plan condition `Valid`);",
    "- machines of one consistency group share one policy and number at most 16 (machine condition `Ready`);",
    "- a machine's `target.site` differs from the site its workload runs in, and the referenced policy and workload exist (machine condition `Ready`);",
    "- an approval names a manual action of the plan; the encryption key Secret holds exactly 32 bytes.",
    "",
    ...kinds.map((definition) => kindSection(definition, exampleFor(definition))),
  ].join("\n");
}
