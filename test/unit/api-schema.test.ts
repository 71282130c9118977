// The schemas in src/api/ are the one source of truth: the committed CRDs, types
// and reference must be exactly what they generate, and the schemas themselves
// must hold the properties a usable Kubernetes API needs.
import { deepStrictEqual, ok, strictEqual } from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { dumpYaml } from "@kubernetes/client-node";
import { parse, parseAllDocuments } from "yaml";
import { generateArtifacts } from "../../src/api/codegen/artifacts.js";
import { apiVersion } from "../../src/api/common.js";
import { customResourceDefinition, kinds, rootSchema } from "../../src/api/crds.js";
import { crdModel } from "../../src/api/install.js";
import { walkSchema } from "../../src/api/schema.js";
import { packageRoot } from "../../src/util/package-root.js";

describe("API schemas", () => {
  describe("generated files match the schemas (run `npm run gen:api` when this fails)", function () {
    this.timeout(30_000);
    it("crds/ (and the chart's copy and RBAC), src/api/types.ts and docs/api.md are up to date", async () => {
      const artifacts = await generateArtifacts(packageRoot);
      strictEqual(artifacts.length, 2 * kinds.length + 4);
      for (const artifact of artifacts) {
        const committed = readFileSync(join(packageRoot, artifact.path), "utf8");
        ok(committed === artifact.content, `${artifact.path} differs from what src/api/ generates`);
      }
    });
    it("crds/ and the chart's crds/ hold nothing but the generated CRDs", () => {
      for (const dir of ["crds", "charts/kube-site-recovery/crds"])
        deepStrictEqual(
          readdirSync(join(packageRoot, dir)).sort(),
          kinds.map((definition) => `${definition.plural}.yaml`).sort(),
        );
    });
  });

  it("installCrds sends what crds/ holds (client-node's model keeps every field)", () => {
    for (const definition of kinds) {
      deepStrictEqual(parse(dumpYaml(crdModel(definition))), customResourceDefinition(definition), definition.kind);
    }
  });

  for (const definition of kinds) {
    describe(definition.kind, () => {
      const nodes = [...walkSchema(rootSchema(definition), definition.kind.toLowerCase())];
      it("describes every field", () => {
        const undocumented = nodes.filter(({ node }) => node.description.trim().length < 3).map(({ path }) => path);
        deepStrictEqual(undocumented, []);
      });
      it("bounds every string so CEL cost estimates stay within budget", () => {
        const unbounded = nodes
          .filter(({ node }) => node.kind === "string" && node.enum === undefined && node.format === undefined)
          .filter(({ node }) => node.kind === "string" && node.maxLength === undefined)
          .map(({ path }) => path);
        // The envelope's apiVersion and kind carry no rules and are checked by the API server itself.
        const envelope = ["apiVersion", "kind"].map((field) => `${definition.kind.toLowerCase()}.${field}`);
        deepStrictEqual(
          unbounded.filter((path) => !envelope.includes(path)),
          [],
        );
      });
      it("gives every rule a message and keys every map list on required fields", () => {
        for (const { path, node } of nodes) {
          for (const rule of node.rules ?? [])
            ok(rule.message.length > 10, `${path}: rule ${rule.rule} lacks a message`);
          if (node.kind === "array" && node.listType === "map") {
            ok(node.items.kind === "object", `${path}: map lists hold objects`);
            for (const key of node.listMapKeys ?? []) {
              const keyNode = node.items.properties[key];
              ok(keyNode?.required === true, `${path}: list map key ${key} must be required`);
            }
          }
        }
      });
      it("has a status subresource, the dr category and printer columns", () => {
        const crd = customResourceDefinition(definition) as {
          spec: {
            names: { categories: string[] };
            versions: { subresources: unknown; additionalPrinterColumns: unknown[] }[];
          };
        };
        deepStrictEqual(crd.spec.names.categories, ["dr"]);
        strictEqual(crd.spec.versions.length, 1);
        for (const served of crd.spec.versions) {
          deepStrictEqual(served.subresources, { status: {} });
          ok(served.additionalPrinterColumns.length >= 4);
        }
      });
    });
  }

  describe("examples/", () => {
    const files = [
      ...readdirSync(join(packageRoot, "examples")).filter((file) => file.endsWith(".yaml")),
      ...readdirSync(join(packageRoot, "examples", "runs")).map((file) => `runs/${file}`),
    ];
    const documents = files.flatMap((file) =>
      parseAllDocuments(readFileSync(join(packageRoot, "examples", file), "utf8")).map((document) => ({
        file,
        object: document.toJS() as { apiVersion: string; kind: string; metadata: { name: string; namespace?: string } },
      })),
    );
    it("cover every kind, and every run type the issue asks for", () => {
      const ours = documents.filter(({ object }) => object.apiVersion === apiVersion);
      deepStrictEqual(
        [...new Set(ours.map(({ object }) => object.kind))].sort(),
        kinds.map((definition) => definition.kind).sort(),
      );
      const runs = ours
        .filter(({ object }) => object.kind === "FailoverRun")
        .map(({ object }) => object as unknown as { spec: { type: string; commit: boolean; cleanup: boolean } });
      for (const type of ["Test", "Planned", "Reprotect"])
        ok(
          runs.some((run) => run.spec.type === type),
          type,
        );
      ok(runs.some((run) => run.spec.commit));
      ok(runs.some((run) => run.spec.cleanup));
    });
    it("leave the namespace to `kubectl apply -n`", () => {
      deepStrictEqual(
        documents.filter(({ object }) => object.metadata.namespace !== undefined).map(({ file }) => file),
        [],
      );
    });
  });
});
