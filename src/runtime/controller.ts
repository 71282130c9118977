// A controller turns watch events into keys on a work queue and runs a
// reconciler for each key: level-triggered, so the reconciler reads current
// state itself and the event that woke it only says which object to look at.
import { randomUUID } from "node:crypto";
import type { InformerCache } from "./cache.js";
import type { Clock } from "./clock.js";
import type { InformerHandler, InformerScope } from "./informer.js";
import { isFenced } from "./kube-client.js";
import { errorMessage, type Logger } from "./logging.js";
import type { RuntimeMetrics } from "./metrics.js";
import { objectKey, parseObjectKey, type KubeObject, type ObjectRef, type ResourceType } from "./objects.js";
import { controllerOf } from "./owners.js";
import { WorkQueue, type RateLimitPolicy } from "./workqueue.js";

export interface ReconcileRequest extends ObjectRef {
  /** "namespace/name" (or "name" for cluster-scoped objects). */
  key: string;
}

export interface ReconcileContext {
  /** A logger whose every line carries the object's key. */
  log: Logger;
  /** How many times in a row this key has failed before this attempt. */
  retries: number;
  /**
   * Aborted when this process must stop acting: on shutdown and as soon as the
   * lease is lost. Long work passes it on or checks it between steps; the
   * manager's client refuses every request once it has aborted.
   */
  signal: AbortSignal;
  /** The manager's clock: condition times, ages, requeue decisions. */
  clock: Clock;
}

/** void: done until something changes; requeueAfterMs: look again after that long even if nothing changes. */
export type ReconcileOutcome = undefined | { requeueAfterMs: number };

export type Reconciler = (request: ReconcileRequest, context: ReconcileContext) => Promise<ReconcileOutcome>;

/** An error that retrying cannot fix (invalid spec, ...): logged and counted, but not requeued. */
export class TerminalError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "TerminalError";
  }
}

export interface WatchedEvent<T> {
  type: "add" | "update" | "delete";
  object: T;
  /** The previous state, for updates. */
  old?: T;
}

export type Predicate<T> = (event: WatchedEvent<T>) => boolean;

/** Maps a changed object to the primary objects that must be reconciled because of it. */
export type MapFunction<T> = (object: T) => ObjectRef[];

export const predicates = {
  /** Passes spec changes only (metadata.generation moves), e.g. to ignore the controller's own status writes. */
  generationChanged: <T extends KubeObject>(event: WatchedEvent<T>): boolean =>
    event.type !== "update" || event.old?.metadata.generation !== event.object.metadata.generation,
  labelsChanged: <T extends KubeObject>(event: WatchedEvent<T>): boolean =>
    event.type !== "update" || !sameRecord(event.old?.metadata.labels, event.object.metadata.labels),
  /** Passes an event when any of the given predicates does. */
  any:
    <T>(...options: Predicate<T>[]): Predicate<T> =>
    (event) =>
      options.some((predicate) => predicate(event)),
};

function sameRecord(a: Record<string, string> | undefined, b: Record<string, string> | undefined): boolean {
  const left = Object.entries(a ?? {});
  return left.length === Object.keys(b ?? {}).length && left.every(([key, value]) => b?.[key] === value);
}

interface Source {
  type: ResourceType<KubeObject>;
  scope: InformerScope;
  map: MapFunction<KubeObject>;
  predicates: Predicate<KubeObject>[];
}

export interface ControllerDeps {
  cache: InformerCache;
  metrics: RuntimeMetrics;
  logger: Logger;
  clock: Clock;
  /** The manager's: aborted on shutdown and on loss of leadership. */
  signal: AbortSignal;
}

export class Controller {
  private queue: WorkQueue | undefined;
  private workers: Promise<void>[] = [];
  private abandonStart: () => void = () => undefined;
  private acting: AbortController | undefined;
  private readonly log: Logger;

  constructor(
    readonly name: string,
    private readonly sources: Source[],
    private readonly reconciler: Reconciler,
    private readonly concurrency: number,
    private readonly rateLimit: RateLimitPolicy | undefined,
    private readonly deps: ControllerDeps,
  ) {
    this.log = deps.logger.child({ controller: name });
    for (const source of sources) deps.cache.informer(source.type, source.scope);
  }

