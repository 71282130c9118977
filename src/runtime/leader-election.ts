// Leader election on a coordination.k8s.io/v1 Lease, with client-go's rules:
// a lease counts as held while its record keeps changing; expiry is judged by
// our own clock from when we last saw it change (never by comparing clocks
// across machines); a leader that cannot renew within renewDeadline gives up
// before anyone else may take over (renewDeadline < leaseDuration).
import { isAborted, sleep, systemClock, type Clock } from "./clock.js";
import { microTime } from "./events.js";
import { isAlreadyExists, isConflict, type KubeClient } from "./kube-client.js";
import { errorMessage, silentLogger, type Logger } from "./logging.js";
import { resourceType, type KubeObject } from "./objects.js";

export interface LeaseSpec {
  holderIdentity?: string;
  leaseDurationSeconds?: number;
  acquireTime?: string;
  renewTime?: string;
  leaseTransitions?: number;
}

export interface Lease extends KubeObject {
  spec?: LeaseSpec;
}

export const leases = resourceType<Lease>({
  group: "coordination.k8s.io",
  version: "v1",
  kind: "Lease",
  plural: "leases",
  namespaced: true,
});

export interface LeaderElectionTiming {
  /** How long others wait after the last renewal they saw before taking over. */
  leaseDurationMs: number;
  /** A leader that has not renewed for this long steps down. Must be below leaseDurationMs. */
  renewDeadlineMs: number;
  /** Pause between attempts to acquire or renew. */
  retryPeriodMs: number;
}

export interface LeaderElectionOptions extends LeaderElectionTiming {
  leaseName: string;
  leaseNamespace: string;
  /** Unique per process; defaults to hostname + pid in the manager. */
  identity: string;
}

export function validateLeaderElection(options: LeaderElectionOptions): void {
  validateLeaderElectionTiming(options);
  if (options.identity === "") throw new Error("leader election: identity must not be empty");
}

/** A leader steps down (renewDeadline) before anyone may take over (leaseDuration). */
export function validateLeaderElectionTiming(timing: LeaderElectionTiming): void {
  const { leaseDurationMs, renewDeadlineMs, retryPeriodMs } = timing;
  if (!(leaseDurationMs > renewDeadlineMs)) {
    throw new Error(
      `leader election: leaseDuration (${leaseDurationMs} ms) must exceed renewDeadline (${renewDeadlineMs} ms)`,
    );
  }
  if (!(renewDeadlineMs > retryPeriodMs * 1.2) || retryPeriodMs <= 0) {
    throw new Error(
      `leader election: renewDeadline (${renewDeadlineMs} ms) must exceed 1.2 × retryPeriod (${retryPeriodMs} ms)`,
    );
  }
  if (leaseDurationMs < 1000) throw new Error(`leader election: leaseDuration must be at least 1000 ms`);
}

export class LeaderElector {
  private leading = false;
  private observedRecord = "";
  private observedAt = 0;
  private readonly clock: Clock;
  private readonly log: Logger;

  constructor(
    private readonly client: KubeClient,
    private readonly options: LeaderElectionOptions,
    deps: { clock?: Clock; logger?: Logger } = {},
  ) {
    validateLeaderElection(options);
    this.clock = deps.clock ?? systemClock;
    this.log = (deps.logger ?? silentLogger).child({
      lease: `${options.leaseNamespace}/${options.leaseName}`,
      identity: options.identity,
    });
  }

  get isLeader(): boolean {
    return this.leading;
  }

  /** Tries until this process holds the lease; false if the signal aborted first. */
  async acquire(signal: AbortSignal): Promise<boolean> {
    while (!signal.aborted) {
      if (await this.tryAcquireOrRenew()) {
        this.leading = true;
        this.log.info("became leader");
        return true;
      }
      // Jitter keeps candidates that saw the lease free at the same time from colliding every round.
      await sleep(this.clock, this.options.retryPeriodMs * (1 + 0.2 * Math.random()), signal);
    }
    return false;
  }

