// Wiring of the RecoveryPlan controller: plans, and the machines and runs their status reports.
import { failoverRuns, protectedMachines, recoveryPlans } from "../../api/types.js";
import type { Manager, ObjectRef } from "../../runtime/index.js";
import type { OperatorDeps } from "../deps.js";
import { newRecoveryPlanReconciler } from "./reconcile.js";

export function addRecoveryPlanController(manager: Manager, deps: OperatorDeps) {
  const plans = deps.cache.informer(recoveryPlans);
  const machines = deps.cache.informer(protectedMachines);
  const runs = deps.cache.informer(failoverRuns);
  const plansWith = (machine: { metadata: { name: string; namespace?: string } }): ObjectRef[] =>
    plans
      .list(machine.metadata.namespace)
      .filter((plan) => plan.spec.groups.some((group) => group.machines?.includes(machine.metadata.name) === true))
      .map((plan) => ({ name: plan.metadata.name, namespace: plan.metadata.namespace }));
  return manager
    .controller("recoveryplan")
    .for(recoveryPlans)
    .watches(protectedMachines, plansWith)
    .watches(failoverRuns, (run) =>
      run.spec.planRef === undefined ? [] : [{ name: run.spec.planRef.name, namespace: run.metadata.namespace }],
    )
    .withConcurrency(2)
    .complete(newRecoveryPlanReconciler({ client: deps.client, events: deps.events, plans, machines, runs }));
}
