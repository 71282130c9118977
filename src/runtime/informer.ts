// An informer keeps an indexed, read-only cache of one resource (optionally
// scoped by namespace and selectors) and tells handlers about every change.
// It lists, then watches from the list's resourceVersion; it relists after a
// 410 Gone, restarts with jittered exponential back-off after any other error,
// and treats a watch that shows neither events nor bookmarks for stallTimeoutMs
// as dead. Nothing that happens to the connection can end it: only stop() does.
import { Backoff, type BackoffPolicy } from "./backoff.js";
import { isAborted, sleep, systemClock, type Clock, type TimerHandle } from "./clock.js";
import {
  ApiError,
  isGone,
  type KubeClient,
  type ListResult,
  type WatchEvent,
  type WatchHandle,
} from "./kube-client.js";
import { errorMessage, silentLogger, type Logger } from "./logging.js";
import { deepFreeze, objectKey, type KubeObject, type ResourceType } from "./objects.js";

/** The two calls an informer needs; the API-backed one is apiListWatch(). */
export interface ListWatch<T extends KubeObject> {
  list(): Promise<ListResult<T>>;
  watch(resourceVersion: string, onEvent: (event: WatchEvent) => void): Promise<WatchHandle>;
}

export interface InformerScope {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}

export function apiListWatch<T extends KubeObject>(
  client: KubeClient,
  type: ResourceType<T>,
  scope: InformerScope = {},
): ListWatch<T> {
  return {
    list: () => client.list(type, scope),
    watch: (resourceVersion, onEvent) =>
      client.watch(
        type,
        // Like client-go, spread watch lifetimes (5-10 min) so that reconnects do not come in waves.
        { ...scope, resourceVersion, allowBookmarks: true, timeoutSeconds: 300 + Math.floor(Math.random() * 300) },
        onEvent,
      ),
  };
}

export interface InformerHandler<T> {
  onAdd?(object: T): void;
  /** Also called for every cached object on each resync, then with old === object. */
  onUpdate?(old: T, object: T): void;
  onDelete?(object: T): void;
}

export type Indexer<T> = (object: T) => string[];

export interface InformerOptions<T extends KubeObject> {
  name: string;
  listWatch: ListWatch<T>;
  indexers?: Record<string, Indexer<T>>;
  /** No event and no bookmark for this long restarts the watch. The API server bookmarks about once a minute. */
  stallTimeoutMs?: number;
  /** Every cached object is handed to onUpdate this often, so that missed or dropped work is redone. 0 = never. */
  resyncPeriodMs?: number;
  backoff?: BackoffPolicy;
  clock?: Clock;
  logger?: Logger;
}

export interface InformerStats {
  lists: number;
  watches: number;
  gone: number;
  stalls: number;
  errors: number;
  lastError?: string;
}

export const namespaceIndex = "namespace";
const defaultBackoff: BackoffPolicy = { initialMs: 250, maxMs: 30_000, jitter: 0.5 };

type WatchOutcome = "closed" | "gone";

/** What one watch connection saw; the event callback and the watchdog write it, the loop reads it. */
interface WatchSession {
  handle?: WatchHandle;
  failure?: Error | "gone";
  events: number;
  lastActivity: number;
}

export class Informer<T extends KubeObject> {
  readonly name: string;
  readonly stats: InformerStats = { lists: 0, watches: 0, gone: 0, stalls: 0, errors: 0 };
  private readonly objects = new Map<string, T>();
  private readonly indexers: Map<string, Indexer<T>>;
  private readonly indexes = new Map<string, Map<string, Set<string>>>();
  private readonly handlers: InformerHandler<T>[] = [];
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly backoff: Backoff;
  private readonly stallTimeoutMs: number;
  private readonly resyncPeriodMs: number;
  private resourceVersion = "";
  private synced = false;
  private readonly syncWaiters: (() => void)[] = [];
  private readonly stopController = new AbortController();
  private session: WatchSession | undefined;
  private running: Promise<void> | undefined;
  private resyncTimer: TimerHandle | undefined;

