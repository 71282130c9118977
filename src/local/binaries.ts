// Finds the control-plane and add-on binaries, building them from the pinned Go modules on first use.
import { spawn } from "node:child_process";
import { accessSync, constants } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../util/package-root.js";

export const controlPlaneBinaries = [
  "etcd",
  "kube-apiserver",
  "kube-controller-manager",
  "kube-scheduler",
  "kube-proxy",
  "kubectl",
  "coredns",
  "kube-network-policies",
] as const;
export type ControlPlaneBinary = (typeof controlPlaneBinaries)[number];

function missingBinaries(dir: string): string[] {
  return controlPlaneBinaries.filter((name) => {
    try {
      accessSync(join(dir, name), constants.X_OK);
      return false;
    } catch {
      return true;
    }
  });
}

/**
 * Returns the directory holding the binaries. KSR_CONTROLPLANE_BIN names a
 * prepared directory; otherwise hack/build-controlplane.sh builds (or finds in
 * its cache) the pinned release, reporting its progress on our stderr.
 */
export async function resolveControlPlaneBinaries(explicitDir = process.env.KSR_CONTROLPLANE_BIN): Promise<string> {
  if (explicitDir !== undefined && explicitDir !== "") {
    const missing = missingBinaries(explicitDir);
    if (missing.length > 0) {
      throw new Error(
        `KSR_CONTROLPLANE_BIN=${explicitDir} lacks ${missing.join(", ")}; unset it to build them with hack/build-controlplane.sh`,
      );
    }
    return explicitDir;
  }
  const script = join(packageRoot, "hack", "build-controlplane.sh");
  const dir = await new Promise<string>((resolve, reject) => {
    const child = spawn("bash", [script], { stdio: ["ignore", "pipe", "inherit"] });
    let out = "";
    child.stdout.on("data", (chunk: Buffer) => (out += chunk.toString()));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code === 0) resolve(out.trim().split("\n").at(-1) ?? "");
      else reject(new Error(`building the control plane failed (bash ${script} exited ${code}); its output is above`));
    });
  });
  const missing = missingBinaries(dir);
  if (missing.length > 0) throw new Error(`control-plane build reported ${dir} but ${missing.join(", ")} are missing`);
  return dir;
}
