// Detached child processes identified by pid *and* kernel start time, so that a
// recycled pid is never mistaken for one of ours and nothing is stopped by name.
import { spawn } from "node:child_process";
import { closeSync, openSync, readFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

export interface ProcessRecord {
  name: string;
  pid: number;
  /** Start time in clock ticks since boot (field 22 of /proc/PID/stat). */
  startTicks: number;
  logFile: string;
}

export interface SpawnRequest {
  name: string;
  command: string;
  args: string[];
  logFile: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
}

interface ProcStat {
  state: string;
  startTicks: number;
}

export function readProcStat(pid: number): ProcStat | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // The command name (field 2) may contain spaces and parentheses: parse after the last ')'.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const state = fields[0];
  const startTicks = Number(fields[19]);
  if (state === undefined || !Number.isFinite(startTicks)) return undefined;
  return { state, startTicks };
}

/** Starts a process in its own process group, detached from ours, logging to a file. */
export function spawnDetached(request: SpawnRequest): ProcessRecord {
  const log = openSync(request.logFile, "a");
  try {
    const child = spawn(request.command, request.args, {
      detached: true,
      stdio: ["ignore", log, log],
      env: request.env ?? process.env,
      cwd: request.cwd,
    });
    child.unref();
    const pid = child.pid;
    if (pid === undefined) throw new Error(`could not start ${request.name} (${request.command})`);
    // Read the start time immediately: the record is what later proves the pid is still ours.
    const stat = readProcStat(pid);
    return { name: request.name, pid, startTicks: stat?.startTicks ?? -1, logFile: request.logFile };
  } finally {
    closeSync(log);
  }
}

/** True while the recorded process exists, is the same process (start time), and is not a zombie. */
export function isRunning(record: ProcessRecord): boolean {
  const stat = readProcStat(record.pid);
  if (stat === undefined || stat.state === "Z" || stat.state === "X") return false;
  return record.startTicks < 0 || stat.startTicks === record.startTicks;
}

function signal(record: ProcessRecord, sig: NodeJS.Signals): void {
  if (!isRunning(record)) return;
  try {
    process.kill(record.pid, sig);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ESRCH") throw error;
  }
}

/** SIGTERM, wait up to graceMs, then SIGKILL; resolves once the process is gone. */
export async function stopProcess(record: ProcessRecord, graceMs: number): Promise<void> {
  signal(record, "SIGTERM");
  const deadline = Date.now() + graceMs;
  while (isRunning(record) && Date.now() < deadline) await sleep(50);
  if (!isRunning(record)) return;
  signal(record, "SIGKILL");
  const killDeadline = Date.now() + 5000;
  while (isRunning(record) && Date.now() < killDeadline) await sleep(20);
  if (isRunning(record)) throw new Error(`${record.name} (pid ${record.pid}) did not exit after SIGKILL`);
}

/** Synchronous last-resort kill, for process exit handlers that cannot await. */
export function killNow(record: ProcessRecord): void {
  signal(record, "SIGKILL");
}

/** The last lines of a component's log, for error messages. */
export function logTail(logFile: string, lines = 20): string {
  try {
    return readFileSync(logFile, "utf8").trimEnd().split("\n").slice(-lines).join("\n");
  } catch {
    return "(no log written)";
  }
}
