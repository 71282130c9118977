// The manager owns what controllers share: the API client, the informer cache,
// metrics, the health server, the event recorder, the clock and leader
// election. Caches start at once (a standby stays warm); controllers run only
// while this process leads; losing the lease stops them all and ends the
// manager. The client controllers get is fenced: from the moment the manager
// stops or loses the lease, it refuses every request and cuts those in flight.
import { randomUUID } from "node:crypto";
import { hostname } from "node:os";
import type { AddressInfo } from "node:net";
import type { KubeConfig } from "@kubernetes/client-node";
import type { BackoffPolicy } from "./backoff.js";
import { InformerCache, type ListWatchWrapper } from "./cache.js";
import { systemClock, type Clock } from "./clock.js";
import { ControllerBuilder, type Controller } from "./controller.js";
import { EventRecorder } from "./events.js";
import { HealthServer } from "./health-server.js";
import { KubeClient, type KubeClientOptions } from "./kube-client.js";
import { LeaderElector, type LeaderElectionOptions } from "./leader-election.js";
import { errorMessage, silentLogger, type Logger } from "./logging.js";
import { RuntimeMetrics } from "./metrics.js";

export interface ManagerOptions {
  /** The component's name: reportingController of its events, and the logger's name. */
  name: string;
  kubeConfig: KubeConfig;
  logger?: Logger;
  /** Without it, this process always leads (one replica, or tests). */
  leaderElection?: Omit<LeaderElectionOptions, "identity"> & { identity?: string };
  /** Serve /metrics, /healthz and /readyz; port 0 picks a free port. */
  health?: { port: number; host?: string };
  cache?: {
    stallTimeoutMs?: number;
    resyncPeriodMs?: number;
    backoff?: BackoffPolicy;
    wrapListWatch?: ListWatchWrapper;
  };
  client?: KubeClientOptions;
  /** How long stop() waits for reconciles in flight. */
  shutdownTimeoutMs?: number;
  /** The clock reconciles see (ReconcileContext.clock); tests pass a fake one. */
  clock?: Clock;
}

export type ManagerEnd = "stopped" | "lost-leadership";

export class Manager {
  /** For controllers: refuses requests once the manager stops acting (see signal). */
  readonly client: KubeClient;
  /** Aborted when the manager stops or loses the lease: after that, nothing may act. */
  readonly signal: AbortSignal;
  readonly clock: Clock;
  readonly cache: InformerCache;
  readonly metrics = new RuntimeMetrics();
  readonly events: EventRecorder;
  readonly log: Logger;
  readonly identity: string;
  /** Resolves when the manager has stopped, saying why; a process should exit then. */
  readonly done: Promise<ManagerEnd>;
  private resolveDone: (end: ManagerEnd) => void = () => undefined;
  private readonly controllers: Controller[] = [];
  private readonly elector: LeaderElector | undefined;
  private readonly health: HealthServer;
  private readonly stopSignal = new AbortController();
  /** Unfenced: the lease, the caches and the event recorder keep working while the manager shuts down. */
  private readonly apiClient: KubeClient;
  private lifecycle: Promise<void> | undefined;
  private stopping: Promise<void> | undefined;
  private healthAddress: AddressInfo | undefined;

  constructor(private readonly options: ManagerOptions) {
    this.log = (options.logger ?? silentLogger).child({ manager: options.name });
    this.clock = options.clock ?? systemClock;
    this.signal = this.stopSignal.signal;
    this.apiClient = new KubeClient(options.kubeConfig, options.client);
    this.client = this.apiClient.fenced(this.signal);
    this.identity = options.leaderElection?.identity ?? `${hostname()}_${randomUUID()}`;
    this.cache = new InformerCache({ client: this.apiClient, logger: this.log, ...options.cache });
    this.events = new EventRecorder(this.apiClient, {
      reportingController: options.name,
      reportingInstance: this.identity,
      clock: this.clock,
      logger: this.log,
    });
    this.elector =
      options.leaderElection === undefined
        ? undefined
        : new LeaderElector(
            this.apiClient,
            { ...options.leaderElection, identity: this.identity },
            { logger: this.log, clock: this.clock },
          );
    this.health = new HealthServer(this.metrics.registry, {
      healthy: () => ({ ok: this.stopping === undefined, detail: this.stopping === undefined ? "ok" : "stopping" }),
      ready: () => this.readiness(),
    });
    this.done = new Promise((resolve) => (this.resolveDone = resolve));
  }

