// The ProtectedMachine reconcile, in the project's one shape: fetch → deleted? reconcileDelete :
// ensure finalizer → paused? → reconcileNormal, with the status written once at the end.
import { protectedMachines } from "../../api/types.js";
import { addFinalizer, hasFinalizer, reconcileWithStatus, StatusWriter, type Reconciler } from "../../runtime/index.js";
import { reconcileDelete, type DeleteDeps } from "./delete.js";
import { finalizer } from "./names.js";
import { reconcileNormal, reconcilePaused, type ProtectDeps } from "./protect.js";

export type MachineReconcilerDeps = ProtectDeps & Omit<DeleteDeps, "caches">;

export function newProtectedMachineReconciler(deps: MachineReconcilerDeps): Reconciler {
  const { client, caches } = deps;
  return async ({ name, namespace }, context) => {
    const cached = caches.machines.get(name, namespace);
    if (cached === undefined) return undefined;
    if (cached.metadata.deletionTimestamp !== undefined) {
      if (hasFinalizer(cached, finalizer)) await reconcileDelete(deps, cached, context.log);
      return undefined;
    }
    const { object: machine } = await addFinalizer(client, protectedMachines, cached, finalizer);
    if (machine === undefined) return undefined;

    const status = new StatusWriter(client, protectedMachines, machine, context.clock);
    return reconcileWithStatus(status, context.signal, () =>
      machine.spec.paused
        ? reconcilePaused(deps, machine, status, context)
        : reconcileNormal(deps, machine, status, context),
    );
  };
}
