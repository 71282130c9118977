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
