// Locates the installed package, so built code finds hack/, crds/ and dist/ wherever it runs from.
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

function findPackageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json"))) {
    const parent = dirname(dir);
    if (parent === dir)
      throw new Error("cannot find the kube-site-recovery package root (no package.json above this file)");
    dir = parent;
  }
  return dir;
}

export const packageRoot = findPackageRoot();
