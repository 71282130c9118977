// A deduplicating work queue of object keys with the guarantees controllers
// rely on: a key is never handed to two workers at once; adding a key while it
// is being processed makes it run exactly once more afterwards; failures are
// retried with per-key exponential back-off, capped overall by a token bucket.
import { backoffDelay } from "./backoff.js";
import { systemClock, type Clock, type TimerHandle } from "./clock.js";

export interface RateLimitPolicy {
  /** Per-key back-off: baseDelayMs · 2^(failures), up to maxDelayMs. */
  baseDelayMs: number;
  maxDelayMs: number;
  /** Overall retry budget: this many retries per second on average, bursts up to `burst`. */
  retriesPerSecond: number;
  burst: number;
}

export const defaultRateLimitPolicy: RateLimitPolicy = {
  baseDelayMs: 5,
  maxDelayMs: 300_000,
  retriesPerSecond: 10,
  burst: 100,
};

/** Hooks for metrics; the controller wires them to prom-client. */
export interface QueueObserver {
  added(): void;
  depth(depth: number): void;
  retried(): void;
  /** Seconds a key waited between becoming ready and being picked up. */
  waited(seconds: number): void;
}

const noObserver: QueueObserver = {
  added: () => undefined,
  depth: () => undefined,
  retried: () => undefined,
  waited: () => undefined,
};

export interface WorkQueueOptions {
  rateLimit?: RateLimitPolicy;
  clock?: Clock;
  observer?: QueueObserver;
}

/** A token bucket that hands out reservations: the delay until the caller's token exists. */
class TokenBucket {
  private tokens: number;
  private updatedAt: number;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly clock: Clock,
  ) {
    this.tokens = burst;
    this.updatedAt = clock.now();
  }

  reserve(): number {
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.updatedAt) / 1000) * this.perSecond);
    this.updatedAt = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : Math.ceil((-this.tokens / this.perSecond) * 1000);
  }
}

export class WorkQueue {
  private readonly queue: string[] = [];
  /** Keys waiting to be processed (queued, or re-added while processing), with the time they became ready. */
  private readonly dirty = new Map<string, number>();
  private readonly processing = new Set<string>();
  private readonly delayed = new Map<string, { readyAt: number; timer: TimerHandle }>();
  private readonly failures = new Map<string, number>();
  private readonly getters: ((key: string | undefined) => void)[] = [];
  private readonly idleWaiters: (() => void)[] = [];
  private readonly bucket: TokenBucket;
  private readonly policy: RateLimitPolicy;
  private readonly clock: Clock;
  private readonly observer: QueueObserver;
  private shuttingDown = false;

  constructor(options: WorkQueueOptions = {}) {
    this.policy = options.rateLimit ?? defaultRateLimitPolicy;
    this.clock = options.clock ?? systemClock;
    this.observer = options.observer ?? noObserver;
    this.bucket = new TokenBucket(this.policy.retriesPerSecond, this.policy.burst, this.clock);
  }

  /** Makes key ready now. A key already waiting is not queued twice. */
  add(key: string): void {
    if (this.shuttingDown || this.dirty.has(key)) return;
    this.observer.added();
    this.dirty.set(key, this.clock.now());
    if (this.processing.has(key)) return; // done() queues it again
    this.enqueue(key);
  }

  /** Makes key ready after delayMs; an earlier pending deadline for the same key wins. */
  addAfter(key: string, delayMs: number): void {
    if (this.shuttingDown) return;
    if (delayMs <= 0) {
      this.add(key);
      return;
    }
    const readyAt = this.clock.now() + delayMs;
    const pending = this.delayed.get(key);
    if (pending !== undefined) {
      if (pending.readyAt <= readyAt) return;
      pending.timer.cancel();
    }
    const timer = this.clock.setTimer(() => {
      this.delayed.delete(key);
      this.add(key);
    }, delayMs);
    this.delayed.set(key, { readyAt, timer });
  }

  /** Requeues a failed key after its back-off (and the overall budget) allow. */
  addRateLimited(key: string): void {
    const failures = this.failures.get(key) ?? 0;
    this.failures.set(key, failures + 1);
    this.observer.retried();
    const itemDelay = backoffDelay(
      { initialMs: this.policy.baseDelayMs, maxMs: this.policy.maxDelayMs, jitter: 0 },
      failures,
    );
    this.addAfter(key, Math.max(itemDelay, this.bucket.reserve()));
  }

  /** Clears key's failure count (after a success, or a failure that will not be retried). */
  forget(key: string): void {
    this.failures.delete(key);
  }

  numRequeues(key: string): number {
    return this.failures.get(key) ?? 0;
  }

  /** The next ready key, marked as processing; undefined once the queue shuts down. */
  get(): Promise<string | undefined> {
    if (this.shuttingDown) return Promise.resolve(undefined);
    const key = this.queue.shift();
    if (key !== undefined) return Promise.resolve(this.startProcessing(key));
    return new Promise((resolve) => this.getters.push(resolve));
  }

  /** Must follow every get(): releases the key, and queues it again if it was re-added meanwhile. */
  done(key: string): void {
    this.processing.delete(key);
    if (this.dirty.has(key) && !this.shuttingDown) this.enqueue(key);
    if (this.processing.size === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  get length(): number {
    return this.queue.length;
  }

  get inFlight(): number {
    return this.processing.size;
  }

  /** Stops handing out keys and drops pending ones (they are re-listed by whoever runs next); in-flight work finishes. */
  shutDown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    for (const { timer } of this.delayed.values()) timer.cancel();
    this.delayed.clear();
    this.queue.length = 0;
    this.dirty.clear();
    this.observer.depth(0);
    for (const resolve of this.getters.splice(0)) resolve(undefined);
  }

  /** Shuts down and resolves once every key handed out has been marked done. */
  async shutDownAndDrain(): Promise<void> {
    this.shutDown();
    if (this.processing.size === 0) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private enqueue(key: string): void {
    const getter = this.getters.shift();
    if (getter !== undefined) {
      getter(this.startProcessing(key));
      return;
    }
    this.queue.push(key);
    this.observer.depth(this.queue.length);
  }

  private startProcessing(key: string): string {
    const readySince = this.dirty.get(key) ?? this.clock.now();
    this.dirty.delete(key);
    this.processing.add(key);
    this.observer.waited((this.clock.now() - readySince) / 1000);
    this.observer.depth(this.queue.length);
    return key;
  }
}