  get running(): boolean {
    return this.queue !== undefined;
  }

  /** Waits for the caches this controller reads, then starts its workers. */
  async start(): Promise<void> {
    if (this.queue !== undefined) return;
    const queue = new WorkQueue({ rateLimit: this.rateLimit, observer: this.deps.metrics.queueObserver(this.name) });
    this.queue = queue;
    const acting = new AbortController();
    this.acting = acting;
    for (const source of this.sources) {
      this.deps.cache.informer(source.type, source.scope).addHandler(this.handlerFor(source, queue));
    }
    const synced = Promise.all(this.sources.map((s) => this.deps.cache.informer(s.type, s.scope).waitForSync()));
    // A cache may never sync (a CRD not installed, the API server away): stop() must not wait for it.
    const stopped = new Promise<void>((resolve) => (this.abandonStart = resolve));
    await Promise.race([synced, stopped]);
    if (this.queue !== queue) return;
    this.deps.metrics.maxConcurrentReconciles.set({ controller: this.name }, this.concurrency);
    const signal = AbortSignal.any([this.deps.signal, acting.signal]);
    this.workers = Array.from({ length: this.concurrency }, () => this.work(queue, signal));
    this.log.info({ concurrency: this.concurrency }, "controller started");
  }

  /** Stops taking new work and waits for reconciles in flight to finish. */
  async stop(): Promise<void> {
    const queue = this.queue;
    if (queue === undefined) return;
    this.queue = undefined;
    // First, before draining: reconciles in flight must stop acting now, not when they next look.
    this.acting?.abort();
    this.abandonStart();
    await queue.shutDownAndDrain();
    await Promise.all(this.workers);
    this.workers = [];
    this.log.info("controller stopped");
  }

  private handlerFor(source: Source, queue: WorkQueue): InformerHandler<KubeObject> {
    const enqueue = (event: WatchedEvent<KubeObject>) => {
      if (!source.predicates.every((predicate) => predicate(event))) return;
      for (const ref of source.map(event.object)) queue.add(objectKey(ref));
    };
    return {
      onAdd: (object) => {
        enqueue({ type: "add", object });
      },
      onUpdate: (old, object) => {
        // A resync (same object twice) bypasses predicates: it exists to redo work that events alone missed.
        if (old === object) for (const ref of source.map(object)) queue.add(objectKey(ref));
        else enqueue({ type: "update", object, old });
      },
      onDelete: (object) => {
        enqueue({ type: "delete", object });
      },
    };
  }

  private async work(queue: WorkQueue, signal: AbortSignal): Promise<void> {
    for (;;) {
      const key = await queue.get();
      if (key === undefined) return;
      this.deps.metrics.activeWorkers.inc({ controller: this.name });
      try {
        await this.reconcileKey(queue, key, signal);
      } finally {
        this.deps.metrics.activeWorkers.dec({ controller: this.name });
        queue.done(key);
      }
    }
  }

  private async reconcileKey(queue: WorkQueue, key: string, signal: AbortSignal): Promise<void> {
    const ref = parseObjectKey(key);
    const log = this.log.child({ key, namespace: ref.namespace, name: ref.name, reconcileID: randomUUID() });
    const stopTimer = this.deps.metrics.reconcileTime.startTimer({ controller: this.name });
    const count = (result: "success" | "error" | "requeue_after") => {
      this.deps.metrics.reconcileTotal.inc({ controller: this.name, result });
    };
    try {
      const context = { log, retries: queue.numRequeues(key), signal, clock: this.deps.clock };
      const outcome = await this.reconciler({ ...ref, key }, context);
      queue.forget(key);
      if (outcome !== undefined) {
        queue.addAfter(key, outcome.requeueAfterMs);
        count("requeue_after");
      } else {
        count("success");
      }
      log.debug({ requeueAfterMs: outcome?.requeueAfterMs }, "reconciled");
    } catch (error) {
      if (signal.aborted && (isFenced(error) || signal.reason === error)) {
        // Stopping: the next leader (or the next start) picks the key up again from the cache.
        log.info({ err: errorMessage(error) }, "reconcile abandoned: this process stopped acting");
        return;
      }
      count("error");
      this.deps.metrics.reconcileErrors.inc({ controller: this.name });
      if (error instanceof TerminalError) {
        queue.forget(key);
        this.deps.metrics.terminalReconcileErrors.inc({ controller: this.name });
        log.error({ err: errorMessage(error) }, "reconcile failed permanently; not retrying until the object changes");
      } else {
        log.error(
          { err: errorMessage(error), retries: queue.numRequeues(key) },
          "reconcile failed; retrying with back-off",
        );
        queue.addRateLimited(key);
      }
    } finally {
      stopTimer();
    }
  }
}

