// Wiring of the ReplicationPolicy controller: policies, and the machines that
// name them (a machine added, removed or moved changes the count).
import { protectedMachines, replicationPolicies, type ProtectedMachine } from "../../api/types.js";
import { predicates, type Manager, type WatchedEvent } from "../../runtime/index.js";
import type { OperatorDeps } from "../deps.js";
import { newPolicyReconciler, type PolicyControllerOptions } from "./reconcile.js";

const policyChanged = (event: WatchedEvent<ProtectedMachine>) =>
  event.type !== "update" || event.old?.spec.policyRef.name !== event.object.spec.policyRef.name;

export function addReplicationPolicyController(
  manager: Manager,
  deps: OperatorDeps,
  options: PolicyControllerOptions = {},
) {
  const scope = { namespace: deps.watchNamespace };
  return manager
    .controller("replicationpolicy")
    .for(replicationPolicies, { scope, predicates: [predicates.generationChanged] })
    .watches(
      protectedMachines,
      (machine) => [{ namespace: machine.metadata.namespace, name: machine.spec.policyRef.name }],
      { scope, predicates: [policyChanged] },
    )
    .withConcurrency(2)
    .complete(newPolicyReconciler(deps, options));
}
