// Status and finalizer writes. Both re-read and retry on conflict, and neither
// writes when nothing would change: a controller that rewrites an unchanged
// status wakes up every watcher for nothing (including itself).
import { isDeepStrictEqual } from "node:util";
import type { Clock } from "./clock.js";
import { setCondition, validateCondition, type Condition, type ConditionUpdate } from "./conditions.js";
import { isConflict, isNotFound, type KubeClient } from "./kube-client.js";
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

/** What every status of this project carries. */
export interface StatusBase {
  observedGeneration?: number;
  conditions?: Condition[];
}

type StatusOf<T extends WithStatus<StatusBase>> = NonNullable<T["status"]>;

/**
 * One reconcile's status: the reconciler records what it observed and decided
 * (fields, conditions) and the writer sends it once, at the end (deferred, like
 * Cluster API's patch helper; see reconcileWithStatus). observedGeneration, and
 * every condition's, is the generation of the object the reconcile started
 * from. On a conflict the same changes are applied to a fresh copy, still with
 * that generation: a spec change made meanwhile has not been reconciled yet.
 */
export class StatusWriter<T extends WithStatus<StatusBase>> {
  /** The generation being reconciled. */
  readonly generation: number | undefined;
  private fields: Partial<StatusOf<T>> = {};
  private readonly conditionUpdates = new Map<string, ConditionUpdate>();
  private written = false;

  constructor(
    private readonly client: KubeClient,
    private readonly type: ResourceType<T>,
    private readonly object: T,
    private readonly clock: Clock,
  ) {
    this.generation = object.metadata.generation;
  }

  /** Sets status fields (a later call for the same field wins). */
  set(fields: Partial<StatusOf<T>>): void {
    this.fields = { ...this.fields, ...fields };
  }

  /** Sets a condition, observed at the reconciled generation (a later update of the same type wins). */
  condition(update: ConditionUpdate): void {
    validateCondition(update);
    this.conditionUpdates.set(update.type, update);
  }

  /** The status as it will be written, applied to the object the reconcile started from. */
  preview(): StatusOf<T> {
    return this.apply(this.object);
  }

  /** Writes, once, when the status differs; later calls are refused (a reconcile writes status once). */
  async write(): Promise<WriteResult<T>> {
    if (this.written) throw new Error(`status of ${this.object.metadata.name} was written already in this reconcile`);
    this.written = true;
    try {
      return await retryOnConflict(this.client, this.type, this.object, async (current) => {
        const status = this.apply(current);
        if (isDeepStrictEqual(current.status, status)) return { object: current, changed: false };
        const written = await this.client.replaceStatus(this.type, { ...current, status });
        return { object: written, changed: true };
      });
    } catch (error) {
      if (isNotFound(error)) return { object: undefined, changed: false };
      throw error;
    }
  }

  private apply(current: T): StatusOf<T> {
    const base = { ...(current.status ?? {}), ...this.fields } as StatusOf<T>;
    let conditions = base.conditions;
    const context = { observedGeneration: this.generation, now: this.clock.now() };
    for (const update of this.conditionUpdates.values()) conditions = setCondition(conditions, update, context);
    return {
      ...base,
      ...(this.generation === undefined ? {} : { observedGeneration: this.generation }),
      ...(conditions === undefined ? {} : { conditions }),
    };
  }
}

/**
 * Runs one reconcile's body and then writes its status, whether the body
 * returned or threw (status then says how far it got). Nothing is written once
 * the signal has aborted: after a lost lease nothing acts. The body's error
 * wins over a failed status write; the retry writes again.
 */
export async function reconcileWithStatus<T extends WithStatus<StatusBase>, R>(
  writer: StatusWriter<T>,
  signal: AbortSignal,
  body: () => Promise<R>,
): Promise<R> {
  let result: R;
  try {
    result = await body();
  } catch (error) {
    if (!signal.aborted) await writer.write().catch(() => undefined);
    throw error;
  }
  if (!signal.aborted) await writer.write();
  return result;
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