  /** Describes a new controller; complete() registers it with this manager. */
  controller(name: string): ControllerBuilder {
    if (this.controllers.some((controller) => controller.name === name))
      throw new Error(`controller ${name} exists already`);
    return new ControllerBuilder(name, (controller) => this.controllers.push(controller), {
      cache: this.cache,
      metrics: this.metrics,
      logger: this.log,
      clock: this.clock,
      signal: this.signal,
    });
  }

  /** True while this manager's controllers may run. */
  get isLeader(): boolean {
    return this.elector?.isLeader ?? (this.lifecycle !== undefined && this.stopping === undefined);
  }

  /** Where /metrics, /healthz and /readyz are served (when options.health is set). */
  get healthPort(): number | undefined {
    return this.healthAddress?.port;
  }

  /** Starts serving, caching and campaigning; resolves without waiting for leadership. */
  async start(): Promise<void> {
    if (this.lifecycle !== undefined) throw new Error("the manager was started already");
    if (this.options.health !== undefined) {
      this.healthAddress = await this.health.listen(this.options.health.port, this.options.health.host ?? "0.0.0.0");
    }
    this.cache.start();
    this.lifecycle = this.lead().catch((error: unknown) => {
      this.log.error({ err: errorMessage(error) }, "manager failed");
    });
  }

  /** Graceful shutdown: drain reconciles, hand the lease back, stop watching. */
  stop(): Promise<void> {
    this.stopping ??= this.shutDown("stopped");
    return this.stopping;
  }

  private async lead(): Promise<void> {
    const signal = this.stopSignal.signal;
    const leaderGauge = { name: this.options.leaderElection?.leaseName ?? this.options.name };
    this.metrics.leaderStatus.set(leaderGauge, 0);
    if (this.elector !== undefined && !(await this.elector.acquire(signal))) return;
    this.metrics.leaderStatus.set(leaderGauge, 1);
    if (signal.aborted) return;
    const starting = Promise.all(this.controllers.map((controller) => controller.start()));
    if (this.elector === undefined) {
      await starting;
      return;
    }
    // Renew from the first moment: controllers wait for their caches, which can take long (or forever,
    // while the API server is away); a lease left to expire meanwhile would give two leaders.
    const end = await this.elector.holdLeadership(signal);
    this.metrics.leaderStatus.set(leaderGauge, 0);
    if (end === "lost") this.stopping ??= this.shutDown("lost-leadership");
  }

  private async shutDown(reason: ManagerEnd): Promise<void> {
    this.log.info({ reason }, "manager stopping");
    this.stopSignal.abort();
    await this.stopControllers();
    if (reason === "stopped") {
      await this.lifecycle;
      // lead() may have started a controller between the abort and its own check; stopping twice is harmless.
      await this.stopControllers();
      await this.elector?.release();
    }
    await this.cache.stop();
    await this.events.flush();
    await this.health.close();
    this.apiClient.close();
    this.log.info({ reason }, "manager stopped");
    this.resolveDone(reason);
  }

  private async stopControllers(): Promise<void> {
    const timeoutMs = this.options.shutdownTimeoutMs ?? 30_000;
    let timer: NodeJS.Timeout | undefined;
    const timedOut = new Promise<"timeout">(
      (resolve) =>
        (timer = setTimeout(() => {
          resolve("timeout");
        }, timeoutMs)),
    );
    const drained = Promise.all(this.controllers.map((controller) => controller.stop()));
    if ((await Promise.race([drained, timedOut])) === "timeout") {
      this.log.warn({ timeoutMs }, "reconciles still running at the shutdown deadline; leaving them behind");
    }
    clearTimeout(timer);
  }

  private readiness(): { ok: boolean; detail: string } {
    const pending = this.cache.all().filter((informer) => !informer.hasSynced());
    if (pending.length > 0) return { ok: false, detail: `caches not synced: ${pending.map((i) => i.name).join(", ")}` };
    return { ok: true, detail: "ok" };
  }
}
