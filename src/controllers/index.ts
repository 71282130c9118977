// Every controller of the operator, registered with one manager. Each kind's
// folder exports an add<Kind>Controller(manager, deps); add yours here.
import type { Manager } from "../runtime/index.js";
import type { OperatorDeps } from "./deps.js";
import { addFailoverRunController } from "./failoverrun/controller.js";
import { addProtectedMachineController } from "./protectedmachine/controller.js";
import { addRecoveryPlanController } from "./recoveryplan/controller.js";
import { addReplicationPolicyController } from "./replicationpolicy/controller.js";

export type { OperatorDeps } from "./deps.js";

/** One entry per kind: (manager, deps) => controller registered with the manager. */
const controllers: ((manager: Manager, deps: OperatorDeps) => unknown)[] = [
  addReplicationPolicyController,
  addProtectedMachineController,
  addRecoveryPlanController,
  addFailoverRunController,
];

export function addControllers(manager: Manager, deps: OperatorDeps): void {
  for (const add of controllers) add(manager, deps);
}
