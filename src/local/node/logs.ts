// `ksr local logs`: container output kept under DIR/node/logs, readable
// without the API (there is no kubelet server for `kubectl logs` to reach).
import { existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { nodeLayout } from "./layout.js";

export interface LogRequest {
  dir: string;
  namespace: string;
  pod: string;
  container?: string;
  /** The previous run's output (kubectl logs --previous). */
  previous?: boolean;
}

/** The newest pod instance with this namespace/name (a StatefulSet pod keeps its name across UIDs). */
function podLogDirectory(dir: string, namespace: string, pod: string): string {
  const root = nodeLayout(dir).logs;
  const prefix = `${namespace}_${pod}_`;
  const candidates = existsSync(root)
    ? readdirSync(root)
        .filter((entry) => entry.startsWith(prefix) && !entry.slice(prefix.length).includes("_"))
        .map((entry) => join(root, entry))
        .sort((a, b) => statSync(b).mtimeMs - statSync(a).mtimeMs)
    : [];
  const newest = candidates[0];
  if (newest === undefined)
    throw new Error(`no logs for pod ${namespace}/${pod} in ${root}; is it running on the local node?`);
  return newest;
}

export function containerLogFile(request: LogRequest): string {
  const podDir = podLogDirectory(request.dir, request.namespace, request.pod);
  const containers = readdirSync(podDir);
  const container = request.container ?? (containers.length === 1 ? containers[0] : undefined);
  if (container === undefined) {
    throw new Error(`pod ${request.pod} has several containers (${containers.join(", ")}); choose one with -c`);
  }
  if (!containers.includes(container)) {
    throw new Error(`pod ${request.pod} has no logs for container "${container}" (has: ${containers.join(", ")})`);
  }
  const runs = readdirSync(join(podDir, container))
    .map((file) => /^(\d+)\.log$/.exec(file)?.[1])
    .filter((n): n is string => n !== undefined)
    .map(Number)
    .sort((a, b) => b - a);
  const run = request.previous === true ? runs[1] : runs[0];
  if (run === undefined)
    throw new Error(
      `container ${container} of pod ${request.pod} has no ${request.previous === true ? "previous " : ""}run`,
    );
  return join(podDir, container, `${run}.log`);
}

export function readContainerLog(request: LogRequest): string {
  return readFileSync(containerLogFile(request), "utf8");
}
