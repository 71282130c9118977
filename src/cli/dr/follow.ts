// --wait: follows a FailoverRun live. Each step is printed as it starts and as
// it ends; on a terminal the line in progress is redrawn with the elapsed time,
// otherwise only whole lines are written (logs and CI read them).
import { setTimeout as sleep } from "node:timers/promises";
import { failoverRuns, type FailoverRun, type FailoverRunPhase, type StepStatus } from "../../api/types.js";
import type { KubeClient } from "../../runtime/index.js";
import { formatDuration } from "../../util/duration.js";

export interface FollowOptions {
  readonly client: KubeClient;
  readonly namespace: string;
  readonly name: string;
  /** The run is done once it reaches one of these phases (Failed ends it, except a drill's cleanup, below). */
  readonly until: readonly FailoverRunPhase[];
  /** Also done when this holds (e.g. the steps of a recovery point change have finished). */
  readonly doneWhen?: (run: FailoverRun) => boolean;
  readonly timeoutMs?: number;
  readonly out: NodeJS.WriteStream;
  readonly pollMs?: number;
}

const marks: Record<string, string> = { Succeeded: "done", Failed: "FAILED", Skipped: "skipped" };

function stepLine(step: StepStatus): string {
  const took =
    step.startTime !== undefined && step.endTime !== undefined
      ? ` in ${formatDuration(Date.parse(step.endTime) - Date.parse(step.startTime))}`
      : "";
  const message = step.message === undefined || step.message === "" ? "" : `: ${step.message}`;
  return `${marks[step.phase] ?? step.phase} ${step.name} (${step.action})${took}${message}`;
}

/** A failed drill whose cleanup was asked for still runs that cleanup: Failed is where it starts from. */
function cleanupAhead(run: FailoverRun): boolean {
  if (run.spec.type !== "Test" || !run.spec.cleanup) return false;
  const cleanup = run.status?.steps?.find((step) => step.action === "Cleanup");
  return cleanup?.phase !== "Failed";
}

/** Follows the run until it is done; resolves to its last state. Throws when it failed or the wait timed out. */
export async function followRun(options: FollowOptions): Promise<FailoverRun> {
  const { client, namespace, name, out } = options;
  const tty = out.isTTY;
  const seen = new Map<string, string>();
  const deadline = options.timeoutMs === undefined ? undefined : Date.now() + options.timeoutMs;
  let lastPhase: string | undefined;
  let progress = "";
  const print = (line: string) => {
    if (tty && progress !== "") out.write("\r\x1b[2K");
    out.write(`${line}\n`);
    progress = "";
  };
  for (;;) {
    const run = await client.get(failoverRuns, name, namespace);
    if (run === undefined) throw new Error(`failoverrun ${name} was deleted while being followed`);
    const status = run.status;
    for (const step of status?.steps ?? []) {
      const shown = seen.get(step.name);
      if (step.phase === "Pending" || shown === step.phase) continue;
      if (step.phase === "Running" && shown === undefined) print(`start ${step.name} (${step.action})`);
      else if (step.phase === "WaitingForApproval")
        print(
          `wait  ${step.name}: needs approval: kubectl dr approve ${name} ${step.group ?? ""}/${step.name.split("/").pop() ?? ""}`,
        );
      else if (step.phase !== "Running") print(stepLine(step));
      seen.set(step.name, step.phase);
    }
    const phase = status?.phase ?? "Pending";
    if (phase !== lastPhase) {
      const why = status?.conditions?.find((condition) => condition.type === "Ready")?.message;
      print(`run ${name}: ${phase}${why === undefined || why === "" ? "" : ` (${why})`}`);
      lastPhase = phase;
    }
    if (phase === "Failed" && !cleanupAhead(run)) throw new Error(`failoverrun ${name} failed`);
    if (options.until.includes(phase) || options.doneWhen?.(run) === true) {
      if (status?.rto !== undefined)
        print(`RTO ${status.rto}${status.dataLossWindow === undefined ? "" : `, data loss ${status.dataLossWindow}`}`);
      return run;
    }
    if (deadline !== undefined && Date.now() > deadline)
      throw new Error(
        `failoverrun ${name} is still ${phase} after the --timeout; it goes on: follow it with kubectl dr status`,
      );
    if (tty) {
      const current = status?.steps?.find((step) => step.name === status.currentStep);
      const since = current?.startTime ?? status?.startTime;
      progress = `… ${status?.currentStep ?? phase}${since === undefined ? "" : ` ${formatDuration(Date.now() - Date.parse(since))}`}`;
      out.write(`\r\x1b[2K${progress}`);
    }
    await sleep(options.pollMs ?? 1000);
  }
}
