// Keeps every container's process tree findable, so nothing a pod started
// outlives the node: one cgroup v2 group per container under a per-cluster
// parent when cgroup2 is writable, and a recorded process group always.
// Processes are only ever signalled through these records, never by name.
import { existsSync, mkdirSync, readFileSync, readdirSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { isRunning, type ProcessRecord } from "../processes.js";
import { clusterTag, nodeLayout } from "./layout.js";

/** Where cgroup2 is mounted, from /proc/self/mountinfo (fields: ... mountpoint ... - fstype ...). */
export function findCgroup2Mount(mountinfo = readFileSync("/proc/self/mountinfo", "utf8")): string | undefined {
  for (const line of mountinfo.split("\n")) {
    const [before, after] = line.split(" - ", 2);
    if (after?.startsWith("cgroup2 ") !== true) continue;
    const mountPoint = before?.split(" ")[4];
    if (mountPoint !== undefined) return mountPoint.replace(/\\040/g, " ");
  }
  return undefined;
}

/** The cluster's parent cgroup, created on demand; undefined when cgroup2 is absent or read-only. */
export function clusterCgroup(clusterDir: string): string | undefined {
  const mount = findCgroup2Mount();
  if (mount === undefined) return undefined;
  const path = join(mount, `ksr-${clusterTag(clusterDir)}`);
  try {
    mkdirSync(path, { recursive: true });
    return path;
  } catch {
    return undefined;
  }
}

function cgroupProcesses(path: string): number[] {
  try {
    return readFileSync(join(path, "cgroup.procs"), "utf8")
      .split("\n")
      .filter((line) => line !== "")
      .map(Number);
  } catch {
    return [];
  }
}

function cgroupChildren(path: string): string[] {
  try {
    return readdirSync(path, { withFileTypes: true })
      .filter((entry) => entry.isDirectory())
      .map((entry) => join(path, entry.name));
  } catch {
    return [];
  }
}

function treeIsEmpty(path: string): boolean {
  return cgroupProcesses(path).length === 0 && cgroupChildren(path).every(treeIsEmpty);
}

function removeTree(path: string): void {
  for (const child of cgroupChildren(path)) removeTree(child);
  try {
    rmdirSync(path);
  } catch {
    // Still busy or already gone: a later sweep removes it.
  }
}

/** SIGKILLs every process in the cgroup and below (cgroup.kill), waits for them, removes the groups. */
export async function killCgroupTree(path: string, timeoutMs = 5000): Promise<void> {
  if (!existsSync(path)) return;
  try {
    writeFileSync(join(path, "cgroup.kill"), "1");
  } catch {
    // Kernels before 5.14 lack cgroup.kill: signal the members one by one.
    for (const pid of collectPids(path)) signalQuietly(pid, "SIGKILL");
  }
  const deadline = Date.now() + timeoutMs;
  while (!treeIsEmpty(path) && Date.now() < deadline) await sleep(20);
  removeTree(path);
}

function collectPids(path: string): number[] {
  return [...cgroupProcesses(path), ...cgroupChildren(path).flatMap(collectPids)];
}

function signalQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // Already gone.
  }
}

/** Signals a container's whole process group, if its leader is still the recorded process. */
export function signalProcessGroup(record: ProcessRecord, signal: NodeJS.Signals): void {
  if (isRunning(record)) signalQuietly(-record.pid, signal);
}

function recordFile(clusterDir: string, id: string): string {
  return join(nodeLayout(clusterDir).processes, `${id}.json`);
}

export function saveContainerRecord(clusterDir: string, id: string, record: ProcessRecord): void {
  mkdirSync(nodeLayout(clusterDir).processes, { recursive: true });
  writeFileSync(recordFile(clusterDir, id), JSON.stringify(record));
}

export function dropContainerRecord(clusterDir: string, id: string): void {
  rmSync(recordFile(clusterDir, id), { force: true });
}

function savedRecords(clusterDir: string): ProcessRecord[] {
  const dir = nodeLayout(clusterDir).processes;
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((file) => file.endsWith(".json"))
    .flatMap((file) => {
      try {
        return [JSON.parse(readFileSync(join(dir, file), "utf8")) as ProcessRecord];
      } catch {
        return [];
      }
    });
}

/**
 * Kills whatever pods of this cluster are still running: used by `ksr local
 * down` after the node agent stopped (or died), and by the agent on start-up.
 */
export async function stopPodProcesses(clusterDir: string): Promise<void> {
  for (const record of savedRecords(clusterDir)) signalProcessGroup(record, "SIGKILL");
  const cgroup = clusterCgroup(clusterDir);
  if (cgroup !== undefined) await killCgroupTree(cgroup);
  rmSync(nodeLayout(clusterDir).processes, { recursive: true, force: true });
}
