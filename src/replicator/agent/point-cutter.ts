// Recovery points on the agent's side: a cut stops the capture loop (hold), sends everything
// captured up to that moment, places a marker in the stream (mark) and resumes (release). The
// same three steps serve the agent's own cadence and a consistency group's coordinator, which
// drives them across machines over the Barrier service.
import type { MarkerOp } from "../journal/change.js";
import {
  consistencyFromWire,
  consistencyToWire,
  consistencyUnspecified,
  invalidMarker,
  weakestConsistency,
  type PointConsistency,
} from "../journal/point.js";
import { cutConsistency, runQuiesced, type HookStep, type QuiesceHook } from "../journal/quiesce.js";

/** What flushing for a cut established. */
export interface CutFlush {
  /** Writes were still arriving (in flight) at the cut. */
  writesInFlight: boolean;
  /** New writes are held (a group member's quiet cut, until releaseWrites()). */
  writesHeld: boolean;
  /** When the hold began (performance.now()), while writesHeld. */
  heldSince?: number;
  /** How long new writes were held (a machine's own cut with write ranges). */
  heldMs?: number;
}

/** What a cut needs from the capture side. */
export interface CaptureStream {
  /** Resolves once the initial replication (or resync) has been sent: no point before that. */
  whenReady(): Promise<void>;
  /**
   * Sends every change observed so far. A capture that can hold writes holds them for the cut:
   * released before this resolves for a machine's own cut, kept for a group member.
   */
  flushForCut(group: boolean): Promise<CutFlush>;
  /** Lets writes held by flushForCut go; true when they stayed held (and nothing unheld changed) all along. */
  releaseWrites(heldSince?: number): Promise<boolean>;
  /** Appends the marker to the stream (pushed, not yet acknowledged); returns its seq. */
  emitMarker(marker: MarkerOp): Promise<number>;
  /** Resolves once the master target has applied the seq durably. */
  waitApplied(seq: number): Promise<void>;
}

/** Serialises the capture loop and cuts: a held cut keeps the lock until it is released. */
export class CaptureLock {
  private tail: Promise<void> = Promise.resolve();

  acquire(): Promise<() => void> {
    let unlock: () => void = () => undefined;
    const released = new Promise<void>((resolve) => (unlock = resolve));
    const acquired = this.tail.then(() => unlock);
    this.tail = this.tail.then(() => released);
    return acquired;
  }

  async run<T>(work: () => Promise<T>): Promise<T> {
    const unlock = await this.acquire();
    try {
      return await work();
    } finally {
      unlock();
    }
  }
}

/** A barrier call out of order (no such cut held, another one held, hold expired). */
export class CutStateError extends Error {
  override readonly name = "CutStateError";
}

export interface PointReport {
  id: string;
  seq: number;
  requested: PointConsistency;
  consistency: PointConsistency;
  group: string;
  timeUnixMs: number;
  /** Every hook step of the cut, in the order they ran. */
  hooks: HookStep[];
  /** Hooks whose pre or post action failed or timed out (names and phases only). */
  failedHooks: string[];
  /** From the start of the cut until the capture round in progress had finished (and hooks ran). */
  waitMs: number;
  /** From the start of the cut until it was released: capture stands still for cutMs - waitMs. */
  cutMs: number;
  /** From the start of the cut until the master target applied the marker, once it did. */
  appliedMs?: number;
  /** How long the application's writes were held for the cut (write ranges only). */
  writeHoldMs?: number;
}

export interface PointLog {
  info(message: string): void;
  warn(message: string): void;
}

interface HeldCut {
  id: string;
  startedAt: number;
  /** When the cut had the capture loop to itself. */
  lockedAt?: number;
  /** The consistency of the held state for this machine's own stream. */
  consistency: PointConsistency;
  /** What the cut is worth as part of a group point (see hold()). */
  memberConsistency: PointConsistency;
  /** Set while the capture holds this cut's writes: released at Mark, or at release/expiry. */
  writesHeld?: { since: number | undefined };
  writeHoldMs?: number;
  steps: HookStep[];
  expired: boolean;
  release(): void;
  finished: Promise<void>;
  marked?: { seq: number; consistency: PointConsistency };
}

interface Deferred<T> {
  promise: Promise<T>;
  resolve(value: T): void;
  reject(error: unknown): void;
}

function deferred<T>(): Deferred<T> {
  let resolve: (value: T) => void = () => undefined;
  let reject: (error: unknown) => void = () => undefined;
  const promise = new Promise<T>((ok, fail) => {
    resolve = ok;
    reject = fail;
  });
  return { promise, resolve, reject };
}

export const defaultHoldTimeoutMs = 60_000;
export const maxHoldTimeoutMs = 10 * 60_000;

