// Wiring of the FailoverRun controller: runs, and the plans, machines and other
// runs they depend on (a run waiting for another starts when that one ends).
import { failoverRuns, protectedMachines, recoveryPlans, type FailoverRun } from "../../api/types.js";
import type { Manager, ObjectRef } from "../../runtime/index.js";
import type { OperatorDeps } from "../deps.js";
import { operatorReplicatorClients } from "../protectedmachine/controller.js";
import { newRecoveryPointAccess } from "./steps/replicas.js";
import { runMachines } from "./machine.js";
import { FailoverMetrics } from "./metrics.js";
import { newFailoverRunReconciler } from "./reconcile.js";

export function addFailoverRunController(manager: Manager, deps: OperatorDeps) {
  const caches = {
    runs: deps.cache.informer(failoverRuns),
    plans: deps.cache.informer(recoveryPlans),
    machines: deps.cache.informer(protectedMachines),
  };
  const replicas = newRecoveryPointAccess({
    replicators: operatorReplicatorClients(manager, deps),
    certificates: deps.certificates,
  });
  const runsIn = (namespace: string | undefined): ObjectRef[] =>
    caches.runs.list(namespace).map((run) => ({ name: run.metadata.name, namespace: run.metadata.namespace }));
  const runsOfMachine = (machine: { metadata: { name: string; namespace?: string } }): ObjectRef[] =>
    caches.runs
      .list(machine.metadata.namespace)
      .filter((run: FailoverRun) => {
        const plan =
          run.spec.planRef === undefined ? undefined : caches.plans.get(run.spec.planRef.name, run.metadata.namespace);
        return runMachines(run, plan).includes(machine.metadata.name);
      })
      .map((run) => ({ name: run.metadata.name, namespace: run.metadata.namespace }));
  return manager
    .controller("failoverrun")
    .for(failoverRuns)
    .watches(failoverRuns, (run) => runsIn(run.metadata.namespace))
    .watches(recoveryPlans, (plan) => runsIn(plan.metadata.namespace))
    .watches(protectedMachines, runsOfMachine)
    .withConcurrency(2)
    .complete(
      newFailoverRunReconciler({
        client: deps.client,
        events: deps.events,
        caches,
        metrics: new FailoverMetrics(manager.metrics.registry),
        replicas,
        replicatorImage: deps.replicatorImage,
      }),
    );
}
