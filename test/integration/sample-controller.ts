// The sample controller: how every controller of this project is written,
// using nothing but src/runtime. A Mirror (a test-only CRD) holds key/value
// data; the controller keeps a ConfigMap "<name>-mirror" with the same data,
// owned by the Mirror, and reports progress in status conditions.
//
// The reconcile shape: fetch → return early when gone or paused → compute the
// next step → act → record it in status → requeue (or not).
import {
  addFinalizer,
  configMaps,
  controllerReference,
  hasFinalizer,
  isControlledBy,
  predicates,
  removeFinalizer,
  resourceType,
  setCondition,
  updateStatus,
  type Condition,
  type ConditionUpdate,
  type ConfigMap,
  type KubeObject,
  type Manager,
  type Reconciler,
} from "../../src/runtime/index.js";

export interface Mirror extends KubeObject {
  spec: { data: Record<string, string>; paused?: boolean };
  status?: { observedGeneration?: number; conditions?: Condition[]; copiedKeys?: number };
}

export const mirrors = resourceType<Mirror>({
  group: "runtime-test.ksr.io",
  version: "v1",
  kind: "Mirror",
  plural: "mirrors",
  namespaced: true,
});

const finalizer = "runtime-test.ksr.io/delete-copy-first";
export const copyName = (mirrorName: string) => `${mirrorName}-mirror`;

/** namespace: watch only that namespace (default: all). */
export function newMirrorReconciler(manager: Manager, namespace?: string): Reconciler {
  const { client, events } = manager;
  const mirrorCache = manager.cache.informer(mirrors, { namespace });
  const copyCache = manager.cache.informer(configMaps, { namespace });

  const recordStatus = async (mirror: Mirror, ready: ConditionUpdate, copiedKeys?: number) => {
    await updateStatus(client, mirrors, mirror, (current) => ({
      observedGeneration: current.metadata.generation,
      copiedKeys: copiedKeys ?? current.status?.copiedKeys,
      conditions: setCondition(current.status?.conditions, ready, {
        observedGeneration: current.metadata.generation,
        now: Date.now(),
      }),
    }));
  };

  return async ({ name, namespace }, { log }) => {
    // Fetch. Gone: garbage collection removes the copy through its owner reference.
    const mirror = mirrorCache.get(name, namespace);
    if (mirror === undefined) return undefined;

    // Being deleted: the finalizer makes sure the copy goes before the Mirror does.
    if (isBeingDeleted(mirror)) {
      if (!hasFinalizer(mirror, finalizer)) return undefined;
      await client.delete(configMaps, { name: copyName(name), namespace });
      await removeFinalizer(client, mirrors, mirror, finalizer);
      log.info("copy deleted, finalizer removed");
      return undefined;
    }
    const { object: current } = await addFinalizer(client, mirrors, mirror, finalizer);
    if (current === undefined) return undefined;

    if (current.spec.paused === true) {
      await recordStatus(current, { type: "Ready", status: "False", reason: "Paused", message: "spec.paused is set" });
      return undefined;
    }

    // Compute the next step: create the copy, update it, or nothing.
    const copy = copyCache.get(copyName(name), namespace);
    if (copy !== undefined && !isControlledBy(copy, current)) {
      // Someone else's object is in the way. Retrying (with back-off) is right: its owner may move it.
      const note = `ConfigMap ${copyName(name)} exists and is not owned by this Mirror; delete or rename it`;
      await recordStatus(current, { type: "Ready", status: "False", reason: "CopyBlocked", message: note });
      void events.record(current, { type: "Warning", reason: "CopyBlocked", action: "Reconcile", note });
      throw new Error(note);
    }
    const desired: ConfigMap = {
      apiVersion: "v1",
      kind: "ConfigMap",
      metadata: { name: copyName(name), namespace, ownerReferences: [controllerReference(current)] },
      data: current.spec.data,
    };

    // Act.
    if (copy === undefined) {
      await client.create(configMaps, desired);
      log.info("copy created");
    } else if (!sameData(copy.data, current.spec.data)) {
      desired.metadata.resourceVersion = copy.metadata.resourceVersion; // a concurrent change makes this conflict
      await client.replace(configMaps, desired);
      log.info("copy updated");
    }

    // Record the result; updateStatus skips the write when nothing changed.
    const copiedKeys = Object.keys(current.spec.data).length;
    await recordStatus(current, { type: "Ready", status: "True", reason: "CopyUpToDate" }, copiedKeys);
    return undefined;
  };
}

const isBeingDeleted = (object: KubeObject) => object.metadata.deletionTimestamp !== undefined;

function sameData(a: Record<string, string> | undefined, b: Record<string, string>): boolean {
  const entries = Object.entries(a ?? {});
  return entries.length === Object.keys(b).length && entries.every(([key, value]) => b[key] === value);
}

/** Wires the controller: Mirrors (spec changes only) and the ConfigMaps they own. */
export function addMirrorController(
  manager: Manager,
  options: { concurrency?: number; reconciler?: Reconciler; namespace?: string } = {},
) {
  return manager
    .controller("mirror")
    .for(mirrors, {
      scope: { namespace: options.namespace },
      predicates: [predicates.any(predicates.generationChanged, (event) => isBeingDeleted(event.object))],
    })
    .owns(configMaps)
    .withConcurrency(options.concurrency ?? 2)
    .complete(options.reconciler ?? newMirrorReconciler(manager, options.namespace));
}
