// Notifications ride on the operator's one event flow: the EventRecorder hands every new Event
// (not a series repeat) to the Notifier, which picks out machine health changes, RPO threshold
// crossings and FailoverRun results and sends each to the receivers that asked for its category.
// Sending never blocks or fails a reconcile; a failed send is retried, then logged and counted,
// with Secret values redacted from what is logged.
import { Counter, type Registry } from "prom-client";
import {
  errorMessage,
  silentLogger,
  type EventRecord,
  type KubeClient,
  type KubeObject,
  type Logger,
} from "../runtime/index.js";
import { EmailChannel, SecretReader, WebhookChannel, type Channel, type Notification } from "./channels.js";
import type { NotificationCategory, NotificationsConfig } from "./config.js";

const categoryOf: Record<string, Partial<Record<string, NotificationCategory>>> = {
  ProtectedMachine: {
    HealthChanged: "MachineHealth",
    RpoThresholdExceeded: "RpoThreshold",
    RpoWithinThreshold: "RpoThreshold",
  },
  FailoverRun: {
    RunSucceeded: "RunResult",
    RunFailed: "RunResult",
    RunCommitted: "RunResult",
    RunCleanedUp: "RunResult",
    ValidationFailed: "RunResult",
    NotSupported: "RunResult",
  },
};

/** The category an Event belongs to, or undefined when no receiver is told about it. */
export function notificationCategory(kind: string | undefined, reason: string): NotificationCategory | undefined {
  return kind === undefined ? undefined : categoryOf[kind]?.[reason];
}

export interface NotifierOptions {
  client: KubeClient;
  /** The operator's namespace: every Secret a receiver names lives there. */
  namespace: string;
  config: NotificationsConfig;
  log?: Logger;
  registry?: Registry;
  /** Attempts per notification and receiver (default 3), waiting retryDelayMs × attempt between them. */
  attempts?: number;
  retryDelayMs?: number;
  timeoutMs?: number;
}

interface Route {
  name: string;
  categories: readonly NotificationCategory[];
  channel: Channel;
}

const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener(
      "abort",
      () => {
        clearTimeout(timer);
        resolve();
      },
      { once: true },
    );
  });

export class Notifier {
  private readonly routes: Route[];
  private readonly secretReader: SecretReader;
  private readonly log: Logger;
  private readonly sent?: Counter<"receiver" | "result">;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly stopping = new AbortController();
  private readonly attempts: number;
  private readonly retryDelayMs: number;
  private readonly timeoutMs: number;

  constructor(options: NotifierOptions) {
    this.secretReader = new SecretReader(options.client, options.namespace);
    this.log = (options.log ?? silentLogger).child({ component: "notifications" });
    this.attempts = options.attempts ?? 3;
    this.retryDelayMs = options.retryDelayMs ?? 2000;
    this.timeoutMs = options.timeoutMs ?? 15_000;
    this.routes = options.config.receivers.map((receiver) => ({
      name: receiver.name,
      categories: receiver.categories,
      channel:
        receiver.webhook !== undefined
          ? new WebhookChannel(receiver.webhook, this.secretReader)
          : new EmailChannel(receiver.email as NonNullable<typeof receiver.email>, this.secretReader),
    }));
    if (options.registry !== undefined)
      this.sent = new Counter({
        name: "ksr_notifications_total",
        help: "Notifications handed to a receiver, by result (sent or failed after every attempt)",
        labelNames: ["receiver", "result"],
        registers: [options.registry],
      });
  }

  get receivers(): string[] {
    return this.routes.map((route) => route.name);
  }

  /** The EventRecorder's listener: called once per new Event, never awaited by the recorder. */
  readonly onEvent = (regarding: KubeObject, event: EventRecord, time: string): void => {
    const category = notificationCategory(regarding.kind, event.reason);
    if (category === undefined || this.stopping.signal.aborted) return;
    const notification: Notification = {
      category,
      type: event.type,
      kind: regarding.kind ?? "",
      namespace: regarding.metadata.namespace ?? "",
      name: regarding.metadata.name,
      reason: event.reason,
      note: event.note,
      time,
    };
    for (const route of this.routes) {
      if (!route.categories.includes(category)) continue;
      const delivery = this.deliver(route, notification);
      this.inFlight.add(delivery);
      void delivery.finally(() => this.inFlight.delete(delivery));
    }
  };

  private async deliver(route: Route, notification: Notification): Promise<void> {
    const about = {
      receiver: route.name,
      reason: notification.reason,
      object: `${notification.namespace}/${notification.name}`,
    };
    for (let attempt = 1; attempt <= this.attempts; attempt++) {
      try {
        const signal = AbortSignal.any([this.stopping.signal, AbortSignal.timeout(this.timeoutMs)]);
        await route.channel.send(notification, signal);
        this.sent?.inc({ receiver: route.name, result: "sent" });
        this.log.info({ ...about, attempt }, "notification sent");
        return;
      } catch (error) {
        const message = this.secretReader.redact(errorMessage(error));
        if (attempt === this.attempts || this.stopping.signal.aborted) {
          this.sent?.inc({ receiver: route.name, result: "failed" });
          this.log.warn({ ...about, attempt, err: message }, "could not send notification");
          return;
        }
        this.log.info({ ...about, attempt, err: message }, "notification not sent; retrying");
        await sleep(this.retryDelayMs * attempt, this.stopping.signal);
      }
    }
  }

  /** Waits for the sends started so far (tests, and shutdown after the recorder's flush). */
  async flush(): Promise<void> {
    await Promise.all([...this.inFlight]);
  }

  /** Gives sends in flight up to graceMs, then aborts them. */
  async stop(graceMs = 5000): Promise<void> {
    const timer = setTimeout(() => {
      this.stopping.abort();
    }, graceMs);
    await this.flush();
    clearTimeout(timer);
    this.stopping.abort();
  }
}
