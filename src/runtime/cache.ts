// Shared informers: every controller asking for the same resource and scope
// reads the same cache and shares one watch.
import type { BackoffPolicy } from "./backoff.js";
import type { Clock } from "./clock.js";
import type { KubeClient } from "./kube-client.js";
import { apiListWatch, Informer, type Indexer, type InformerScope, type ListWatch } from "./informer.js";
import type { Logger } from "./logging.js";
import type { KubeObject, ResourceType } from "./objects.js";

/** Lets a caller wrap or replace the API-backed list-watch of an informer (used to inject faults in tests). */
export type ListWatchWrapper = <T extends KubeObject>(
  type: ResourceType<T>,
  scope: InformerScope,
  listWatch: ListWatch<T>,
) => ListWatch<T>;

export interface InformerCacheOptions {
  client: KubeClient;
  logger: Logger;
  clock?: Clock;
  stallTimeoutMs?: number;
  resyncPeriodMs?: number;
  backoff?: BackoffPolicy;
  wrapListWatch?: ListWatchWrapper;
}

export class InformerCache {
  private readonly informers = new Map<string, Informer<KubeObject>>();
  private started = false;

  constructor(private readonly options: InformerCacheOptions) {}

  /**
   * The informer for type within scope, created on first use. Indexers can only
   * be given by the first caller: an index added later would miss objects.
   */
  informer<T extends KubeObject>(
    type: ResourceType<T>,
    scope: InformerScope = {},
    indexers?: Record<string, Indexer<T>>,
  ): Informer<T> {
    const key = JSON.stringify([
      type.group,
      type.version,
      type.plural,
      scope.namespace,
      scope.labelSelector,
      scope.fieldSelector,
    ]);
    const existing = this.informers.get(key) as Informer<T> | undefined;
    if (existing !== undefined) {
      if (indexers !== undefined)
        throw new Error(`the informer for ${type.plural} ${key} already exists; give its indexers first`);
      return existing;
    }
    const listWatch = apiListWatch(this.options.client, type, scope);
    const informer = new Informer<T>({
      name: [type.plural, scope.namespace, scope.labelSelector, scope.fieldSelector]
        .filter((part) => part !== undefined)
        .join(":"),
      listWatch: this.options.wrapListWatch?.(type, scope, listWatch) ?? listWatch,
      indexers,
      stallTimeoutMs: this.options.stallTimeoutMs,
      resyncPeriodMs: this.options.resyncPeriodMs,
      backoff: this.options.backoff,
      clock: this.options.clock,
      logger: this.options.logger,
    });
    this.informers.set(key, informer as unknown as Informer<KubeObject>);
    if (this.started) informer.start();
    return informer;
  }

  start(): void {
    this.started = true;
    for (const informer of this.informers.values()) informer.start();
  }

  async stop(): Promise<void> {
    await Promise.all([...this.informers.values()].map((informer) => informer.stop()));
  }

  synced(): boolean {
    return [...this.informers.values()].every((informer) => informer.hasSynced());
  }

  all(): Informer<KubeObject>[] {
    return [...this.informers.values()];
  }
}
