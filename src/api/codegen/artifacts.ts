// Everything generated from the schemas, as file contents keyed by path: the
// CRDs (also the Helm chart's copy), the chart's RBAC rules (from src/install/rbac.ts, the
// rules `ksr install` applies), the TypeScript types and the API reference. Used by `npm run gen:api`
// to write them and by the unit tests to fail when the committed files drift.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { format, resolveConfig } from "prettier";
import { stringify } from "yaml";
import { customResourceDefinition, kinds } from "../crds.js";
import { clusterRules, namespaceRules, rbacRule, type PolicyRule } from "../../install/rbac.js";
import type { KindDefinition } from "../kind.js";
import { renderApiReference, type KindExample } from "./markdown.js";
import { renderTypes } from "./typescript.js";

export interface Artifact {
  /** Relative to the package root. */
  readonly path: string;
  readonly content: string;
}

const generatedNotice = "Generated from the schemas in src/api/ by `npm run gen:api`; do not edit.";

/** The example shown for each kind in docs/api.md, with what it demonstrates. */
const examples: Readonly<Record<string, { path: string; narrative: string }>> = {
  ReplicationPolicy: {
    path: "examples/10-replication-policy.yaml",
    narrative:
      "Crash-consistent points every 5 minutes and app-consistent points every hour, kept for three days, shipped continuously with zstd, encrypted at rest with a customer key, throttled to 50 MiB/s, resynchronised only at night.",
  },
  ProtectedMachine: {
    path: "examples/20-protected-machines.yaml",
    narrative:
      "The database, API and web tiers of the shop, one ProtectedMachine each, in one consistency group; the database quiesces PostgreSQL with a CHECKPOINT and fsfreeze for app-consistent points.",
  },
  RecoveryPlan: {
    path: "examples/30-recovery-plan.yaml",
    narrative:
      "Database first (after a manual confirmation), then the API (with a smoke-test Job), then the web tier, whose traffic is switched and announced by a webhook.",
  },
  FailoverRun: {
    path: "examples/runs/10-drill.yaml",
    narrative:
      "A drill of the whole plan into an isolated namespace. The other runs in examples/runs/ show the drill's cleanup, a planned failover, its commit, reprotect and failback.",
  },
};

function exampleReader(root: string): (definition: KindDefinition) => KindExample {
  return (definition) => {
    const entry = examples[definition.kind];
    if (entry === undefined) throw new Error(`no example registered for ${definition.kind}`);
    return { ...entry, text: readFileSync(join(root, entry.path), "utf8") };
  };
}

async function formatted(root: string, path: string, text: string): Promise<Artifact> {
  const filepath = join(root, path);
  const options = (await resolveConfig(filepath)) ?? {};
  return { path, content: await format(text, { ...options, filepath }) };
}

/** Every generated file, formatted the way `npm run lint` expects. */
export async function generateArtifacts(root: string): Promise<Artifact[]> {
  // The Helm chart installs the same CRDs from its own crds/ directory.
  const crds = kinds.flatMap((definition) =>
    ["crds", "charts/kube-site-recovery/crds"].map((dir) =>
      formatted(
        root,
        `${dir}/${definition.plural}.yaml`,
        `# ${generatedNotice}\n${stringify(customResourceDefinition(definition), { lineWidth: 0 })}`,
      ),
    ),
  );
  const chartRbac = (file: string, rules: readonly PolicyRule[]) =>
    formatted(
      root,
      `charts/kube-site-recovery/files/${file}`,
      `# Generated from src/install/rbac.ts by \`npm run gen:api\`; do not edit.\n${stringify(rules.map(rbacRule))}`,
    );
  const formattedFiles = await Promise.all([
    ...crds,
    chartRbac("cluster-rules.yaml", clusterRules),
    chartRbac("namespace-rules.yaml", namespaceRules),
    formatted(root, "src/api/types.ts", renderTypes(kinds)),
  ]);
  // Markdown stays as printed: prettier would pad the tables to the widest cell.
  return [...formattedFiles, { path: "docs/api.md", content: renderApiReference(kinds, exampleReader(root)) }];
}
