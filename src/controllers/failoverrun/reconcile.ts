// One reconcile of a FailoverRun: ask nextStep, record what it returns (status
// written before the step it starts acts), execute the step it names, feed the
// outcome back, until it says Wait or Finished. Status is written at each
// recorded step, not once per reconcile: a step must be in status before it acts.
import { failoverRuns, type FailoverRun } from "../../api/types.js";
import {
  isConflict,
  type EventRecorder,
  type KubeClient,
  type ReconcileContext,
  type Reconciler,
} from "../../runtime/index.js";
import { nextStep, type StepOutcome } from "./machine.js";
import type { FailoverMetrics } from "./metrics.js";
import { observe, type RunCaches } from "./observe.js";
import { stepExecutors } from "./steps/index.js";
import type { RecoveryPointAccess } from "./steps/replicas.js";

export interface RunDeps {
  readonly client: KubeClient;
  readonly events: EventRecorder;
  readonly caches: RunCaches;
  readonly metrics: FailoverMetrics;
  readonly replicas: RecoveryPointAccess;
  readonly replicatorImage: string;
}

/** Enough for a whole run when every step finishes at once; otherwise the reconcile ends earlier with a Wait. */
const maxDecisions = 200;

export function newFailoverRunReconciler(deps: RunDeps): Reconciler {
  const { client, events, caches, metrics } = deps;
  return async ({ name, namespace }, context: ReconcileContext) => {
    // The step record must build on the newest status, so the run is read from the API, not the cache.
    let run = await client.get(failoverRuns, name, namespace);
    if (run === undefined || run.metadata.deletionTimestamp !== undefined) return undefined;
    let outcome: { step: string; outcome: StepOutcome } | undefined;
    for (let decisions = 0; decisions < maxDecisions && !context.signal.aborted; decisions++) {
      const observed = { ...observe(run, caches, context.clock.now()), ...(outcome === undefined ? {} : { outcome }) };
      const decision = nextStep(run, observed);
      if (decision.kind === "Finished") return undefined;
      if (decision.kind === "Wait")
        return decision.requeueAfterMs === undefined ? undefined : { requeueAfterMs: decision.requeueAfterMs };
      if (decision.kind === "Record") {
        try {
          run = await client.replaceStatus(failoverRuns, { ...run, status: decision.status });
        } catch (error) {
          if (!isConflict(error)) throw error;
          // Someone changed the run meanwhile (a new approval, commit): decide again from what it is now.
          const fresh: FailoverRun | undefined = await client.get(failoverRuns, name, namespace);
          if (fresh === undefined) return undefined;
          run = fresh;
          continue;
        }
        metrics.observe(run.spec.type, decision.measurements);
        for (const event of decision.events)
          void events.record(run, { type: event.type, reason: event.reason, action: "FailoverRun", note: event.note });
        continue;
      }
      const { work } = decision;
      context.log.info({ step: work.step.name, action: work.step.action }, "executing step");
      const result = await stepExecutors[work.step.action].execute({
        run,
        work,
        plan: observed.plan,
        machines: observed.machines,
        client,
        clock: context.clock,
        signal: context.signal,
        log: context.log,
        replicas: deps.replicas,
        replicatorImage: deps.replicatorImage,
      });
      outcome = { step: work.step.name, outcome: result };
    }
    return { requeueAfterMs: 1000 };
  };
}
