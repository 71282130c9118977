// Owner references: what makes garbage collection delete an object with its
// owner, and what lets a controller find the primary object from a dependent.
import type { KubeObject, OwnerReference } from "./objects.js";

export function controllerReference(owner: KubeObject): OwnerReference {
  const { apiVersion, kind } = owner;
  const { name, uid } = owner.metadata;
  if (apiVersion === undefined || kind === undefined || uid === undefined) {
    throw new Error(`owner ${name} needs apiVersion, kind and metadata.uid (use an object read from the API)`);
  }
  return { apiVersion, kind, name, uid, controller: true, blockOwnerDeletion: true };
}

export function controllerOf(object: KubeObject): OwnerReference | undefined {
  return object.metadata.ownerReferences?.find((reference) => reference.controller === true);
}

export function isControlledBy(object: KubeObject, owner: KubeObject): boolean {
  return controllerOf(object)?.uid === owner.metadata.uid;
}

/**
 * Returns a copy of object's metadata.ownerReferences with owner as its controller.
 * Refuses what the API server would reject or garbage-collect wrongly: a second
 * controller, or an owner in another namespace.
 */
export function withControllerReference(object: KubeObject, owner: KubeObject): OwnerReference[] {
  const ownerNamespace = owner.metadata.namespace;
  if (ownerNamespace !== undefined && ownerNamespace !== object.metadata.namespace) {
    throw new Error(
      `${object.metadata.name} in namespace ${object.metadata.namespace ?? "(cluster)"} cannot be owned by ` +
        `${owner.metadata.name} in namespace ${ownerNamespace}: owner references do not cross namespaces`,
    );
  }
  const reference = controllerReference(owner);
  const existing = controllerOf(object);
  if (existing !== undefined && existing.uid !== reference.uid) {
    throw new Error(`${object.metadata.name} is already controlled by ${existing.kind} ${existing.name}`);
  }
  const others = (object.metadata.ownerReferences ?? []).filter((ref) => ref.uid !== reference.uid);
  return [...others, reference];
}