  constructor(private readonly options: InformerOptions<T>) {
    this.name = options.name;
    this.clock = options.clock ?? systemClock;
    this.log = (options.logger ?? silentLogger).child({ informer: options.name });
    this.backoff = new Backoff(options.backoff ?? defaultBackoff);
    this.stallTimeoutMs = options.stallTimeoutMs ?? 150_000;
    this.resyncPeriodMs = options.resyncPeriodMs ?? 0;
    this.indexers = new Map(Object.entries(options.indexers ?? {}));
    this.indexers.set(namespaceIndex, (object) => [object.metadata.namespace ?? ""]);
    for (const name of this.indexers.keys()) this.indexes.set(name, new Map());
  }

  /** Handlers added after the first sync first get an onAdd for every cached object. */
  addHandler(handler: InformerHandler<T>): void {
    this.handlers.push(handler);
    if (this.synced) for (const object of this.objects.values()) handler.onAdd?.(object);
  }

  start(): void {
    this.running ??= this.run();
  }

  async stop(): Promise<void> {
    this.stopController.abort();
    this.session?.handle?.abort("informer stopped");
    this.resyncTimer?.cancel();
    for (const resolve of this.syncWaiters.splice(0)) resolve();
    await this.running;
  }

  hasSynced(): boolean {
    return this.synced;
  }

  /** Resolves after the first complete list (or at once when the informer stops first). */
  waitForSync(): Promise<void> {
    if (this.synced || this.stopController.signal.aborted) return Promise.resolve();
    return new Promise((resolve) => this.syncWaiters.push(resolve));
  }

  /** The resourceVersion the next watch continues from. */
  get lastResourceVersion(): string {
    return this.resourceVersion;
  }

  get(name: string, namespace?: string): T | undefined {
    return this.objects.get(objectKey({ name, namespace }));
  }

  list(namespace?: string): T[] {
    return namespace === undefined ? [...this.objects.values()] : this.byIndex(namespaceIndex, namespace);
  }

  byIndex(index: string, value: string): T[] {
    const entries = this.indexes.get(index);
    if (entries === undefined) throw new Error(`informer ${this.name} has no index named ${index}`);
    const keys = entries.get(value) ?? new Set<string>();
    return [...keys].map((key) => this.objects.get(key)).filter((object) => object !== undefined);
  }

  get size(): number {
    return this.objects.size;
  }

  private async run(): Promise<void> {
    const stopped = this.stopController.signal;
    let needList = true;
    while (!stopped.aborted) {
      try {
        if (needList) {
          await this.relist();
          needList = false;
        }
        const outcome = await this.watchOnce();
        if (outcome === "gone") {
          this.stats.gone++;
          this.log.info({ resourceVersion: this.resourceVersion }, "watch expired (410 Gone): relisting");
          needList = true;
        }
      } catch (error) {
        if (isAborted(stopped)) break;
        if (isGone(error)) {
          this.stats.gone++;
          needList = true;
          continue;
        }
        this.stats.errors++;
        this.stats.lastError = errorMessage(error);
        const delay = this.backoff.next();
        this.log.warn({ err: errorMessage(error), retryInMs: delay, relist: needList }, "list/watch failed");
        await sleep(this.clock, delay, stopped);
      }
    }
  }

  private async relist(): Promise<void> {
    const { items, resourceVersion } = await this.options.listWatch.list();
    this.stats.lists++;
    const seen = new Set<string>();
    for (const item of items) {
      seen.add(objectKey(item.metadata));
      this.upsert(item);
    }
    for (const [key, object] of this.objects) if (!seen.has(key)) this.remove(object);
    this.resourceVersion = resourceVersion;
    this.backoff.reset();
    if (!this.synced) this.markSynced();
  }

  private markSynced(): void {
    this.synced = true;
    for (const resolve of this.syncWaiters.splice(0)) resolve();
    this.scheduleResync();
  }

