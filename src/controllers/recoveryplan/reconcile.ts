// One reconcile of a RecoveryPlan: observe its machines and runs, dry-run its
// script actions' Jobs on the server, and write the status once.
import { recoveryPlans, type FailoverRun, type ProtectedMachine, type RecoveryPlan } from "../../api/types.js";
import {
  ApiError,
  jobs,
  reconcileWithStatus,
  StatusWriter,
  type EventRecorder,
  type Informer,
  type KubeClient,
  type Reconciler,
} from "../../runtime/index.js";
import { actionNamespace, scriptJob } from "../failoverrun/steps/script.js";
import { planActions, planStatus } from "./status.js";

export interface PlanDeps {
  readonly client: KubeClient;
  readonly events: EventRecorder;
  readonly plans: Informer<RecoveryPlan>;
  readonly machines: Informer<ProtectedMachine>;
  readonly runs: Informer<FailoverRun>;
}

/** The API server's verdict on each script action's Job, kept per plan generation (a dry run is a request). */
async function dryRunScripts(
  client: KubeClient,
  plan: RecoveryPlan,
  machines: ReadonlyMap<string, ProtectedMachine>,
): Promise<Map<string, string>> {
  const errors = new Map<string, string>();
  for (const { key, group, action } of planActions(plan)) {
    if (action.script === undefined) continue;
    const namespace = actionNamespace(undefined, plan, group, machines);
    try {
      await client.create(jobs, scriptJob(plan, key, action.script.jobTemplate, namespace), { dryRun: true });
    } catch (error) {
      if (!(error instanceof ApiError)) throw error;
      errors.set(key, error.message);
    }
  }
  return errors;
}

export function newRecoveryPlanReconciler(deps: PlanDeps): Reconciler {
  const verdicts = new Map<string, { generation: number | undefined; errors: Map<string, string> }>();
  return async ({ name, namespace }, context) => {
    const plan = deps.plans.get(name, namespace);
    if (plan === undefined) {
      verdicts.delete(`${namespace ?? ""}/${name}`);
      return undefined;
    }
    const machines = new Map(
      plan.spec.groups
        .flatMap((group) => group.machines ?? [])
        .flatMap((machine) => {
          const found = deps.machines.get(machine, namespace);
          return found === undefined ? [] : [[machine, found] as const];
        }),
    );
    const status = new StatusWriter(deps.client, recoveryPlans, plan, context.clock);
    return reconcileWithStatus(status, context.signal, async () => {
      const key = `${namespace ?? ""}/${name}`;
      const cached = verdicts.get(key);
      const verdict =
        cached !== undefined && cached.generation === plan.metadata.generation
          ? cached
          : { generation: plan.metadata.generation, errors: await dryRunScripts(deps.client, plan, machines) };
      verdicts.set(key, verdict);
      const runs = deps.runs.list(namespace).filter((run) => run.spec.planRef?.name === name);
      const computed = planStatus(plan, { machines, runs, scriptErrors: verdict.errors });
      const before = plan.status?.conditions?.find((condition) => condition.type === "Valid");
      status.set(computed.fields);
      status.condition(computed.valid);
      if (before?.status !== computed.valid.status)
        void deps.events.record(plan, {
          type: computed.valid.status === "True" ? "Normal" : "Warning",
          reason: computed.valid.reason,
          action: "Validate",
          note: computed.valid.message ?? "",
        });
      return undefined;
    });
  };
}