export interface HoldOptions {
  /** The agent releases on its own after this long. */
  timeoutMs: number;
  /** A consistency group's barrier (not this machine's own point). */
  group: boolean;
  /**
   * The caller quiesced the application itself (the operator runs exec hooks in the workload's
   * containers, which the agent cannot: it holds no API credentials) and keeps it quiesced until
   * the release: an app cut then needs no hooks of the agent's own.
   */
  quiescedByCaller?: boolean;
}

export class PointCutter {
  private held: HeldCut | undefined;
  private cuts = 0;

  constructor(
    private readonly machineId: string,
    private readonly lock: CaptureLock,
    private readonly stream: CaptureStream,
    private readonly hooks: readonly QuiesceHook[],
    private readonly log: PointLog,
    private readonly onPoint: (report: PointReport) => void = () => undefined,
  ) {}

  /**
   * Quiesces (for an app cut with hooks), stops the capture loop and sends everything observed so
   * far. Resolves once held; the capture loop stays stopped until release() or the timeout.
   *
   * Tree scan cannot stop the application's writes, only their way into the stream, so the
   * members of a group are cut at slightly different instants unless hooks quiesced them: as a
   * group member, such a cut is worth best-effort. Write ranges hold the writes from Hold to
   * Mark; when the hold lasted all along, every member was held at the instant the coordinator
   * had all Hold replies, and the member's cut keeps its own consistency.
   */
  async hold(
    cutId: string,
    requested: PointConsistency,
    options: HoldOptions,
  ): Promise<{
    consistency: PointConsistency;
    memberConsistency: PointConsistency;
    steps: HookStep[];
    waitMs: number;
  }> {
    if (this.held !== undefined) throw new CutStateError(`cut ${this.held.id} is still held; try again later`);
    const byCaller = requested === "app" && options.quiescedByCaller === true;
    const hooks = requested === "app" && !byCaller ? this.hooks : [];
    const appRequested = requested === "app" && (hooks.length > 0 || byCaller);
    const reached = deferred<{ consistency: PointConsistency; writesHeld: boolean }>();
    const released = deferred<undefined>();
    const cut: HeldCut = {
      id: cutId,
      startedAt: Date.now(),
      consistency: "best-effort",
      memberConsistency: "best-effort",
      steps: [],
      expired: false,
      release: () => {
        released.resolve(undefined);
      },
      finished: Promise.resolve(),
    };
    this.held = cut;
    const timer = setTimeout(() => {
      cut.expired = true;
      this.log.warn(`cut ${cutId}: not released within ${options.timeoutMs} ms; resuming replication on its own`);
      reached.reject(new CutStateError(`cut ${cutId} was not held within ${options.timeoutMs} ms`));
      cut.release();
    }, options.timeoutMs);
    cut.finished = this.runCut(cut, hooks, appRequested, options.group, reached, released.promise).finally(() => {
      clearTimeout(timer);
      if (this.held === cut) this.held = undefined;
    });
    const { consistency, writesHeld } = await reached.promise;
    if (cut.expired) throw new CutStateError(`cut ${cutId} was not held within ${options.timeoutMs} ms`);
    cut.consistency = consistency;
    cut.memberConsistency = options.group && consistency !== "app" && !writesHeld ? "best-effort" : consistency;
    return {
      consistency,
      memberConsistency: cut.memberConsistency,
      steps: [...cut.steps],
      waitMs: (cut.lockedAt ?? cut.startedAt) - cut.startedAt,
    };
  }

  private async runCut(
    cut: HeldCut,
    hooks: readonly QuiesceHook[],
    appRequested: boolean,
    group: boolean,
    reached: Deferred<{ consistency: PointConsistency; writesHeld: boolean }>,
    released: Promise<undefined>,
  ): Promise<void> {
    try {
      await Promise.race([this.stream.whenReady(), released]);
      if (cut.expired) return;
      await runQuiesced(
        hooks,
        (quiesced) =>
          this.lock.run(async () => {
            cut.lockedAt = Date.now();
            const flushed = await this.stream.flushForCut(group);
            if (flushed.writesHeld) cut.writesHeld = { since: flushed.heldSince };
            cut.writeHoldMs = flushed.heldMs;
            try {
              const consistency = cutConsistency({ appRequested, quiesced, writesInFlight: flushed.writesInFlight });
              reached.resolve({ consistency, writesHeld: flushed.writesHeld });
              await released;
            } finally {
              await this.letWritesGo(cut);
            }
          }),
        (step) => {
          cut.steps.push(step);
          this.reportStep(cut.id, step);
        },
      );
    } catch (error) {
      reached.reject(error);
    }
  }

