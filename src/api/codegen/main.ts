// `npm run gen:api` writes the generated API files; `npm run check:api` only
// compares them and fails when they differ from the schemas.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { packageRoot } from "../../util/package-root.js";
import { generateArtifacts } from "./artifacts.js";

const readIfPresent = (path: string): string | undefined => {
  try {
    return readFileSync(path, "utf8");
  } catch {
    return undefined;
  }
};

async function run(check: boolean): Promise<number> {
  const stale: string[] = [];
  for (const artifact of await generateArtifacts(packageRoot)) {
    const file = join(packageRoot, artifact.path);
    if (readIfPresent(file) === artifact.content) continue;
    stale.push(artifact.path);
    if (!check) {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, artifact.content);
    }
  }
  const verb = check ? "out of date" : "written";
  for (const path of stale) process.stdout.write(`${path}: ${verb}\n`);
  if (check && stale.length > 0) {
    process.stderr.write("generated API files differ from src/api/ schemas: run `npm run gen:api` and commit\n");
    return 1;
  }
  return 0;
}

process.exitCode = await run(process.argv.includes("--check"));