  /**
   * Renews every retryPeriod while leading. Resolves "lost" as soon as renewals
   * have failed for renewDeadline, or "stopped" when the signal aborts.
   */
  async holdLeadership(signal: AbortSignal): Promise<"lost" | "stopped"> {
    let lastRenewal = this.clock.now();
    while (!signal.aborted) {
      await sleep(this.clock, this.options.retryPeriodMs, signal);
      if (isAborted(signal)) break;
      const remaining = this.options.renewDeadlineMs - (this.clock.now() - lastRenewal);
      if (await this.renewWithin(remaining)) {
        lastRenewal = this.clock.now();
      } else if (this.clock.now() - lastRenewal >= this.options.renewDeadlineMs) {
        this.leading = false;
        this.log.error(
          { sinceLastRenewalMs: this.clock.now() - lastRenewal },
          "lost leadership: could not renew the lease",
        );
        return "lost";
      }
    }
    return "stopped";
  }

  /** Hands the lease back so that a successor need not wait for it to expire. */
  async release(): Promise<void> {
    if (!this.leading) return;
    this.leading = false;
    try {
      const lease = await this.client.get(leases, this.options.leaseName, this.options.leaseNamespace);
      if (lease?.spec?.holderIdentity !== this.options.identity) return;
      const now = microTime(this.clock.now());
      await this.client.replace(leases, {
        ...lease,
        spec: { ...lease.spec, holderIdentity: "", leaseDurationSeconds: 1, renewTime: now, acquireTime: now },
      });
      this.log.info("released the lease");
    } catch (error) {
      this.log.warn({ err: errorMessage(error) }, "could not release the lease; successors wait for it to expire");
    }
  }

  private async renewWithin(timeoutMs: number): Promise<boolean> {
    if (timeoutMs <= 0) return false;
    const abort = new AbortController();
    const timedOut = sleep(this.clock, timeoutMs, abort.signal).then(() => false);
    try {
      return await Promise.race([this.tryAcquireOrRenew(), timedOut]);
    } finally {
      abort.abort();
    }
  }

  private async tryAcquireOrRenew(): Promise<boolean> {
    const { leaseName, leaseNamespace, identity } = this.options;
    const now = this.clock.now();
    const spec: LeaseSpec = {
      holderIdentity: identity,
      leaseDurationSeconds: Math.ceil(this.options.leaseDurationMs / 1000),
      acquireTime: microTime(now),
      renewTime: microTime(now),
      leaseTransitions: 0,
    };
    try {
      const lease = await this.client.get(leases, leaseName, leaseNamespace);
      if (lease === undefined) {
        const created = await this.client.create(leases, {
          apiVersion: "coordination.k8s.io/v1",
          kind: "Lease",
          metadata: { name: leaseName, namespace: leaseNamespace },
          spec,
        });
        this.observe(created, now);
        return true;
      }
      this.observe(lease, now);
      const current = lease.spec ?? {};
      const holder = current.holderIdentity ?? "";
      const heldFor = (current.leaseDurationSeconds ?? 0) * 1000;
      if (holder !== "" && holder !== identity && this.observedAt + heldFor > now) return false;
      const renewing = holder === identity;
      const updated = await this.client.replace(leases, {
        ...lease,
        spec: {
          ...spec,
          acquireTime: renewing ? (current.acquireTime ?? spec.acquireTime) : spec.acquireTime,
          leaseTransitions: (current.leaseTransitions ?? 0) + (renewing ? 0 : 1),
        },
      });
      this.observe(updated, now);
      return true;
    } catch (error) {
      // Losing a race to another candidate is normal; anything else is worth a line.
      if (!isConflict(error) && !isAlreadyExists(error))
        this.log.warn({ err: errorMessage(error) }, "lease update failed");
      return false;
    }
  }

  private observe(lease: Lease, now: number): void {
    const record = JSON.stringify(lease.spec ?? {});
    if (record === this.observedRecord) return;
    this.observedRecord = record;
    this.observedAt = now;
  }
}