  /** Releases the cut's held writes; false when they were not held all along (or not held at all). */
  private async letWritesGo(cut: HeldCut): Promise<boolean> {
    const held = cut.writesHeld;
    if (held === undefined) return false;
    cut.writesHeld = undefined;
    return this.stream.releaseWrites(held.since);
  }

  private reportStep(cutId: string, step: HookStep): void {
    if (step.ok) return;
    // The error carries an exit status or HTTP status and the output's tail, never env or URLs.
    this.log.warn(`cut ${cutId}: quiesce hook "${step.hook}" ${step.phase} failed: ${step.error ?? "unknown"}`);
  }

  /** Places the marker of the held cut; with `waitApplied`, resolves once the master target applied it. */
  async mark(
    cutId: string,
    marker: MarkerOp,
    waitApplied: boolean,
  ): Promise<{ seq: number; consistency: PointConsistency }> {
    const cut = this.heldCut(cutId);
    const problem = invalidMarker(marker);
    if (problem !== undefined) throw new RangeError(`marker: ${problem}`);
    if (cut.marked === undefined) {
      // Writes held since Hold are let go now: the coordinator had every Hold reply before this
      // Mark, so each member was held at that instant. A hold that lapsed meanwhile is no barrier.
      if (cut.writesHeld !== undefined && !(await this.letWritesGo(cut))) cut.memberConsistency = "best-effort";
      // The stream's marker never claims more than the coordinator asked for or the cut reached.
      const asked = marker.consistency === consistencyUnspecified ? "app" : consistencyFromWire(marker.consistency);
      const consistency = weakestConsistency([asked, cut.consistency]);
      const seq = await this.stream.emitMarker({ ...marker, consistency: consistencyToWire(consistency) });
      cut.marked = { seq, consistency };
    }
    if (waitApplied) await this.stream.waitApplied(cut.marked.seq);
    return { seq: cut.marked.seq, consistency: weakestConsistency([cut.marked.consistency, cut.memberConsistency]) };
  }

  /** Resumes the capture loop (after the post hooks); returns the hook steps of the cut. */
  async release(cutId: string): Promise<HookStep[]> {
    const cut = this.held;
    if (cut?.id !== cutId) return []; // released already (or on its own): releasing is idempotent
    cut.release();
    await cut.finished;
    return cut.steps;
  }

  /** One point of this machine now: hold, mark, release. */
  async cut(requested: PointConsistency, waitApplied: boolean, quiescedByCaller = false): Promise<PointReport> {
    const timeUnixMs = Date.now();
    const id = `${this.machineId}-${timeUnixMs}-${++this.cuts}`;
    const { consistency, waitMs } = await this.hold(id, requested, {
      timeoutMs: defaultHoldTimeoutMs,
      group: false,
      quiescedByCaller,
    });
    const writeHoldMs = this.held?.id === id ? this.held.writeHoldMs : undefined;
    let seq: number;
    let steps: HookStep[];
    try {
      const marker = { id, consistency: consistencyToWire(consistency), timeUnixMs, consistencyGroup: "" };
      seq = (await this.mark(id, marker, false)).seq;
    } finally {
      steps = await this.release(id);
    }
    const report: PointReport = {
      id,
      seq,
      requested,
      consistency,
      group: "",
      timeUnixMs,
      hooks: steps,
      failedHooks: steps.filter((step) => !step.ok).map((step) => `${step.hook} (${step.phase})`),
      waitMs,
      cutMs: Date.now() - timeUnixMs,
      ...(writeHoldMs === undefined ? {} : { writeHoldMs }),
    };
    this.describe(report, quiescedByCaller);
    const applied = this.stream.waitApplied(seq).then(() => {
      report.appliedMs = Date.now() - timeUnixMs;
      this.onPoint(report);
    });
    if (waitApplied) await applied;
    else applied.catch(() => undefined); // reported once applied; a stopping agent stops waiting
    return report;
  }

  private describe(report: PointReport, quiescedByCaller: boolean): void {
    const why =
      report.consistency === report.requested
        ? ""
        : report.failedHooks.length > 0 && report.requested === "app"
          ? ` (asked for app; quiesce hooks failed: ${report.failedHooks.join(", ")})`
          : report.requested === "app" && this.hooks.length === 0 && !quiescedByCaller
            ? " (asked for app; no quiesce hooks are configured)"
            : " (writes were in flight at the cut)";
    this.log.info(`recovery point ${report.id}: ${report.consistency} at seq ${report.seq}${why}`);
  }

  private heldCut(cutId: string): HeldCut {
    const cut = this.held;
    if (cut?.id !== cutId) throw new CutStateError(`no cut ${cutId} is held (released, expired or never held)`);
    if (cut.expired) throw new CutStateError(`cut ${cutId} expired and was released`);
    return cut;
  }
}