/** Fluent description of a controller; manager.controller(name) starts one. */
export class ControllerBuilder {
  private readonly sources: Source[] = [];
  private primary: { type: ResourceType<KubeObject>; scope: InformerScope } | undefined;
  private concurrency = 1;
  private rateLimit: RateLimitPolicy | undefined;

  constructor(
    private readonly name: string,
    private readonly register: (controller: Controller) => void,
    private readonly deps: ControllerDeps,
  ) {}

  /** The kind this controller reconciles: each change enqueues the object itself. */
  for<T extends KubeObject>(
    type: ResourceType<T>,
    options: { scope?: InformerScope; predicates?: Predicate<T>[] } = {},
  ): this {
    if (this.primary !== undefined)
      throw new Error(`controller ${this.name} already reconciles ${this.primary.type.kind}`);
    const scope = options.scope ?? {};
    this.primary = { type, scope };
    this.addSource(type, scope, (object) => [object.metadata], options.predicates);
    return this;
  }

  /** Objects this controller creates: a change enqueues the primary object named as their controller owner. */
  owns<T extends KubeObject>(type: ResourceType<T>, options: { predicates?: Predicate<T>[] } = {}): this {
    const primary = this.requirePrimary("owns");
    const map = (object: T): ObjectRef[] => {
      const owner = controllerOf(object);
      if (owner?.kind !== primary.type.kind || groupOf(owner.apiVersion) !== primary.type.group) return [];
      return [{ namespace: object.metadata.namespace, name: owner.name }];
    };
    this.addSource(type, { namespace: primary.scope.namespace }, map, options.predicates);
    return this;
  }

  /** Any other kind: map says which primary objects a change concerns (e.g. a PVC → its ProtectedMachine). */
  watches<T extends KubeObject>(
    type: ResourceType<T>,
    map: MapFunction<T>,
    options: { scope?: InformerScope; predicates?: Predicate<T>[] } = {},
  ): this {
    this.requirePrimary("watches");
    this.addSource(type, options.scope ?? {}, map, options.predicates);
    return this;
  }

  /** How many keys are reconciled at once (never the same key twice). */
  withConcurrency(workers: number): this {
    if (!Number.isInteger(workers) || workers < 1)
      throw new Error(`concurrency must be a positive integer, got ${workers}`);
    this.concurrency = workers;
    return this;
  }

  withRateLimit(policy: RateLimitPolicy): this {
    this.rateLimit = policy;
    return this;
  }

  complete(reconciler: Reconciler): Controller {
    this.requirePrimary("complete");
    const controller = new Controller(this.name, this.sources, reconciler, this.concurrency, this.rateLimit, this.deps);
    this.register(controller);
    return controller;
  }

  private addSource<T extends KubeObject>(
    type: ResourceType<T>,
    scope: InformerScope,
    map: MapFunction<T>,
    eventPredicates: Predicate<T>[] = [],
  ): void {
    // The cache holds objects of many kinds; each source only ever sees its own, so the casts are sound.
    this.sources.push({
      type: type,
      scope,
      map: map as MapFunction<KubeObject>,
      predicates: eventPredicates as Predicate<KubeObject>[],
    });
  }

  private requirePrimary(step: string): { type: ResourceType<KubeObject>; scope: InformerScope } {
    if (this.primary === undefined) throw new Error(`controller ${this.name}: call for() before ${step}()`);
    return this.primary;
  }
}

function groupOf(apiVersion: string): string {
  const slash = apiVersion.indexOf("/");
  return slash < 0 ? "" : apiVersion.slice(0, slash);
}
