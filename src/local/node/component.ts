// The node agent as one more component of `ksr local up`: how it is started
// and how its health is judged (a heartbeat file it touches after every
// successful round of node heartbeats).
import { rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { packageRoot } from "../../util/package-root.js";
import { heartbeatIntervalMs } from "./registration.js";
import { nodeLayout } from "./layout.js";

export const nodeAgentName = "node-agent";

const heartbeatFile = (clusterDir: string) => join(nodeLayout(clusterDir).scripts, "..", "heartbeat");

export function touchHeartbeat(clusterDir: string): void {
  writeFileSync(heartbeatFile(clusterDir), new Date().toISOString() + "\n");
}

/** A heartbeat left by the previous run must not make a starting agent look healthy. */
export function clearHeartbeat(clusterDir: string): void {
  rmSync(heartbeatFile(clusterDir), { force: true });
}

/** Healthy while the agent has completed a heartbeat round within three intervals. */
export function nodeAgentHealthy(clusterDir: string): boolean {
  try {
    return Date.now() - statSync(heartbeatFile(clusterDir)).mtimeMs < 3 * heartbeatIntervalMs;
  } catch {
    return false;
  }
}

export function nodeAgentComponent(clusterDir: string): {
  name: string;
  stage: number;
  command: string;
  args: string[];
  health: () => Promise<boolean>;
} {
  return {
    name: nodeAgentName,
    // After every control-plane stage: it needs the apiserver, scheduler and controllers serving.
    stage: 100,
    command: process.execPath,
    args: [join(packageRoot, "bin", "ksr.js"), "local", "node-agent", "--dir", clusterDir],
    health: () => Promise.resolve(nodeAgentHealthy(clusterDir)),
  };
}
