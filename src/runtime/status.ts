// Status and finalizer writes. Both re-read and retry on conflict, and neither
// writes when nothing would change: a controller that rewrites an unchanged
// status wakes up every watcher for nothing (including itself).
import { isDeepStrictEqual } from "node:util";
import { isConflict, type KubeClient } from "./kube-client.js";
import type { KubeObject, ResourceType } from "./objects.js";

const maxConflictRetries = 5;

export interface WithStatus<S> extends KubeObject {
  status?: S;
}

export interface WriteResult<T> {
  /** The object after the write (or as read, when nothing changed). Undefined if it was deleted meanwhile. */
  object: T | undefined;
  changed: boolean;
}

/**
 * Computes the status from the object and writes it through the status
 * subresource when it differs. On a conflict, the object is read again and the
 * status recomputed from the fresh copy.
 */
export async function updateStatus<T extends WithStatus<unknown>>(
  client: KubeClient,
  type: ResourceType<T>,
  object: T,
  computeStatus: (current: T) => NonNullable<T["status"]>,
): Promise<WriteResult<T>> {
  return retryOnConflict(client, type, object, async (current) => {
    const status = computeStatus(current);
    if (isDeepStrictEqual(current.status, status)) return { object: current, changed: false };
    const written = await client.replaceStatus(type, { ...current, status });
    return { object: written, changed: true };
  });
}

export function hasFinalizer(object: KubeObject, finalizer: string): boolean {
  return object.metadata.finalizers?.includes(finalizer) === true;
}

export function addFinalizer<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType<T>,
  object: T,
  finalizer: string,
): Promise<WriteResult<T>> {
  return writeFinalizers(client, type, object, (current) =>
    hasFinalizer(current, finalizer) ? undefined : [...(current.metadata.finalizers ?? []), finalizer],
  );
}

export function removeFinalizer<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType<T>,
  object: T,
  finalizer: string,
): Promise<WriteResult<T>> {
  return writeFinalizers(client, type, object, (current) =>
    hasFinalizer(current, finalizer) ? (current.metadata.finalizers ?? []).filter((f) => f !== finalizer) : undefined,
  );
}

/**
 * A merge patch replaces the whole finalizer list, so it carries the
 * resourceVersion it was computed from: the server rejects it with a conflict if
 * anyone changed the object since, instead of losing their finalizer.
 */
function writeFinalizers<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType<T>,
  object: T,
  nextFinalizers: (current: T) => string[] | undefined,
): Promise<WriteResult<T>> {
  return retryOnConflict(client, type, object, async (current) => {
    const finalizers = nextFinalizers(current);
    if (finalizers === undefined) return { object: current, changed: false };
    const { name, namespace, resourceVersion } = current.metadata;
    const patch = { metadata: { resourceVersion, finalizers } };
    const written = await client.patch(type, { name, namespace }, patch, "merge");
    return { object: written, changed: true };
  });
}

async function retryOnConflict<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType<T>,
  object: T,
  attempt: (current: T) => Promise<WriteResult<T>>,
): Promise<WriteResult<T>> {
  let current: T | undefined = object;
  for (let tries = 1; ; tries++) {
    try {
      return await attempt(current);
    } catch (error) {
      if (!isConflict(error) || tries >= maxConflictRetries) throw error;
    }
    current = await client.get(type, object.metadata.name, object.metadata.namespace);
    if (current === undefined) return { object: undefined, changed: false };
  }
}
