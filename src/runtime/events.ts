// An events.k8s.io/v1 recorder. A repeat of the same event about the same
// object (same reason, action, type and note) within the series window updates
// one Event's series count instead of creating another object, so a
// controller stuck in a retry loop cannot flood the API server with Events.
import { randomBytes } from "node:crypto";
import { systemClock, type Clock } from "./clock.js";
import { isNotFound, type KubeClient } from "./kube-client.js";
import { errorMessage, silentLogger, type Logger } from "./logging.js";
import { resourceType, type KubeObject } from "./objects.js";

export type EventType = "Normal" | "Warning";

export interface EventRecord {
  type: EventType;
  /** CamelCase, machine-readable: why the event happened (e.g. ReplicationStarted). */
  reason: string;
  /** CamelCase: what the controller did or failed to do (e.g. Reconcile, Failover). */
  action: string;
  /** Human-readable; never put secrets here. Cut to 1 kB, the API's limit. */
  note: string;
}

interface K8sEvent extends KubeObject {
  eventTime: string;
  reportingController: string;
  reportingInstance: string;
  action: string;
  reason: string;
  note: string;
  type: EventType;
  regarding: { apiVersion?: string; kind?: string; name: string; namespace?: string; uid?: string };
  series?: { count: number; lastObservedTime: string };
}

export const eventsV1 = resourceType<K8sEvent>({
  group: "events.k8s.io",
  version: "v1",
  kind: "Event",
  plural: "events",
  namespaced: true,
});

interface Series {
  name: string;
  namespace: string;
  count: number;
  firstSeen: number;
  /** Writes for one series are chained so that counts never go backwards. */
  writing: Promise<void>;
}

/** Told of each new Event (not of a series repeat) as it is recorded; must not throw or block. */
export type RecordedEventListener = (regarding: KubeObject, event: EventRecord, time: string) => void;

export interface EventRecorderOptions {
  reportingController: string;
  reportingInstance: string;
  clock?: Clock;
  logger?: Logger;
  /** A repeat after this long starts a new Event. */
  seriesWindowMs?: number;
  maxTrackedSeries?: number;
}

const maxNoteBytes = 1024;
const identifierPattern = /^[A-Za-z][A-Za-z0-9]*$/;

/** Kubernetes MicroTime: RFC 3339 with exactly six fractional digits. */
export function microTime(time: number): string {
  return new Date(time).toISOString().replace(/\.(\d{3})Z$/, ".$1000Z");
}

export class EventRecorder {
  private readonly series = new Map<string, Series>();
  private readonly inFlight = new Set<Promise<void>>();
  private readonly listeners: RecordedEventListener[] = [];
  private readonly clock: Clock;
  private readonly log: Logger;
  private readonly seriesWindowMs: number;
  private readonly maxTrackedSeries: number;

  constructor(
    private readonly client: KubeClient,
    private readonly options: EventRecorderOptions,
  ) {
    this.clock = options.clock ?? systemClock;
    this.log = (options.logger ?? silentLogger).child({ component: "events" });
    this.seriesWindowMs = options.seriesWindowMs ?? 10 * 60_000;
    this.maxTrackedSeries = options.maxTrackedSeries ?? 4096;
  }

  /** Records an event about regarding. Never rejects: failing to record an event must not fail a reconcile. */
  record(regarding: KubeObject, event: EventRecord): Promise<void> {
    const writing = this.write(regarding, event);
    this.inFlight.add(writing);
    void writing.finally(() => this.inFlight.delete(writing));
    return writing;
  }

  /** Adds a listener (the notifications): Events stay the one path by which state changes are told. */
  addListener(listener: RecordedEventListener): void {
    this.listeners.push(listener);
  }

  /** Waits for every write started so far (before shutting the client down). */
  async flush(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }

  private async write(regarding: KubeObject, event: EventRecord): Promise<void> {
    if (!identifierPattern.test(event.reason) || !identifierPattern.test(event.action)) {
      this.log.error({ reason: event.reason, action: event.action }, "event reason and action must be CamelCase");
      return;
    }
    const key = seriesKey(regarding, event);
    const now = this.clock.now();
    const existing = this.series.get(key);
    if (existing !== undefined && now - existing.firstSeen < this.seriesWindowMs) {
      existing.count++;
      const count = existing.count;
      existing.writing = existing.writing.then(() => this.writeSeries(existing, regarding, event, count));
      await existing.writing;
      return;
    }
    const created: Series = {
      name: `${regarding.metadata.name}.${randomBytes(8).toString("hex")}`,
      namespace: regarding.metadata.namespace ?? "default",
      count: 1,
      firstSeen: now,
      writing: Promise.resolve(),
    };
    this.track(key, created);
    for (const listener of this.listeners) {
      try {
        listener(regarding, event, new Date(now).toISOString());
      } catch (error) {
        this.log.error({ err: errorMessage(error), reason: event.reason }, "event listener failed");
      }
    }
    created.writing = this.create(created, regarding, event);
    await created.writing;
  }

  private track(key: string, series: Series): void {
    this.series.delete(key);
    this.series.set(key, series);
    // Map iteration order is insertion order: the first key is the least recently started series.
    if (this.series.size > this.maxTrackedSeries) {
      const oldest = this.series.keys().next().value;
      if (oldest !== undefined) this.series.delete(oldest);
    }
  }

  private async create(series: Series, regarding: KubeObject, event: EventRecord): Promise<void> {
    const body: K8sEvent = {
      apiVersion: "events.k8s.io/v1",
      kind: "Event",
      metadata: { name: series.name, namespace: series.namespace },
      eventTime: microTime(this.clock.now()),
      reportingController: this.options.reportingController,
      reportingInstance: this.options.reportingInstance,
      action: event.action,
      reason: event.reason,
      note: truncateUtf8(event.note, maxNoteBytes),
      type: event.type,
      regarding: {
        apiVersion: regarding.apiVersion,
        kind: regarding.kind,
        name: regarding.metadata.name,
        namespace: regarding.metadata.namespace,
        uid: regarding.metadata.uid,
      },
    };
    try {
      await this.client.create(eventsV1, body);
    } catch (error) {
      this.log.warn({ err: errorMessage(error), reason: event.reason }, "could not record event");
    }
  }

  private async writeSeries(series: Series, regarding: KubeObject, event: EventRecord, count: number): Promise<void> {
    const patch = { series: { count, lastObservedTime: microTime(this.clock.now()) } };
    try {
      await this.client.patch(eventsV1, { name: series.name, namespace: series.namespace }, patch, "merge");
    } catch (error) {
      // The Event expired (the API server keeps them for an hour) or was deleted: start it again.
      if (isNotFound(error)) await this.create(series, regarding, event);
      else this.log.warn({ err: errorMessage(error), reason: event.reason }, "could not update event series");
    }
  }
}

function seriesKey(regarding: KubeObject, event: EventRecord): string {
  const { namespace, name, uid } = regarding.metadata;
  return JSON.stringify([regarding.kind, namespace, name, uid, event.type, event.reason, event.action, event.note]);
}

function truncateUtf8(text: string, maxBytes: number): string {
  const bytes = Buffer.from(text, "utf8");
  if (bytes.length <= maxBytes) return text;
  // Cutting inside a multi-byte character leaves a replacement character; drop it.
  return (
    bytes
      .subarray(0, maxBytes - 3)
      .toString("utf8")
      .replace(/\uFFFD$/, "") + "..."
  );
}
