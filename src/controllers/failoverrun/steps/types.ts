// One small interface for everything a run's step does (like VolSync's movers):
// plan actions (script, manual, wait, traffic, webhook) and the run's own steps.
// An executor is idempotent: called again for a step still Running (after a
// restart, or on the next poll) it continues what it started, never repeats it.
import type { FailoverRun, ProtectedMachine, RecoveryPlan } from "../../../api/types.js";
import type { Clock, KubeClient, Logger } from "../../../runtime/index.js";
import type { StepOutcome, StepWork } from "../machine.js";
import type { RecoveryPointAccess } from "./replicas.js";

export interface StepContext {
  readonly run: FailoverRun;
  readonly work: StepWork;
  readonly plan: RecoveryPlan | undefined;
  readonly machines: ReadonlyMap<string, ProtectedMachine>;
  readonly client: KubeClient;
  readonly clock: Clock;
  readonly signal: AbortSignal;
  readonly log: Logger;
  readonly replicas: RecoveryPointAccess;
  /** The image a drill's hydration Job runs (the replicators' image). */
  readonly replicatorImage: string;
}

export interface StepExecutor {
  execute(context: StepContext): Promise<StepOutcome>;
}

export const runLabel = "dr.ksr.io/failover-run";
export const runNamespaceLabel = "dr.ksr.io/failover-run-namespace";

/** Labels on everything a run creates, so cleanup deletes exactly that. */
export function runLabels(run: FailoverRun): Record<string, string> {
  return { [runLabel]: run.metadata.name, [runNamespaceLabel]: run.metadata.namespace ?? "" };
}

export function createdByRun(object: { metadata: { labels?: Record<string, string> } }, run: FailoverRun): boolean {
  const labels = object.metadata.labels ?? {};
  return labels[runLabel] === run.metadata.name && labels[runNamespaceLabel] === run.metadata.namespace;
}
