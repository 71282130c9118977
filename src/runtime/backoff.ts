// Exponential back-off. Informer restarts add jitter so that many watchers
// cut off by one API server outage do not all come back in the same instant.

export interface BackoffPolicy {
  initialMs: number;
  maxMs: number;
  /** 0 = none; 0.5 = each delay is drawn uniformly from [d·(1-0.5), d]. */
  jitter: number;
}

export function backoffDelay(policy: BackoffPolicy, attempt: number, random: () => number = Math.random): number {
  const exponential = Math.min(policy.maxMs, policy.initialMs * 2 ** Math.max(0, attempt));
  return Math.round(exponential * (1 - policy.jitter * random()));
}

/** Counts consecutive failures; reset() after a success. */
export class Backoff {
  private attempt = 0;

  constructor(
    private readonly policy: BackoffPolicy,
    private readonly random: () => number = Math.random,
  ) {}

  next(): number {
    return backoffDelay(this.policy, this.attempt++, this.random);
  }

  reset(): void {
    this.attempt = 0;
  }
}
