// Finding a container's log file under DIR/node/logs: for the kubelet API's
// containerLogs endpoint and for `ksr local logs`, which reads the same files
// without the API.
import { existsSync, readdirSync, statSync } from "node:fs";
import { join } from "node:path";
import { logText } from "./kubelet-server/container-log.js";
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
  return runLogFile(podLogDirectory(request.dir, request.namespace, request.pod), request);
}

/** The current (or, with previous, the last but one) run's log of a container in one pod's log directory. */
export function runLogFile(podDir: string, request: Pick<LogRequest, "pod" | "container" | "previous">): string {
  const containers = existsSync(podDir) ? readdirSync(podDir) : [];
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

/** The container's output as it wrote it, without the CRI log format's timestamps. */
export function readContainerLog(request: LogRequest): string {
  return logText(containerLogFile(request));
}