  private async watchOnce(): Promise<WatchOutcome> {
    const session: WatchSession = { events: 0, lastActivity: this.clock.now() };
    this.session = session;
    const handle = await this.options.listWatch.watch(this.resourceVersion, (event) => {
      this.onWatchEvent(session, event);
    });
    session.handle = handle;
    this.stats.watches++;
    if (session.failure !== undefined || this.stopController.signal.aborted) handle.abort("ended before it started");
    const watchdog = this.startWatchdog(session);
    const end = await handle.ended;
    watchdog.cancel();
    if (session.failure === "gone") return "gone";
    if (session.failure !== undefined) throw session.failure;
    if (end.kind === "error") throw end.error;
    // A server that closes watches at once without a single event would make us spin: back off instead.
    if (session.events === 0) await sleep(this.clock, this.backoff.next(), this.stopController.signal);
    return "closed";
  }

  private onWatchEvent(session: WatchSession, event: WatchEvent): void {
    if (session.failure !== undefined) return;
    session.events++;
    session.lastActivity = this.clock.now();
    if (event.type === "ERROR") {
      const status = event.object;
      session.failure =
        status.code === 410
          ? "gone"
          : new ApiError(status.code ?? 0, status.reason ?? "", `watch error: ${status.message ?? "unknown"}`);
      session.handle?.abort("error event");
      return;
    }
    this.backoff.reset();
    const object = event.object as T;
    if (event.type === "ADDED" || event.type === "MODIFIED") this.upsert(object);
    else if (event.type === "DELETED") this.remove(object);
    const resourceVersion = object.metadata.resourceVersion;
    if (resourceVersion !== undefined) this.resourceVersion = resourceVersion;
  }

  /** One timer per watch that re-arms itself for the remaining time, instead of one timer per event. */
  private startWatchdog(session: WatchSession): TimerHandle {
    let timer: TimerHandle;
    const check = () => {
      const idle = this.clock.now() - session.lastActivity;
      if (idle < this.stallTimeoutMs) {
        timer = this.clock.setTimer(check, this.stallTimeoutMs - idle);
        return;
      }
      this.stats.stalls++;
      session.failure = new Error(`watch stalled: no event or bookmark for ${idle} ms`);
      session.handle?.abort("stalled");
    };
    timer = this.clock.setTimer(check, this.stallTimeoutMs);
    return {
      cancel: () => {
        timer.cancel();
      },
    };
  }

  private scheduleResync(): void {
    if (this.resyncPeriodMs <= 0 || this.stopController.signal.aborted) return;
    this.resyncTimer = this.clock.setTimer(() => {
      for (const object of this.objects.values()) this.notify((handler) => handler.onUpdate?.(object, object));
      this.scheduleResync();
    }, this.resyncPeriodMs);
  }

  private upsert(incoming: T): void {
    const object = deepFreeze(incoming);
    const key = objectKey(object.metadata);
    const old = this.objects.get(key);
    if (old !== undefined && old.metadata.resourceVersion === object.metadata.resourceVersion) return;
    if (old !== undefined) this.unindex(key, old);
    this.objects.set(key, object);
    this.index(key, object);
    if (old === undefined) this.notify((handler) => handler.onAdd?.(object));
    else this.notify((handler) => handler.onUpdate?.(old, object));
  }

  private remove(object: T): void {
    const key = objectKey(object.metadata);
    const old = this.objects.get(key);
    if (old === undefined) return;
    this.unindex(key, old);
    this.objects.delete(key);
    const final = deepFreeze(object);
    this.notify((handler) => handler.onDelete?.(final));
  }

  private index(key: string, object: T): void {
    for (const [name, indexer] of this.indexers) {
      const entries = this.indexes.get(name);
      for (const value of indexer(object)) {
        let keys = entries?.get(value);
        if (keys === undefined) {
          keys = new Set();
          entries?.set(value, keys);
        }
        keys.add(key);
      }
    }
  }

  private unindex(key: string, object: T): void {
    for (const [name, indexer] of this.indexers) {
      const entries = this.indexes.get(name);
      for (const value of indexer(object)) {
        const keys = entries?.get(value);
        keys?.delete(key);
        if (keys?.size === 0) entries?.delete(value);
      }
    }
  }

  private notify(call: (handler: InformerHandler<T>) => void): void {
    for (const handler of this.handlers) {
      try {
        call(handler);
      } catch (error) {
        // A faulty handler must not break the cache for everyone else.
        this.log.error({ err: errorMessage(error) }, "informer handler threw");
      }
    }
  }
}
