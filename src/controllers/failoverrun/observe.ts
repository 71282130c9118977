// What nextStep is given: the run's plan and machines and the other runs that
// share them, from the informer caches.
import type { FailoverRun, ProtectedMachine, RecoveryPlan } from "../../api/types.js";
import type { Informer } from "../../runtime/index.js";
import { runMachines, type Observed, type OtherRun } from "./machine.js";

export interface RunCaches {
  readonly runs: Informer<FailoverRun>;
  readonly plans: Informer<RecoveryPlan>;
  readonly machines: Informer<ProtectedMachine>;
}

export function observe(run: FailoverRun, caches: RunCaches, now: number): Omit<Observed, "outcome"> {
  const namespace = run.metadata.namespace;
  const plan = run.spec.planRef === undefined ? undefined : caches.plans.get(run.spec.planRef.name, namespace);
  const names = runMachines(run, plan);
  const machines = new Map<string, ProtectedMachine>();
  for (const name of names) {
    const machine = caches.machines.get(name, namespace);
    if (machine !== undefined) machines.set(name, machine);
  }
  const otherRuns: OtherRun[] = caches.runs
    .list(namespace)
    .filter((other) => other.metadata.name !== run.metadata.name)
    .filter((other) => {
      if (run.spec.planRef !== undefined && other.spec.planRef?.name === run.spec.planRef.name) return true;
      const otherPlan =
        other.spec.planRef === undefined ? undefined : caches.plans.get(other.spec.planRef.name, namespace);
      return runMachines(other, otherPlan).some((name) => names.includes(name));
    })
    .map((other) => ({
      name: other.metadata.name,
      type: other.spec.type,
      ...(other.status?.phase === undefined ? {} : { phase: other.status.phase }),
      started: other.status?.startTime !== undefined,
      creationTimestamp: other.metadata.creationTimestamp ?? "",
      commit: other.spec.commit,
      cleanup: other.spec.cleanup,
    }));
  return { now, plan, machines, otherRuns };
}
