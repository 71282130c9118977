// The shapes src/runtime works with: any Kubernetes object has metadata, and a
// ResourceType tells the client where objects of one kind live in the API.

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  resourceVersion?: string;
  generation?: number;
  creationTimestamp?: string;
  deletionTimestamp?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  finalizers?: string[];
}

export interface KubeObject {
  apiVersion?: string;
  kind?: string;
  metadata: ObjectMeta;
}

/** Where a kind lives in the API. The type parameter only ties objects to their kind at compile time. */
export interface ResourceType<T extends KubeObject> {
  readonly group: string;
  readonly version: string;
  readonly kind: string;
  readonly plural: string;
  readonly namespaced: boolean;
  /** Never set: carries T so that client calls infer the object type. */
  readonly objectType?: T;
}

export function resourceType<T extends KubeObject>(spec: Omit<ResourceType<T>, "objectType">): ResourceType<T> {
  return spec;
}

export function apiVersionOf(type: ResourceType<KubeObject>): string {
  return type.group === "" ? type.version : `${type.group}/${type.version}`;
}

/** "namespace/name" for namespaced objects, "name" for cluster-scoped ones: the work-queue key. */
export function objectKey(meta: { namespace?: string; name: string }): string {
  return meta.namespace === undefined || meta.namespace === "" ? meta.name : `${meta.namespace}/${meta.name}`;
}

export interface ObjectRef {
  namespace?: string;
  name: string;
}

export function parseObjectKey(key: string): ObjectRef {
  const slash = key.indexOf("/");
  return slash < 0 ? { name: key } : { namespace: key.slice(0, slash), name: key.slice(slash + 1) };
}

/** Objects in informer caches are shared and frozen; handlers that need to change one work on a copy. */
export function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object" && !Object.isFrozen(value)) {
    Object.freeze(value);
    for (const child of Object.values(value)) deepFreeze(child);
  }
  return value;
}
